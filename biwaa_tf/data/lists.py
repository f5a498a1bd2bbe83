"""Datasets as (paths, labels, class names): list files or class-subfolder dirs.

A list file has one ``relative/path label`` a line (paths under ``data_root``;
a path may contain spaces, the label is the last field). A target list may omit
all labels (unlabelled target). A directory holds one sub-folder per class;
the sorted folder names give the class indices.

Lists given by a bare name such as ``office31/amazon.txt`` that do not exist
relative to the working directory are looked up among the benchmark lists that
ship inside the package (``biwaa_tf/lists``).
"""

import concurrent.futures
import dataclasses
import os

import numpy as np

from biwaa_tf.data import demo_digits, digit_benchmarks
from biwaa_tf.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SHIPPED_LISTS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "lists")
UNLABELLED = -1
# How flags.txt names a domain that adapt() was given as NumPy arrays (api.array_spec).
ARRAY = "array:"


@dataclasses.dataclass(frozen=True)
class ImageList:
  """An ordered image dataset. labels[i] == -1 where the label is unknown.

  `images`: for a dataset held in memory (from_arrays), N x H x W x 3 uint8 pixels;
  `paths` then names the rows ("name[i]").
  """
  name: str
  paths: tuple
  labels: np.ndarray
  class_names: tuple
  images: np.ndarray = None

  @property
  def size(self):
    return len(self.paths)

  @property
  def labelled(self):
    return bool(self.size) and bool(np.all(self.labels >= 0))

  def subset(self, keep):
    keep = np.asarray(keep, dtype=bool)
    return dataclasses.replace(
        self, paths=tuple(p for p, k in zip(self.paths, keep) if k),
        labels=self.labels[keep], images=None if self.images is None else self.images[keep])



def as_uint8_rgb(images, name):
  """N x H x W x {1,3} images -> N x H x W x 3 uint8 (uint8 as is; float in [0, 1])."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or not len(images):
    raise UserError(f"{name}: images must be N x H x W x 1 or 3 (or N x H x W), got shape "
                    f"{images.shape}")
  if images.dtype != np.uint8:
    if not np.issubdtype(images.dtype, np.floating):
      raise UserError(f"{name}: images must be uint8 (0-255) or float (0-1), got "
                      f"{images.dtype}")
    finite = np.isfinite(images)
    if not finite.all():
      first = np.argwhere(~finite)[0]
      raise UserError(f"{name}: {int((~finite).sum())} pixel values are NaN or infinite "
                      f"(the first in image {first[0]})")
    if images.min() < 0 or images.max() > 1:
      raise UserError(f"{name}: float images must lie in [0, 1] (found "
                      f"{images.min():g}..{images.max():g}); pass uint8 for 0-255")
    images = np.round(images * 255).astype(np.uint8)
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  return images


def unit_float_rgb(images, name):
  """Images as adapt() takes them -> N x H x W x 3 float32 in [0, 1] (uint8 / 255), the
  input on which the served model (export.Preprocess) reads every image exactly as
  as_uint8_rgb does, whatever the batch's values."""
  return as_uint8_rgb(images, name).astype(np.float32) / np.float32(255)


def integer_labels(labels, name, n):
  """Labels as N integers 0..K-1: integer labels as given, one-hot (N x K) rows as their
  index; anything else is refused in one line naming the domain."""
  labels = np.asarray(labels)
  if labels.ndim == 2 and labels.shape[0] == n and labels.shape[1] > 1:
    one_hot = np.isin(labels, (0, 1)).all() and (labels.sum(axis=1) == 1).all()
    if not one_hot:
      raise UserError(f"{name}: {labels.shape[0]} x {labels.shape[1]} labels that are not "
                      "one-hot rows; give integer labels 0..K-1 or one-hot rows")
    return np.argmax(labels, axis=1).astype(np.int64)
  labels = labels.reshape(-1)
  if len(labels) != n:
    raise UserError(f"{name}: {n} images but {len(labels)} labels")
  if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
    raise UserError(f"{name}: non-integer labels (such as {labels[labels != np.round(labels)][0]})"
                    "; give integer labels 0..K-1 or one-hot rows")
  if labels.dtype.kind not in "iuf":
    raise UserError(f"{name}: labels of type {labels.dtype}; give integers 0..K-1")
  labels = labels.astype(np.int64)
  if n and labels.min() < 0:
    i = int(np.argmin(labels))
    raise UserError(f"{name}: label {labels[i]} at index {i}; labels are 0..K-1 (pass no "
                    "labels for an unlabelled domain)")
  return labels


def from_arrays(name, images, labels=None, num_classes=None, class_names=None):
  """An in-memory ImageList (see as_uint8_rgb for the accepted images)."""
  images = as_uint8_rgb(images, name)
  n = len(images)
  if labels is None:
    labels = np.full(n, UNLABELLED, np.int64)
  else:
    labels = integer_labels(labels, name, n)
  k = num_classes or (len(class_names) if class_names else int(labels.max()) + 1)
  if labels.max() >= k:
    raise UserError(f"{name}: label {labels.max()} but {k} classes")
  names = tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(k))
  return ImageList(name, tuple(f"{name}[{i}]" for i in range(n)), labels, names, images)


def label_shift_mask(labels, num_classes, kind, ratio, shuffled=False, seed=0):
  """Which samples a label-shifted subsample keeps; each sample of class k is kept with
  probability p_k (one seeded uniform draw per sample):
    long_tail:R     p_k = R^(-k/(K-1))        (class 0 whole, class K-1 a 1/R share)
    reverse_tail:R  p_k = R^(-(K-1-k)/(K-1))  (the mirror image)
    step:R          p_k = 1 for k < K/2, 1/R for the other half (a step imbalance)
    partial:N       p_k = 1, and 0 for the last N classes (absent: partial-set DA)
    dirichlet:A     p_k = d_k / max(d), d ~ Dirichlet(A, ..., A) drawn from the seed
  `shuffled`: class k takes the p of position perm[k], perm drawn from the seed (the
  same uniform draws per sample either way)."""
  labels = np.asarray(labels)
  order_rng = np.random.default_rng([int(seed), 2])
  if kind == "dirichlet":
    d = order_rng.dirichlet(np.full(num_classes, float(ratio)))
    return np.random.default_rng(seed).random(len(labels)) < (d / d.max())[labels]
  k = order_rng.permutation(num_classes) if shuffled else np.arange(num_classes)
  if kind == "long_tail":
    keep_prob = ratio ** (-k / max(num_classes - 1, 1))
  elif kind == "reverse_tail":
    keep_prob = ratio ** (-(num_classes - 1 - k) / max(num_classes - 1, 1))
  elif kind == "step":
    keep_prob = np.where(k < (num_classes + 1) // 2, 1.0, 1.0 / ratio)
  elif kind == "partial":
    if not 1 <= int(ratio) < num_classes:
      raise UserError(f"--target_subsample=partial:{int(ratio)}: leave out 1 to "
                      f"{num_classes - 1} of the {num_classes} classes")
    keep_prob = np.where(k < num_classes - int(ratio), 1.0, 0.0)
  else:
    raise ValueError(f"unknown label shift {kind!r}")
  return np.random.default_rng(seed).random(len(labels)) < keep_prob[labels]


def resolve_list_path(spec):
  """The list file or directory `spec` names, trying the shipped lists last."""
  if os.path.exists(spec):
    return spec
  shipped = os.path.join(SHIPPED_LISTS, spec)
  if os.path.exists(shipped):
    return shipped
  raise UserError(f"{spec}: no such list file or directory")


def _class_names_from_paths(paths, labels, num_classes):
  """Each label's parent folder name when all its files agree, else 'class_<k>'."""
  names = {}
  for p, y in zip(paths, labels):
    folder = os.path.basename(os.path.dirname(p))
    names.setdefault(int(y), set()).add(folder)
  result = []
  for k in range(num_classes):
    folders = names.get(k, set())
    result.append(folders.pop() if len(folders) == 1 else f"class_{k}")
  return tuple(result)


def read_list_file(list_path, data_root, num_classes=None):
  """Parses a list file; errors name the file and line."""
  paths, labels = [], []
  with open(list_path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  for lineno, line in enumerate(lines, 1):
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    fields = line.rsplit(maxsplit=1)
    label = UNLABELLED
    if len(fields) == 2 and _is_int(fields[1]):
      rel, label = fields[0], int(fields[1])
      if label < 0:
        raise UserError(f"{list_path}:{lineno}: negative label {label}")
      if num_classes is not None and label >= num_classes:
        raise UserError(f"{list_path}:{lineno}: label {label} is out of range for "
                        f"{num_classes} classes")
    elif len(fields) == 2 and _looks_like_label(fields[1]):
      raise UserError(f"{list_path}:{lineno}: malformed line (label "
                      f"{fields[1]!r} is not an integer): {line!r}")
    else:
      rel = line
      if not rel.lower().endswith(IMAGE_EXTENSIONS):
        raise UserError(f"{list_path}:{lineno}: malformed line (expected "
                        f"'relative/path label'): {line!r}")
    paths.append(os.path.join(data_root, rel) if data_root else rel)
    labels.append(label)
  if not paths:
    raise UserError(f"{list_path}: the list is empty")
  labels = np.asarray(labels, dtype=np.int64)
  known = labels >= 0
  if known.any() and not known.all():
    first = int(np.argmin(known))
    raise UserError(f"{list_path}: line for {paths[first]!r} has no label while "
                    "others do: label every line or none")
  k = num_classes if num_classes is not None else (int(labels.max()) + 1 if known.all() else 0)
  names = _class_names_from_paths(paths, labels, k) if known.all() else tuple(
      f"class_{i}" for i in range(k))
  return ImageList(list_path, tuple(paths), labels, names)


def _is_int(s):
  try:
    int(s)
    return True
  except ValueError:
    return False


def _looks_like_label(s):
  return not s.lower().endswith(IMAGE_EXTENSIONS) and "/" not in s and "." not in s


def read_folder(directory):
  """A directory of images: class sub-folders (sorted names give the indices), or, when
  images lie at its top level, an unlabelled set (every image below it, any nesting)."""
  entries = sorted(e for e in os.listdir(directory) if not e.startswith("."))
  if any(e.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(directory, e))
         for e in entries):
    paths = tuple(_images_below(directory))
    return ImageList(directory, paths, np.full(len(paths), UNLABELLED, np.int64), ())
  classes = [d for d in entries if os.path.isdir(os.path.join(directory, d))]
  if not classes:
    raise UserError(f"{directory}: no images ({', '.join(IMAGE_EXTENSIONS)}) and no class "
                    "sub-folders in it")
  paths, labels = [], []
  for k, name in enumerate(classes):
    found = _images_below(os.path.join(directory, name))
    paths += found
    labels += [k] * len(found)
  if not paths:
    raise UserError(f"{directory}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its "
                    "class folders")
  return ImageList(directory, tuple(paths), np.asarray(labels, np.int64), tuple(classes))


def _images_below(directory):
  """The image files under `directory`, at any depth, in a sorted walk."""
  found = []
  for root, dirs, files in os.walk(directory):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    found += [os.path.join(root, f) for f in sorted(files)
              if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
  return found


def load_image_list(spec, data_root, num_classes=None, download=False):
  """A list file, a class-subfolder directory or a built-in dataset (the demo's digits,
  or MNIST/USPS/SVHN from their files under data_root: data/digit_benchmarks.py)."""
  name = spec[len(demo_digits.BUILTIN_PREFIX):]
  if spec.startswith(demo_digits.BUILTIN_PREFIX) and name in digit_benchmarks.DATASETS:
    root = data_root or digit_benchmarks.default_root()
    if download:
      digit_benchmarks.download(name, root)
    images, labels = digit_benchmarks.load(name, root)
    return from_arrays(spec, images, labels, num_classes or 10,
                       tuple(str(k) for k in range(10)))
  if spec.startswith(demo_digits.BUILTIN_PREFIX):
    path = demo_digits.resolve(spec)
    return read_list_file(path, os.path.dirname(path), num_classes)
  path = resolve_list_path(spec)
  if os.path.isdir(path):
    return read_folder(path)
  return read_list_file(path, data_root, num_classes)


# --- Up-front file validation: existence and a header/trailer check. ---

_SIGNATURES = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
)


def check_image_file(path):
  """None if `path` looks like a complete image, else the reason (a short phrase)."""
  try:
    size = os.path.getsize(path)
  except OSError:
    return "file not found"
  if size == 0:
    return "empty file"
  try:
    with open(path, "rb") as f:
      head = f.read(16)
      f.seek(max(0, size - 16))
      tail = f.read(16)
  except OSError as e:
    return f"unreadable ({e.strerror})"
  kind = next((k for sig, k in _SIGNATURES if head.startswith(sig)), None)
  if kind is None:
    return "not an image (unknown header)"
  if kind == "jpeg" and b"\xff\xd9" not in tail:
    return "truncated JPEG (no end marker)"
  if kind == "png" and not tail.endswith(b"IEND\xaeB`\x82"):
    return "truncated PNG (no IEND chunk)"
  if kind == "gif" and not tail.endswith(b";"):
    return "truncated GIF (no trailer)"
  return None


def validate_images(image_list, skip_invalid, workers=16):
  """Checks every file in parallel; raises on the first bad one or drops them.

  Returns (the list, with bad files removed when skip_invalid, number removed).
  """
  if image_list.images is not None:  # in memory: checked by from_arrays
    return image_list, 0
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    reasons = list(pool.map(check_image_file, image_list.paths))
  bad = [i for i, r in enumerate(reasons) if r is not None]
  if not bad:
    return image_list, 0
  if not skip_invalid:
    i = bad[0]
    more = f" (and {len(bad) - 1} more; --skip_invalid_images drops them)" if len(bad) > 1 else ""
    raise UserError(f"{image_list.paths[i]}: {reasons[i]} (entry {i + 1} of "
                    f"{image_list.name}){more}")
  keep = np.ones(image_list.size, bool)
  keep[bad] = False
  kept = image_list.subset(keep)
  if kept.size == 0:
    raise UserError(f"{image_list.name}: no valid image left after dropping {len(bad)}")
  return kept, len(bad)


def check_every_class_present(source):
  """Every class index below the largest label needs a source image.

  A gap is most often a typo (a 3-class list with one line '... 7' would train an
  8-class model); --num_classes declares classes without source images on purpose.
  """
  counts = np.bincount(source.labels, minlength=len(source.class_names))
  missing = np.flatnonzero(counts == 0)
  if not len(missing):
    return
  top = int(source.labels.max())
  where = _line_of(source, int(np.argmax(source.labels == top)))
  missing_text = _ranges(missing.tolist())
  raise UserError(f"{where}: label {top}, but class(es) {missing_text} have no source "
                  f"image; fix the label, or declare the classes with "
                  f"--num_classes={len(counts)}")


def _line_of(image_list, entry):
  """'file:line' of entry `entry` of a list file (file and entry for a folder)."""
  path = image_list.name
  if os.path.isfile(path):
    count = -1
    with open(path, encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        line = line.strip()
        if line and not line.startswith("#"):
          count += 1
          if count == entry:
            return f"{path}:{lineno}"
  return f"{path} (entry {entry + 1})"


def _ranges(values):
  """[3, 4, 5, 6, 9] -> '3-6, 9'."""
  parts, start = [], None
  for i, v in enumerate(values):
    if start is None:
      start = v
    if i + 1 == len(values) or values[i + 1] != v + 1:
      parts.append(str(start) if start == v else f"{start}-{v}")
      start = None
  return ", ".join(parts)


def split_heldout(source, fraction, seed):
  """(training part, held-out part) of a labelled source: round(fraction * n_c) images of
  each class c (at least one where the class has two or more), drawn with `seed`; the
  held-out part keeps the source's order. Also the classes left without a held-out image
  (one image only)."""
  rng = np.random.default_rng([int(seed), 20261206])
  held = np.zeros(source.size, bool)
  alone = []
  for c in range(len(source.class_names)):
    rows = np.flatnonzero(source.labels == c)
    if len(rows) < 2:
      alone.append(c)
      continue
    m = min(max(1, int(round(fraction * len(rows)))), len(rows) - 1)
    held[rng.choice(rows, m, replace=False)] = True
  return source.subset(~held), dataclasses.replace(source.subset(held),
                                                   name=f"{source.name} (held out)"), alone


def match_classes(source, target):
  """`target` with its labels in the source's class indices.

  A labelled target whose classes are named (class folders) is matched by name: its
  classes may be a subset of the source's (a partial target; its labels only report
  accuracy). Unnamed classes (list files, arrays) must be the source's, index by index.
  An unlabelled target is returned as it is."""
  if not target.labelled or not target.class_names:
    return target
  named = not any(n.startswith("class_") for n in target.class_names + source.class_names)
  if named and target.class_names != source.class_names:
    index = {n: k for k, n in enumerate(source.class_names)}
    foreign = [n for n in target.class_names if n not in index]
    if foreign:
      raise UserError(f"{target.name}: class folder(s) {', '.join(foreign[:5])} are not "
                      f"classes of {source.name} ({', '.join(source.class_names[:5])}"
                      f"{', ...' if len(source.class_names) > 5 else ''}); an unlabelled "
                      "target is a folder with its images at the top level")
    mapping = np.array([index[n] for n in target.class_names], np.int64)
    return dataclasses.replace(target, labels=mapping[target.labels],
                               class_names=source.class_names)
  check_same_classes(source, target)
  return target


def check_same_classes(source, target):
  """Source and target must describe the same classes (names compared where known)."""
  if len(target.class_names) != len(source.class_names):
    raise UserError(f"{source.name} has {len(source.class_names)} classes but "
                    f"{target.name} has {len(target.class_names)}")
  for k, (a, b) in enumerate(zip(source.class_names, target.class_names)):
    if a != b and not a.startswith("class_") and not b.startswith("class_"):
      raise UserError(f"class {k} is {a!r} in {source.name} but {b!r} in {target.name}")


@dataclasses.dataclass(frozen=True)
class Domains:
  """The validated datasets of a training (see train/preflight.prepare_data)."""
  source: object
  target: object
  target_eval: object
  class_names: tuple
  normalization: str
  heldout: object = None  # labelled source images kept out of training (split_heldout)
  unsplit_source: object = None  # the source before split_heldout, in its own order

  @property
  def num_classes(self):
    return len(self.class_names)

  def with_all_of_the_source(self):
    """These domains with the held-out split trained on again (the source as it was read,
    in its order) and no held-out split: the paper's runs, where the label-shift check
    finds no shift, train exactly as --nolabel_shift_check does."""
    if self.unsplit_source is None:
      return self
    return dataclasses.replace(self, source=self.unsplit_source, heldout=None,
                               unsplit_source=None)
