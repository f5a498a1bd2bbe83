"""Fig. 1: what the discriminator responds to, without and with the weighting.

Grad-CAM over the backbone's last convolutional feature map A (H x W x C) for
the discriminator's logit s: alpha_c = mean_hw ds/dA_hwc, map = relu(sum_c alpha_c
A_c), normalised to [0, 1]. "DANN" feeds the discriminator the plain features f,
"BIWAA" the weighted features f * w (w from the classifier's gradient at the
predicted label).
"""

import keras
import numpy as np
import tensorflow as tf

from biwaa_tf.model import losses


def conv_trunk(backbone):
  """Model: images -> (last 4-D feature map, backbone output)."""
  last = None
  for layer in backbone.layers:
    output = getattr(layer, "output", None)
    if output is not None and len(output.shape) == 4:
      last = layer
  if last is None:
    raise ValueError(f"{backbone.name}: no convolutional feature map found")
  return keras.Model(backbone.inputs, [last.output, backbone.outputs[0]])


def image_views(image_list, indices, opts):
  """(uint8 crops for display, normalised model inputs) of images `indices` of
  `image_list`, as evaluation preprocesses them (`opts`: the training's ImageOptions)."""
  from biwaa_tf.data import pipeline, preprocess
  read = pipeline.image_loader(image_list)
  crops = [preprocess.center_crop(preprocess.resize(read(int(i)), opts.resize_size,
                                                    opts.resize_method), opts.image_size)
           for i in indices]
  shown = np.stack([np.clip(c.numpy(), 0, 255).astype(np.uint8) for c in crops])
  return shown, tf.stack([preprocess.normalize(c, opts.mode) for c in crops])


def discriminator_maps(model, images, weighting_factor=10.0, weighting_offset=0.0):
  """(dann_maps, biwaa_maps): N x H x W in [0, 1] at the feature-map resolution."""
  trunk = conv_trunk(model.backbone)
  head = _head_after(model.backbone, trunk)
  maps = []
  for weighted in (False, True):
    with tf.GradientTape() as tape:
      a = trunk(images, training=False)[0]
      tape.watch(a)
      f = model.bottleneck(head(a))
      if weighted:
        pred = tf.argmax(model.classifier(f), axis=1)
        f = f * losses.feature_weights(f, pred, model.classifier, weighting_factor,
                                       weighting_offset)
      score = tf.reduce_sum(model.discriminator(f, training=False))
    grad = tape.gradient(score, a)
    alpha = tf.reduce_mean(grad, axis=[1, 2], keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(alpha * a, axis=-1)).numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1)[:, None, None]
    maps.append(np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0))
  return maps[0], maps[1]


def _head_after(backbone, trunk):
  """The backbone's layers after the feature map, as a function of the map."""
  feature_layer = trunk.outputs[0]._keras_history[0]
  layers = backbone.layers
  rest = layers[layers.index(feature_layer) + 1:]

  def head(a):
    for layer in rest:
      a = layer(a)
    return a
  return head
