"""Shared pieces of the benchmark tools: synthetic JPEG data, models, timing."""

import os
import resource
import statistics
import time

import biwaa_tf  # noqa: F401  (before TensorFlow: keeps its start-up lines quiet)

# isort: split
import numpy as np
import tensorflow as tf

from biwaa_tf import config
from biwaa_tf.data.lists import ImageList
from biwaa_tf.model.biwaa import MethodConfig


def write_jpegs(root, count, size=256, num_classes=10, seed=0):
  """`count` random-texture JPEGs of size x size; returns an ImageList."""
  rng = np.random.default_rng(seed)
  paths, labels = [], []
  os.makedirs(root, exist_ok=True)
  base = rng.integers(0, 255, size=(size // 8, size // 8, 3), dtype=np.uint8)
  for i in range(count):
    small = np.roll(base, i, axis=0)
    img = tf.image.resize(small[None], [size, size])[0] + rng.normal(0, 10, (size, size, 3))
    path = os.path.join(root, f"{i:05d}.jpg")
    with open(path, "wb") as f:
      f.write(tf.io.encode_jpeg(tf.cast(tf.clip_by_value(img, 0, 255), tf.uint8),
                                quality=90).numpy())
    paths.append(path)
    labels.append(i % num_classes)
  return ImageList(root, tuple(paths), np.asarray(labels, np.int64),
                   tuple(f"class_{k}" for k in range(num_classes)))


def method_config(method, num_classes, num_target, per_domain_batch_norm=True):
  return MethodConfig(num_classes=num_classes, num_target=num_target,
                      per_domain_batch_norm=per_domain_batch_norm, **config.method_switches(method))


def median_time(fn, repeats, warmup=1):
  """Median wall seconds of fn() over `repeats` calls after `warmup` calls."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def peak_rss_mib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def matmul_gflops(n=2048, repeats=5):
  """The machine's measured float32 matmul rate (GFLOP/s)."""
  a = tf.random.normal([n, n])
  b = tf.random.normal([n, n])
  f = tf.function(lambda: tf.matmul(a, b))
  t = median_time(lambda: f().numpy(), repeats, warmup=2)
  return 2.0 * n ** 3 / t / 1e9
