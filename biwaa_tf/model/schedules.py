"""The method's schedules as pure functions of the step (NumPy or TF scalars).

All follow the authors' implementation (see ../shared/reference-notes.md):

* ``ramp(i, length) = 2 / (1 + exp(-10 i / length)) - 1``: the DANN ramp, used
  for the reversal coefficient (length 20000, so 5004 steps end near 0.85) and,
  clipped to [0, 1], for the bootstrap weight u(j) (length ``bootstrap_steps``).
* ``inv_lr(i) = base * (1 + gamma i) ** (-power)``: Caffe's "inv" schedule with
  gamma = 0.001 and power = 0.75.
"""

import keras
import tensorflow as tf

GRL_RAMP_STEPS = 20000.0


def ramp(step, length):
  """2 / (1 + exp(-10 step / length)) - 1; 0 at step 0, tends to 1."""
  step = tf.cast(step, tf.float32)
  return 2.0 / (1.0 + tf.exp(-10.0 * step / float(length))) - 1.0


def grl_coefficient(step, length=GRL_RAMP_STEPS):
  """The reversal coefficient (and sigma(i) of the paper) at global step i."""
  return ramp(step, length)


def reversal_coefficient(step, length=GRL_RAMP_STEPS):
  """The coefficient the implementation's reversal layer applies at step i: its
  iteration counter is incremented before the coefficient is computed, so coeff(i + 1)."""
  return grl_coefficient(tf.cast(step, tf.float32) + 1.0, length)


def bootstrap_weight(step, bootstrap_steps):
  """u(j) of eq. 14: the weight of the current run's aggregate; 1 when disabled."""
  if bootstrap_steps <= 0:
    return tf.constant(1.0)
  return tf.clip_by_value(ramp(step, bootstrap_steps), 0.0, 1.0)


def warmup_gate(step, warmup_steps):
  """1 from step ``warmup_steps`` of a run on, 0 before it (0: always 1)."""
  return tf.cast(tf.cast(step, tf.float32) >= float(warmup_steps), tf.float32)


def inv_lr(step, base, gamma=0.001, power=0.75):
  """base * (1 + gamma * step) ** (-power)."""
  step = tf.cast(step, tf.float32)
  return base * tf.pow(1.0 + gamma * step, -power)


@keras.saving.register_keras_serializable(package="biwaa_tf")
class InvSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """The "inv" learning rate as a Keras schedule, times a layer-group multiplier."""

  def __init__(self, base, multiplier=1.0, gamma=0.001, power=0.75):
    self.base = float(base)
    self.multiplier = float(multiplier)
    self.gamma = float(gamma)
    self.power = float(power)

  def __call__(self, step):
    return self.multiplier * inv_lr(step, self.base, self.gamma, self.power)

  def get_config(self):
    return dict(base=self.base, multiplier=self.multiplier, gamma=self.gamma,
                power=self.power)


def paper_optimizers(lr=1e-3, head_lr_multiplier=10.0, momentum=0.9):
  """(backbone, new layers) SGD/Nesterov optimizers with the inv schedule, x1 and x10."""
  def sgd(multiplier):
    return keras.optimizers.SGD(InvSchedule(lr, multiplier), momentum=momentum, nesterov=True)
  return sgd(1.0), sgd(head_lr_multiplier)
