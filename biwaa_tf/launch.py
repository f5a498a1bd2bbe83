"""The one launch path: model_dir check -> determinism -> strategy -> dry run or training.

The command line (main.py, and the demo through it), `adapt()` and the estimator (api.py)
all build a TrainConfig and its Domains, then call `launch` inside `process_scope`.
Every process-global setting a training touches is set here and put back by the scope.
"""

import contextlib
import logging
import random
import sys

import numpy as np

from biwaa_tf.errors import UserError

log = logging.getLogger(__name__)

# The process-global state before TensorFlow is imported (what a scope entered before
# TensorFlow loads puts back once a training has loaded it).
_TF_DEFAULTS = {"policy": "float32", "seed": None, "determinism": False}
_LOGGERS = ("", "biwaa_tf", "tensorflow", "absl")  # "": the root logger


def import_tensorflow():
  """TensorFlow, or a one-line error saying how to install it."""
  try:
    import tensorflow as tf
  except ModuleNotFoundError as e:
    if e.name != "tensorflow":
      raise
    raise UserError("TensorFlow is not installed: pip install 'biwaa_tf[cpu]', or "
                    "'biwaa_tf[cuda]' for NVIDIA GPUs (-e '.[cpu]' in a clone)") from None
  return tf


def _tf_state():
  """Keras' dtype policy, TensorFlow's global seed and op determinism (None where
  TensorFlow has not been imported: nothing of it is set yet)."""
  if "tensorflow" not in sys.modules:
    return None
  import keras

  from biwaa_tf.model import keras_hooks
  try:  # TensorFlow has no public getters for its global seed and op determinism
    seed, determinism = keras_hooks.global_seed(), keras_hooks.op_determinism_enabled()
  except (ImportError, AttributeError):
    seed, determinism = None, None
  return {"policy": keras.mixed_precision.global_policy().name, "seed": seed,
          "determinism": determinism}


def _restore_tf_state(state):
  if "tensorflow" not in sys.modules:
    return
  import keras
  import tensorflow as tf
  state = state or _TF_DEFAULTS
  keras.mixed_precision.set_global_policy(state["policy"])
  tf.random.set_seed(state["seed"])
  if state["determinism"] is False:
    from biwaa_tf.model import keras_hooks
    if keras_hooks.op_determinism_enabled():
      keras_hooks.disable_op_determinism()


@contextlib.contextmanager
def process_scope(verbose=True):
  """Sets the logging a training wants and, on exit, puts back every process-global
  setting a training changes: Keras' dtype policy, the random states (Python's, NumPy's,
  TensorFlow's seed), TensorFlow's op determinism, the backbone registry and the loggers.
  (TensorFlow's inter-op threads, which --deterministic sets to 1 when it can, cannot be
  set back once TensorFlow runs.) TensorFlow is not imported here: the command line checks
  flags, lists and images before it loads."""
  from biwaa_tf import quiet
  from biwaa_tf.model import backbones
  tf_state = _tf_state()
  python_state, numpy_state = random.getstate(), np.random.get_state()
  registry = dict(backbones.BACKBONES), dict(backbones.NORMALIZATION)
  loggers = {name: logging.getLogger(name or None) for name in _LOGGERS}
  logging_state = {name: (lg.level, list(lg.handlers), lg.propagate)
                   for name, lg in loggers.items()}
  # A handler on the root logger for the call: a module-level logging.info() inside
  # TensorFlow or absl (a checkpoint save's) would otherwise run logging.basicConfig,
  # and its StreamHandler would print every propagating record ("INFO:tensorflow:...").
  # Python's own last resort (warnings and errors, message only) prints as without it.
  if not loggers[""].handlers:
    loggers[""].addHandler(logging.lastResort)
  if verbose:
    quiet.configure_logging()
  else:  # TensorFlow's INFO lines ("Assets written to ...") stay off a quiet call
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
  try:
    yield
  finally:
    _restore_tf_state(tf_state)
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    for table, saved in zip((backbones.BACKBONES, backbones.NORMALIZATION), registry):
      table.clear()
      table.update(saved)
    for name, (level, handlers, propagate) in logging_state.items():
      loggers[name].setLevel(level)
      loggers[name].handlers[:] = handlers
      loggers[name].propagate = propagate


def set_determinism(cfg):
  """--deterministic: TensorFlow's op determinism and one inter-op thread (with several,
  1 of 3 concurrent trainings on a loaded machine drifted from its twins)."""
  if not cfg.deterministic:
    return
  tf = import_tensorflow()
  tf.config.experimental.enable_op_determinism()
  try:
    tf.config.threading.set_inter_op_parallelism_threads(1)
  except RuntimeError:  # TensorFlow's runtime already started (a second training, a notebook)
    if tf.config.threading.get_inter_op_parallelism_threads() != 1:
      log.warning("--deterministic: TensorFlow started before the training could give it "
                  "one inter-op thread; under CPU load the bits may differ (call "
                  "tf.config.threading.set_inter_op_parallelism_threads(1) first)")


def make_strategy(cfg):
  """The strategy --distribution_strategy and --cpu_replicas call for; refused in one line
  when TensorFlow's devices were set up before the CPU could be split."""
  tf = import_tensorflow()
  from biwaa_tf.train import distribute
  try:
    distribute.configure_cpu_replicas(cfg.cpu_replicas)
  except RuntimeError:
    if len(tf.config.list_logical_devices("CPU")) != cfg.cpu_replicas:
      raise UserError(f"--cpu_replicas={cfg.cpu_replicas}: TensorFlow's devices were set up "
                      "before this training (split the CPU first: tf.config.set_logical_"
                      "device_configuration, or use the command line)") from None
  return distribute.make_strategy(cfg.distribution_strategy)


def launch(cfg, domains, strategy=None, callbacks=None):
  """Checks model_dir (busy or foreign: refused before TensorFlow starts), sets
  determinism, makes the strategy (unless given), then either runs every check of a
  real training and returns the plan (text, --dry_run) or trains: returns the summary
  (results.json's; None on a non-chief worker)."""
  from biwaa_tf.train import preflight
  preflight.check_model_dir(cfg)  # (reads only: a dry run checks it too)
  import_tensorflow()
  from biwaa_tf.train import iterative
  set_determinism(cfg)
  # The strategy before anything else of TensorFlow's: collective ops must be set up first.
  strategy = strategy or make_strategy(cfg)
  if cfg.dry_run:
    iterative.check(cfg, strategy, domains)  # the devices, the backbone and its weights
    return preflight.plan(cfg, domains)
  return iterative.train(cfg, strategy, domains, callbacks=callbacks)
