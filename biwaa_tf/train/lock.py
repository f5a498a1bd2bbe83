"""One training per model_dir: an OS file lock held for the life of a training.

`ModelDirLock(model_dir)` takes an exclusive `flock` on `model_dir/.lock` and writes
its holder there (pid, host, start time) for the message a second training gets. The
operating system releases the lock when the holder's process ends, however it ends
(SIGKILL, a crash, a dead node's local disk): a lock left by a dead process never
blocks a resume, and there is no stale-lock guess to get wrong.

On a network file system, Linux carries `flock` as a POSIX lock through the NFS lock
manager (NFSv4, or v3 with lockd): it holds across hosts; a dead client's lock is
released when its lease expires (about 90 s on NFSv4). An NFS mount with `nolock` or
`local_lock=all` keeps the lock local to each host: two hosts could then both train in
one model_dir (README, "Long trainings").

Nothing here imports TensorFlow.
"""

import datetime
import errno
import fcntl
import json
import os
import socket

from biwaa_tf import model_dir_layout as layout
from biwaa_tf.errors import UserError


class ModelDirBusy(UserError):
  """Another process holds the model_dir's lock."""


def _holder_text(path):
  try:
    with open(path, encoding="utf-8") as f:
      h = json.load(f)
    return f"pid {h['pid']} on {h['host']}, started {h['started']}"
  except (OSError, ValueError, KeyError, TypeError):
    return "a process that has not written its name yet"


def _busy_message(model_dir, path, doing):
  return (f"{model_dir} is in use by another training ({_holder_text(path)}); "
          f"not {doing}: wait for it to end, or use another model_dir")


def check_free(model_dir, doing="starting a second training there"):
  """Raises ModelDirBusy if a live process holds model_dir's lock; writes nothing."""
  path = layout.path(model_dir, layout.LOCK)
  try:
    fd = os.open(path, os.O_RDWR)
  except OSError:  # no lock file: nobody has ever held it (a holder creates it)
    return
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      raise ModelDirBusy(_busy_message(model_dir, path, doing)) from None
    raise
  finally:
    os.close(fd)  # closing releases a lock this probe took


class ModelDirLock:
  """Context manager: holds model_dir's lock (creating model_dir) or raises ModelDirBusy."""

  def __init__(self, model_dir, doing="starting a second training there"):
    self.model_dir = os.fspath(model_dir)
    self.path = layout.path(self.model_dir, layout.LOCK)
    self.doing = doing
    self._fd = None

  def acquire(self):
    os.makedirs(self.model_dir, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise ModelDirBusy(_busy_message(self.model_dir, self.path, self.doing)) from None
      raise
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started})
    os.ftruncate(fd, 0)
    os.pwrite(fd, (holder + "\n").encode(), 0)
    self._fd = fd
    return self

  def release(self):
    if self._fd is not None:
      os.close(self._fd)  # releases the flock; the file stays (its inode is the lock)
      self._fd = None

  @property
  def held(self):
    return self._fd is not None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
