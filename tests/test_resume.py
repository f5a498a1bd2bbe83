"""Kill training with SIGKILL at several points, damage its checkpoints, fill its disk:
resume, and lose nothing."""

import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, run_main, tiny_flags

# One worker runs this module under -n 2 (pyproject: --dist=loadgroup), so its
# module-scoped training fixture runs once, not once per worker.
pytestmark = [pytest.mark.xdist_group("resume"), pytest.mark.slow]

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


@pytest.mark.parametrize("kill_after", ["paper_run_0:4", "paper_run_0:done", "decision"])
def test_a_kill_in_the_run_that_confirms_a_shift_resumes_bit_exact(tiny_domains, tmp_path,
                                                                   uninterrupted, kill_after):
  """The probe finds a shift (threshold 0), the paper's run 0 does not confirm it (1): a kill
  while it trains, after it (before the decision is written) or after the decision (before
  run 0's copy: what a finished training less its runs looks like) resumes to the paper's
  runs' bits."""
  root, src, tgt = tiny_domains
  m = tmp_path / "m"
  args = tiny_flags(root, src, tgt, m, *FLAGS, "--label_shift_check",
                    "--label_shift_threshold=0", "--label_shift_confirm_tv=1")
  if kill_after == "decision":
    assert run_main(args).returncode == 0
    for name in ("run_0", "run_1", "export"):
      shutil.rmtree(m / name)
    (m / "results.json").unlink()
  else:
    killed = subprocess.run([sys.executable, os.path.join("tests", "kill_after.py"),
                             kill_after, *args], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9
    assert not (m / "label_shift.json").exists()
  resumed = run_main(args)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert ("run 0: resumed from" in resumed.stderr) is kill_after.endswith(":4")
  assert "not confirmed, no label shift found" in resumed.stderr
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
    # (Both damaged, the run starts again from step 0: test_faults, resume_point.)
    (("ckpt-4",), "cannot be read (Read less bytes than requested): removed; resuming from "),
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


def _mount_tmpfs(path, size):
  path.mkdir()
  res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)
  return res.returncode == 0


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                    reason="mounting a small file system needs root on Linux")
def test_a_full_disk_end_to_end_stops_in_one_line_and_resumes_bit_exact(tiny_domains,
                                                                       tmp_path, uninterrupted):
  """A real 40 MiB file system: run 0's two checkpoints and run 1's first fit, its
  second does not (a lenet checkpoint is 14.5 MiB); after the space is grown, the same
  command resumes and ends with the bits of a training on a roomy disk."""
  root, src, tgt = tiny_domains
  disk = tmp_path / "disk"
  if not _mount_tmpfs(disk, "40m"):
    pytest.skip("mount -t tmpfs is not permitted here")
  try:
    full = run_main(tiny_flags(root, src, tgt, disk / "m", *FLAGS))
    assert full.returncode == 1, full.stderr[-2000:]
    errors = [line for line in full.stderr.splitlines() if not line.startswith(("I ", "W "))]
    assert len(errors) == 1, full.stderr
    assert errors[0].startswith(f"error: {disk}/m/run_1/ckpt: no space left on device "
                                "while writing the checkpoint of step")
    assert "is kept; free space and re-run the same command to resume" in errors[0]
    warned = [line for line in full.stderr.splitlines() if "free under" in line]
    assert warned and warned[0].startswith("W run 0: 40.0 MiB free under")  # warned early
    assert not glob.glob(str(disk / "**" / "*_temp"), recursive=True)
    assert not glob.glob(str(disk / "**" / ".tmp-*"), recursive=True)
    subprocess.run(["mount", "-o", "remount,size=200m", str(disk)], check=True)
    resumed = run_main(tiny_flags(root, src, tgt, disk / "m", *FLAGS))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for r in (0, 1):  # the bits of the training on a roomy disk
      name = f"run_{r}/target_probs.npy"
      assert (disk / "m" / name).read_bytes() == (uninterrupted / name).read_bytes()
  finally:
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)
