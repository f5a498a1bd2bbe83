"""Kill a training with SIGKILL at random moments, many times; resume; compare bits.

    python -m tools.dev.kill_resume --kills=40 --seed=0 --work=runs/kill_test \\
        -- --flagfile=configs/demo.flags --runs=3 --steps_per_run=60 --checkpoint_every=20

Trains the given command once uninterrupted (<work>/reference), then again in
<work>/killed, killing it --kills times and re-running the same command after each
kill, and at last letting it finish. `--deterministic` is added to the command. The
kill moments come from a seeded random generator (--seed), each one of:

  time        a delay into the process's life (up to the reference's wall time)
  step        right after a training step (step and run drawn)
  checkpoint  inside a checkpoint write (the k-th of the process, then a delay of
              0-20 ms into the write)
  evaluation  inside a run's evaluation (likewise)
  export      inside the export of the last run (likewise)
  between     right after a run's run_result.json was written

The child process writes where it is (begin/end of each phase, each step) to a trace
file; the last line before its death says where the kill landed. The end: every run's
target_probs.npy, results.json's accuracies and the exported weights are compared with
the reference; the report lists each kill and the largest difference (0.0 expected).
Exit status 0 when they are all the same bits.
"""

import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PHASES = ("time", "step", "checkpoint", "evaluation", "export", "between")
_TRACE = "BIWAA_KILL_TRACE"
_PLAN = "BIWAA_KILL_PLAN"


# ----- the child: the command line with trace points and one planned kill -----

def _child(argv):
  import threading

  import biwaa_tf  # noqa: F401  (before TensorFlow: keeps its start-up lines quiet)

  # isort: split
  import keras

  from biwaa_tf import export, main
  from biwaa_tf.train import checkpoints
  from biwaa_tf.train import run as run_lib

  fd = os.open(os.environ[_TRACE], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  plan = json.loads(os.environ.get(_PLAN, "{}"))
  counts = {}
  current_run = [0]

  def trace(text):
    os.write(fd, (text + "\n").encode())

  def kill_now():
    trace("killed")
    os.kill(os.getpid(), signal.SIGKILL)

  def maybe_kill(phase):
    """At the planned occurrence of `phase`: SIGKILL after the planned delay (a thread,
    so that the kill lands inside the operation that follows)."""
    counts[phase] = counts.get(phase, 0) + 1
    if plan.get("phase") == phase and counts[phase] == plan["nth"]:
      delay = plan.get("delay", 0.0)
      if delay <= 0:
        kill_now()
      threading.Timer(delay, kill_now).start()

  def traced(phase, fn, describe):
    def wrapper(*args, **kwargs):
      what = describe(*args, **kwargs)
      trace(f"begin {phase} {what}")
      if phase != "between":
        maybe_kill(phase)
      result = fn(*args, **kwargs)
      trace(f"end {phase} {what}")
      if phase == "between":
        maybe_kill(phase)
      return result
    return wrapper

  class StepTrace(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
      trace(f"step run {current_run[0]} step {int(self.model.step.numpy())}")
      maybe_kill("step")

  checkpoints.save = traced("checkpoint", checkpoints.save,
                            lambda m, step, *a, **k: f"run {current_run[0]} step {step}")
  run_lib.predict_probs = traced("evaluation", run_lib.predict_probs,
                                 lambda *a, **k: f"run {current_run[0]}")
  export.export_saved_model = traced("export", export.export_saved_model, lambda *a, **k: "")
  train_run = run_lib.train_run

  def train_run_traced(cfg, domains, run, *args, callbacks=None, **kwargs):
    current_run[0] = run
    return train_run(cfg, domains, run, *args,
                     callbacks=list(callbacks or []) + [StepTrace()], **kwargs)
  run_lib.train_run = traced("between", train_run_traced,
                             lambda cfg, domains, run, *a, **k: f"run {run}")
  if plan.get("phase") == "time":
    threading.Timer(plan["delay"], kill_now).start()
  trace("start")
  status = main.run([sys.argv[0], *argv])
  trace(f"exit {status}")
  return status


# ----- the parent: reference, kills, comparison -----

def _run_child(args, trace, plan=None, timeout=900):
  env = dict(os.environ, **{_TRACE: trace, _PLAN: json.dumps(plan or {})})
  return subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *args],
                        env=env, capture_output=True, text=True, timeout=timeout)


def landed(trace_path):
  """(kind, description) of where the last process of the trace died."""
  with open(trace_path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  start = max(i for i, line in enumerate(lines) if line == "start")
  life = [line for line in lines[start + 1:] if line != "killed"]
  if not life:
    return "start-up", "during start-up (checks, building the model)"
  words = life[-1].split()
  what = " ".join(words[2:])
  table = {
      ("begin", "checkpoint"): ("checkpoint write", f"during the checkpoint write of {what}"),
      ("end", "checkpoint"): ("training steps", f"just after the checkpoint of {what}"),
      ("begin", "evaluation"): ("evaluation", f"during the evaluation of {what}"),
      ("end", "evaluation"): ("evaluation", f"after the predictions of {what}, before its "
                                            "results were written"),
      ("begin", "export"): ("export", "during the export"),
      ("end", "export"): ("after the export", "after the export, before results.json"),
      ("begin", "between"): ("run set-up", f"while setting up {what} (restoring, loading)"),
      ("end", "between"): ("between runs", f"between runs, after {what} completed"),
  }
  if words[0] == "exit":
    return "after the end", "after the training ended"
  if words[0] == "step":
    return "training steps", f"after step {words[4]} of run {words[2]}"
  return table.get((words[0], words[1]), ("other", life[-1]))


def draw_plan(rng, reference_seconds, runs, steps, checkpoints_per_run):
  phase = rng.choice(PHASES)
  if phase == "time":
    return {"phase": "time", "delay": round(rng.uniform(1.0, reference_seconds), 3)}
  if phase == "step":
    return {"phase": "step", "nth": rng.randint(1, max(1, steps))}
  if phase == "checkpoint":
    return {"phase": "checkpoint", "nth": rng.randint(1, max(1, checkpoints_per_run)),
            "delay": round(rng.uniform(0.0, 0.02), 4)}
  if phase == "evaluation":
    return {"phase": "evaluation", "nth": 1, "delay": round(rng.uniform(0.0, 0.02), 4)}
  if phase == "export":
    return {"phase": "export", "nth": 1, "delay": round(rng.uniform(0.0, 0.2), 4)}
  return {"phase": "between", "nth": rng.randint(1, runs)}


def _export_digests(*model_dirs):
  """For each model_dir, the SHA-256 of each floating-point tensor of its export, sorted
  (read in one child process: this one stays free of TensorFlow)."""
  code = ("import sys, hashlib, biwaa_tf, numpy as np, tensorflow as tf\n"
          "for path in sys.argv[1:]:\n"
          "  r = tf.train.load_checkpoint(path)\n"
          "  print(' '.join(sorted(hashlib.sha256(np.ascontiguousarray(r.get_tensor(k))"
          ".tobytes()).hexdigest() for k, d in r.get_variable_to_dtype_map().items() "
          "if d.is_floating)))")
  res = subprocess.run([sys.executable, "-c", code,
                        *(os.path.join(d, "export", "variables", "variables")
                          for d in model_dirs)],
                       capture_output=True, text=True, check=True,
                       cwd=REPO)
  return [line.split() for line in res.stdout.splitlines()]


def compare(reference, killed, runs):
  """Largest absolute difference between the two trainings' outputs (0.0: the same)."""
  import numpy as np

  from biwaa_tf import model_dir_layout as layout
  worst = 0.0
  for r in range(runs):
    a = layout.load_probs(layout.run_dir(reference, r))
    b = layout.load_probs(layout.run_dir(killed, r))
    worst = max(worst, float(np.abs(a - b).max()) if a.shape == b.shape else float("inf"))
  with open(layout.path(reference, layout.RESULTS), encoding="utf-8") as f:
    ra = json.load(f)
  with open(layout.path(killed, layout.RESULTS), encoding="utf-8") as f:
    rb = json.load(f)
  for x, y in zip(ra["runs"], rb["runs"]):
    if x.get("accuracy") is not None:
      worst = max(worst, abs(x["accuracy"] - y["accuracy"]))
  # The exported weights, as a multiset of tensors (their names in a SavedModel follow
  # the order Keras tracked them in, which is not fixed): the same bytes, or inf.
  ours, theirs = _export_digests(reference, killed)
  if ours != theirs:
    worst = float("inf")
  return worst


def _flag(command, name, default):
  """An integer flag's value in the training command (its last --name=value), or default."""
  values = [a.split("=", 1)[1] for a in command if a.startswith(f"--{name}=")]
  return int(values[-1]) if values else default


def main(argv):
  import argparse
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--kills", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--work", default="runs/kill_test")
  parser.add_argument("--steps_per_run", type=int, default=None,
                      help="(read from the command; give it if it comes from a flagfile)")
  args, command = parser.parse_known_args(argv)
  command = [a for a in command if a != "--"] + ["--deterministic", "--noprogress"]
  runs = _flag(command, "runs", 1)
  steps = args.steps_per_run or _flag(command, "steps_per_run", 100)
  every = _flag(command, "checkpoint_every", steps)
  shutil.rmtree(args.work, ignore_errors=True)
  os.makedirs(args.work)
  reference = os.path.join(args.work, "reference")
  killed = os.path.join(args.work, "killed")
  trace = os.path.join(args.work, "trace.txt")
  start = time.time()
  res = _run_child([*command, f"--model_dir={reference}"], trace)
  reference_seconds = time.time() - start
  if res.returncode != 0:
    print(f"error: the reference training failed: {res.stderr.strip()[-500:]}")
    return 2
  print(f"reference: {reference_seconds:.1f} s")
  rng = random.Random(args.seed)
  hits, finished = [], 0
  for n in range(1, args.kills + 1):
    plan = draw_plan(rng, reference_seconds, runs, steps, -(-steps // every))
    res = _run_child([*command, f"--model_dir={killed}"], trace, plan)
    if res.returncode == 0 or landed(trace)[0] == "after the end":
      finished += 1
      print(f"kill {n:>3}: {json.dumps(plan)}: not reached, the training finished")
      shutil.rmtree(killed)  # start again, so that every kill hits a live training
      continue
    if res.returncode != -signal.SIGKILL:
      print(f"error: the training failed (status {res.returncode}): "
            f"{res.stderr.strip()[-500:]}")
      return 1
    kind, where = landed(trace)
    hits.append(kind)
    print(f"kill {n:>3}: {json.dumps(plan)}: landed {where}")
  res = _run_child([*command, f"--model_dir={killed}"], trace)
  if res.returncode != 0:
    print(f"error: the last resume failed (status {res.returncode}): "
          f"{res.stderr.strip()[-500:]}")
    return 1
  damaged = [line for line in res.stderr.splitlines() if "cannot be read" in line]
  worst = compare(reference, killed, runs)
  kinds = collections.Counter(hits)
  print(f"kills: {len(hits)} landed ({finished} plan(s) came after the end and restarted "
        "the training); " + ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())))
  for line in damaged:
    print(f"last resume: {line.strip()}")
  print(f"max difference from the uninterrupted training: {worst}")
  print(f"total {time.time() - start:.0f} s")
  return 0 if worst == 0.0 else 1


if __name__ == "__main__":
  if len(sys.argv) > 1 and sys.argv[1] == "--child":
    sys.exit(_child(sys.argv[2:]))
  sys.exit(main(sys.argv[1:]))
