"""Tools for the project's developers, run as modules from the repository root:
`python -m tools.experiments.run_suite ...`. User commands are `biwaa-tf` (biwaa_tf/cli.py)."""
