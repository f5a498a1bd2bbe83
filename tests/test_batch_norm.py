"""Per-domain batch normalisation in the training forward pass, against NumPy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from biwaa_tf.model.biwaa import BIWAAModel, MethodConfig

EPS, MOMENTUM = 1e-5, 0.9  # PyTorch's eps and momentum 0.1, in Keras' convention


def bn_model(per_domain):
  keras.utils.set_random_seed(0)
  backbone = keras.Sequential([
      keras.Input((3, 3, 3)),
      keras.layers.BatchNormalization(epsilon=EPS, momentum=MOMENTUM, name="bn"),
      keras.layers.GlobalAveragePooling2D()])
  model = BIWAAModel(backbone, MethodConfig(num_classes=3, num_target=8, bottleneck_dim=4,
                                            per_domain_batch_norm=per_domain),
                     keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1))
  model.build_all(3)
  bn = backbone.get_layer("bn")
  bn.gamma.assign([1.5, 0.5, 1.0])
  bn.beta.assign([0.2, -0.1, 0.0])
  return model, bn


def numpy_bn(x):
  """Training-mode BN over N, H, W (biased variance), PyTorch's eps; gamma/beta above."""
  mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
  return (x - mean) / np.sqrt(var + EPS) * [1.5, 0.5, 1.0] + [0.2, -0.1, 0.0], mean, var


@pytest.fixture(scope="module")
def domains():
  rng = np.random.default_rng(0)
  # Target shifted and scaled: joint statistics differ clearly from either domain's.
  return (rng.normal(0, 1, (4, 3, 3, 3)).astype(np.float32),
          rng.normal(3, 2, (4, 3, 3, 3)).astype(np.float32))


def head(model, normalised):
  w, b = (v.numpy() for v in model.bottleneck.weights)
  return normalised.mean(axis=(1, 2)) @ w + b


def test_per_domain_forward_normalises_each_domain_by_its_own_statistics(domains):
  x_s, x_t = domains
  model, bn = bn_model(per_domain=True)
  f_s, _, f_t, _ = model.forward(tf.constant(x_s), tf.constant(x_t))
  n_s, mean_s, var_s = numpy_bn(x_s)
  n_t, mean_t, var_t = numpy_bn(x_t)
  np.testing.assert_allclose(f_s.numpy(), head(model, n_s), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(f_t.numpy(), head(model, n_t), rtol=1e-4, atol=1e-5)
  # Running statistics updated twice, source then target, momentum 0.1 (PyTorch's).
  mean = MOMENTUM * (MOMENTUM * 0 + (1 - MOMENTUM) * mean_s) + (1 - MOMENTUM) * mean_t
  var = MOMENTUM * (MOMENTUM * 1 + (1 - MOMENTUM) * var_s) + (1 - MOMENTUM) * var_t
  np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-5)
  np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-5)


def test_joint_forward_normalises_the_concatenated_batch(domains):
  x_s, x_t = domains
  model, bn = bn_model(per_domain=False)
  f_s, _, f_t, _ = model.forward(tf.constant(x_s), tf.constant(x_t))
  n, mean, _ = numpy_bn(np.concatenate([x_s, x_t]))
  np.testing.assert_allclose(np.concatenate([f_s, f_t]), head(model, n), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(bn.moving_mean.numpy(), (1 - MOMENTUM) * mean, rtol=1e-5)
  # ... which is far from the per-domain features (the test above can fail).
  n_s, _, _ = numpy_bn(x_s)
  assert np.abs(f_s.numpy() - head(model, n_s)).max() > 0.1
