"""Training step time of the command line in two (or more) checkouts, side by side.

    python -m tools.benchmarks.benchmark_checkouts --checkouts=old:/path/to/old/clone,new:. \
        [--repeats=3] [--cases=demo,resnet50_112]

Each case is one run of `python -m biwaa_tf.main` (no label-shift probe, no progress
lines) in each checkout, alternating checkouts within each repeat so that a change of
machine load falls on both. Reported per case and checkout: the median over repeats
of the run's median step time (results.json: median_step_seconds) and steps/s, and
the wall time of the whole command: a change's cost in speed, the older checkout a clone
at the commit before the change.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from biwaa_tf import model_dir_layout as layout

flags.DEFINE_list("checkouts", None, "name:path pairs of biwaa_tf checkouts.")
flags.DEFINE_list("cases", ["demo", "resnet50_112"], "Cases to time (see CASES).")
flags.DEFINE_integer("repeats", 3, "Runs per case and checkout.")
FLAGS = flags.FLAGS

COMMON = ["--runs=1", "--nolabel_shift_check", "--noprogress", "--backbone_weights=none"]
CASES = {
    # The demo: LeNet on the built-in digits, batch 36 + 36.
    "demo": ["--flagfile=configs/demo.flags", "--steps_per_run=400", "--checkpoint_every=200"],
    # ResNet-50 at 112 px on the same images, batch 8 + 8.
    "resnet50_112": ["--flagfile=configs/demo.flags", "--backbone=resnet50", "--image_size=112",
                     "--resize_size=128", "--batch_size=8", "--steps_per_run=30", "--lr=0.001",
                     "--checkpoint_every=30"],
}


def time_case(path, case):
  with tempfile.TemporaryDirectory(prefix="biwaa-bench-") as tmp:
    args = [sys.executable, "-m", "biwaa_tf.main", *CASES[case], *COMMON,
            f"--model_dir={tmp}/m"]
    start = time.perf_counter()
    res = subprocess.run(args, cwd=path, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode:
      raise SystemExit(f"{path}: {case} failed:\n{res.stderr[-2000:]}")
    with open(layout.path(os.path.join(tmp, "m"), layout.RESULTS)) as f:
      run = json.load(f)["runs"][0]
  return run["median_step_seconds"], wall


def main(argv):
  del argv
  checkouts = [c.split(":", 1) for c in FLAGS.checkouts]
  times = {(case, name): [] for case in FLAGS.cases for name, _ in checkouts}
  for r in range(FLAGS.repeats):
    for case in FLAGS.cases:
      for name, path in checkouts:
        times[case, name].append(time_case(path, case))
        step, wall = times[case, name][-1]
        print(f"repeat {r}: {case} {name}: median step {1e3 * step:.1f} ms, "
              f"wall {wall:.1f} s", flush=True)
  print("\n| case | checkout | median step (ms) | steps/s | command wall (s) |")
  print("|---|---|---|---|---|")
  for (case, name), values in times.items():
    step = statistics.median(v[0] for v in values)
    wall = statistics.median(v[1] for v in values)
    print(f"| {case} | {name} | {1e3 * step:.1f} | {1 / step:.2f} | {wall:.1f} |")
  print(f"\n{FLAGS.repeats} repeats, medians. rerun: "
        "python -m tools.benchmarks.benchmark_checkouts "
        f"--checkouts={','.join(FLAGS.checkouts)} --cases={','.join(FLAGS.cases)}")


if __name__ == "__main__":
  flags.mark_flag_as_required("checkouts")
  app.run(main)
