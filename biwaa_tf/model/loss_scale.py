"""Dynamic loss scaling for float16, one scale shared by both optimizers.

float16 gradients of small losses underflow to zero. The step multiplies the
loss by a scale S before the backward pass and divides the gradients by S
after it. If any gradient (of any replica, of either optimizer's variables) is
not finite, neither optimizer applies the step and S is halved; after
`growth_steps` finite steps in a row S is doubled. One shared decision keeps
the backbone and the new layers in step (two Keras LossScaleOptimizers would
each skip on their own gradients).
"""

import tensorflow as tf

INITIAL_SCALE = 2.0 ** 15
GROWTH_STEPS = 2000
MIN_SCALE = 1.0


def next_loss_scale(scale, good_steps, finite, growth_steps=GROWTH_STEPS):
  """(scale, good_steps) after a step whose gradients were `finite` or not.

  Non-finite: halve the scale (not below MIN_SCALE), restart the count.
  Finite: count the step; the growth_steps-th in a row doubles the scale and
  restarts the count.
  """
  scale = tf.convert_to_tensor(scale, tf.float32)
  good_steps = tf.convert_to_tensor(good_steps, tf.int64)
  grow = tf.logical_and(finite, good_steps + 1 >= growth_steps)
  new_scale = tf.where(finite, tf.where(grow, scale * 2.0, scale),
                       tf.maximum(scale * 0.5, MIN_SCALE))
  new_good = tf.where(tf.logical_and(finite, tf.logical_not(grow)), good_steps + 1,
                      tf.zeros_like(good_steps))
  return new_scale, new_good


def all_finite(grads):
  """Whether every gradient tensor (None ignored) holds only finite values."""
  checks = [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
  return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)
