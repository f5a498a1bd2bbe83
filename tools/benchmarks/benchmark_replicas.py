"""Does scale-out give the same answer? The demo trained on one device, on 2 logical
CPU replicas (MirroredStrategy) and as 2 worker processes on localhost
(MultiWorkerMirroredStrategy), same seeds and global batch; a Markdown table of the
target accuracies and of how far the target probabilities differ from one device's.

    python -m tools.benchmarks.benchmark_replicas [--output=runs/replicas] [--seeds=0,1]
        [--steps_per_run=800] [--method=biwaa]

Resumable: a setup whose results.json exists is not retrained.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

from biwaa_tf import model_dir_layout as layout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
flags.DEFINE_string("output", "runs/replicas", "Directory for the trainings.")
flags.DEFINE_list("seeds", ["0", "1"], "Seeds.")
flags.DEFINE_integer("steps_per_run", 800, "Training steps (the demo's default).")
flags.DEFINE_string("method", "biwaa", "--method of the trainings.")
FLAGS = flags.FLAGS
SETUPS = ("one_device", "mirrored_2", "multi_worker_2")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def train(setup, model_dir, seed):
  """Trains one setup (skipped when done); returns its wall time in seconds or None."""
  if layout.is_done(model_dir):
    return None
  args = [sys.executable, "-m", "biwaa_tf.main", "--flagfile=configs/demo.flags",
          f"--model_dir={model_dir}", f"--seed={seed}", f"--method={FLAGS.method}",
          f"--steps_per_run={FLAGS.steps_per_run}", "--noprogress", "--overwrite"]
  start = time.time()
  if setup == "multi_worker_2":
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    procs = [subprocess.Popen(
        args + ["--distribution_strategy=multi_worker_mirrored"], cwd=REPO,
        env=dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": i}})),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    errs = [p.communicate()[1] for p in procs]
    codes = [p.returncode for p in procs]
  else:
    extra = ["--cpu_replicas=2"] if setup == "mirrored_2" else []
    res = subprocess.run(args + extra, cwd=REPO, capture_output=True, text=True)
    errs, codes = [res.stderr], [res.returncode]
  if any(codes):
    raise SystemExit(f"error: {setup} seed {seed} failed: {errs[0].strip().splitlines()[-1]}")
  return time.time() - start


def main(argv):
  del argv
  rows = []
  for seed in FLAGS.seeds:
    probs = {}
    for setup in SETUPS:
      model_dir = os.path.join(FLAGS.output, f"seed{seed}", setup)
      print(f"seed {seed}: {setup} ...", flush=True)
      seconds = train(setup, model_dir, seed)
      with open(layout.path(model_dir, layout.RESULTS)) as f:
        acc = json.load(f)["final_accuracy"]
      probs[setup] = layout.load_probs(layout.run_dir(model_dir, 0))
      diff = float(np.abs(probs[setup] - probs["one_device"]).max())
      agree = float((probs[setup].argmax(1) == probs["one_device"].argmax(1)).mean())
      rows.append((seed, setup, acc, diff, agree, seconds))
  print(f"\nDemo, --method={FLAGS.method}, {FLAGS.steps_per_run} steps, global batch as "
        "configs/demo.flags:\n")
  print("| seed | setup | accuracy (%) | max abs prob diff vs one device | "
        "same predicted class | wall time (s) |")
  print("|---|---|---|---|---|---|")
  for seed, setup, acc, diff, agree, seconds in rows:
    wall = "(done before)" if seconds is None else f"{seconds:.0f}"
    print(f"| {seed} | {setup} | {100 * acc:.2f} | {diff:.2e} | {100 * agree:.1f}% | {wall} |")
  return 0


if __name__ == "__main__":
  app.run(main)
