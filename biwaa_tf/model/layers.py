"""Layers of the peers' digits network (tllib's LeNet and heads), in Keras.

PyTorch's default initialisation (`torch_dense`, `torch_conv`), a grey-channel input
(`Grey`), and dropout inside a backbone whose masks a resume and N replicas draw as one
device does (`StatelessDropout`).

Keras' Dropout draws from a per-replica seed stream, so two replicas draw other masks
than one device on the global batch, and its stream position is not part of our
checkpoints. `StatelessDropout` instead draws each mask for the whole global batch from
(seed, training step, pass, layer) and keeps this replica's rows, as the discriminator's
dropout does. The training step says which step, pass and rows apply by entering
`masks(...)` around the forward pass; outside it (a user calling the backbone with
training=True) the layer falls back to TensorFlow's seeded random ops.
"""

import contextlib
import math
import threading

import keras
import tensorflow as tf

_context = threading.local()
_STREAM = 0x5EED  # apart from the discriminator's (seed, 2 * step + j) stream


def torch_init(fan_in):
  """PyTorch's default initialisers of Linear and Conv2d (kaiming_uniform with a = sqrt(5)
  for the weights: U(+-1/sqrt(fan_in)), and the same bound for the biases)."""
  bound = 1.0 / math.sqrt(fan_in)
  return {"kernel_initializer": keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in",
                                                                   "uniform"),
          "bias_initializer": keras.initializers.RandomUniform(-bound, bound)}


def torch_dense(units, fan_in, **kwargs):
  return keras.layers.Dense(units, **torch_init(fan_in), **kwargs)


def torch_conv(filters, kernel, channels_in, **kwargs):
  return keras.layers.Conv2D(filters, kernel, **torch_init(kernel * kernel * channels_in),
                             **kwargs)


@keras.saving.register_keras_serializable(package="biwaa_tf")
class Grey(keras.layers.Layer):
  """RGB -> one channel, the mean of the three: the grey image back from its replicated
  channels (the pipeline gives every image three), so that a network built for one
  channel trains as its authors built it."""

  def call(self, x):
    return tf.reduce_mean(x, axis=-1, keepdims=True)

  def compute_output_shape(self, input_shape):
    return (*input_shape[:-1], 1)


@contextlib.contextmanager
def masks(seed, step, rows, global_rows, pass_id=0):
  """Within this block (while a step is traced), StatelessDropout layers draw their
  masks for `global_rows` rows from (seed, step, pass_id, layer) and keep `rows`."""
  previous = getattr(_context, "value", None)
  _context.value = (seed, step, rows, global_rows, pass_id)
  try:
    yield
  finally:
    _context.value = previous


def keep_mask(seed, step, pass_id, layer_id, shape, rate):
  """1 where a unit is kept, 0 where dropped, for `shape` (global rows first): a pure
  function of its arguments (tested against a second draw and the keep rate)."""
  return _keep(_stream_key(seed, step, pass_id, layer_id), shape, rate)


def _stream_key(seed, step, pass_id, layer_id):
  return tf.stack([tf.constant(int(seed) * 1024 + _STREAM, tf.int64),
                   tf.cast(step, tf.int64) * 64 + pass_id * 16 + layer_id])


def _keep(key, shape, rate):
  return tf.cast(tf.random.stateless_uniform(shape, key) >= rate, tf.float32)


def dropout_rows(x, key, global_shape, rows, rate):
  """Dropout of `x`, this replica's `rows` of a global batch of `global_shape`, with the
  mask drawn for the whole global batch from the stateless `key` (the discriminator's
  and StatelessDropout's dropout: one device's masks on every replica)."""
  keep = tf.cast(tf.gather(_keep(key, global_shape, rate), rows), x.dtype)
  return x * keep / tf.cast(1.0 - rate, x.dtype)


@keras.saving.register_keras_serializable(package="biwaa_tf")
class StatelessDropout(keras.layers.Layer):
  """Dropout with rate `rate` on units (`channels=False`) or whole channels of a feature
  map (`channels=True`, PyTorch's Dropout2d); `layer_id` (0-15) tells a model's dropout
  layers apart."""

  def __init__(self, rate, layer_id, channels=False, **kwargs):
    super().__init__(**kwargs)
    self.rate, self.layer_id, self.channels = float(rate), int(layer_id), bool(channels)

  def call(self, x, training=False):
    if not training or self.rate == 0:
      return x
    shape = tf.shape(x)
    noise = tf.concat([shape[:1], tf.ones_like(shape[1:-1]), shape[-1:]], 0) if \
        self.channels else shape
    context = getattr(_context, "value", None)
    if context is None:
      keep = tf.cast(tf.random.uniform(noise) >= self.rate, x.dtype)
      return x * keep / tf.cast(1.0 - self.rate, x.dtype)
    seed, step, rows, global_rows, pass_id = context
    return dropout_rows(x, _stream_key(seed, step, pass_id, self.layer_id),
                        tf.concat([[global_rows], noise[1:]], 0), rows, self.rate)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), "rate": self.rate, "layer_id": self.layer_id,
            "channels": self.channels}
