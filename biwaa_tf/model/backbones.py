"""Backbone registry: name -> builder of a keras.Model, and the input normalisation it expects.

Each backbone maps S x S x 3 images to a pooled feature vector G_f(x).
"""

import os

from biwaa_tf import errors
from biwaa_tf.errors import UserError

# torchvision's ImageNet-1k V1 ResNet-50 weights, as timm publishes them in safetensors.
TORCHVISION_RESNET50_REPO = "timm/resnet50.tv_in1k"
TORCHVISION_RESNET50_FILE = "model.safetensors"
TORCHVISION_RESNET50_URL = (f"https://huggingface.co/{TORCHVISION_RESNET50_REPO}/resolve/main/"
                            f"{TORCHVISION_RESNET50_FILE}")


def resnet50(image_size, weights):
  """torchvision's ResNet-50 (v1.5), as the authors trained it; global-average pooled
  (2048-d); torchvision's inputs (RGB / 255, ImageNet mean and std)."""
  from biwaa_tf.model import torchvision_resnet
  model = torchvision_resnet.resnet50_v15(image_size)
  if weights == "imagenet":
    weights = _download_torchvision_resnet50()
  if weights != "none":
    torchvision_resnet.load_weights_file(model, weights)
  return model


def _download_torchvision_resnet50():
  """The local path of torchvision's ResNet-50 weights, fetched once into the Hugging
  Face cache; a one-line error saying what to do where that is not possible."""
  advice = (f"download {TORCHVISION_RESNET50_URL} and pass --backbone_weights=FILE "
            f"(torchvision's ImageNet weights for resnet50)")
  try:
    import huggingface_hub
  except ImportError:
    raise UserError("--backbone_weights=imagenet needs huggingface_hub "
                    f"(pip install -e '.[hub]'), or {advice}") from None
  try:
    return huggingface_hub.hf_hub_download(TORCHVISION_RESNET50_REPO, TORCHVISION_RESNET50_FILE)
  except Exception as e:  # noqa: BLE001  (offline, proxy, disk: all end the same way)
    raise UserError(f"--backbone_weights=imagenet: cannot fetch {TORCHVISION_RESNET50_FILE} "
                    f"({errors.reason(e)[:120]}); {advice}") from None


def resnet50_keras(image_size, weights):
  """Keras' ImageNet ResNet-50 (v1, Caffe weights), global-average pooled (2048-d);
  Keras' "caffe" inputs. Not the network the paper used (see resnet50)."""
  import keras  # here, so that the registry's names load without TensorFlow
  keras_weights = "imagenet" if weights == "imagenet" else None
  model = keras.applications.ResNet50(include_top=False, weights=keras_weights,
                                      input_shape=(image_size, image_size, 3), pooling="avg")
  if weights not in ("imagenet", "none"):
    _load_file(model, weights)
  for layer in model.layers:  # PyTorch's running-average momentum, as resnet50
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.momentum = 0.9
  return model


def lenet(image_size, weights):
  """The digits network: conv5-32, pool, conv5-48, pool, fc 500, ReLU (the demo's)."""
  return _lenet(image_size, weights, batch_norm=False, name="lenet")


def lenet_bn(image_size, weights):
  """lenet with batch norm on its 500-d features (PyTorch's momentum), before the ReLU.

  Trainable at the peers' digits learning rate 0.1, where lenet collapses to one class
  within 400 steps (USPS -> MNIST); the digits benchmark configs use it. Not better
  everywhere: on the demo (batch 36) it fell to 40.9 / 76.4 % (source-only / BIWAA),
  from lenet's 74.7 / 92.7 %, its per-domain batch statistics not matching the mixed
  running ones at evaluation."""
  return _lenet(image_size, weights, batch_norm=True, name="lenet_bn")


def _lenet(image_size, weights, batch_norm, name):
  import keras
  # Keras draws each initializer's seed when its layer is constructed, so the order of
  # construction fixes the initial weights: lenet's layers are built input to output (its
  # weights are what they always were); lenet_bn's head first, the order with which the
  # README's digits table was measured (same distribution, and that table reproduces).
  def head():
    if batch_norm:
      return [keras.layers.Dense(500),
              keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
              keras.layers.ReLU()]
    return [keras.layers.Dense(500, activation="relu")]
  top = head() if batch_norm else None
  layers = [keras.Input((image_size, image_size, 3)),
            keras.layers.Conv2D(32, 5, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(48, 5, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten()]
  layers += top or head()
  model = keras.Sequential(layers, name=name)
  if weights == "imagenet":
    raise UserError(f"--backbone_weights=imagenet: {name} has no ImageNet weights; "
                    "use none or a weights file")
  if weights != "none":
    _load_file(model, weights)
  return model


def lenet_tllib(image_size, weights):
  """tllib's digits LeNet (tllib/vision/models/digits.py), as its digits scripts train it:
  one grey channel, conv5-20, pool, ReLU, conv5-50, Dropout2d 0.5, pool, ReLU, fc 500,
  ReLU, Dropout 0.5; PyTorch's default initialisation. Its dropout masks are drawn as
  the discriminator's (model/layers.StatelessDropout): resume and replicas unchanged."""
  import keras

  from biwaa_tf.model import layers as L
  flat = ((image_size - 4) // 2 - 4) // 2
  model = keras.Sequential([
      keras.Input((image_size, image_size, 3)),
      L.Grey(name="grey"),
      L.torch_conv(20, 5, 1, name="conv1"),
      keras.layers.MaxPooling2D(2),
      keras.layers.ReLU(),
      L.torch_conv(50, 5, 20, name="conv2"),
      L.StatelessDropout(0.5, layer_id=0, channels=True, name="dropout2d"),
      keras.layers.MaxPooling2D(2),
      keras.layers.ReLU(),
      keras.layers.Flatten(),
      L.torch_dense(500, 50 * flat * flat, name="fc"),
      keras.layers.ReLU(),
      L.StatelessDropout(0.5, layer_id=1, name="dropout"),
  ], name="lenet_tllib")
  if weights == "imagenet":
    raise UserError("--backbone_weights=imagenet: lenet_tllib has no ImageNet weights; "
                    "use none or a weights file")
  if weights != "none":
    _load_file(model, weights)
  return model


def _load_file(model, path):
  if not os.path.isfile(path):
    raise UserError(f"--backbone_weights={path}: no such file")
  try:
    model.load_weights(path)
  except Exception as e:  # noqa: BLE001  (any loader failure is the file's fault)
    raise UserError(f"--backbone_weights={path}: cannot load: {errors.reason(e)}") from None


BACKBONES = {"resnet50": resnet50, "resnet50_keras": resnet50_keras, "lenet": lenet,
             "lenet_bn": lenet_bn, "lenet_tllib": lenet_tllib}
# Pixel normalisation each backbone's weights expect (see data/preprocess.normalize).
NORMALIZATION = {"resnet50": "torch", "resnet50_keras": "caffe", "lenet": "unit",
                 "lenet_bn": "unit", "lenet_tllib": "unit"}


def register(name, builder, normalization):
  """Adds a backbone: `builder(image_size, weights)` returns a keras.Model mapping
  S x S x 3 images to features (a vector, or a feature map that is average-pooled);
  `normalization` is what its weights expect (see data/preprocess.normalize: torch,
  caffe, unit, raw). A name registered again is replaced."""
  BACKBONES[name] = builder
  NORMALIZATION[name] = normalization


def from_keras_model(model):
  """A builder for a user's Keras model: each call returns a copy of it with its
  weights as they are now (every run starts from the same weights), average-pooled
  if it outputs a feature map. Needs a Functional or Sequential model (clone_model)."""
  import keras
  initial = [w.numpy() for w in model.weights]

  def build(image_size, weights):
    try:
      copy = keras.models.clone_model(model)
    except Exception as e:  # noqa: BLE001  (subclassed models cannot be cloned)
      raise UserError(f"backbone {model.name}: cannot be copied for each run "
                      f"({errors.reason(e)}); build it with the Functional or Sequential "
                      "API") from None
    if not _has_graph(copy):  # a Sequential without an Input: give it one
      inputs = keras.Input((image_size, image_size, 3), name="images")
      copy = keras.Model(inputs, copy(inputs), name=copy.name)
    if initial:
      copy.set_weights(initial)
    if weights not in ("none", "imagenet"):
      _load_file(copy, weights)
    size = tuple(copy.inputs[0].shape[1:])
    if len(size) != 3 or any(d not in (None, want) for d, want in zip(
        size, (image_size, image_size, 3))):
      raise UserError(f"backbone {model.name}: takes inputs of shape {size}, but the "
                      f"images are {image_size} x {image_size} x 3 (image_size="
                      f"{image_size}); set image_size to the model's, or build it with an "
                      "input shape of (None, None, 3)")
    if len(copy.outputs[0].shape) == 4:
      pooled = keras.layers.GlobalAveragePooling2D(name="pool")(copy.outputs[0])
      copy = keras.Model(copy.inputs, pooled, name=copy.name)
    elif len(copy.outputs[0].shape) != 2:
      raise UserError(f"backbone {model.name}: outputs shape {copy.outputs[0].shape}; need "
                      "features (batch, dim) or a feature map (batch, h, w, channels)")
    return copy
  return build


def _has_graph(model):
  """Whether a Keras model has symbolic inputs and outputs (Functional, or Sequential
  with an Input); a Sequential built without one has none until it is called."""
  try:
    return bool(model.inputs) and model.outputs is not None and bool(model.outputs)
  except (AttributeError, ValueError):
    return False


def _check(name):
  if name not in BACKBONES:
    raise UserError(f"--backbone={name}: unknown; choose from {sorted(BACKBONES)}")


def normalization(name):
  _check(name)
  return NORMALIZATION[name]


def synchronize_batch_norm(model):
  """Makes every BatchNormalization layer in `model` (at any depth, inside layers as well
  as models) take its batch statistics over all replicas' rows (one all-reduce per layer),
  as one device does on the global batch. Returns how many layers it changed."""
  import keras

  from biwaa_tf.model import keras_hooks
  changed = 0
  for layer in keras_hooks.all_layers(model):
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.synchronized = True
      changed += 1
  return changed


def build_backbone(name, image_size, weights):
  _check(name)
  return BACKBONES[name](image_size, weights)
