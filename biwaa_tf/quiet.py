"""TensorFlow's start-up chatter kept off the user's console.

TensorFlow 2.21 writes, at import and whatever TF_CPP_MIN_LOG_LEVEL says, lines
such as

  WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
  I0000 00:00:... port.cc:153] oneDNN custom operations are on. ...

straight to file descriptor 2 from C++ (on CPUs where oneDNN is on: AVX-512 VNNI,
AMX). `install()` (called by `import biwaa_tf`) arranges that the first import
of `tensorflow` in the process runs with descriptor 2 captured; afterwards the
captured text is written back to stderr without the known start-up lines, so a
genuine warning or error of TensorFlow's still reaches the user.
"""

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

# Lines TensorFlow, XLA and absl print on start-up that tell the user nothing actionable.
NOISE = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"\] oneDNN custom operations are on",
    r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
    r"^To enable the following instructions: .* rebuild TensorFlow",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation_placer\.cc:\d+\] computation placer already registered",
    r"cuda_executor\.cc:\d+\] could not open file to read NUMA node",
    r"TF-TRT Warning: Could not find TensorRT",
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine",
    r"^E0000 00:00:.*Unable to register",
]))


def filter_noise(text):
  """`text` without TensorFlow's start-up lines (the other lines in their order)."""
  kept = [line for line in text.splitlines(keepends=True) if not NOISE.search(line)]
  return "".join(kept)


class _CapturedStderr:
  """Descriptor 2 goes to a temporary file inside the block; the kept text is re-emitted."""

  def __enter__(self):
    sys.stderr.flush()
    self._file = tempfile.TemporaryFile()
    self._saved = os.dup(2)
    os.dup2(self._file.fileno(), 2)
    return self

  def __exit__(self, *exc):
    try:
      sys.stderr.flush()
    finally:
      os.dup2(self._saved, 2)
      os.close(self._saved)
    self._file.seek(0)
    text = filter_noise(self._file.read().decode("utf-8", errors="replace"))
    self._file.close()
    if text:
      sys.stderr.write(text)
      sys.stderr.flush()
    return False


class _QuietLoader(importlib.abc.Loader):
  def __init__(self, loader):
    self._loader = loader

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    with _CapturedStderr():
      self._loader.exec_module(module)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
  """Finds `tensorflow` once, through the other finders, with a quiet loader."""

  def find_spec(self, name, path=None, target=None):
    if name != "tensorflow":
      return None
    uninstall()
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


_FINDER = _QuietTensorFlowFinder()


def install():
  """Quiets the process's first `import tensorflow` (no-op once it is imported)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's INFO and WARNING logs
  if "tensorflow" not in sys.modules and _FINDER not in sys.meta_path:
    sys.meta_path.insert(0, _FINDER)


def uninstall():
  if _FINDER in sys.meta_path:
    sys.meta_path.remove(_FINDER)


def configure_logging():
  """Our lines ('I message', 'W message') on stderr, from the biwaa_tf loggers only: their
  own handler and level, so absl's flag parsing (which resets the root logger's level)
  and TensorFlow's Python-side INFO lines change nothing. Idempotent."""
  import logging
  logger = logging.getLogger("biwaa_tf")
  logger.setLevel(logging.INFO)
  logger.propagate = False
  if not logger.handlers:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname).1s %(message)s"))
    logger.addHandler(handler)
  for chatty in ("tensorflow", "absl"):  # TensorFlow's Python-side INFO lines
    logging.getLogger(chatty).setLevel(logging.WARNING)
