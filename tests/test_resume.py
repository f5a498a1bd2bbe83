"""Kill training with SIGKILL at several points, resume, and lose nothing."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, run_main, tiny_flags

FLAGS = ("--runs=2", "--deterministic", "--steps_per_run=6", "--checkpoint_every=3")


@pytest.fixture(scope="module")
def uninterrupted(tiny_domains, tmp_path_factory):
  root, src, tgt = tiny_domains
  out = tmp_path_factory.mktemp("full")
  res = run_main(tiny_flags(root, src, tgt, out / "m", *FLAGS))
  assert res.returncode == 0, res.stderr[-2000:]
  return out / "m"


@pytest.mark.parametrize("kill_after, resumed_line", [
    ("0:4", "run 0: resumed from"),        # mid-run, one step after a checkpoint
    ("0:done", "run 0: complete"),         # between runs
    ("1:5", "run 1: resumed from"),        # mid-run in the second run
])
def test_kill_and_resume_matches_uninterrupted(tiny_domains, tmp_path, uninterrupted,
                                               kill_after, resumed_line):
  root, src, tgt = tiny_domains
  args = tiny_flags(root, src, tgt, tmp_path / "m", *FLAGS)
  killed = subprocess.run([sys.executable, os.path.join("tests", "kill_after.py"), kill_after,
                           *args], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert killed.returncode == -9
  assert not (tmp_path / "m" / "results.json").exists()
  run0 = tmp_path / "m" / "run_0" / "target_probs.npy"
  before = run0.read_bytes() if run0.exists() else None
  resumed = run_main(args)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert resumed_line in resumed.stderr
  if before is not None:  # a completed run's files are never rewritten
    assert run0.read_bytes() == before
  # The same bits as the uninterrupted training (--deterministic).
  for r in (0, 1):
    name = f"run_{r}/target_probs.npy"
    assert (tmp_path / "m" / name).read_bytes() == (uninterrupted / name).read_bytes()


def test_a_different_step_count_is_detected(tiny_domains, tmp_path, uninterrupted):
  # One step fewer moves the predictions by far more than float32 rounding.
  root, src, tgt = tiny_domains
  args = tiny_flags(root, src, tgt, tmp_path / "m", "--runs=1", "--deterministic",
                    "--steps_per_run=5", "--checkpoint_every=3")
  assert run_main(args).returncode == 0
  diff = np.abs(np.load(tmp_path / "m" / "run_0/target_probs.npy")
                - np.load(uninterrupted / "run_0/target_probs.npy")).max()
  assert diff > 1e-3


@pytest.mark.parametrize("damaged, resumed_line", [
    (("ckpt-4",), "cannot be read (Read less bytes than requested): removed; resuming from "),
    (("ckpt-2", "ckpt-4"), "no readable checkpoint is left: run 0 starts again from step 0"),
])
def test_a_damaged_checkpoint_resumes_from_the_one_before(tiny_domains, tmp_path, uninterrupted,
                                                          damaged, resumed_line):
  """A kill after step 5 (checkpoints at 2 and 4), then what a dying disk leaves: the
  newest checkpoint (or both) truncated. The resume says so in one line a checkpoint,
  goes on from the newest readable one (or from the run's start), and ends with the bits
  of the uninterrupted training."""
  root, src, tgt = tiny_domains
  args = tiny_flags(root, src, tgt, tmp_path / "m", *FLAGS)
  args = [a for a in args if a != "--checkpoint_every=3"] + ["--checkpoint_every=2"]
  killed = subprocess.run([sys.executable, os.path.join("tests", "kill_after.py"), "0:5", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert killed.returncode == -9
  ckpt = tmp_path / "m" / "run_0" / "ckpt"
  for name in damaged:
    data = ckpt / f"{name}.data-00000-of-00001"
    with open(data, "r+b") as f:
      f.truncate(data.stat().st_size // 2)
  resumed = run_main(args)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  warnings = [line for line in resumed.stderr.splitlines() if "cannot be read" in line]
  assert len(warnings) == len(damaged)
  assert warnings[0].startswith(f"W run 0: checkpoint {ckpt}/ckpt-4 cannot be read (")
  assert resumed_line in warnings[0]
  for r in (0, 1):
    name = f"run_{r}/target_probs.npy"
    assert (tmp_path / "m" / name).read_bytes() == (uninterrupted / name).read_bytes()
