"""Preprocessing against independent references: Pillow's resize, a NumPy port of
torchvision's RandomResizedCrop sampler."""

import math

import numpy as np
import pytest
import tensorflow as tf

from biwaa_tf.data import preprocess


def photo_like(height, width, seed=0):
  """A large image with what photos have: smooth shading, texture, sharp edges."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width] / max(height, width)
  img = np.stack([120 + 90 * np.sin(6 * x + c) * np.cos(4 * y - c) for c in (0, 1, 2)], -1)
  img += rng.normal(0, 18, img.shape)                      # sensor-like texture
  for _ in range(30):                                      # objects with hard edges
    y0, x0 = rng.integers(0, height - 40), rng.integers(0, width - 40)
    h, w = rng.integers(10, height // 4), rng.integers(10, width // 4)
    img[y0:y0 + h, x0:x0 + w] = rng.uniform(0, 255, 3)
  return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape, size", [((900, 1200), 256), ((300, 200), 256)])
def test_bicubic_resize_matches_pillow(shape, size):
  from PIL import Image
  img = photo_like(*shape)
  ours = preprocess.resize(tf.constant(img), size).numpy()
  pil = np.asarray(Image.fromarray(img).resize((size, size)), np.float32)  # PIL's default
  diff = np.abs(ours - pil)
  # Measured: 0.07/255 shrinking 1200x900 (max 4), 0.14/255 enlarging 200x300 (max
  # 5); TensorFlow bilinear without antialiasing: 5.8/255 and 1.6/255.
  assert diff.mean() < 1.0, diff.mean()
  assert np.all(ours == np.round(ours)) and ours.min() >= 0 and ours.max() <= 255
  # The old TensorFlow bilinear is several times further off when shrinking (the
  # reason for the change).
  if shape[0] > size:
    old = preprocess.resize(tf.constant(img), size, "bilinear").numpy()
    assert np.abs(old - pil).mean() > 3 * diff.mean()


def test_resized_crop_resize_matches_pillow_bilinear():
  from PIL import Image
  img = photo_like(256, 256, seed=1)
  top, left, h, w = 40, 10, 150, 120
  ours = tf.image.resize(tf.constant(img[top:top + h, left:left + w], tf.float32),
                         [224, 224], "bilinear", antialias=True).numpy()
  pil = np.asarray(Image.fromarray(img).resize((224, 224), Image.BILINEAR,
                                               box=(left, top, left + w, top + h)), np.float32)
  assert np.abs(np.round(np.clip(ours, 0, 255)) - pil).mean() < 1.0


def torchvision_get_params(rng, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  """torchvision.transforms.RandomResizedCrop.get_params, line by line, NumPy RNG."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = int(round(math.sqrt(target_area * aspect_ratio)))
    h = int(round(math.sqrt(target_area / aspect_ratio)))
    if 0 < w <= width and 0 < h <= height:
      i = int(rng.integers(0, height - h + 1))
      j = int(rng.integers(0, width - w + 1))
      return i, j, h, w
  in_ratio = float(width) / float(height)
  if in_ratio < min(ratio):
    w = width
    h = int(round(w / min(ratio)))
  elif in_ratio > max(ratio):
    h = height
    w = int(round(h * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def ks_statistic(a, b):
  """Two-sample Kolmogorov-Smirnov D = sup |F_a - F_b|."""
  grid = np.union1d(a, b)
  fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
  fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
  return np.abs(fa - fb).max()


def tf_boxes(height, width, n, seed=0):
  draw = tf.function(lambda s: preprocess.random_resized_crop_box(height, width, s))
  return np.array([[int(v) for v in draw(tf.constant([seed, k], tf.int64))]
                   for k in range(n)])


@pytest.mark.parametrize("height, width", [(256, 256), (180, 320)])
def test_random_resized_crop_distribution_matches_torchvision(height, width):
  # Two-sample KS on the area fraction, the log aspect ratio and the relative
  # position, 3000 draws each. D's 0.1% critical value for n = m = 3000 is
  # 1.95 * sqrt(2 / 3000) = 0.050 (conservative here: both samples share the same
  # integer rounding, i.e. the same atoms). A port with another scale (0.25-1) or
  # ratio range (1/2-2), or positions not uniform, gives D > 0.1.
  n = 3000
  ours = tf_boxes(height, width, n)
  rng = np.random.default_rng(0)
  ref = np.array([torchvision_get_params(rng, height, width) for _ in range(n)])

  def stats(b):
    top, left, h, w = b.T
    return {"area": h * w / (height * width), "log_aspect": np.log(w / h),
            "top": top / np.maximum(height - h, 1), "left": left / np.maximum(width - w, 1)}
  s_ours, s_ref = stats(ours), stats(ref)
  for name in s_ours:
    d = ks_statistic(s_ours[name], s_ref[name])
    assert d < 0.05, (name, d)
  top, left, h, w = ours.T
  assert np.all((top >= 0) & (left >= 0) & (top + h <= height) & (left + w <= width))
  # The sampler really covers the torchvision ranges (not a narrower one); a
  # 180 x 320 image holds at most 240 x 180 at aspect 4/3: 75% of its area.
  area = s_ours["area"]
  assert area.min() < 0.1 and area.max() > (0.95 if height == width else 0.7)
  assert np.exp(s_ours["log_aspect"]).min() < 0.8 and np.exp(s_ours["log_aspect"]).max() > 1.25


def test_a_narrower_sampler_is_detected():
  # The test above can fail: a sampler with scale (0.25, 1) is far from torchvision's.
  rng = np.random.default_rng(1)
  ref = np.array([torchvision_get_params(rng, 256, 256) for _ in range(3000)])
  other = np.array([torchvision_get_params(rng, 256, 256, scale=(0.25, 1.0))
                    for _ in range(3000)])
  area = lambda b: b[:, 2] * b[:, 3] / 256 ** 2  # noqa: E731
  assert ks_statistic(area(ref), area(other)) > 0.1


@pytest.mark.parametrize("height, width, expected", [
    (10, 400, (0, 193, 10, 13)),     # too wide: full height, width 4/3 of it, centred
    (400, 10, (193, 0, 13, 10)),     # too tall: full width, height round(10 / (3/4))
])
def test_random_resized_crop_fallback_is_torchvisions_central_crop(height, width, expected):
  # No draw fits (any crop of 8-100% of the area with a 3/4-4/3 aspect ratio is
  # taller than 10 px): every seed ends in the fallback.
  rng = np.random.default_rng(0)
  assert torchvision_get_params(rng, height, width) == expected
  for k in range(5):
    box = preprocess.random_resized_crop_box(height, width, tf.constant([7, k], tf.int64))
    assert tuple(int(v) for v in box) == expected


def test_train_view_is_a_function_of_the_seed():
  img = tf.constant(photo_like(300, 260))
  opts = preprocess.ImageOptions(256, 224, True, "torch")
  a = preprocess.train_view(img, opts, tf.constant([3, 4], tf.int64)).numpy()
  b = preprocess.train_view(img, opts, tf.constant([3, 4], tf.int64)).numpy()
  c = preprocess.train_view(img, opts, tf.constant([3, 5], tf.int64)).numpy()
  assert a.shape == (224, 224, 3) and np.array_equal(a, b) and not np.allclose(a, c)
