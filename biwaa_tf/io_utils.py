"""Atomic file writes: a kill at any instant leaves the old or the new file."""

import io
import json
import os
import tempfile

import numpy as np


def atomic_write_bytes(path, data):
  path = os.fspath(path)
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
