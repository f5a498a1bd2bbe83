"""torchvision's ResNet-50 ("v1.5") in Keras layers, and its weights from torchvision files.

The authors' implementation uses torchvision's `resnet50(pretrained=True)`:
stride 2 on the 3x3 convolution of each downsampling bottleneck (v1.5; Keras'
`applications.ResNet50` is v1, stride 2 on the first 1x1), convolutions without
bias, batch normalisation with eps 1e-5, inputs RGB in [0, 1] normalised by the
ImageNet mean and std. Padding is written out (ZeroPadding2D + 'valid') so that
every output pixel sees what PyTorch's symmetric padding gives it.

Layer names follow torchvision's module names with '.' -> '_' (`layer1_0_conv1`),
so a torchvision state dict maps onto the model by name (`load_torch_state`).
"""

import json
import os
import struct

import numpy as np

from biwaa_tf.errors import UserError

BLOCKS = (3, 4, 6, 3)  # bottlenecks per stage (ResNet-50)
WIDTHS = (64, 128, 256, 512)
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1 in Keras' convention


def _conv(x, filters, kernel, stride, name, pad):
  import keras
  if pad:
    x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
  return keras.layers.Conv2D(filters, kernel, strides=stride, use_bias=False, name=name)(x)


def _bn(x, name):
  import keras
  return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def _bottleneck(x, width, stride, name, downsample):
  import keras
  out = keras.layers.ReLU()(_bn(_conv(x, width, 1, 1, f"{name}_conv1", 0), f"{name}_bn1"))
  out = keras.layers.ReLU()(_bn(_conv(out, width, 3, stride, f"{name}_conv2", 1),
                                f"{name}_bn2"))
  out = _bn(_conv(out, 4 * width, 1, 1, f"{name}_conv3", 0), f"{name}_bn3")
  if downsample:
    x = _bn(_conv(x, 4 * width, 1, stride, f"{name}_downsample_0", 0), f"{name}_downsample_1")
  return keras.layers.ReLU(name=f"{name}_relu")(keras.layers.Add(name=f"{name}_add")([out, x]))


def resnet50_v15(image_size=224, include_top=False, classes=1000):
  """The network: NHWC normalised images -> 2048-d pooled features (or fc logits)."""
  import keras
  inputs = keras.Input((image_size, image_size, 3))
  x = keras.layers.ReLU()(_bn(_conv(inputs, 64, 7, 2, "conv1", 3), "bn1"))
  # PyTorch pads max-pooling with -inf; after the ReLU every value is >= 0, so zeros
  # give the same maxima.
  x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
  x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
  for stage, (blocks, width) in enumerate(zip(BLOCKS, WIDTHS), 1):
    for b in range(blocks):
      stride = 2 if (b == 0 and stage > 1) else 1
      x = _bottleneck(x, width, stride, f"layer{stage}_{b}", downsample=b == 0)
  x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
  if include_top:
    x = keras.layers.Dense(classes, name="fc")(x)
  return keras.Model(inputs, x, name="resnet50_v15")


# --- torchvision-format weights ---

_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
                       "BF16": "bf16"}


def read_safetensors(path):
  """{name: NumPy array} of a .safetensors file (the format is a length-prefixed JSON
  header and raw little-endian data; read without the safetensors package)."""
  try:
    with open(path, "rb") as f:
      (size,) = struct.unpack("<Q", f.read(8))
      if size > 100_000_000:
        raise ValueError("header too large")
      header = json.loads(f.read(size))
      data = f.read()
  except (OSError, ValueError, struct.error) as e:
    raise UserError(f"{path}: not a readable .safetensors file ({e})") from None
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    begin, end = info["data_offsets"]
    if end > len(data):
      raise UserError(f"{path}: truncated (tensor {name!r} ends past the file's end)")
    dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
    if dtype is None:
      raise UserError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
    raw = data[begin:end]
    if dtype == "bf16":  # the upper half of a float32
      array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    else:
      array = np.frombuffer(raw, dtype)
    out[name] = array.reshape(info["shape"]).astype(
        np.float32 if array.dtype.kind == "f" else array.dtype)
  return out


def read_torch_state(path):
  """{name: array} from a .safetensors file, or a torchvision .pth when PyTorch is
  installed (it is not a dependency)."""
  if path.endswith(".safetensors"):
    return read_safetensors(path)
  if path.endswith((".pth", ".pt")):
    try:
      import torch
    except ImportError:
      raise UserError(f"{path}: reading a .pth file needs PyTorch; convert it to "
                      ".safetensors or install torch") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
            for k, v in state.items()}
  raise UserError(f"{path}: expected a .safetensors (or, with PyTorch, .pth) file")


def load_torch_state(model, state):
  """Copies a torchvision ResNet-50 state dict into `model` (conv OIHW -> HWIO, fc
  [out, in] -> [in, out]). Every layer of the model must be found; the fc weights
  are ignored by a model without the head."""
  used = set()
  for layer in model.layers:
    if not layer.weights:
      continue
    prefix = layer.name.replace("_", ".")  # layer1_0_downsample_0 -> layer1.0.downsample.0
    if type(layer).__name__ == "Conv2D":
      keys = [f"{prefix}.weight"]
      values = [np.transpose(_get(state, keys[0], model.name), (2, 3, 1, 0))]
    elif type(layer).__name__ == "BatchNormalization":
      keys = [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
      values = [_get(state, k, model.name) for k in keys]
    elif type(layer).__name__ == "Dense":
      keys = [f"{prefix}.weight", f"{prefix}.bias"]
      values = [_get(state, keys[0], model.name).T, _get(state, keys[1], model.name)]
    else:
      raise ValueError(f"unexpected layer with weights: {layer.name}")
    for v, value in zip(layer.weights, values):
      if tuple(v.shape) != value.shape:
        raise UserError(f"torchvision weight {keys[0]}: shape {value.shape} does not fit "
                        f"{layer.name} {tuple(v.shape)}")
    layer.set_weights(values)
    used.update(keys)
  expected = {k for k in state if not k.endswith("num_batches_tracked")}
  if "fc.weight" not in used:  # a model without the head
    expected = {k for k in expected if not k.startswith("fc.")}
  unused = sorted(expected - used)
  if unused:
    raise UserError(f"torchvision weights have {len(unused)} tensor(s) this ResNet-50 does "
                    f"not use, e.g. {unused[0]!r}: not a ResNet-50 state dict?")


def _get(state, key, model_name):
  if key not in state:
    raise UserError(f"torchvision weights: {key!r} missing (not a ResNet-50 state dict "
                    f"for {model_name}?)")
  return np.asarray(state[key], np.float32)


def load_weights_file(model, path):
  if not os.path.isfile(path):
    raise UserError(f"--backbone_weights={path}: no such file")
  load_torch_state(model, read_torch_state(path))
