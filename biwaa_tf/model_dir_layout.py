"""The model_dir layout: every path a training writes, and the readers of its results.

    model_dir/
      flags.txt              the resolved configuration (a valid flagfile)
      class_names.json       the classes, in label order
      .lock                  held while a training runs there (train/lock.py)
      label_shift.json       the label-shift check's decision
      heldout_labels.npy     the held-out source split's labels (--heldout_fraction)
      source_only/           the label-shift check's source-only probe (a run directory)
      paper_run_0/           the paper's run 0, trained where the probe finds a shift (and
                             --label_shift_confirm_tv > 0) to confirm it; copied to run_0/
                             where it does not
      run_<r>/               run r:
        ckpt/                  checkpoints (train/checkpoints.py)
        tb/                    TensorBoard logs
        target_probs.npy       the target's probabilities (N x K)
        eval_probs.npy         --target_eval's, when it differs from the target
        heldout_probs.npy      the held-out source split's (not for runs trained on it)
        run_result.json        the run's accuracies and histograms (written last)
      export/                SavedModel of the returned model
      results.json           the training's summary (written last: its presence means done)

Training, the Python API, the demo and every tool name these paths through this module
only (no file name is spelled twice). Pure Python and NumPy: no TensorFlow.
"""

import glob
import os
import re

import numpy as np

from biwaa_tf.io_utils import read_json

FLAGS = "flags.txt"
CLASS_NAMES = "class_names.json"
LOCK = ".lock"
LABEL_SHIFT = "label_shift.json"
HELDOUT_LABELS = "heldout_labels.npy"
PROBE = "source_only"
CONFIRM = "paper_run_0"
EXPORT = "export"
RESULTS = "results.json"
# Inside a run directory.
CHECKPOINTS = "ckpt"
TENSORBOARD = "tb"
TARGET_PROBS = "target_probs.npy"
EVAL_PROBS = "eval_probs.npy"
HELDOUT_PROBS = "heldout_probs.npy"
RUN_RESULT = "run_result.json"
# Scratch names a kill can leave behind (removed when a training starts).
SCRATCH_PATTERNS = (".tmp-*", ".export-*")

_RUN = re.compile(r"run_(\d+)$")


def path(model_dir, name):
  """model_dir/name, for a name of this module (FLAGS, RESULTS, ...)."""
  return os.path.join(model_dir, name)


def run_name(run):
  """'run_<r>'."""
  return f"run_{run}"


def run_index(name):
  """r of 'run_<r>' (None for any other name, e.g. the probe's)."""
  m = _RUN.match(os.path.basename(name))
  return int(m.group(1)) if m else None


def run_dir(model_dir, run):
  """model_dir/run_<r>."""
  return os.path.join(model_dir, run_name(run))


def probe_dir(model_dir):
  """model_dir/source_only: the label-shift check's probe."""
  return os.path.join(model_dir, PROBE)


def confirm_dir(model_dir):
  """model_dir/paper_run_0: the paper's run 0 that confirms (or not) the probe's shift."""
  return os.path.join(model_dir, CONFIRM)


def run_dirs(model_dir):
  """The existing run_<r> directories, in run order."""
  found = [d for d in glob.glob(os.path.join(glob.escape(model_dir), "run_*"))
           if run_index(d) is not None and os.path.isdir(d)]
  return sorted(found, key=run_index)


def checkpoint_dir(run_directory):
  return os.path.join(run_directory, CHECKPOINTS)


def tensorboard_dir(run_directory):
  return os.path.join(run_directory, TENSORBOARD)


def is_done(model_dir):
  """Whether the training in model_dir finished (results.json exists)."""
  return os.path.exists(path(model_dir, RESULTS))


def read_results(model_dir):
  """results.json's summary."""
  return read_json(path(model_dir, RESULTS))


def read_run_result(run_directory):
  """A run's run_result.json."""
  return read_json(os.path.join(run_directory, RUN_RESULT))


def load_probs(run_directory, name=TARGET_PROBS):
  """A run's saved probabilities (TARGET_PROBS, EVAL_PROBS or HELDOUT_PROBS)."""
  return np.load(os.path.join(run_directory, name))


def load_heldout_probs(run_directory):
  """A run's probabilities on the held-out source split, or None where it has none (a run
  that trained on the split: the no-shift path's)."""
  found = os.path.join(run_directory, HELDOUT_PROBS)
  return np.load(found) if os.path.exists(found) else None
