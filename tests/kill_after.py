"""Test helper: the command line, killed with SIGKILL at a chosen point.

    python tests/kill_after.py R:N|R:done [biwaa_tf.main arguments ...]

R:N kills the process right after step N of run R has been handled (logs,
checkpoint); R:done right after run R has completed (its run_result.json written). R is
a run index, or the name of the run's directory (paper_run_0: the run that confirms the
label-shift check's finding, also run 0).
The kill is a Keras callback and a wrapper of train_run: nothing of it is in the
library.
"""

import os
import signal
import sys

import biwaa_tf  # noqa: F401  (before TensorFlow: keeps its start-up lines quiet)

# isort: split
import keras

from biwaa_tf import main
from biwaa_tf.train import run as run_lib

RUN, AT = sys.argv.pop(1).split(":")


class KillAfterStep(keras.callbacks.Callback):
  def __init__(self, chosen):
    super().__init__()
    self.chosen = chosen

  def on_train_batch_end(self, batch, logs=None):
    if self.chosen and AT != "done" and int(self.model.step.numpy()) == int(AT):
      os.kill(os.getpid(), signal.SIGKILL)


_train_run = run_lib.train_run


def train_run(cfg, domains, run, run_dir, *args, callbacks=None, **kwargs):
  chosen = RUN == os.path.basename(run_dir) if not RUN.isdigit() else run == int(RUN)
  result = _train_run(cfg, domains, run, run_dir, *args,
                      callbacks=list(callbacks or []) + [KillAfterStep(chosen)], **kwargs)
  if AT == "done" and chosen:
    os.kill(os.getpid(), signal.SIGKILL)
  return result


run_lib.train_run = train_run

if __name__ == "__main__":
  sys.exit(main.run(sys.argv))
