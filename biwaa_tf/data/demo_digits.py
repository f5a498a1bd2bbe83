"""The built-in demo domains: scikit-learn's 8x8 digits, split into two halves.

* ``digits_source``: one half, upsampled to 32x32, balanced as it ships.
* ``digits_target``: the other half with a visible domain shift (thickened
  strokes, a small rotation, a grey noisy background) and a long-tailed class
  distribution (class k kept with fraction ``TAIL ** (k / 9)``).
* ``digits_clutter``: the same target images and label shift, but the shift is
  class-unrelated background clutter (random bright line segments and a blob)
  on top of the rotated digit: the domains differ most where the classifier
  should not look, the case the backprop-induced weighting is for (Fig. 1).

Written once as PNG files plus list files under the cache directory
(``$BIWAA_TF_DATA``, default ``~/.cache/biwaa_tf``); flags name them as
``builtin:digits_source``, ``builtin:digits_target`` and ``builtin:digits_clutter``.
"""

import os
import shutil
import tempfile

import numpy as np

from biwaa_tf.errors import UserError

BUILTIN_PREFIX = "builtin:"
NAMES = ("digits_source", "digits_target", "digits_clutter")
TAIL = 0.15
SIZE = 32
VERSION = "v2"  # v2 added digits_clutter; the v1 domains are unchanged


def cache_dir():
  return os.environ.get("BIWAA_TF_DATA", os.path.join(os.path.expanduser("~"), ".cache",
                                                      "biwaa_tf"))


def _upsample(images8):
  """N x 8 x 8 in [0, 16] -> N x 32 x 32 uint8 (bilinear)."""
  import tensorflow as tf
  x = tf.constant(images8[..., None] / 16.0 * 255.0, tf.float32)
  return tf.image.resize(x, [SIZE, SIZE], method="bilinear")[..., 0].numpy()


def _shift(images, rng):
  """Target shift: thicker strokes (3x3 max filter), rotation, grey noisy background."""
  padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
  thick = np.max([padded[:, dy:dy + SIZE, dx:dx + SIZE] for dy in range(3) for dx in range(3)],
                 axis=0)
  rotated = _rotate(thick, rng)
  # Grey, noisy background and weaker strokes.
  noise = rng.normal(0.0, 25.0, size=rotated.shape)
  return np.clip(90.0 + 0.6 * rotated + noise, 0, 255)


def _clutter(images, rng):
  """Clutter shift: rotation, then 3 random bright line segments and a blob behind
  the digit (class-unrelated), and mild noise."""
  rotated = _rotate(images, rng)
  layer = np.zeros_like(rotated)
  t = np.linspace(0.0, 1.0, 48)
  yy, xx = np.mgrid[:SIZE, :SIZE]
  for i in range(len(images)):
    for _ in range(3):
      (y0, x0), (y1, x1) = rng.uniform(0, SIZE - 1, size=(2, 2))
      ys = np.clip(np.round(y0 + t * (y1 - y0)).astype(int), 0, SIZE - 2)
      xs = np.clip(np.round(x0 + t * (x1 - x0)).astype(int), 0, SIZE - 2)
      value = rng.uniform(150, 255)
      for dy in (0, 1):
        for dx in (0, 1):
          layer[i, ys + dy, xs + dx] = value
    cy, cx = rng.integers(4, SIZE - 4, size=2)
    layer[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(4, 10)] = rng.uniform(120, 220)
  noise = rng.normal(0.0, 10.0, size=rotated.shape)
  return np.clip(np.maximum(rotated, layer) + noise, 0, 255)


def _rotate(images, rng):
  """Each image rotated by a uniform angle in [-0.35, 0.35] rad about its centre."""
  import tensorflow as tf
  angles = rng.uniform(-0.35, 0.35, size=len(images))
  rotated = []
  for img, a in zip(images, angles):
    c, s = np.cos(a), np.sin(a)
    h = SIZE / 2.0
    # Inverse map for ImageProjectiveTransformV3 (output -> input coordinates).
    transform = [c, -s, h - c * h + s * h, s, c, h - s * h - c * h, 0.0, 0.0]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.constant(img[None, :, :, None], tf.float32),
        transforms=tf.constant([transform], tf.float32),
        output_shape=tf.constant([SIZE, SIZE]), fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")
    rotated.append(out.numpy()[0, :, :, 0])
  return np.clip(np.stack(rotated), 0, 255)


def _write_domain(root, name, images, labels):
  import tensorflow as tf
  lines = []
  for i, (img, y) in enumerate(zip(images, labels)):
    rel = f"{name}/{int(y)}/{i:05d}.png"
    os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
    png = tf.io.encode_png(np.clip(img, 0, 255).astype(np.uint8)[:, :, None]).numpy()
    with open(os.path.join(root, rel), "wb") as f:
      f.write(png)
    lines.append(f"{rel} {int(y)}")
  with open(os.path.join(root, f"{name}.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def make_domains(seed=0):
  """{name: (images N x 32 x 32 float, labels)} of the three built-in domains."""
  try:
    from sklearn.datasets import load_digits
  except ImportError:
    raise UserError("the built-in digits need scikit-learn: pip install 'biwaa_tf[demo]' "
                    "(or -e '.[demo]' in a clone)") from None
  digits = load_digits()
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(digits.target))
  half = len(order) // 2
  src, tgt = order[:half], order[half:]
  keep = rng.random(len(tgt)) < TAIL ** (digits.target[tgt] / 9.0)
  tgt = tgt[keep]
  return {
      NAMES[0]: (_upsample(digits.images[src]), digits.target[src]),
      NAMES[1]: (_shift(_upsample(digits.images[tgt]), rng), digits.target[tgt]),
      NAMES[2]: (_clutter(_upsample(digits.images[tgt]), np.random.default_rng(seed + 1)),
                 digits.target[tgt]),
  }


def load_arrays(name):
  """(uint8 images N x 32 x 32, int64 labels) of a built-in domain, e.g. 'digits_target':
  the pixels its PNG files hold (for the Python API and the examples)."""
  if name.startswith(BUILTIN_PREFIX):
    name = name[len(BUILTIN_PREFIX):]
  if name not in NAMES:
    raise UserError(f"{name}: unknown built-in dataset; choose from {', '.join(NAMES)}")
  images, labels = make_domains()[name]
  return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def build(root, seed=0):
  """Writes the domains under `root` (atomically: a temp dir renamed at the end)."""
  domains = make_domains(seed)
  parent = os.path.dirname(root)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=".digits-")
  try:
    for name in NAMES:
      _write_domain(tmp, name, *domains[name])
    try:
      os.replace(tmp, root)
    except OSError:
      if not os.path.isdir(root):
        raise
      shutil.rmtree(tmp, ignore_errors=True)  # another process built it meanwhile
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def resolve(spec):
  """'builtin:digits_source' -> path of its list file (built on first use)."""
  name = spec[len(BUILTIN_PREFIX):]
  if name not in NAMES:
    from biwaa_tf.data import digit_benchmarks
    known = list(NAMES) + list(digit_benchmarks.DATASETS)
    raise UserError(f"{spec}: unknown built-in dataset; choose from "
                    f"{', '.join(BUILTIN_PREFIX + n for n in known)}")
  root = os.path.join(cache_dir(), f"digits-{VERSION}")
  if not os.path.exists(os.path.join(root, f"{name}.txt")):
    build(root)
  return os.path.join(root, f"{name}.txt")
