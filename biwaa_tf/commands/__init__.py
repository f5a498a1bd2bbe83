"""The user commands behind `biwaa-tf` (biwaa_tf/cli.py): predict, evaluate, make-list,
heatmap. Each module defines its flags and a run(argv) that returns the exit status."""
