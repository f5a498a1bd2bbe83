"""Export the inference path (backbone, bottleneck, classifier) as a SavedModel.

No discriminator, no reversal op, no training state. Endpoints:
  serving_default / predict_images: float32 [N, S, S, 3] already preprocessed
  predict_bytes:                    string [N] encoded JPEG/PNG/BMP/GIF, decoded
                                    and preprocessed exactly as in evaluation
  class_names:                      the class names, index order
Each prediction endpoint returns {"probabilities", "class_index", "class_name"}.
"""

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from biwaa_tf import io_utils
from biwaa_tf.data import preprocess


class InferenceModel(keras.Model):
  """backbone -> bottleneck -> classifier, sharing the trained layers."""

  def __init__(self, backbone, bottleneck, classifier, **kwargs):
    super().__init__(**kwargs)
    self.backbone = backbone
    self.bottleneck = bottleneck
    self.classifier = classifier

  def call(self, x, training=False):
    return self.classifier(self.bottleneck(self.backbone(x, training=False)))


@keras.saving.register_keras_serializable(package="biwaa_tf")
class Preprocess(keras.layers.Layer):
  """Raw images -> the evaluation input(s) the training scored its target with.

  Takes N x H x W x 1 or 3 images of any H x W, with the pixel contract of adapt() and
  every other face: floats in [0, 1] (scaled and rounded to 0-255 as adapt() does), or
  0-255 values (uint8, which Keras hands over as float). A batch whose values all lie
  in [0, 1] is read as [0, 1]; values outside [0, 255], NaN or infinite are refused
  with one line. (A uint8 batch of only 0s and 1s is ambiguous here: result.predict and
  the estimator pass [0, 1] floats and are exact.) Grey is replicated to RGB, each image
  is resized to resize_size (as PIL does, for `resize_method=bicubic`), centre-cropped
  to image_size (or cut into the 10 crops) and normalised as the backbone expects:
  data/preprocess.eval_views, image by image."""

  def __init__(self, resize_size, image_size, mode, resize_method="bicubic", ten_crop=False,
               **kwargs):
    super().__init__(**kwargs)
    self.opts = preprocess.ImageOptions(int(resize_size), int(image_size), False, mode,
                                        bool(ten_crop), resize_method)

  def call(self, images):
    x = pixels_0_255(tf.cast(images, tf.float32))
    x = tf.cond(tf.shape(x)[-1] == 1, lambda: tf.tile(x, [1, 1, 1, 3]), lambda: x)
    x.set_shape([None, None, None, 3])
    s = self.opts.image_size
    shape = [10, s, s, 3] if self.opts.ten_crop else [s, s, 3]
    return tf.map_fn(lambda image: preprocess.eval_views(image, self.opts), x,
                     fn_output_signature=tf.TensorSpec(shape, tf.float32))

  def compute_output_shape(self, input_shape):
    s = self.opts.image_size
    return (input_shape[0], *([10] if self.opts.ten_crop else []), s, s, 3)

  def get_config(self):
    o = self.opts
    return {**super().get_config(), "resize_size": o.resize_size, "image_size": o.image_size,
            "mode": o.mode, "resize_method": o.resize_method, "ten_crop": o.ten_crop}


def pixels_0_255(x):
  """A float batch of pixels in [0, 1] or 0-255 -> 0-255 (see Preprocess)."""
  low, high = tf.reduce_min(x), tf.reduce_max(x)
  bad = tf.logical_or(tf.logical_not(tf.reduce_all(tf.math.is_finite(x))),
                      tf.logical_or(low < 0, high > 255))
  check = tf.debugging.Assert(tf.logical_not(bad), [
      "images: pixel values must be finite, in [0, 1] (float) or 0-255; found", low, high])
  with tf.control_dependencies([check]):
    return tf.where(high <= 1, tf.round(x * 255.0), x)


@keras.saving.register_keras_serializable(package="biwaa_tf")
class MeanOverCrops(keras.layers.Layer):
  """N x 10 x S x S x 3 crops -> the class probabilities averaged over each image's crops,
  through `logits_model` (the ten-crop evaluation)."""

  def call(self, probs_of_crops):
    return tf.reduce_mean(probs_of_crops, axis=1)


def classifier_model(model, opts):
  """A Keras model that serves: raw images (N x H x W x 1 or 3, pixel values 0-255) ->
  class probabilities, with the training's evaluation preprocessing inside (Preprocess)
  and BIWAAModel `model`'s inference path (its layer "logits_model": crops -> logits).
  Saves to .keras and loads back with keras.models.load_model."""
  images = keras.Input((None, None, None), name="images")
  crops = Preprocess(opts.resize_size, opts.image_size, opts.mode, opts.resize_method,
                     opts.ten_crop, name="preprocess")(images)
  logits_model = probability_model(model, opts.image_size).get_layer("logits_model")
  softmax = keras.layers.Softmax(name="probabilities", dtype="float32")
  if opts.ten_crop:
    probs = MeanOverCrops(name="mean_over_crops")(
        keras.layers.TimeDistributed(keras.Sequential([logits_model, softmax]))(crops))
  else:
    probs = softmax(logits_model(crops))
  return ImageClassifier(keras.Model(images, probs, name="classifier_of_batches"),
                         name="biwaa_classifier")


@keras.saving.register_keras_serializable(package="biwaa_tf")
class ImageClassifier(keras.Model):
  """classifier_model's Keras model: N x H x W (grey without its channel axis) or
  N x H x W x C images -> class probabilities, through `model` (a Functional model of
  N x H x W x C batches: Preprocess, the inference path, softmax). Its layers are
  `model`'s: get_layer("preprocess"), get_layer("logits_model")."""

  def __init__(self, model, **kwargs):
    super().__init__(**kwargs)
    self.model = model

  def call(self, images):
    images = tf.convert_to_tensor(images)
    if images.shape.rank is None:  # (Keras' predict traces with an unknown shape)
      images = tf.cond(tf.rank(images) == 3, lambda: images[..., None], lambda: images)
    elif images.shape.rank == 3:
      images = images[..., None]
    images.set_shape([None, None, None, None])
    return self.model(images)

  def get_layer(self, name=None, index=None):
    return self.model.get_layer(name, index)

  @property
  def output_shape(self):
    return self.model.output_shape

  def build(self, input_shape):
    self.built = True

  def get_config(self):
    return {**super().get_config(), "model": keras.saving.serialize_keras_object(self.model)}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    return cls(keras.saving.deserialize_keras_object(config.pop("model")), **config)


def probability_model(model, image_size):
  """A Keras model of BIWAAModel `model`'s inference path: preprocessed images ->
  class probabilities (its layer "logits_model" gives the logits)."""
  inputs = keras.Input((image_size, image_size, 3), name="images")
  logits = model.classifier(model.bottleneck(model.backbone(inputs, training=False)))
  logits_model = keras.Model(inputs, logits, name="logits_model")
  probs = keras.layers.Softmax(name="probabilities")(logits_model(inputs))
  return keras.Model(inputs, probs, name="biwaa_classifier")


def export_saved_model(model, export_dir, class_names, opts):
  """Writes the SavedModel to export_dir atomically (temp dir, then rename)."""
  inference = InferenceModel(model.backbone, model.bottleneck, model.classifier)
  inference(tf.zeros([1, opts.image_size, opts.image_size, 3]))
  names = tf.constant(list(class_names))
  size = opts.image_size

  def outputs(probs):
    index = tf.argmax(probs, axis=1, output_type=tf.int32)
    return {"probabilities": probs, "class_index": index,
            "class_name": tf.gather(names, index)}

  def predict_images(images):
    return outputs(tf.nn.softmax(inference(images)))

  def predict_bytes(encoded):
    def one(data):
      image = tf.io.decode_image(data, channels=3, expand_animations=False)
      image.set_shape([None, None, 3])
      return preprocess.eval_views(image, opts)
    crop_shape = [10, size, size, 3] if opts.ten_crop else [size, size, 3]
    x = tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec(crop_shape, tf.float32))
    if opts.ten_crop:
      n = tf.shape(x)[0]
      p = tf.nn.softmax(inference(tf.reshape(x, [-1, size, size, 3])))
      return outputs(tf.reduce_mean(tf.reshape(p, [n, 10, -1]), axis=1))
    return predict_images(x)

  archive = keras.export.ExportArchive()
  archive.track(inference)
  image_spec = [tf.TensorSpec([None, size, size, 3], tf.float32, name="images")]
  archive.add_endpoint("serving_default", predict_images, input_signature=image_spec)
  archive.add_endpoint("predict_images", predict_images, input_signature=image_spec)
  archive.add_endpoint("predict_bytes", predict_bytes,
                       input_signature=[tf.TensorSpec([None], tf.string, name="encoded")])
  archive.add_endpoint("class_names", lambda: {"class_names": names}, input_signature=[])
  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=".export-")
  try:
    with io_utils.storage_errors(export_dir, "the exported model",
                                 hint="re-run the same command to export it again"):
      archive.write_out(tmp, verbose=False)
    if os.path.exists(export_dir):
      shutil.rmtree(export_dir)
    os.replace(tmp, export_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def load(export_dir):
  """Loads an exported model; returns (the loaded object, class names)."""
  from biwaa_tf.errors import UserError, reason
  if not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
    raise UserError(f"{export_dir}: not an exported model (no saved_model.pb)")
  try:
    loaded = tf.saved_model.load(export_dir)
    names = [n.decode() for n in loaded.class_names()["class_names"].numpy()]
  except (tf.errors.OpError, ValueError, IndexError, OSError, AttributeError) as e:
    raise UserError(f"{export_dir}: the exported model cannot be read ({reason(e)}); "
                    "delete it and re-run the training command to export it again") from None
  return loaded, names


def predict_files(loaded, paths, batch_size=32, progress=True):
  """Probabilities (N x K) for image files, through the predict_bytes endpoint."""
  import numpy as np
  bar = keras.utils.Progbar(len(paths), verbose=1 if progress else 0, unit_name="image")
  parts = []
  for start in range(0, len(paths), batch_size):
    chunk = paths[start:start + batch_size]
    data = [tf.io.read_file(p) for p in chunk]
    parts.append(loaded.predict_bytes(tf.stack(data))["probabilities"].numpy())
    bar.add(len(chunk))
  return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
