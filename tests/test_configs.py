"""Every shipped flagfile resolves and validates (--dry_run)."""

import glob
import os

import pytest
from conftest import REPO

from biwaa_tf import config
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


def test_a_trainings_flags_txt_reads_back_as_a_flagfile(tmp_path, monkeypatch):
  """flags.txt (config.resolved_flags_text) is a flagfile: every line, "None" values of
  the options decided from the others included, parses back to the same configuration."""
  monkeypatch.chdir(REPO)
  main_lib.FLAGS.unparse_flags()
  assert main_lib.parse(["prog", "--flagfile=configs/digits_m2u_lt.flags",
                         "--label_shift_check"]) is None
  cfg = biwaa_flags.config_from_flags(main_lib.FLAGS)
  assert cfg.heldout_fraction is None and cfg.resize_size is not None
  text = config.resolved_flags_text(cfg)
  assert "--heldout_fraction=None\n" in text
  (tmp_path / "flags.txt").write_text(text)
  main_lib.FLAGS.unparse_flags()
  assert main_lib.parse(["prog", f"--flagfile={tmp_path / 'flags.txt'}"]) is None
  assert biwaa_flags.config_from_flags(main_lib.FLAGS) == cfg
  main_lib.FLAGS.unparse_flags()
  assert main_lib.parse(["prog", f"--flagfile={tmp_path / 'flags.txt'}",
                         "--heldout_fraction=0.1"]) is None
  assert biwaa_flags.config_from_flags(main_lib.FLAGS).heldout_fraction == 0.1


# The digits flagfiles nest on configs/digits.flags: (source, target, lr, centroid warm-up,
# weighting offset, backbone) of each, as they resolved before they shared the base.
DIGITS = {
    "digits_m2u": ("mnist_test", "usps", 0.01, 300, 1.0, "lenet_bn"),
    "digits_u2m": ("usps", "mnist_test", 0.1, 300, 1.0, "lenet_bn"),
    "digits_m2u_lt": ("mnist_test", "usps", 0.01, 0, 0.0, "lenet_bn"),
    "digits_u2m_lt": ("usps", "mnist_test", 0.1, 0, 0.0, "lenet_bn"),
    "digits_m2u_tllib": ("mnist_test", "usps", 0.01, 300, 1.0, "lenet_tllib"),
    "digits_u2m_tllib": ("usps", "mnist_test", 0.1, 300, 1.0, "lenet_tllib"),
}


@pytest.mark.parametrize("name", sorted(DIGITS))
def test_digits_flagfiles_share_a_base(name, monkeypatch):
  monkeypatch.chdir(REPO)
  main_lib.FLAGS.unparse_flags()
  assert main_lib.parse(["prog", f"--flagfile=configs/{name}.flags"]) is None
  cfg = biwaa_flags.config_from_flags(main_lib.FLAGS)
  source, target, lr, warmup, offset, backbone = DIGITS[name]
  assert (cfg.source, cfg.target) == (f"builtin:{source}", f"builtin:{target}")
  assert (cfg.lr, cfg.ms_warmup_steps, cfg.weighting_offset, cfg.backbone) == (
      lr, warmup, offset, backbone)
  assert (cfg.batch_size, cfg.steps_per_run, cfg.grl_ramp_steps, cfg.label_shift_check) == (
      128, 2000, 10000.0, False)
  assert cfg.heads == ("tllib" if backbone == "lenet_tllib" else "biwaa")
  assert cfg.target_subsample == ("long_tail:20" if name.endswith("_lt") else "none")
  assert cfg.model_dir == f"runs/{name}"
