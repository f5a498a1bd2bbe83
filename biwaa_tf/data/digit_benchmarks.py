"""The standard digits domains from their publishers' files: MNIST, USPS, SVHN.

Named like the built-in demo domains, `builtin:<name>`, the files looked up under
`--data_root` (layout as in the table; default ~/.cache/biwaa_tf/datasets):

  mnist_train, mnist_test   MNIST IDX files (gzipped or not), 28 x 28 grey
  usps_train, usps_test,    USPS in its common HDF5 packaging (train 7,291 / test
  usps                      2,007; `usps` = both), 16 x 16 grey in [0, 1]
  svhn_train, svhn_test     SVHN cropped digits, .mat (scipy), 32 x 32 RGB, label 10 -> 0

Every file is checked against the checksum in FILES before it is parsed; a
missing one is reported in one line with its URL, a damaged one (checksum, gzip,
header, size) naming the file. `download(name, root)` fetches what a dataset
needs (resumable, verified, with progress), for machines with internet.
"""

import gzip
import hashlib
import logging
import os
import struct
import sys
import urllib.request

import numpy as np

from biwaa_tf.errors import UserError

log = logging.getLogger(__name__)

_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
# file under data_root: (checksum "algorithm:hex", bytes, URL)
FILES = {
    "mnist/train-images-idx3-ubyte.gz": ("md5:f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422,
                                         _MNIST_URL + "train-images-idx3-ubyte.gz"),
    "mnist/train-labels-idx1-ubyte.gz": ("md5:d53e105ee54ea40749a09fcbcd1e9432", 28881,
                                         _MNIST_URL + "train-labels-idx1-ubyte.gz"),
    "mnist/t10k-images-idx3-ubyte.gz": (
        "sha256:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877,
        _MNIST_URL + "t10k-images-idx3-ubyte.gz"),
    "mnist/t10k-labels-idx1-ubyte.gz": (
        "sha256:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542,
        _MNIST_URL + "t10k-labels-idx1-ubyte.gz"),
    "usps/usps.h5": (
        "sha256:734f88c541104a956d88be2c95d03b4a463ffd74ccc2ba9c80841fb98e3fcb36", 2913522,
        "https://www.kaggle.com/datasets/bistaumanga/usps-dataset (usps.h5; needs a login)"),
    "svhn/train_32x32.mat": ("md5:e26dedcc434d2e4c54c9b2d4a06d8373", 182040794,
                             "http://ufldl.stanford.edu/housenumbers/train_32x32.mat"),
    "svhn/test_32x32.mat": ("md5:eb5a983be6a315427106f1b164d9cef3", 64275384,
                            "http://ufldl.stanford.edu/housenumbers/test_32x32.mat"),
}


def default_root():
  return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                      "biwaa_tf", "datasets")


def _path(root, rel):
  """The file, or its un-gzipped twin (MNIST is also distributed uncompressed)."""
  path = os.path.join(root, rel)
  if not os.path.exists(path) and path.endswith(".gz") and os.path.exists(path[:-3]):
    return path[:-3]
  return path


def _missing(name, root, rels):
  listed = "; ".join(f"{os.path.join(root, r)} <- {FILES[r][2]}" for r in rels)
  return UserError(f"builtin:{name}: missing file(s) under --data_root={root}: {listed} "
                   f"(or pass --download)")


def checksum(path, algorithm):
  digest = hashlib.new(algorithm)
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def verify(path, rel):
  """Raises a one-line UserError unless `path` is the published file (an un-gzipped
  MNIST file is checked by its parse instead)."""
  expected, size, _ = FILES[rel]
  if not path.endswith(os.path.basename(rel)):
    return
  algorithm, digest = expected.split(":")
  if os.path.getsize(path) != size or checksum(path, algorithm) != digest:
    raise UserError(f"{path}: not the published file ({algorithm} differs; size "
                    f"{os.path.getsize(path)} bytes, expected {size}); download it again "
                    f"from {FILES[rel][2]}")


def read_idx(path, magic):
  """An IDX file (gzipped or not) as a uint8 array; checks magic and size."""
  try:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise UserError(f"{path}: cannot read ({e})") from None
  dims = magic - 2048  # 2049: labels (1-d), 2051: images (3-d)
  header = 4 + 4 * dims
  if len(data) < header or struct.unpack(">I", data[:4])[0] != magic:
    raise UserError(f"{path}: not an IDX file with magic {magic}")
  shape = struct.unpack(f">{dims}I", data[4:header])
  if len(data) - header != int(np.prod(shape)):
    raise UserError(f"{path}: truncated or padded: {len(data) - header} bytes of data for "
                    f"shape {shape}")
  return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def parse_mnist(images_path, labels_path):
  images, labels = read_idx(images_path, 2051), read_idx(labels_path, 2049)
  if len(images) != len(labels):
    raise UserError(f"{images_path}: {len(images)} images but {len(labels)} labels")
  return images, labels.astype(np.int64)


def parse_usps_h5(path, parts):
  """USPS's HDF5 packaging: groups train/test with data [n, 256] in [0, 1] and target."""
  import h5py  # a Keras dependency
  try:
    with h5py.File(path, "r") as f:
      data = [(np.asarray(f[p]["data"]), np.asarray(f[p]["target"])) for p in parts]
  except (OSError, KeyError) as e:
    raise UserError(f"{path}: not the USPS HDF5 packaging ({str(e).splitlines()[0]})") from None
  images = np.concatenate([d for d, _ in data]).reshape(-1, 16, 16)
  labels = np.concatenate([t for _, t in data]).astype(np.int64)
  return np.round(np.clip(images, 0, 1) * 255).astype(np.uint8), labels


def parse_svhn_mat(path):
  """SVHN's cropped-digits .mat: X [32, 32, 3, n] uint8, y [n, 1] with 10 for the digit 0."""
  try:
    import scipy.io
  except ImportError:
    raise UserError("builtin:svhn_*: reading .mat files needs scipy "
                    "(pip install -e '.[digits]')") from None
  try:
    mat = scipy.io.loadmat(path)
  except Exception as e:  # noqa: BLE001  (any parse failure is the file's fault)
    raise UserError(f"{path}: cannot read ({str(e).splitlines()[0]})") from None
  images = np.transpose(mat["X"], (3, 0, 1, 2))
  labels = mat["y"].reshape(-1).astype(np.int64) % 10  # SVHN labels the digit 0 as 10
  return images, labels


def _mnist(prefix):
  return [f"mnist/{prefix}-images-idx3-ubyte.gz", f"mnist/{prefix}-labels-idx1-ubyte.gz"]


# name: (its files under the root, the parser of those files)
DATASETS = {
    "mnist_train": (_mnist("train"), parse_mnist),
    "mnist_test": (_mnist("t10k"), parse_mnist),
    "usps_train": (["usps/usps.h5"], lambda path: parse_usps_h5(path, ("train",))),
    "usps_test": (["usps/usps.h5"], lambda path: parse_usps_h5(path, ("test",))),
    "usps": (["usps/usps.h5"], lambda path: parse_usps_h5(path, ("train", "test"))),
    "svhn_train": (["svhn/train_32x32.mat"], parse_svhn_mat),
    "svhn_test": (["svhn/test_32x32.mat"], parse_svhn_mat),
}


def load(name, root=None):
  """(uint8 images N x H x W [x 3], int64 labels) of dataset `name` under `root`: its
  files found (else one line naming them and their URLs), verified, parsed."""
  root = root or default_root()
  rels, parse = DATASETS[name]
  paths = [_path(root, r) for r in rels]
  if not all(os.path.exists(p) for p in paths):
    raise _missing(name, root, rels)
  for path, rel in zip(paths, rels):
    verify(path, rel)
  return parse(*paths)


def download(name, root=None, progress=True):
  """Fetches the files dataset `name` needs into `root` (resumable: a partial file is
  continued; verified against FILES). USPS needs a Kaggle login: reported, not fetched."""
  root = root or default_root()
  for rel in DATASETS[name][0]:
    path = os.path.join(root, rel)
    if os.path.exists(path):
      verify(path, rel)
      continue
    url = FILES[rel][2]
    if not url.startswith("http"):
      raise UserError(f"{path}: cannot be downloaded automatically; get it from {url}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path + ".part"
    done = os.path.getsize(partial) if os.path.exists(partial) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
      with urllib.request.urlopen(request, timeout=60) as response, \
          open(partial, "ab" if done and response.status == 206 else "wb") as out:
        done = done if response.status == 206 else 0
        total = FILES[rel][1]
        for block in iter(lambda: response.read(1 << 20), b""):
          out.write(block)
          done += len(block)
          if progress:
            print(f"\r{rel}: {done / 1e6:.1f} / {total / 1e6:.1f} MB", end="", file=sys.stderr)
      if progress:
        print(file=sys.stderr)
    except OSError as e:
      raise UserError(f"--download: {url}: {e}; place the file at {path}") from None
    os.replace(partial, path)
    try:
      verify(path, rel)
    except UserError:
      os.remove(path)  # a corrupt download is not kept
      raise
    log.info("downloaded %s", path)
