"""Atomic file writes: a kill at any instant leaves the old or the new file.

A write that fails for want of space (or quota, or a read-only disk) ends in a
StorageError: one line naming the path, what was written and the free space found.
"""

import contextlib
import errno
import io
import json
import os
import shutil
import sys
import tempfile

import numpy as np

from biwaa_tf.errors import StorageError

# errno values that mean "the disk would not take it", and their wording.
_STORAGE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                   errno.EFBIG: "file too large for the file system or ulimit -f",
                   errno.EROFS: "read-only file system", errno.EIO: "input/output error"}
# The same as TensorFlow's C++ file system words them in its errors: strerror's text.
_TF_WORDINGS = {os.strerror(code): reason for code, reason in _STORAGE_ERRNOS.items()}


def format_bytes(n):
  for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
    if abs(n) < 1024 or unit == "TiB":
      return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
    n /= 1024.0


def free_bytes(path):
  """Free bytes on the file system that holds `path` (or its nearest existing parent)."""
  path = os.path.abspath(os.fspath(path))
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return shutil.disk_usage(path).free


def storage_reason(exc):
  """The wording of a write error caused by the disk, or None for any other error."""
  if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
    return _STORAGE_ERRNOS[exc.errno]
  tf = sys.modules.get("tensorflow")  # TensorFlow's errors, when it is loaded
  if tf is not None and isinstance(exc, tf.errors.OpError):
    for words, reason in _TF_WORDINGS.items():
      if words in str(exc):
        return reason
  return None


@contextlib.contextmanager
def storage_errors(path, what=None, need=None, hint=""):
  """Turns a disk-caused write error inside the block into a one-line StorageError:
  '<path>: no space left on device[ while writing <what>] (<free> free[, about <need>
  needed])[; <hint>]'. Other errors pass through."""
  try:
    yield
  except Exception as e:  # noqa: BLE001 (re-raised unless the disk caused it)
    reason = storage_reason(e)
    if reason is None:
      raise
    needed = f", about {format_bytes(need)} needed" if need else ""
    writing = f" while writing {what}" if what else ""
    raise StorageError(f"{path}: {reason}{writing} "
                       f"({format_bytes(free_bytes(path))} free{needed})"
                       + (f"; {hint}" if hint else "")) from None


def atomic_write_bytes(path, data):
  path = os.fspath(path)
  with storage_errors(path, need=len(data)):
    _atomic_write_bytes(path, data)


def _atomic_write_bytes(path, data):
  directory = os.path.dirname(path) or "."
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
  umask = os.umask(0)
  os.umask(umask)
  os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would make outputs private
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_text(path, text):
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_npy(path, array):
  buf = io.BytesIO()
  np.save(buf, array)
  atomic_write_bytes(path, buf.getvalue())


def read_json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)
