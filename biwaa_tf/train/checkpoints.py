"""A run's checkpoints through kills, damage and full disks.

- `resume_point` picks the newest checkpoint whose every tensor reads back (TensorFlow
  verifies each tensor's checksum on reading), removing the leftovers of interrupted
  saves (`ckpt-N_temp/`, data without an index) and each damaged checkpoint newer than
  it, in one warning line each. Resuming from an older checkpoint gives the same bits
  as an uninterrupted training: every checkpoint holds the whole state of its step.
- `save` writes one, and on a write the disk refuses removes what it left and raises
  a one-line StorageError; the checkpoints before it stay as they were.
- `restore_weights` reads a finished run's weights, or names the file it cannot read.
"""

import glob
import logging
import math
import os
import re
import shutil

import tensorflow as tf

from biwaa_tf import errors, io_utils
from biwaa_tf import model_dir_layout as layout
from biwaa_tf.errors import UserError

log = logging.getLogger(__name__)

PREFIX = "ckpt"
STATE_FILE = "checkpoint"  # TensorFlow's list of a directory's checkpoints
_NUMBERED = re.compile(rf"^{PREFIX}-(\d+)\.index$")
_READ_ERRORS = (tf.errors.OpError, IndexError, ValueError, OSError)


def _numbers(ckpt_dir):
  """The numbers N of the ckpt-N.index files of ckpt_dir, newest first."""
  found = [_NUMBERED.match(n) for n in os.listdir(ckpt_dir)]
  return sorted((int(m.group(1)) for m in found if m), reverse=True)


def _prefix(ckpt_dir, number):
  return os.path.join(ckpt_dir, f"{PREFIX}-{number}")


def _remove_checkpoint(prefix):
  for path in glob.glob(glob.escape(prefix) + ".*"):
    os.remove(path)
  shutil.rmtree(prefix + "_temp", ignore_errors=True)


def check_input_position(prefix, run):
  """Refuses, in one line, a checkpoint of an earlier version that saved the input
  pipeline's iterator instead of the input position (it cannot resume here)."""
  names = tf.train.load_checkpoint(prefix).get_variable_to_dtype_map()
  if not any("input_position" in n for n in names):
    raise UserError(f"run {run}: checkpoint {prefix} was written by an earlier biwaa_tf "
                    "that recorded no input position, so this version cannot resume it "
                    "exactly; train into a new --model_dir (or finish it with that version)")


def damage(prefix):
  """Why checkpoint `prefix` cannot be restored (its index or any tensor unreadable, a
  checksum wrong), or None when every tensor reads back."""
  try:
    dtypes = tf.train.load_checkpoint(prefix).get_variable_to_dtype_map()
    keys = sorted(dtypes)  # every tensor read once
    with tf.device("/cpu:0"):
      tf.raw_ops.RestoreV2(prefix=prefix, tensor_names=keys, shape_and_slices=[""] * len(keys),
                           dtypes=[dtypes[k] for k in keys])
  except _READ_ERRORS as e:
    return errors.reason(e)
  return None


def remove_leftovers(ckpt_dir):
  """Removes what interrupted saves leave: ckpt-N_temp/ directories and data shards
  whose index was never written."""
  indexed = {_prefix(ckpt_dir, n) for n in _numbers(ckpt_dir)}
  for name in os.listdir(ckpt_dir):
    path = os.path.join(ckpt_dir, name)
    if name.startswith(f"{PREFIX}-") and name.endswith("_temp") and os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
    elif (name.startswith(f"{PREFIX}-") and ".data-" in name
          and path.split(".data-")[0] not in indexed):
      os.remove(path)


def _write_state(ckpt_dir, numbers):
  """TensorFlow's state file listing `numbers` (oldest first, relative names), or none."""
  path = os.path.join(ckpt_dir, STATE_FILE)
  if not numbers:
    if os.path.exists(path):
      os.remove(path)
    return
  lines = [f'model_checkpoint_path: "{PREFIX}-{numbers[-1]}"']
  lines += [f'all_model_checkpoint_paths: "{PREFIX}-{n}"' for n in numbers]
  io_utils.atomic_write_text(path, "\n".join(lines) + "\n")


def resume_point(ckpt_dir, run, repair=True):
  """The newest readable checkpoint of run `run` in ckpt_dir (its path prefix), or None.

  With `repair` (the chief), interrupted saves' leftovers and the damaged checkpoints
  are removed and TensorFlow's state file is rewritten to list the ones kept, so that a
  CheckpointManager made afterwards continues from the chosen one."""
  if not os.path.isdir(ckpt_dir):
    return None
  if repair:
    remove_leftovers(ckpt_dir)
  numbers = _numbers(ckpt_dir)
  chosen, damaged = None, []
  for n in numbers:
    reason = damage(_prefix(ckpt_dir, n))
    if reason is None:
      chosen = n
      break
    damaged.append((n, reason))
  then = (f"resuming from {_prefix(ckpt_dir, chosen)}" if chosen is not None
          else f"no readable checkpoint is left: run {run} starts again from step 0")
  for n, reason in damaged:
    removed = "removed; " if repair else ""
    log.warning("run %d: checkpoint %s cannot be read (%s): %s%s", run,
                _prefix(ckpt_dir, n), reason, removed, then)
    if repair:
      _remove_checkpoint(_prefix(ckpt_dir, n))
  state = tf.train.get_checkpoint_state(ckpt_dir)  # what the state file lists as newest
  listed = os.path.join(ckpt_dir, os.path.basename(state.model_checkpoint_path)) if (
      state and state.model_checkpoint_path) else None
  chosen_prefix = None if chosen is None else _prefix(ckpt_dir, chosen)
  moved = (listed is None) != (chosen_prefix is None) or (
      listed is not None and os.path.abspath(listed) != os.path.abspath(chosen_prefix))
  if repair and (damaged or moved):
    _write_state(ckpt_dir, sorted(k for k in numbers if chosen is not None and k <= chosen))
  return chosen_prefix


def save(manager, step, need=None):
  """manager.save(step); a write the disk refuses removes the partial checkpoint and
  raises a one-line StorageError (the earlier checkpoints stay)."""
  kept = manager.latest_checkpoint
  prefix = _prefix(manager.directory, step)
  try:
    with io_utils.storage_errors(
        manager.directory, f"the checkpoint of step {step}", need=need,
        hint=f"the last good checkpoint ({kept or 'none yet'}) is kept; free space and "
             "re-run the same command to resume"):
      manager.save(checkpoint_number=step)
  except BaseException:
    if prefix != manager.latest_checkpoint and prefix != kept:
      _remove_checkpoint(prefix)
    raise


def size_on_disk(prefix):
  """Bytes of checkpoint `prefix` (index and data)."""
  return sum(os.path.getsize(p) for p in glob.glob(glob.escape(prefix) + ".*"))


def variables_bytes(objects):
  """Bytes of the variables of the given trackables (deduplicated): a checkpoint's size
  before the first one is written (the input position is not counted)."""
  seen, total = set(), 0
  for obj in objects:
    for v in obj.variables:
      if id(v) not in seen:
        seen.add(id(v))
        total += math.prod(v.shape) * tf.as_dtype(v.dtype).size
  return total


def warn_if_short_of_space(run, ckpt_dir, checkpoint_bytes, other_bytes=0, keep=2):
  """Warns in one line when the disk under ckpt_dir has less free space than the run
  will write: `keep` checkpoints plus the one being written, and `other_bytes` (its
  predictions and export). Returns the bytes needed."""
  existing = sum(size_on_disk(_prefix(ckpt_dir, n)) for n in _numbers(ckpt_dir)) if (
      os.path.isdir(ckpt_dir)) else 0
  need = max(0, (keep + 1) * checkpoint_bytes - existing) + other_bytes
  free = io_utils.free_bytes(ckpt_dir)
  if free < need:
    log.warning("run %d: %s free under %s, the run needs about %s more (checkpoints of %s "
                "each, predictions, export); it will stop in one line if the disk fills, "
                "and resume once space is freed", run, io_utils.format_bytes(free), ckpt_dir,
                io_utils.format_bytes(need), io_utils.format_bytes(checkpoint_bytes))
  return need


def restore_weights(checkpoint, ckpt_dir):
  """Restores `checkpoint` (expect_partial) from ckpt_dir's newest checkpoint; a missing
  or unreadable one is a one-line UserError naming the file."""
  latest = tf.train.latest_checkpoint(ckpt_dir)
  if latest is None:
    raise UserError(f"{ckpt_dir}: no checkpoint")
  reason = damage(latest)
  if reason is not None:
    run_dir = os.path.dirname(os.path.abspath(ckpt_dir))
    raise UserError(f"{latest}: the checkpoint cannot be read ({reason}); to rebuild it, "
                    f"delete {os.path.join(run_dir, layout.RUN_RESULT)} and re-run the "
                    "training command (it resumes from the newest readable checkpoint)")
  checkpoint.restore(latest).expect_partial()
  return latest
