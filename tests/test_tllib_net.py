"""tllib's digits network (--backbone=lenet_tllib --heads=tllib): its layers against
PyTorch's definitions, its dropout masks against a second draw, and the bars (resume bit
for bit, two replicas = one device) with dropout inside the backbone."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, run_main, tiny_flags

from biwaa_tf.model import backbones, layers
from biwaa_tf.model.biwaa import BIWAAModel, MethodConfig

TLLIB = ("--backbone=lenet_tllib", "--heads=tllib", "--batch_norm=joint")

pytestmark = pytest.mark.slow  # whole trainings: -m slow (CI runs them)


def test_lenet_tllib_has_the_torch_lenets_parameters():
  # tllib/vision/models/digits.py: Conv2d(1, 20, 5), Conv2d(20, 50, 5), Linear(50*4*4, 500).
  model = backbones.build_backbone("lenet_tllib", 28, "none")
  counts = {w.path.split("/")[-2]: 0 for w in model.weights}
  for w in model.weights:
    counts[w.path.split("/")[-2]] += int(np.prod(w.shape))
  assert counts == {"conv1": 1 * 20 * 25 + 20, "conv2": 20 * 50 * 25 + 50,
                    "fc": 800 * 500 + 500}
  assert model.output_shape == (None, 500)


def test_torch_init_bounds_and_variance():
  # PyTorch: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)); the bias the same bound.
  tf.keras.utils.set_random_seed(0)
  dense = layers.torch_dense(300, 800)
  dense.build((None, 800))
  w, b = dense.kernel.numpy(), dense.bias.numpy()
  bound = 1 / np.sqrt(800)
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
  assert np.abs(b).max() <= bound and np.abs(b).max() > 0.9 * bound
  np.testing.assert_allclose(w.var(), bound ** 2 / 3, rtol=0.02)


def test_grey_is_the_channel_mean():
  x = np.arange(24, dtype=np.float32).reshape(1, 2, 4, 3)
  np.testing.assert_allclose(layers.Grey()(x).numpy()[..., 0], x.mean(axis=-1))


def test_keep_mask_is_a_pure_function_with_the_keep_rate():
  a = layers.keep_mask(3, 7, 0, 1, [64, 500], 0.5).numpy()
  b = layers.keep_mask(3, 7, 0, 1, [64, 500], 0.5).numpy()
  np.testing.assert_array_equal(a, b)
  assert set(np.unique(a)) == {0.0, 1.0}
  assert abs(a.mean() - 0.5) < 0.02
  for other in (layers.keep_mask(3, 8, 0, 1, [64, 500], 0.5),   # next step
                layers.keep_mask(3, 7, 1, 1, [64, 500], 0.5),   # other pass
                layers.keep_mask(3, 7, 0, 0, [64, 500], 0.5),   # other layer
                layers.keep_mask(4, 7, 0, 1, [64, 500], 0.5)):  # other seed
    assert (other.numpy() != a).mean() > 0.3


def test_stateless_dropout_rows_of_a_replica_are_one_devices_rows():
  x = tf.random.stateless_normal([8, 6, 6, 5], [1, 2]) + 3.0
  for channels in (False, True):
    layer = layers.StatelessDropout(0.5, layer_id=2, channels=channels)
    with layers.masks(seed=5, step=11, rows=tf.range(8), global_rows=8):
      whole = layer(x, training=True).numpy()
    with layers.masks(seed=5, step=11, rows=tf.range(4, 8), global_rows=8):
      half = layer(x[4:], training=True).numpy()
    np.testing.assert_array_equal(half, whole[4:])
    kept = whole != 0
    np.testing.assert_allclose(whole[kept], 2 * x.numpy()[kept], rtol=1e-6)  # 1 / (1 - rate)
    if channels:  # Dropout2d: a channel of a sample is kept or dropped whole
      assert (kept.all(axis=(1, 2)) | ~kept.any(axis=(1, 2))).all()
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())


def test_tllib_heads():
  config = MethodConfig(num_classes=10, num_target=4, heads="tllib", bottleneck_dim=256)
  model = BIWAAModel(backbones.build_backbone("lenet_tllib", 28, "none"), config)
  model.build_all(28)
  f = model.features(tf.random.normal([4, 28, 28, 3]), training=True)
  assert f.shape == (4, 256) and float(tf.reduce_min(f)) == 0.0  # ReLU after the BN
  names = sorted(v.path.split("/", 1)[1] for v in model.discriminator.weights)
  bn = [n for n in names if "_bn/" in n]
  assert len(bn) == 8  # two BatchNorm1d(1024): gamma, beta, moving mean and variance
  sizes = sum(int(np.prod(v.shape)) for v in model.discriminator.trainable_weights)
  assert sizes == (256 * 1024 + 1024) + 2 * 1024 + (1024 * 1024 + 1024) + 2 * 1024 + 1025
  sizes = sum(int(np.prod(v.shape)) for v in model.bottleneck.trainable_weights)
  assert sizes == 500 * 256 + 256 + 2 * 256


def test_tllib_net_resumes_bit_exact(tiny_domains, tmp_path):
  root, src, tgt = tiny_domains
  flags = (*TLLIB, "--runs=1", "--deterministic", "--method=dann")
  full = run_main(tiny_flags(root, src, tgt, tmp_path / "full", *flags))
  assert full.returncode == 0, full.stderr[-2000:]
  args = tiny_flags(root, src, tgt, tmp_path / "m", *flags)
  killed = subprocess.run([sys.executable, os.path.join("tests", "kill_after.py"), "0:4",
                           *args], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert killed.returncode == -9
  resumed = run_main(args)
  assert resumed.returncode == 0 and "run 0: resumed from" in resumed.stderr
  name = "run_0/target_probs.npy"
  assert (tmp_path / "m" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


def test_tllib_net_two_replicas_match_one_device(tiny_domains, tmp_path):
  root, src, tgt = tiny_domains
  strict = {"TF_ENABLE_ONEDNN_OPTS": "0"}  # see test_distribute.STRICT
  # --deterministic: without it a training on a loaded machine can drift from its twin
  # (a CI run: 3e-3 here, with one worker's other tests running beside it).
  flags = (*TLLIB, "--deterministic")
  one = run_main(tiny_flags(root, src, tgt, tmp_path / "one", *flags), env=strict)
  two = run_main(tiny_flags(root, src, tgt, tmp_path / "two", *flags, "--cpu_replicas=2"),
                 env=strict)
  assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
  a = np.load(tmp_path / "one" / "run_0" / "target_probs.npy")
  b = np.load(tmp_path / "two" / "run_0" / "target_probs.npy")
  # Half-batch sums round differently: 1.3e-5 measured (2e-9 with lenet, no dropout and
  # per-domain BN). The same six steps on one device with oneDNN's kernels instead of
  # Eigen's (another CPU's rounding) move them by 4.2e-6: the tolerance leaves room for
  # both on any CPU. Masks drawn per replica, or a drift, move them by more than 1e-3.
  np.testing.assert_allclose(a, b, rtol=0, atol=2e-4)
  # The check can fail: probabilities move over the training (dropout masks per row).
  assert np.abs(a - 1 / a.shape[1]).max() > 1e-3
