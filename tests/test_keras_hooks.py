"""The private Keras / TensorFlow hooks biwaa_tf relies on still exist (model/keras_hooks.py):
an upgrade that removes one fails here, naming it, before any training breaks."""

import pytest

from biwaa_tf.model import keras_hooks


@pytest.mark.parametrize("name, lookup", keras_hooks.HOOKS, ids=[h[0] for h in keras_hooks.HOOKS])
def test_private_hook_exists(name, lookup):
  try:
    found = lookup()
  except (AttributeError, ImportError) as e:
    pytest.fail(f"{name} is gone in this TensorFlow/Keras ({e}); see model/keras_hooks.py")
  assert found is not None or name.endswith("_seed"), name


def test_hooks_do_what_the_code_needs():
  import keras
  import tensorflow as tf
  inner = keras.Sequential([keras.layers.Dense(2), keras.layers.BatchNormalization()])
  outer = keras.Sequential([inner, keras.layers.Dense(1)])
  names = [type(layer).__name__ for layer in keras_hooks.all_layers(outer)]
  assert names.count("BatchNormalization") == 1 and names.count("Dense") == 2
  before = keras_hooks.global_seed()
  tf.random.set_seed(1234)
  try:
    assert keras_hooks.global_seed() == 1234
  finally:
    tf.random.set_seed(before)
  f = keras_hooks.traced_once_per_model(tf.function(lambda x: x + 1))
  assert f._omit_frequent_tracing_warning is True
  assert isinstance(keras_hooks.op_determinism_enabled(), bool)
