"""The new layers on the backbone: bottleneck, classifier G_c and discriminator G_d.

Two sets: the authors' (`heads="biwaa"`) and tllib's (`heads="tllib"`); `build_heads`
builds one for a MethodConfig.
"""

import keras
import tensorflow as tf

from biwaa_tf.model import layers


def _xavier_dense(units, name, activation=None):
  return keras.layers.Dense(units, activation=activation, name=name,
                            kernel_initializer="glorot_normal", bias_initializer="zeros")


class Discriminator(keras.layers.Layer):
  """G_d: 256 -> 1024 -> 1024 -> 1 logit, ReLU and dropout 0.5 between (the authors');
  `batch_norm`: Linear-BN-ReLU twice, no dropout, PyTorch's initialisation (tllib's
  DomainDiscriminator, one joint pass over [source; target]).

  Dropout is stateless: the masks are drawn for the whole global batch from
  (seed, training step) and each replica takes its rows (`rows`), so that a
  resumed training, and N replicas, draw the masks one device would.
  """

  def __init__(self, seed=0, rate=0.5, batch_norm=False, in_dim=256, **kwargs):
    super().__init__(**kwargs)
    self.seed = int(seed or 0)
    self.rate = 0.0 if batch_norm else rate
    if batch_norm:
      self.hidden = [keras.Sequential([layers.torch_dense(1024, fan_in, name=f"d{j + 1}"),
                                       _batch_norm(f"d{j + 1}_bn"), keras.layers.ReLU()],
                                      name=f"block{j + 1}")
                     for j, fan_in in enumerate((in_dim, 1024))]
      self.out = layers.torch_dense(1, 1024, name="d_out")
    else:
      self.hidden = [_xavier_dense(1024, "d1", "relu"), _xavier_dense(1024, "d2", "relu")]
      self.out = _xavier_dense(1, "d_out")

  def call(self, x, step=None, rows=None, global_rows=None, training=False):
    h = x
    for j, layer in enumerate(self.hidden):
      h = layer(h, training=training)
      if training and self.rate > 0:
        key = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64) * 2 + j])
        h = layers.dropout_rows(h, key, [global_rows, tf.shape(h)[1]], rows, self.rate)
    return self.out(h)


def _batch_norm(name):
  """PyTorch's BatchNorm1d defaults (momentum 0.1 of the new value, eps 1e-5)."""
  return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def build_heads(c, seed):
  """bottleneck, classifier G_c and discriminator G_d.

  biwaa (the authors'): Linear bottleneck and classifier with Xavier-normal weights, the
  discriminator with dropout. tllib (its DANN/CDAN digits and Office scripts): bottleneck
  Linear + BatchNorm + ReLU, Linear classifier, discriminator Linear-BN-ReLU x 2, all with
  PyTorch's default initialisation. The classifier stays float32 under mixed precision:
  the logits, the losses and the backprop-induced weights are computed in float32.
  """
  if c.heads == "tllib":
    # Built in the order tllib builds them; the bottleneck's input width is set on build.
    bottleneck = _TllibBottleneck(c.bottleneck_dim, name="bottleneck")
    classifier = layers.torch_dense(c.num_classes, c.bottleneck_dim, name="classifier",
                                    dtype="float32")
    return bottleneck, classifier, Discriminator(seed, batch_norm=True, in_dim=c.bottleneck_dim,
                                                 name="discriminator")
  # (Keras draws each initializer's seed at construction: this order fixes the weights.)
  bottleneck = _xavier_dense(c.bottleneck_dim, "bottleneck")
  classifier = keras.layers.Dense(
      c.num_classes, name="classifier", kernel_initializer="glorot_normal",
      bias_initializer="zeros", dtype="float32")
  return bottleneck, classifier, Discriminator(seed, name="discriminator")


class _TllibBottleneck(keras.layers.Layer):
  """Linear(backbone features, D) + BatchNorm1d + ReLU; PyTorch's initialisation (its
  fan-in known once the backbone's width is)."""

  def __init__(self, units, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.bn = _batch_norm("bn")

  def build(self, input_shape):
    self.dense = layers.torch_dense(self.units, int(input_shape[-1]), name="dense")
    self.dense.build(input_shape)
    self.bn.build((*input_shape[:-1], self.units))

  def call(self, x, training=False):
    return tf.nn.relu(self.bn(self.dense(x), training=training))
