"""Gradient reversal: identity forward, -coeff x upstream gradient backward."""

import tensorflow as tf


def gradient_reversal(x, coeff):
  """Returns x; its gradient w.r.t. x is -coeff * upstream (coeff gets none).

  The DANN trick: the discriminator minimises its loss while the features
  upstream of this op are pushed to maximise it.
  """
  coeff = tf.cast(coeff, x.dtype)

  @tf.custom_gradient
  def _reverse(v):
    def grad(upstream):
      return -coeff * upstream
    return tf.identity(v), grad

  return _reverse(x)
