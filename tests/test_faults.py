"""Faults of long trainings: a busy model_dir, full disks, damaged checkpoints, kills."""

import errno
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import BIWAA_TF, REPO, run_main, tiny_flags

from biwaa_tf import io_utils
from biwaa_tf.errors import StorageError, UserError
from biwaa_tf.train import checkpoints, lock

# ----- one training per model_dir -----

def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
  with lock.ModelDirLock(tmp_path / "m"):
    with pytest.raises(lock.ModelDirBusy) as e:
      lock.ModelDirLock(tmp_path / "m").acquire()
    message = str(e.value)
    assert f"pid {os.getpid()} on {socket.gethostname()}, started 20" in message
    assert "\n" not in message
    with pytest.raises(lock.ModelDirBusy):
      lock.check_free(tmp_path / "m")
  lock.check_free(tmp_path / "m")  # released
  with lock.ModelDirLock(tmp_path / "m"):
    pass

pytestmark = pytest.mark.slow  # whole trainings: -m slow (CI runs them)


def test_the_lock_of_a_killed_process_does_not_block(tmp_path):
  code = ("import sys, time; sys.path.insert(0, sys.argv[2])\n"
          "from biwaa_tf.train import lock\n"
          "lock.ModelDirLock(sys.argv[1]).acquire(); print('locked', flush=True)\n"
          "time.sleep(600)\n")
  child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "m"), REPO],
                           stdout=subprocess.PIPE, text=True)
  try:
    assert child.stdout.readline().strip() == "locked"
    with pytest.raises(lock.ModelDirBusy, match=f"pid {child.pid} on"):
      lock.check_free(tmp_path / "m")
  finally:
    child.send_signal(signal.SIGKILL)
    child.wait()
  with lock.ModelDirLock(tmp_path / "m"):  # the dead holder left the file, not the lock
    pass


def test_a_busy_model_dir_is_refused_by_the_cli_overwrite_and_adapt(tiny_domains, tmp_path):
  root, src, tgt = tiny_domains
  model_dir = tmp_path / "m"
  model_dir.mkdir()
  (model_dir / "flags.txt").write_text("--runs=1\n")  # another training's, say
  with lock.ModelDirLock(model_dir):
    for extra, doing in (((), "not starting a second training there"),
                         (("--overwrite",), "not overwriting it")):
      res = run_main(tiny_flags(root, src, tgt, model_dir, *extra))
      assert res.returncode == 2
      lines = res.stderr.strip().splitlines()
      assert lines == [f"error: {model_dir} is in use by another training (pid {os.getpid()} "
                       f"on {socket.gethostname()}, started {lines[0].split('started ')[1]}"]
      assert doing in lines[0]
    assert (model_dir / "flags.txt").read_text() == "--runs=1\n"  # --overwrite deleted nothing
    tool = subprocess.run([BIWAA_TF, "heatmap",
                           f"--model_dir={model_dir}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert tool.returncode == 2
    assert tool.stderr.strip().splitlines() == [
        f"error: {model_dir} is in use by another training (pid {os.getpid()} on "
        f"{socket.gethostname()}, started {lines[0].split('started ')[1].split(')')[0]}); "
        "not writing heatmap.png there: wait for it to end, or use another model_dir"]
    import biwaa_tf
    x = np.zeros((12, 28, 28, 1), np.uint8)
    with pytest.raises(lock.ModelDirBusy, match="in use by another training"):
      biwaa_tf.adapt((x, np.arange(12) % 3), x, model_dir=str(model_dir), backbone="lenet",
                     backbone_weights="none", image_size=28, resize_size=28,
                     random_flip=False, batch_size=6, steps_per_run=2, verbose=False,
                     label_shift_check=False)


# ----- full disks -----

def test_atomic_write_on_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "results.json"
  io_utils.atomic_write_json(path, {"old": 1})

  def no_space(fd):
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(os, "fsync", no_space)
  with pytest.raises(StorageError) as e:
    io_utils.atomic_write_json(path, {"new": 2})
  assert str(e.value).startswith(f"{path}: no space left on device (")
  assert " free, about 15 bytes needed)" in str(e.value)
  assert e.value.exit_status == 1
  assert path.read_text() == '{\n  "old": 1\n}\n'
  assert sorted(os.listdir(tmp_path)) == ["results.json"]  # no .tmp- file left


def test_other_write_errors_are_not_disguised_as_storage_errors(tmp_path, monkeypatch):
  def denied(fd):
    raise PermissionError(errno.EACCES, "Permission denied")
  monkeypatch.setattr(os, "fsync", denied)
  with pytest.raises(PermissionError):
    io_utils.atomic_write_json(tmp_path / "x.json", {})


def _manager(directory):
  v = tf.Variable(np.arange(1000, dtype=np.float32))
  return v, tf.train.CheckpointManager(tf.train.Checkpoint(v=v), str(directory), max_to_keep=2)


def test_a_checkpoint_the_disk_refuses_leaves_nothing_and_keeps_the_last(tmp_path, monkeypatch):
  v, manager = _manager(tmp_path / "ckpt")
  checkpoints.save(manager, 3)
  real_save = tf.train.CheckpointManager.save

  def full_disk(self, checkpoint_number=None):
    # What TensorFlow leaves when the disk fills in the middle of a save.
    os.makedirs(os.path.join(self.directory, f"ckpt-{checkpoint_number}_temp"))
    with open(os.path.join(self.directory, f"ckpt-{checkpoint_number}.index"), "wb") as f:
      f.write(b"partial")
    raise tf.errors.ResourceExhaustedError(
        None, None, f"{self.directory}/ckpt-6_temp/part-00000-of-00001.data-00000-of-00001.tem"
        "pstate123; No space left on device")
  monkeypatch.setattr(tf.train.CheckpointManager, "save", full_disk)
  with pytest.raises(StorageError) as e:
    checkpoints.save(manager, 6, need=4096)
  assert str(e.value).startswith(
      f"{tmp_path / 'ckpt'}: no space left on device while writing the checkpoint of step 6 (")
  assert str(e.value).endswith(
      f" free, about 4.0 KiB needed); the last good checkpoint ({tmp_path / 'ckpt'}/ckpt-3) "
      "is kept; free space and re-run the same command to resume")
  assert sorted(os.listdir(tmp_path / "ckpt")) == [
      "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
  monkeypatch.setattr(tf.train.CheckpointManager, "save", real_save)
  assert checkpoints.resume_point(str(tmp_path / "ckpt"), 0) == str(tmp_path / "ckpt" / "ckpt-3")


# ----- damaged checkpoints -----

def _truncate(prefix):
  data = glob.glob(prefix + ".data-*")[0]
  with open(data, "r+b") as f:
    f.truncate(os.path.getsize(data) // 2)


def test_resume_point_skips_damaged_checkpoints_and_repairs_the_list(tmp_path, caplog):
  v, manager = _manager(tmp_path / "ckpt")
  for step in (3, 6):
    v.assign_add(tf.ones_like(v))
    checkpoints.save(manager, step)
  ckpt_dir = str(tmp_path / "ckpt")
  os.makedirs(os.path.join(ckpt_dir, "ckpt-9_temp"))  # an interrupted save
  _truncate(os.path.join(ckpt_dir, "ckpt-6"))
  assert checkpoints.damage(os.path.join(ckpt_dir, "ckpt-6")) == "Read less bytes than requested"
  assert checkpoints.resume_point(ckpt_dir, 2) == os.path.join(ckpt_dir, "ckpt-3")
  assert [r.getMessage() for r in caplog.records] == [
      f"run 2: checkpoint {ckpt_dir}/ckpt-6 cannot be read (Read less bytes than requested): "
      f"removed; resuming from {ckpt_dir}/ckpt-3"]
  assert sorted(os.listdir(ckpt_dir)) == ["checkpoint", "ckpt-3.data-00000-of-00001",
                                          "ckpt-3.index"]
  assert tf.train.latest_checkpoint(ckpt_dir) == os.path.join(ckpt_dir, "ckpt-3")
  # The manager continues from there, and the values are ckpt-3's.
  v2, manager2 = _manager(tmp_path / "ckpt")
  tf.train.Checkpoint(v=v2).restore(os.path.join(ckpt_dir, "ckpt-3"))
  np.testing.assert_array_equal(v2.numpy(), np.arange(1000, dtype=np.float32) + 1)
  # A corrupted byte (checksum) and a truncated index count as damage too.
  with open(os.path.join(ckpt_dir, "ckpt-3.data-00000-of-00001"), "r+b") as f:
    f.seek(100)
    f.write(b"\xff" * 4)
  assert "Checksum does not match" in checkpoints.damage(os.path.join(ckpt_dir, "ckpt-3"))
  assert checkpoints.resume_point(ckpt_dir, 2) is None
  assert os.listdir(ckpt_dir) == []


def test_restore_of_a_damaged_finished_run_names_the_file(tmp_path):
  v, manager = _manager(tmp_path / "run_0" / "ckpt")
  checkpoints.save(manager, 6)
  prefix = str(tmp_path / "run_0" / "ckpt" / "ckpt-6")
  _truncate(prefix)
  with pytest.raises(UserError) as e:
    checkpoints.restore_weights(tf.train.Checkpoint(v=v), str(tmp_path / "run_0" / "ckpt"))
  assert str(e.value) == (
      f"{prefix}: the checkpoint cannot be read (Read less bytes than requested); to rebuild "
      f"it, delete {tmp_path}/run_0/run_result.json and re-run the training command (it "
      "resumes from the newest readable checkpoint)")


# ----- repeated kills -----

def test_repeated_kills_end_bit_identical(tiny_domains, tmp_path):
  """tools/dev/kill_resume.py: 3 SIGKILLs at seeded random moments of a 2-run training (the
  seed's plan: a checkpoint write, an evaluation, the export; each one reachable after
  the one before; a kill between runs: test_resume's 0:done); the resumed outputs equal
  the uninterrupted ones."""
  root, src, tgt = tiny_domains
  args = tiny_flags(root, src, tgt, "unused", "--runs=2", "--steps_per_run=6",
                    "--checkpoint_every=2")
  args = [a for a in args if not a.startswith(("--model_dir", "--noprogress"))]
  res = subprocess.run([sys.executable, "-m", "tools.dev.kill_resume", "--kills=3",
                        "--seed=288", f"--work={tmp_path / 'kill'}", "--", *args], cwd=REPO,
                       capture_output=True, text=True, timeout=900)
  print(res.stdout)
  assert res.returncode == 0, res.stdout + res.stderr[-2000:]
  assert "max difference from the uninterrupted training: 0.0" in res.stdout
  landed = [line for line in res.stdout.splitlines() if ": landed " in line]
  assert len(landed) == 3
  assert res.stderr == ""
  shutil.rmtree(tmp_path / "kill")
