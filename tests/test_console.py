"""What the user sees: our lines only, on CPUs with and without oneDNN; progress in logs."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, make_domain, run_main, tiny_flags

from biwaa_tf import quiet
from biwaa_tf.data import lists, pipeline
from biwaa_tf.train import progress

# TensorFlow turns oneDNN on by itself on CPUs with AVX-512 VNNI / AMX (and then
# prints start-up lines whatever TF_CPP_MIN_LOG_LEVEL says); forcing both values
# covers both kinds of machine on any machine.
ONEDNN = [{"TF_ENABLE_ONEDNN_OPTS": "1"}, {"TF_ENABLE_ONEDNN_OPTS": "0"}]
ONEDNN_IDS = ["onednn_on", "onednn_off"]

TF_STARTUP = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796017255.611424    2107 port.cc:153] oneDNN custom operations are on. "
    "You may see slightly different numerical results due to floating-point round-off "
    "errors from different computation orders. To turn them off, set the environment "
    "variable `TF_ENABLE_ONEDNN_OPTS=0`.\n"
    "I0000 00:00:1796017270.751725    2263 cpu_feature_guard.cc:227] This TensorFlow binary "
    "is optimized to use available CPU instructions in performance-critical operations.\n"
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI FMA, in other "
    "operations, rebuild TensorFlow with the appropriate compiler flags.\n")


def _python(code, env):
  return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                        text=True, timeout=120, env=dict(os.environ, **env))


def test_filter_noise_drops_startup_lines_and_keeps_the_rest():
  genuine = "E0000 00:00:17.1  99 some_op.cc:12] Invalid argument: a real problem\n"
  assert quiet.filter_noise(TF_STARTUP) == ""
  assert quiet.filter_noise(TF_STARTUP + genuine + "Traceback (most recent call last):\n") \
      == genuine + "Traceback (most recent call last):\n"


def test_tensorflow_import_is_quiet_after_biwaa_tf_and_noisy_without():
  env = {"TF_ENABLE_ONEDNN_OPTS": "1"}
  noisy = _python("import tensorflow", env)
  assert "oneDNN custom operations are on" in noisy.stderr  # what users saw before
  quiet_run = _python("import biwaa_tf, tensorflow, keras; print('ok')", env)
  assert quiet_run.returncode == 0 and quiet_run.stdout == "ok\n"
  assert quiet_run.stderr == ""


def test_genuine_output_during_the_quiet_import_still_reaches_stderr():
  code = ("import os, sys; from biwaa_tf import quiet\n"
          "with quiet._CapturedStderr():\n"
          "  os.write(2, b'I0000 port.cc:153] oneDNN custom operations are on. x\\n')\n"
          "  os.write(2, b'a real C++ error\\n')\n"
          "  print('a Python warning', file=sys.stderr)\n"
          "print('after', file=sys.stderr)\n")
  res = _python(code, {})
  assert res.stderr == "a real C++ error\na Python warning\nafter\n"


# Each error under one oneDNN setting, the first under both (what is filtered depends on
# the setting, not on the error: 4 cases instead of 6, 8 TensorFlow start-ups fewer).
@pytest.mark.parametrize("env, extra, message", [
    (ONEDNN[0], ["--cpu_replicas=4"],
     "error: --batch_size=6 is not divisible by the 4 replicas"),
    (ONEDNN[1], ["--cpu_replicas=4"],
     "error: --batch_size=6 is not divisible by the 4 replicas"),
    (ONEDNN[0], ["--cpu_replicas=2", "--jit_compile"],
     "error: --jit_compile under MirroredStrategy needs GPUs (these are device:CPU:0, "
     "device:CPU:1); drop --jit_compile or use --distribution_strategy=one_device"),
    (ONEDNN[1], ["--backbone_weights=LIST"],
     "error: --backbone_weights=LIST: cannot load: File format not supported"),
], ids=["replicas-onednn_on", "replicas-onednn_off", "jit-onednn_on", "weights-onednn_off"])
def test_errors_after_tensorflow_loaded_are_one_line(tiny_domains, tmp_path, env, extra,
                                                      message):
  root, src, tgt = tiny_domains
  extra = [e.replace("LIST", src) for e in extra]
  for dry in ([], ["--dry_run"]):
    res = run_main(tiny_flags(root, src, tgt, tmp_path / "m", *extra, *dry), env=env)
    assert res.returncode == 2
    assert len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith(message.replace("LIST", src)), res.stderr
    assert not (tmp_path / "m").exists()  # refused before anything is written


@pytest.mark.parametrize("env", ONEDNN, ids=ONEDNN_IDS)
def test_training_log_shows_our_lines_only(tiny_domains, tmp_path, env):
  root, src, tgt = tiny_domains
  args = [a for a in tiny_flags(root, src, tgt, tmp_path / "m", "--steps_per_run=40")
          if a != "--noprogress"]
  res = run_main(args, env=env)  # stdout is a pipe here, as in a log file
  assert res.returncode == 0, res.stderr[-2000:]
  assert "oneDNN" not in res.stderr and "absl::InitializeLog" not in res.stderr
  for line in res.stderr.splitlines():  # our logging format: one letter, a space
    assert line[:2] in ("I ", "W "), line
  assert "\r" not in res.stdout and "\b" not in res.stdout
  lines = [ln for ln in res.stdout.splitlines() if ln.startswith("run 0  step")]
  assert len(lines) == 10  # one at each tenth of the run
  assert lines[-1].startswith("run 0  step 40/40  100%  loss ")
  assert "img/s  ETA 0:00:00" in lines[-1]
  assert "median step" in res.stderr


def test_progress_line_and_when_it_is_due():
  line = progress.progress_line(2, 450, 5004, {"loss": 1.23456, "disc_acc": 0.5,
                                               "lr": 0.001}, 211.4, 3725)
  assert line == ("run 2  step  450/5004    8%  loss 1.2346 disc_acc 0.5000  211 img/s  "
                  "ETA 1:02:05")
  assert progress.progress_line(0, 1, 10, {}, None, None) == "run 0  step  1/10   10%  "
  # Each tenth of 800 steps, the last step, or a minute after the last line.
  due = [s for s in range(1, 801) if progress.line_due(s, 800, s - 1, 0.0, 1.0, 60.0)]
  assert due == list(range(80, 801, 80))
  assert progress.line_due(5, 800, 4, 0.0, 61.0, 60.0)
  assert progress.format_duration(59.6) == "0:01:00"


@pytest.mark.parametrize("extra, expected", [
    (["--backbone=lenet", "--image_size=28"],
     "lenet (weights: none), images resized to 32 px, 28 px crops"),
    (["--image_size=112"], "resnet50 (weights: imagenet), images resized to 128 px"),
    (["--backbone=lenet", "--nobalanced_source"], "source uniform, target auto"),
])
def test_derived_defaults_follow_what_the_user_chose(tiny_domains, tmp_path, extra, expected):
  from biwaa_tf import flags as biwaa_flags
  from biwaa_tf import main as main_lib
  from biwaa_tf.train import preflight
  root, src, tgt = tiny_domains
  main_lib.FLAGS.unparse_flags()
  assert main_lib.parse(["prog", f"--source={src}", f"--target={tgt}", f"--data_root={root}",
                         f"--model_dir={tmp_path / 'm'}", *extra]) is None
  cfg = biwaa_flags.config_from_flags(main_lib.FLAGS)
  assert expected in preflight.plan(cfg)


def test_lenet_dry_run_without_weights_flag_passes_and_with_imagenet_fails(tiny_domains,
                                                                            tmp_path):
  root, src, tgt = tiny_domains
  base = [f"--source={src}", f"--target={tgt}", f"--data_root={root}", "--backbone=lenet",
          "--image_size=28", "--batch_size=6", f"--model_dir={tmp_path / 'm'}", "--dry_run"]
  ok = run_main(base)
  assert ok.returncode == 0 and "lenet (weights: none)" in ok.stdout, ok.stderr
  bad = run_main(base + ["--backbone_weights=imagenet"])
  assert bad.returncode == 2
  assert bad.stderr == ("error: --backbone_weights: lenet has no ImageNet weights; use none "
                        "or a weights file\n")
  assert not (tmp_path / "m").exists()


def test_source_label_gap_is_refused_naming_the_line(tmp_path):
  root = str(tmp_path)
  src = make_domain(root, "src", [3, 3, 3], seed=0)
  tgt = make_domain(root, "tgt", [3, 3, 3], seed=1)
  lines = open(src).read().splitlines()
  lines[4] = lines[4].rsplit(" ", 1)[0] + " 7"  # a typo: 7 for 1
  typo = tmp_path / "typo.txt"
  typo.write_text("\n".join(lines) + "\n")
  args = [f"--source={typo}", f"--target={tgt}", f"--data_root={root}", "--backbone=lenet",
          "--image_size=28", "--batch_size=6", f"--model_dir={tmp_path / 'm'}", "--dry_run"]
  res = run_main(args)
  assert res.returncode == 2
  assert res.stderr == (f"error: {typo}:5: label 7, but class(es) 3-6 have no source image; "
                        "fix the label, or declare the classes with --num_classes=8\n")
  declared = run_main(args + ["--num_classes=8"])
  assert declared.returncode == 0, declared.stderr
  assert "classes   8" in declared.stdout


def test_uniform_source_loading_keeps_the_data_proportions(tmp_path):
  root = str(tmp_path)
  il = lists.read_list_file(make_domain(root, "d", [12, 4], seed=0), root)
  opts = pipeline.ImageOptions(28, 28, False, "unit")
  counts = {}
  for balance in (True, False):
    ds = pipeline.training_pairs(il, il, opts, 8, seed=0, num_classes=2,
                                 balance_source=balance)
    ys = np.concatenate([b[0][1].numpy() for b, _ in ds.take(40)])
    counts[balance] = np.bincount(ys, minlength=2) / len(ys)
  # 320 draws: balanced ~ [0.5, 0.5]; uniform ~ the data's [0.75, 0.25] (each epoch
  # of 16 holds exactly 12 + 4, so only the partial last epoch varies).
  np.testing.assert_allclose(counts[True], [0.5, 0.5], atol=0.08)
  np.testing.assert_allclose(counts[False], [0.75, 0.25], atol=0.02)


def test_target_as_an_unlabelled_folder_and_as_a_partial_labelled_one(tmp_path):
  """--target=<folder of images>: unlabelled (sub-folders carry no class); class folders
  that are a subset of the source's: matched by name; a one-class source: one line."""
  import shutil
  root = tmp_path / "data"
  make_domain(str(root), "src", [4, 4, 4], seed=0)  # src/c0, src/c1, src/c2
  make_domain(str(root), "tgt", [3, 3, 3], seed=1)
  flat = tmp_path / "unlabelled"
  for i, png in enumerate(sorted((root / "tgt").rglob("*.png"))):
    dest = flat / ("" if i % 2 else "batch2") / f"{i:02d}.png"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, dest)
  (flat / "batch2" / "00.png").rename(flat / "00.png")  # one at the top: a plain folder
  partial = tmp_path / "partial"
  shutil.copytree(root / "tgt" / "c2", partial / "c2")
  base = [f"--source={root / 'src'}", "--backbone=lenet", "--image_size=28",
          "--batch_size=6", f"--model_dir={tmp_path / 'm'}", "--dry_run"]
  res = run_main(base + [f"--target={flat}"])
  assert res.returncode == 0, res.stderr
  assert "9 images, unlabelled" in res.stdout, res.stdout
  res = run_main(base + [f"--target={partial}"])
  assert res.returncode == 0, res.stderr
  assert "3 images" in res.stdout and "c2" not in res.stderr
  (root / "src" / "c1").rename(tmp_path / "c1")
  shutil.rmtree(root / "src" / "c2")
  res = run_main(base + [f"--target={flat}"])
  assert res.returncode == 2
  assert res.stderr.strip().endswith("the source has 1 class; classification needs at least 2")
