"""torchvision's ResNet-50 (v1.5) in Keras and its weights, against PyTorch's own outputs.

The fixture (shared/fixtures/resnet50_v15, beside the repository) holds stand-in
weights under torchvision's names and torchvision's float64 outputs for them.
"""

import json
import os
import struct
import sys

import keras
import numpy as np
import pytest
from conftest import REPO

from biwaa_tf.errors import UserError
from biwaa_tf.model import backbones
from biwaa_tf.model import torchvision_resnet as tv

FIXTURE = os.path.join(os.path.dirname(REPO), "shared", "fixtures", "resnet50_v15")


def write_safetensors(path, tensors, dtypes=None):
  """An independent writer of the format: u64 header length, JSON header, raw data."""
  dtypes = dtypes or {}
  header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
  for name, array in tensors.items():
    kind = dtypes.get(name, "F32")
    if kind == "BF16":
      raw = (np.asarray(array, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    else:
      raw = np.asarray(array, {"F32": "<f4", "F16": "<f2", "I64": "<i8"}[kind]).tobytes()
    header[name] = {"dtype": kind, "shape": list(np.shape(array)),
                    "data_offsets": [offset, offset + len(raw)]}
    blobs.append(raw)
    offset += len(raw)
  text = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


@pytest.fixture(scope="module")
def fixture_state():
  if not os.path.isdir(FIXTURE):
    pytest.skip(f"{FIXTURE} is not here (it ships in the project's shared/ folder)")
  sys.path.insert(0, FIXTURE)
  try:
    import weights
  finally:
    sys.path.remove(FIXTURE)
  return weights.state_dict(), dict(np.load(os.path.join(FIXTURE, "reference.npz")))


def _rel(a, b):
  return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def test_port_matches_torchvision_outputs(fixture_state, tmp_path):
  state, ref = fixture_state
  path = tmp_path / "resnet50.safetensors"
  write_safetensors(path, state, {k: "I64" for k in state if k.endswith("tracked")})
  model = tv.resnet50_v15(224, include_top=True)
  tv.load_weights_file(model, str(path))
  probe = keras.Model(model.input, [model.get_layer("layer2_3_relu").output,
                                    model.get_layer("avgpool").input,
                                    model.get_layer("avgpool").output,
                                    model.get_layer("fc").output])
  layer2, layer4, pooled, logits = probe(ref["inputs"], training=False)
  # Measured: 3.0e-7, 1.0e-6, 1.4e-7, 4.8e-7 (a v1-style network is off by 1-10%).
  assert _rel(np.asarray(layer2)[:, ::4, ::4, :64], ref["layer2_sample"]) < 1e-5
  assert _rel(layer4, ref["layer4"]) < 1e-5
  assert _rel(pooled, ref["pooled"]) < 1e-5
  assert _rel(logits, ref["logits"]) < 1e-5
  # The registry's backbone is the same network without the head, pooled.
  backbone = backbones.build_backbone("resnet50", 224, str(path))
  assert _rel(backbone(ref["inputs"], training=False), ref["pooled"]) < 1e-5
  assert backbones.normalization("resnet50") == "torch"


def test_safetensors_reader_against_an_independent_writer(tmp_path):
  rng = np.random.default_rng(0)
  tensors = {"a": rng.normal(size=(2, 3)).astype(np.float32),
             "b": rng.normal(size=(4,)).astype(np.float32),
             "c": rng.normal(size=(3, 1, 2)).astype(np.float32), "n": np.array(7)}
  path = tmp_path / "t.safetensors"
  write_safetensors(path, tensors, {"b": "F16", "c": "BF16", "n": "I64"})
  got = tv.read_safetensors(str(path))
  np.testing.assert_array_equal(got["a"], tensors["a"])
  np.testing.assert_array_equal(got["b"], tensors["b"].astype(np.float16).astype(np.float32))
  bf16 = (tensors["c"].view(np.uint32) & 0xFFFF0000).view(np.float32)  # truncated mantissa
  np.testing.assert_array_equal(got["c"], bf16)
  assert got["c"].dtype == np.float32 and int(got["n"]) == 7


def test_bad_weight_files_are_one_line_errors(tmp_path):
  model = tv.resnet50_v15(64)
  truncated = tmp_path / "cut.safetensors"
  write_safetensors(truncated, {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)})
  truncated.write_bytes(truncated.read_bytes()[:-100])
  with pytest.raises(UserError, match="truncated"):
    tv.read_safetensors(str(truncated))
  garbage = tmp_path / "garbage.safetensors"
  garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
  with pytest.raises(UserError, match="not a readable .safetensors file"):
    tv.read_safetensors(str(garbage))
  partial = tmp_path / "partial.safetensors"
  write_safetensors(partial, {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)})
  with pytest.raises(UserError, match=r"'bn1.weight' missing"):
    tv.load_weights_file(model, str(partial))
  keras_file = tmp_path / "weights.h5"
  keras_file.write_bytes(b"\x89HDF\r\n\x1a\n")
  with pytest.raises(UserError, match="expected a .safetensors"):
    tv.load_weights_file(model, str(keras_file))


def test_imagenet_weights_offline_fail_in_one_line_naming_the_file(monkeypatch):
  import huggingface_hub

  def offline(*args, **kwargs):
    raise OSError("We couldn't connect to 'https://huggingface.co' to load this file")
  monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
  with pytest.raises(UserError) as e:
    backbones.build_backbone("resnet50", 64, "imagenet")
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith("--backbone_weights=imagenet: cannot fetch model.safetensors")
  assert backbones.TORCHVISION_RESNET50_URL in message and "--backbone_weights=FILE" in message
