"""MNIST / USPS / SVHN readers: the real files, tiny files in each format, damaged ones."""

import gzip
import os
import struct

import numpy as np
import pytest
from conftest import REPO, run_main

from biwaa_tf.data import digit_benchmarks, lists
from biwaa_tf.errors import UserError

SHARED = os.path.join(os.path.dirname(REPO), "shared", "datasets", "digits")
needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason="no ../shared/datasets")


def idx_bytes(array, magic):
  return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


@needs_shared
def test_real_files_read_with_their_published_class_counts():
  x, y = digit_benchmarks.load("mnist_test", SHARED)
  assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
  assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
  assert x.mean() == pytest.approx(33.3, abs=0.5)  # white digits on black
  x, y = digit_benchmarks.load("usps", SHARED)
  assert x.shape == (9298, 16, 16)
  assert np.bincount(y).tolist() == [1553, 1269, 929, 824, 852, 716, 834, 792, 708, 821]
  assert len(digit_benchmarks.load("usps_test", SHARED)[0]) == 2007


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_on_tiny_files(tmp_path, gz):
  images = np.arange(2 * 3 * 4).reshape(2, 3, 4)
  path = str(tmp_path / ("x.idx.gz" if gz else "x.idx"))
  with (gzip.open if gz else open)(path, "wb") as f:
    f.write(idx_bytes(images, 2051))
  np.testing.assert_array_equal(digit_benchmarks.read_idx(path, 2051), images)


@pytest.mark.parametrize("content, message", [
    (idx_bytes(np.zeros((2, 3, 4)), 2051)[:-5], "truncated or padded: 19 bytes of data"),
    (idx_bytes(np.zeros(5), 2049), "not an IDX file with magic 2051"),
    (b"\x1f\x8b\x08\x00garbage", "cannot read"),
])
def test_idx_reader_damaged_files_one_line(tmp_path, content, message):
  path = str(tmp_path / "x.gz") if content.startswith(b"\x1f\x8b") else str(tmp_path / "x")
  with open(path, "wb") as f:
    f.write(content)
  with pytest.raises(UserError, match=message) as err:
    digit_benchmarks.read_idx(path, 2051)
  assert "\n" not in str(err.value) and path in str(err.value)


def test_a_file_that_is_not_the_published_one_is_refused(tmp_path):
  os.makedirs(tmp_path / "mnist")
  for name, array, magic in (("t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28)), 2051),
                             ("t10k-labels-idx1-ubyte.gz", np.zeros(2), 2049)):
    with gzip.open(tmp_path / "mnist" / name, "wb") as f:
      f.write(idx_bytes(array, magic))
  with pytest.raises(UserError, match="not the published file .sha256 differs"):
    digit_benchmarks.load("mnist_test", str(tmp_path))


def test_missing_files_name_the_url(tmp_path):
  with pytest.raises(UserError) as err:
    lists.load_image_list("builtin:mnist_train", str(tmp_path))
  text = str(err.value)
  assert "train-images-idx3-ubyte.gz <- https://" in text and "--download" in text
  assert "\n" not in text


def test_usps_and_svhn_parsers_on_tiny_files(tmp_path):
  import h5py
  data = np.linspace(0, 1, 3 * 256).reshape(3, 256).astype(np.float32)
  with h5py.File(tmp_path / "u.h5", "w") as f:
    for part in ("train", "test"):
      f.create_group(part).create_dataset("data", data=data)
      f[part].create_dataset("target", data=np.array([0, 5, 9], np.int32))
  x, y = digit_benchmarks.parse_usps_h5(str(tmp_path / "u.h5"), ("train", "test"))
  assert x.shape == (6, 16, 16) and x.dtype == np.uint8 and x.max() == 255
  assert y.tolist() == [0, 5, 9, 0, 5, 9]
  with open(tmp_path / "bad.h5", "wb") as f:
    f.write(b"not hdf5")
  with pytest.raises(UserError, match="not the USPS HDF5 packaging"):
    digit_benchmarks.parse_usps_h5(str(tmp_path / "bad.h5"), ("train",))
  scipy_io = pytest.importorskip("scipy.io")
  x = np.random.default_rng(0).integers(0, 255, (32, 32, 3, 2)).astype(np.uint8)
  scipy_io.savemat(tmp_path / "s.mat", {"X": x, "y": np.array([[10], [3]])})
  images, labels = digit_benchmarks.parse_svhn_mat(str(tmp_path / "s.mat"))
  assert images.shape == (2, 32, 32, 3) and labels.tolist() == [0, 3]
  np.testing.assert_array_equal(images[1], x[..., 1])


@needs_shared
def test_cli_trains_a_few_steps_on_the_real_digits(tmp_path):
  out = run_main(["--flagfile=configs/digits_m2u.flags", f"--data_root={SHARED}",
                  "--steps_per_run=4", "--batch_size=16", f"--model_dir={tmp_path / 'm'}"])
  assert out.returncode == 0, out.stderr[-2000:]
  assert "builtin:mnist_test: 10000 images; target builtin:usps: 9298" in out.stderr
  assert (tmp_path / "m" / "results.json").exists()
