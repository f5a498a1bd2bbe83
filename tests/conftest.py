"""Shared fixtures: tiny generated image datasets (no downloads)."""

import os
import re
import subprocess
import sys

import biwaa_tf  # noqa: F401  (before TensorFlow: keeps its start-up lines quiet)

# isort: split
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The console script `pip install` put beside this Python (the user commands, as installed).
BIWAA_TF = os.path.join(os.path.dirname(sys.executable), "biwaa-tf")
NUM_CLASSES = 3
_GROUP = re.compile(r'^pytestmark = .*?pytest\.mark\.xdist_group\("([\w-]+)"\)', re.M)


def pytest_xdist_make_scheduler(config, log):
  """-n N with --dist=loadgroup (pyproject): a module marked xdist_group runs whole on one
  worker, so that its module fixture trains once; every other test goes to the first
  free worker.

  pytest-xdist 3.8 groups by rewriting `item._nodeid`, which pytest 9 no longer reads
  (a node's id is `item._id`): every group was split over both workers and each module
  fixture trained twice (+~100 s a suite). Here the group comes from the module's
  `pytestmark` line, read by the controller, whatever the pytest version."""
  if config.getvalue("dist") != "loadgroup":
    return None
  from xdist.scheduler import LoadScopeScheduling
  groups = {}

  def group_of(module):
    if module not in groups:
      try:
        with open(os.path.join(str(config.rootpath), module)) as f:
          found = _GROUP.search(f.read())
      except OSError:
        found = None
      groups[module] = found and found.group(1)
    return groups[module]

  class ModuleGroups(LoadScopeScheduling):
    def _split_scope(self, nodeid):
      group = group_of(nodeid.split("::", 1)[0])
      return f"group:{group}" if group else nodeid

  return ModuleGroups(config, log)


def write_image(path, array, fmt="png"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  array = np.asarray(array, np.uint8)
  data = tf.io.encode_png(array) if fmt == "png" else tf.io.encode_jpeg(array)
  with open(path, "wb") as f:
    f.write(data.numpy())


def class_image(k, rng, size=28, shift=0.0):
  """Class k: a bright square in one of three places, on noise."""
  img = rng.uniform(0, 60, size=(size, size, 3)) + shift
  r0 = 4 + 7 * k
  img[r0:r0 + 7, 6:20] += 150
  return np.clip(img, 0, 255)


def make_domain(root, name, counts, seed, shift=0.0, fmt="png"):
  """Writes name/<k>/<i>.png for counts[k] images of class k; returns the list path."""
  rng = np.random.default_rng(seed)
  lines = []
  for k, n in enumerate(counts):
    for i in range(n):
      rel = f"{name}/c{k}/{i:03d}.{fmt}"
      write_image(os.path.join(root, rel), class_image(k, rng, shift=shift), fmt)
      lines.append(f"{rel} {k}")
  path = os.path.join(root, f"{name}.txt")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


@pytest.fixture(scope="session", autouse=True)
def subprocess_tmpdir(tmp_path_factory):
  """The subprocesses' temporary files go under pytest's temporary directory (which
  pytest prunes), not into /tmp: TensorFlow's autograph writes a file per converted
  function and removes it at exit, which a SIGKILLed training never reaches."""
  before = os.environ.get("TMPDIR")
  os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("subprocess_tmp"))
  yield
  if before is None:
    del os.environ["TMPDIR"]
  else:
    os.environ["TMPDIR"] = before


@pytest.fixture(scope="session")
def tiny_domains(tmp_path_factory):
  """Source (balanced) and target (shifted, imbalanced) list files under one root."""
  root = str(tmp_path_factory.mktemp("tiny"))
  src = make_domain(root, "src", [8, 8, 8], seed=1)
  tgt = make_domain(root, "tgt", [10, 6, 3], seed=2, shift=50.0)
  return root, src, tgt


def tiny_flags(root, src, tgt, model_dir, *extra):
  return [f"--source={src}", f"--target={tgt}", f"--data_root={root}",
          "--backbone=lenet", "--backbone_weights=none", "--resize_size=28",
          "--image_size=28", "--norandom_flip", "--batch_size=6", "--steps_per_run=6",
          "--checkpoint_every=3", "--lr=0.01", "--noprogress", f"--model_dir={model_dir}",
          "--nolabel_shift_check", *extra]  # the check's own tests pass --label_shift_check


def run_main(args, env=None, module="biwaa_tf.main", timeout=300):
  full_env = dict(os.environ, **(env or {}))
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=full_env,
                        capture_output=True, text=True, timeout=timeout)
