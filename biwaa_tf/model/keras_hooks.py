"""Every private Keras / TensorFlow hook biwaa_tf relies on, in one place, with why.

A TensorFlow or Keras upgrade may remove any of them; tests/test_keras_hooks.py looks each
one up and fails naming it, so that the upgrade breaks a test, not a training.

  keras.Model._maybe_symbolic_build   overridden by BIWAAModel (model/keras_training.py):
                                      under a strategy Keras draws a batch from a new
                                      iterator to build the model; ours is built already.
  tf.function's _omit_frequent_tracing_warning
                                      each model traces its step once by design (a run a
                                      model, a notebook's adapt() after adapt()).
  tf.__internal__.distribute.interim.maybe_merge_call
                                      float16's skipped steps: as Keras' LossScaleOptimizer.
  keras Layer._flatten_layers         every nested layer of a user's backbone (batch norms
                                      inside nested models; model/backbones.py).
  TensorFlow's eager context._seed, framework config's op-determinism getters
                                      adapt() puts the global seed and op determinism back
                                      (no public getters; launch.process_scope).
"""

import keras
import tensorflow as tf

# (what, how to find it): tests/test_keras_hooks.py checks each.
HOOKS = (
    ("keras.Model._maybe_symbolic_build", lambda: keras.Model._maybe_symbolic_build),
    ("keras.layers.Layer._flatten_layers", lambda: keras.layers.Layer._flatten_layers),
    ("tf.__internal__.distribute.interim.maybe_merge_call",
     lambda: tf.__internal__.distribute.interim.maybe_merge_call),
    ("tensorflow.python.eager.context.context()._seed",
     lambda: _private("tensorflow.python.eager.context").context()._seed),
    ("tensorflow.python.framework.config.is_op_determinism_enabled",
     lambda: _private("tensorflow.python.framework.config").is_op_determinism_enabled),
    ("tensorflow.python.framework.config.disable_op_determinism",
     lambda: _private("tensorflow.python.framework.config").disable_op_determinism),
    ("tf.function's _omit_frequent_tracing_warning (read by TensorFlow's tracing)",
     lambda: _tracing_warning_flag_read()),
)


def _private(module):
  import importlib
  return importlib.import_module(module)


def _tracing_warning_flag_read():
  """The name TensorFlow's retracing warning checks, found in its source (the attribute
  is read, not defined: setting a name TensorFlow no longer reads would pass silently)."""
  import inspect
  module = _private("tensorflow.python.eager.polymorphic_function.polymorphic_function")
  if "_omit_frequent_tracing_warning" not in inspect.getsource(module):
    raise AttributeError("_omit_frequent_tracing_warning")
  return True


def traced_once_per_model(function):
  """`function` (a tf.function) without TensorFlow's "excessive retracing" warning.

  Each model traces its step function once, by design: a training builds a model per
  run, and a notebook calls adapt() again and again. TensorFlow counts the traces by
  the Python code across every model of the process and warns after five (a notebook's
  sixth adapt(), a 10-run training). It marks the functions it restores from a
  SavedModel the same way (saved_model/function_deserialization.py)."""
  function._omit_frequent_tracing_warning = True
  return function


def merge_call(fn, strategy, *args):
  """fn(strategy, *args) in a merge_call where the strategy needs one, else directly."""
  return tf.__internal__.distribute.interim.maybe_merge_call(fn, strategy, *args)


def all_layers(model):
  """Every layer of `model`, nested models' included, the model itself first."""
  return model._flatten_layers(include_self=True, recursive=True)


def global_seed():
  """TensorFlow's global seed (tf.random.set_seed's), or None."""
  return getattr(_private("tensorflow.python.eager.context").context(), "_seed", None)


def op_determinism_enabled():
  return _private("tensorflow.python.framework.config").is_op_determinism_enabled()


def disable_op_determinism():
  _private("tensorflow.python.framework.config").disable_op_determinism()
