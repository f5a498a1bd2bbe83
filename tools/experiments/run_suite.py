"""Run a grid of tasks x seeds x variants, one model_dir per cell, resumable.

    python -m tools.experiments.run_suite --tasks=configs/demo.flags --seeds=0,1,2 \
        --variants=source_only,dann,dann_bg,biwaa,biwaa_i,oracle --output=runs/suite \
        [--iterative_runs=3] [-- --data_root=/data --steps_per_run=800]

Cell directory: <output>/<task>/<variant>/seed<s>. A cell whose results.json exists
is skipped; an interrupted cell resumes from its checkpoints. Flags after `--` go to
every cell. Variants: see tools/experiments/variants.py (wf<lambda> sweeps the weighting factor).
"""

import os
import subprocess
import sys
import time

from absl import app, flags

from biwaa_tf import model_dir_layout as layout
from tools.experiments.variants import variant_flags

flags.DEFINE_list("tasks", None, "Task flagfiles.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
flags.DEFINE_list("variants", ["source_only", "dann", "dann_bg", "biwaa", "biwaa_i"],
                  "Variants to run.")
flags.DEFINE_string("output", "runs/suite", "Root of the cell directories.")
flags.DEFINE_integer("iterative_runs", None, "--runs for biwaa_i (default: the task's).")
FLAGS = flags.FLAGS


def task_name(path):
  return os.path.splitext(os.path.basename(path))[0]


def cells(tasks, seeds, variants, output):
  for task in tasks:
    for variant in variants:
      for seed in seeds:
        yield task, variant, int(seed), os.path.join(output, task_name(task), variant,
                                                     f"seed{seed}")


def cell_command(task, variant, seed, model_dir, runs, extra):
  args = [sys.executable, "-m", "biwaa_tf.main", f"--flagfile={task}", *variant_flags(variant),
          f"--seed={seed}", f"--model_dir={model_dir}", "--noprogress", *extra]
  if variant.startswith("biwaa_i") and runs:
    args.append(f"--runs={runs}")
  return args


def run_suite(tasks, seeds, variants, output, runs=None, extra=(), log=print):
  """Runs every missing cell; returns the number of failed cells."""
  grid = list(cells(tasks, seeds, variants, output))
  failed = 0
  for n, (task, variant, seed, model_dir) in enumerate(grid, 1):
    head = f"[{n}/{len(grid)}] {task_name(task)} {variant} seed {seed}"
    if layout.is_done(model_dir):
      log(f"{head}: done before, skipped")
      continue
    start = time.time()
    res = subprocess.run(cell_command(task, variant, seed, model_dir, runs, list(extra)),
                         capture_output=True, text=True)
    if res.returncode != 0:
      failed += 1
      last = (res.stderr.strip().splitlines() or ["?"])[-1]
      log(f"{head}: FAILED ({last})")
      continue
    log(f"{head}: {res.stdout.strip().splitlines()[-2].strip()}  ({time.time() - start:.0f} s)")
  return failed


def main(argv):
  extra = argv[1:]
  if not FLAGS.tasks:
    print("error: --tasks is required", file=sys.stderr)
    return 2
  for v in FLAGS.variants:
    try:
      variant_flags(v)
    except ValueError as e:
      print(f"error: --variants: {e}", file=sys.stderr)
      return 2
  failed = run_suite(FLAGS.tasks, FLAGS.seeds, FLAGS.variants, FLAGS.output,
                     FLAGS.iterative_runs, extra, log=lambda m: print(m, flush=True))
  return 1 if failed else 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
