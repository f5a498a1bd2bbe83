"""Every shipped flagfile resolves and validates (--dry_run)."""

import glob
import os

import pytest
from conftest import REPO

from biwaa_tf import flags as biwaa_flags
from biwaa_tf import main as main_lib
from biwaa_tf.train import preflight

TASKS = sorted(t for t in glob.glob(os.path.join(REPO, "configs", "*_*.flags"))
               if os.path.basename(t).split("_")[0] in ("o31", "oh", "dn"))


def test_thirty_benchmark_tasks():
  names = [os.path.basename(t) for t in TASKS]
  assert len([n for n in names if n.startswith("o31_")]) == 6
  assert len([n for n in names if n.startswith("oh_")]) == 12
  assert len([n for n in names if n.startswith("dn_")]) == 12


@pytest.mark.parametrize("path", TASKS, ids=os.path.basename)
def test_flagfile_resolves(path, monkeypatch):
  """Each task's flags resolve and its shipped lists parse (the images are not here:
  --dry_run, which also checks every image file, runs where the data is)."""
  monkeypatch.chdir(REPO)
  main_lib.FLAGS.unparse_flags()
  assert main_lib.parse(["prog", f"--flagfile={path}", "--data_root=/data"]) is None
  cfg = biwaa_flags.config_from_flags(main_lib.FLAGS)
  out = preflight.plan(cfg, preflight.prepare_data(cfg, check_images=False))
  assert "10 x 5004 steps" in out and "resnet50 (weights: imagenet)" in out
  assert "resized to 256 px, 224 px crops, 10-crop" in out
  name = os.path.basename(path)[:-len(".flags")]
  assert f"runs/{name}/" in out
  if name in ("o31_a2d", "o31_d2w"):
    assert "lr 0.0003" in out
  else:
    assert "lr 0.001" in out
  if name.startswith("dn_"):
    assert "_test.txt" in out and "40" in out
