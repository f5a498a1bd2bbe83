"""Decoding and image preprocessing (train augmentation, evaluation, 10-crop).

As the authors' torchvision transforms: an image is decoded to RGB (grayscale
replicated, alpha dropped, a GIF's first frame), resized to ``resize_size``
squared with PIL's filter (bicubic, antialiased, back to 8-bit values), then
  train: RandomResizedCrop(image_size) (area U(0.08, 1), log-uniform aspect ratio
         in [3/4, 4/3], 10 attempts, else a central crop; resized with PIL's
         bilinear filter), random horizontal flip;
  eval:  the centre crop; 10-crop: the 4 corners and the centre, and their flips;
and normalised as the backbone's weights expect. Randomness is stateless (seeded
per element by its stream position), so a resumed input pipeline draws the same
crops. Each step is a small function checked against Pillow / a NumPy port of
torchvision in tests/test_preprocess.py.
"""

import dataclasses
import math

import tensorflow as tf

# keras.applications.resnet50 ("caffe"): BGR order, ImageNet mean subtracted.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
# torchvision.transforms.RandomResizedCrop's defaults.
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10


@dataclasses.dataclass(frozen=True)
class ImageOptions:
  """How images become model inputs (fixed for a training; exported with the model).

  resize_method: bicubic = PIL's default (antialiased, rounded to 8 bits), as the
    authors' pipeline; bilinear = TensorFlow's bilinear without antialiasing.
  train_crop: resized = torchvision's RandomResizedCrop; random = a plain random
    image_size crop of the resized image (small images, e.g. digits).
  """
  resize_size: int
  image_size: int
  flip: bool
  mode: str  # normalisation: caffe | torch | unit
  ten_crop: bool = False
  resize_method: str = "bicubic"
  train_crop: str = "resized"


def normalize(image, mode):
  """Maps float RGB in [0, 255] to the backbone's input range.

  caffe: RGB->BGR minus the ImageNet BGR mean (Keras' ResNet-50 weights).
  torch: /255, minus ImageNet mean, over ImageNet std.
  unit:  /127.5 - 1 (networks trained from scratch).
  raw:   unchanged (models that rescale their inputs themselves, e.g. Keras'
         EfficientNet).
  """
  image = tf.cast(image, tf.float32)
  if mode == "caffe":
    return image[..., ::-1] - tf.constant(CAFFE_MEAN_BGR)
  if mode == "torch":
    return (image / 255.0 - tf.constant(TORCH_MEAN)) / tf.constant(TORCH_STD)
  if mode == "unit":
    return image / 127.5 - 1.0
  if mode == "raw":
    return image
  raise ValueError(f"unknown normalisation {mode!r}")


def decode(path):
  """File -> uint8 H x W x 3 (JPEG, PNG, BMP, GIF first frame; gray/RGBA -> RGB)."""
  data = tf.io.read_file(path)
  image = tf.io.decode_image(data, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def _to_8bit(image):
  """What PIL stores after a filter: values clipped to [0, 255] and rounded."""
  return tf.round(tf.clip_by_value(image, 0.0, 255.0))


def resize_to(image, height, width, method="bicubic"):
  """H x W x 3 -> height x width x 3 float32.

  bicubic: PIL's Image.resize default for RGB images (bicubic, antialiased when
  shrinking), values rounded to 8 bits as PIL stores them; within ~0.3/255 of
  Pillow on average. bilinear: TensorFlow's bilinear, no antialiasing (~6/255 off
  when shrinking large photos).
  """
  image = tf.cast(image, tf.float32)
  if method == "bicubic":
    return _to_8bit(tf.image.resize(image, [height, width], "bicubic", antialias=True))
  if method == "bilinear":
    return tf.image.resize(image, [height, width], "bilinear")
  raise ValueError(f"unknown resize method {method!r}")


def resize(image, size, method="bicubic"):
  return resize_to(image, size, size, method)


def random_resized_crop_box(height, width, seed, scale=CROP_SCALE, ratio=CROP_RATIO,
                            attempts=CROP_ATTEMPTS):
  """torchvision's RandomResizedCrop.get_params, stateless: (top, left, h, w) int32.

  Up to `attempts` draws of an area fraction U(scale) and a log-uniform aspect
  ratio w/h in `ratio`; h and w are rounded half-to-even (Python's round) and
  the first draw that fits is placed uniformly. When none fits: the largest
  central crop whose aspect ratio is clamped into `ratio`.
  """
  height = tf.convert_to_tensor(height, tf.int32)
  width = tf.convert_to_tensor(width, tf.int32)
  h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  u = tf.random.stateless_uniform([attempts, 4], seed)
  area = h_f * w_f * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  aspect = tf.exp(log_lo + (log_hi - log_lo) * u[:, 1])
  w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
  h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
  fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)  # 0 when none fits
  h_a, w_a = h[first], w[first]
  top_a = tf.cast(tf.floor(u[first, 2] * tf.cast(height - h_a + 1, tf.float32)), tf.int32)
  left_a = tf.cast(tf.floor(u[first, 3] * tf.cast(width - w_a + 1, tf.float32)), tf.int32)
  # Fallback: central crop, aspect ratio clamped into `ratio`.
  in_ratio = w_f / h_f
  w_b = tf.where(in_ratio > ratio[1], tf.cast(tf.round(h_f * ratio[1]), tf.int32), width)
  h_b = tf.where(in_ratio < ratio[0], tf.cast(tf.round(w_f / ratio[0]), tf.int32), height)
  found = tf.reduce_any(fits)
  h_c, w_c = tf.where(found, h_a, h_b), tf.where(found, w_a, w_b)
  top = tf.where(found, tf.minimum(top_a, height - h_a), (height - h_b) // 2)
  left = tf.where(found, tf.minimum(left_a, width - w_a), (width - w_b) // 2)
  return top, left, h_c, w_c


def random_resized_crop(image, size, seed):
  """A RandomResizedCrop box of `image`, resized to size x size with PIL's bilinear."""
  shape = tf.shape(image)
  top, left, h, w = random_resized_crop_box(shape[0], shape[1], seed)
  crop = image[top:top + h, left:left + w]
  return _to_8bit(tf.image.resize(crop, [size, size], "bilinear", antialias=True))


def train_view(image, opts, seed):
  """Resize, random (resized) crop, optional random horizontal flip, normalise.

  `seed` is a shape-[2] int tensor (stateless ops: reproducible per element).
  """
  image = resize(image, opts.resize_size, opts.resize_method)
  seeds = tf.random.experimental.stateless_split(seed, 2)
  s = opts.image_size
  if opts.train_crop == "resized":
    image = random_resized_crop(image, s, seeds[0])
  elif opts.train_crop == "random":
    image = tf.image.stateless_random_crop(image, [s, s, 3], seeds[0])
  else:
    raise ValueError(f"unknown train crop {opts.train_crop!r}")
  if opts.flip:
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
  return normalize(image, opts.mode)


def center_crop(image, size):
  """torchvision's CenterCrop: offset (H - size) / 2 rounded (equal here: even gaps)."""
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  top, left = (h - size) // 2, (w - size) // 2
  return image[top:top + size, left:left + size]


def eval_view(image, opts):
  """Resize and centre crop (deterministic), normalise."""
  return normalize(center_crop(resize(image, opts.resize_size, opts.resize_method),
                               opts.image_size), opts.mode)


def ten_crop(image, opts):
  """10 x S x S x 3: the 4 corners and the centre, then each of them flipped."""
  image = resize(image, opts.resize_size, opts.resize_method)
  r, s = opts.resize_size, opts.image_size
  crops = [image[:s, :s], image[:s, r - s:], image[r - s:, :s], image[r - s:, r - s:],
           center_crop(image, s)]
  crops = tf.stack(crops)
  crops = tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)
  return normalize(crops, opts.mode)


def eval_views(image, opts):
  """The evaluation input(s) of one image: a crop, or 10 with --ten_crop."""
  return ten_crop(image, opts) if opts.ten_crop else eval_view(image, opts)
