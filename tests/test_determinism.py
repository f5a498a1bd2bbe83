"""--deterministic: the same bits in concurrent processes and across an external SIGKILL.

The training includes a class-balanced run (run 1 loads the target balanced by
run 0's predictions) whose batches hold some sample twice, the case where a
within-run table update could depend on the order of writes.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, run_main, tiny_flags

from biwaa_tf.data import lists, pipeline

# One worker runs this module under -n 2 (pyproject: --dist=loadgroup), so its
# module-scoped training fixture runs once, not once per worker.
pytestmark = [pytest.mark.xdist_group("determinism"), pytest.mark.slow]

STEPS, BATCH = 40, 6
FLAGS = ("--runs=2", "--deterministic", f"--steps_per_run={STEPS}", "--checkpoint_every=7")
OUTPUTS = ("run_0/target_probs.npy", "run_1/target_probs.npy")


def _start(args):
  """The CLI in its own process group (so that the whole group can be killed)."""
  return subprocess.Popen([sys.executable, "-m", "biwaa_tf.main", *args], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)


@pytest.fixture(scope="module")
def concurrent_trainings(tiny_domains, tmp_path_factory):
  """Three identical trainings run at the same time (the machine is loaded by them)."""
  root, src, tgt = tiny_domains
  out = tmp_path_factory.mktemp("concurrent")
  procs = [_start(tiny_flags(root, src, tgt, out / f"m{i}", *FLAGS)) for i in range(3)]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
  return [out / f"m{i}" for i in range(3)]


def test_balanced_run_has_batches_with_a_repeated_sample(tiny_domains, concurrent_trainings):
  root, src, tgt = tiny_domains
  target = lists.read_list_file(tgt, root)
  probs = np.load(concurrent_trainings[0] / "run_0/target_probs.npy")
  balance = np.argmax(probs, axis=1)
  # Run 1's target stream: seed 0 + 100 x 1, + 1 for the target (run.py, pipeline.py).
  stream = pipeline.index_stream(target.labels, 101, balance, 3).take(STEPS * BATCH)
  batches = np.array([int(i) for i, _ in stream.as_numpy_iterator()]).reshape(STEPS, BATCH)
  repeated = sum(len(set(b.tolist())) < BATCH for b in batches)
  assert repeated >= 3, repeated


def test_concurrent_deterministic_trainings_are_bit_identical(concurrent_trainings):
  first = concurrent_trainings[0]
  for other in concurrent_trainings[1:]:
    for name in OUTPUTS:
      a, b = np.load(first / name), np.load(other / name)
      assert np.abs(a - b).max() == 0.0, (name, float(np.abs(a - b).max()))
      assert (first / name).read_bytes() == (other / name).read_bytes()


@pytest.mark.parametrize("kill_when", ["run_0/ckpt/checkpoint", "run_1/ckpt/checkpoint"])
def test_external_sigkill_then_resume_gives_the_same_bits(tiny_domains, tmp_path,
                                                         concurrent_trainings, kill_when):
  """SIGKILL to the process group as soon as a checkpoint of that run exists: a moment
  the training does not choose (mid-step, mid-save or mid-evaluation)."""
  root, src, tgt = tiny_domains
  args = tiny_flags(root, src, tgt, tmp_path / "m", *FLAGS)
  proc = _start(args)
  marker = tmp_path / "m" / kill_when
  deadline = time.time() + 240
  while not marker.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  assert proc.poll() is None, "finished before it could be killed"
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait(timeout=30)
  assert proc.returncode == -signal.SIGKILL
  assert not (tmp_path / "m" / "results.json").exists()
  resumed = run_main(args)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resumed from" in resumed.stderr or "complete" in resumed.stderr
  for name in OUTPUTS:
    a = np.load(tmp_path / "m" / name)
    b = np.load(concurrent_trainings[0] / name)
    assert np.abs(a - b).max() == 0.0, (name, float(np.abs(a - b).max()))
