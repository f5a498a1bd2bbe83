"""Decoding and image preprocessing (train augmentation, evaluation, 10-crop).

Images are decoded to RGB (grayscale is replicated, alpha dropped, a GIF gives
its first frame), resized to ``resize_size`` squared, then cropped to
``image_size``; pixel values are normalised as the backbone's weights expect.
"""

import tensorflow as tf

# keras.applications.resnet50 ("caffe"): BGR order, ImageNet mean subtracted.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


def normalize(image, mode):
  """Maps float RGB in [0, 255] to the backbone's input range.

  caffe: RGB->BGR minus the ImageNet BGR mean (Keras' ResNet-50 weights).
  torch: /255, minus ImageNet mean, over ImageNet std.
  unit:  /127.5 - 1 (networks trained from scratch).
  """
  image = tf.cast(image, tf.float32)
  if mode == "caffe":
    return image[..., ::-1] - tf.constant(CAFFE_MEAN_BGR)
  if mode == "torch":
    return (image / 255.0 - tf.constant(TORCH_MEAN)) / tf.constant(TORCH_STD)
  if mode == "unit":
    return image / 127.5 - 1.0
  raise ValueError(f"unknown normalisation {mode!r}")


def decode(path):
  """File -> uint8 H x W x 3 (JPEG, PNG, BMP, GIF first frame; gray/RGBA -> RGB)."""
  data = tf.io.read_file(path)
  image = tf.io.decode_image(data, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def resize(image, size):
  return tf.image.resize(tf.cast(image, tf.float32), [size, size], method="bilinear")


def train_view(image, resize_size, image_size, flip, mode, seed):
  """Resize, random crop, optional random horizontal flip, normalise.

  `seed` is a shape-[2] int tensor (stateless ops: reproducible per element).
  """
  image = resize(image, resize_size)
  seeds = tf.random.experimental.stateless_split(seed, 2)
  image = tf.image.stateless_random_crop(image, [image_size, image_size, 3], seeds[0])
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
  return normalize(image, mode)


def center_crop(image, size):
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  top, left = (h - size) // 2, (w - size) // 2
  return image[top:top + size, left:left + size]


def eval_view(image, resize_size, image_size, mode):
  """Resize and centre crop (deterministic), normalise."""
  return normalize(center_crop(resize(image, resize_size), image_size), mode)


def ten_crop(image, resize_size, image_size, mode):
  """10 x S x S x 3: the 4 corners and the centre, then each of them flipped."""
  image = resize(image, resize_size)
  r, s = resize_size, image_size
  crops = [image[:s, :s], image[:s, r - s:], image[r - s:, :s], image[r - s:, r - s:],
           center_crop(image, s)]
  crops = tf.stack(crops)
  crops = tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)
  return normalize(crops, mode)
