"""Wall time of the no-flag default (label-shift check, probe, held-out split, label-free
estimates) against the paper's BIWAA-I (--nolabel_shift_check), end to end, same runs.

    python -m tools.benchmarks.benchmark_default_cost \
        --data_root=../shared/datasets/digits [--targets=none,long_tail:20:shuffled] \
        [--repeats=2] [--runs=3] [--steps_per_run=1000]

Each measurement is one `python -m biwaa_tf.main` command on a task's flagfile (MNIST ->
USPS, LeNet), from start to exit; both settings run within each repeat so that a change
of machine load falls on both. The default's path depends on the target: a
target found unshifted trains the probe and every run; one the probe finds shifted also
the paper's run 0 that confirms it or not (then runs 1.. from the probe, or the paper's
runs 1..: either way as many adapted runs as the paper's BIWAA-I). The order of the two
settings alternates between repeats.
Reported per target: the median wall time of each setting and their ratio.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from biwaa_tf import model_dir_layout as layout

flags.DEFINE_string("task", "configs/digits_m2u_lt.flags", "The task's flagfile.")
flags.DEFINE_string("data_root", None, "Where the task's datasets are.")
flags.DEFINE_list("targets", ["none", "long_tail:20:shuffled"],
                  "--target_subsample specs, one measurement pair each.")
flags.DEFINE_integer("repeats", 2, "Measurements per target and setting.")
flags.DEFINE_integer("runs", 3, "--runs of both settings.")
flags.DEFINE_integer("steps_per_run", 1000, "--steps_per_run of both settings.")
FLAGS = flags.FLAGS

SETTINGS = {"default": ["--label_shift_check"], "paper BIWAA-I": ["--nolabel_shift_check"]}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def time_command(target, setting):
  """(wall seconds, the label-shift path or "-") of one training."""
  with tempfile.TemporaryDirectory(prefix="biwaa-cost-") as tmp:
    model_dir = os.path.join(tmp, "m")
    args = [sys.executable, "-m", "biwaa_tf.main", f"--flagfile={FLAGS.task}",
            f"--data_root={FLAGS.data_root}", f"--target_subsample={target}",
            f"--runs={FLAGS.runs}", f"--steps_per_run={FLAGS.steps_per_run}",
            "--noprogress", f"--model_dir={model_dir}", *SETTINGS[setting]]
    start = time.perf_counter()
    res = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode:
      raise SystemExit(f"{setting} on {target} failed:\n{res.stderr[-2000:]}")
    check = (layout.read_results(model_dir).get("label_shift_check") or {})
    return wall, check.get("path", "-")


def main(argv):
  del argv
  times = {(t, s): [] for t in FLAGS.targets for s in SETTINGS}
  paths = {}
  for r in range(FLAGS.repeats):
    for target in FLAGS.targets:
      order = list(SETTINGS) if r % 2 == 0 else list(SETTINGS)[::-1]  # warm-up on both
      for setting in order:
        wall, path = time_command(target, setting)
        times[target, setting].append(wall)
        paths.setdefault(target, path if setting == "default" else None)
        print(f"repeat {r}: {target} {setting}: {wall:.1f} s", flush=True)
  print("\n| target | default's path | default (s) | paper BIWAA-I (s) | ratio |")
  print("|---|---|---|---|---|")
  for target in FLAGS.targets:
    d = statistics.median(times[target, "default"])
    p = statistics.median(times[target, "paper BIWAA-I"])
    print(f"| {target} | {paths[target]} | {d:.1f} | {p:.1f} | {d / p:.2f}x |")
  print(f"\n{FLAGS.repeats} repeats, medians. rerun: python -m "
        f"tools.benchmarks.benchmark_default_cost --task={FLAGS.task} "
        f"--data_root={FLAGS.data_root} --targets={','.join(FLAGS.targets)} "
        f"--repeats={FLAGS.repeats} --runs={FLAGS.runs} --steps_per_run={FLAGS.steps_per_run}")


if __name__ == "__main__":
  flags.mark_flag_as_required("data_root")
  app.run(main)
