"""Export, reload in a fresh process, serve; predict/evaluate tools; TensorBoard tags."""

import csv
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import BIWAA_TF, REPO, run_main, tiny_flags

# One worker runs this module under -n 2 (pyproject: --dist=loadgroup), so its
# module-scoped training fixture runs once, not once per worker.
pytestmark = pytest.mark.xdist_group("export")

LOAD_SCRIPT = """
import sys, numpy as np, tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
x = np.load(sys.argv[2])
paths = open(sys.argv[3]).read().split()
a = m.predict_images(tf.constant(x))["probabilities"].numpy()
b = m.predict_bytes(tf.stack([tf.io.read_file(p) for p in paths]))
np.save(sys.argv[4], a); np.save(sys.argv[5], b["probabilities"].numpy())
names = [n.decode() for n in m.class_names()["class_names"].numpy()]
print(",".join(names))
"""


@pytest.fixture(scope="module")
def trained(tiny_domains, tmp_path_factory):
  root, src, tgt = tiny_domains
  out = tmp_path_factory.mktemp("exp") / "m"
  args = tiny_flags(root, src, tgt, out, "--steps_per_run=4", "--log_every=1")
  res = run_main(args)
  assert res.returncode == 0, res.stderr[-2000:]
  return args, out


def test_export_matches_in_memory_model(trained, tmp_path):
  from biwaa_tf import flags as biwaa_flags
  from biwaa_tf import main as main_lib
  from biwaa_tf.data import pipeline
  from biwaa_tf.train import preflight
  from biwaa_tf.train import run as run_lib
  args, out = trained
  main_lib.FLAGS.unparse_flags()
  main_lib.FLAGS(["prog", *args])
  cfg = biwaa_flags.config_from_flags(main_lib.FLAGS)
  domains = preflight.prepare_data(cfg)
  model = run_lib.build_model(cfg, domains, cfg.seed)
  tf.train.Checkpoint(model=model).restore(
      tf.train.latest_checkpoint(str(out / "run_0" / "ckpt"))).expect_partial()
  opts = run_lib.image_options(cfg, domains.normalization)
  in_memory = run_lib.predict_probs(model, domains.target, opts, 8)
  np.testing.assert_allclose(in_memory, np.load(out / "run_0" / "target_probs.npy"), atol=1e-6)
  x = np.concatenate(list(pipeline.eval_dataset(domains.target, opts, 8).as_numpy_iterator()))
  np.save(tmp_path / "x.npy", x)
  (tmp_path / "paths.txt").write_text("\n".join(domains.target.paths))
  res = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(out / "export"),
                        str(tmp_path / "x.npy"), str(tmp_path / "paths.txt"),
                        str(tmp_path / "a.npy"), str(tmp_path / "b.npy")],
                       capture_output=True, text=True, cwd=REPO)
  assert res.returncode == 0, res.stderr[-2000:]
  np.testing.assert_allclose(np.load(tmp_path / "a.npy"), in_memory, atol=1e-5)
  np.testing.assert_allclose(np.load(tmp_path / "b.npy"), in_memory, atol=1e-5)
  names = json.loads((out / "class_names.json").read_text())
  assert res.stdout.strip().splitlines()[-1] == ",".join(names) == "c0,c1,c2"


def test_export_has_no_discriminator(trained):
  _, out = trained
  names = [n for n, _ in tf.train.list_variables(str(out / "export" / "variables" / "variables"))]
  assert names and not any("discriminator" in n or "d_out" in n for n in names)


def test_predict_and_evaluate_tools(trained, tiny_domains, tmp_path):
  root, _, tgt = tiny_domains
  _, out = trained
  res = subprocess.run([BIWAA_TF, "predict", f"--saved_model={out / 'export'}",
                        f"--images={os.path.join(root, 'tgt')}",
                        f"--output={tmp_path / 'p.csv'}"], capture_output=True, text=True,
                       cwd=REPO)
  assert res.returncode == 0, res.stderr[-2000:]
  rows = list(csv.reader(open(tmp_path / "p.csv")))
  assert rows[0] == ["path", "class", "probability"] and len(rows) == 1 + 19
  assert all(r[1] in ("c0", "c1", "c2") and 0 < float(r[2]) <= 1 for r in rows[1:])
  res = subprocess.run([BIWAA_TF, "evaluate", f"--saved_model={out / 'export'}",
                        f"--list={tgt}", f"--data_root={root}",
                        f"--output_dir={tmp_path / 'ev'}"], capture_output=True, text=True,
                       cwd=REPO)
  assert res.returncode == 0, res.stderr[-2000:]
  metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
  results = json.loads((out / "results.json").read_text())
  assert metrics["accuracy"] == pytest.approx(results["final_accuracy"], abs=1e-9)
  assert np.array(metrics["confusion_matrix"]).sum() == 19
  assert (tmp_path / "ev" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
  assert "mean per-class accuracy" in res.stdout


def test_tensorboard_has_the_named_scalars(trained):
  _, out = trained
  tags = set()
  for path in glob.glob(str(out / "run_0" / "tb" / "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(v.tag for v in event.summary.value)
  for tag in ("train/loss_cls", "train/loss_adv", "train/ms_intra", "train/ms_st",
              "train/ms_tt", "train/ms_ss", "train/lr", "train/grl_coeff", "train/disc_acc",
              "train/pseudo_acc", "eval/accuracy", "eval/per_class_accuracy",
              "eval/predicted_class", "eval/heatmaps_image_dann_biwaa"):
    assert tag in tags, tag


def test_a_damaged_export_is_named_in_one_line(trained, tmp_path):
  import shutil

  from biwaa_tf import export
  from biwaa_tf.errors import UserError
  _, out = trained
  copy = tmp_path / "export"
  shutil.copytree(out / "export", copy)
  data = glob.glob(str(copy / "variables" / "variables.data-*"))[0]
  os.truncate(data, 1000)
  with pytest.raises(UserError) as e:
    export.load(str(copy))
  assert str(e.value) == (f"{copy}: the exported model cannot be read (Read less bytes than "
                          "requested); delete it and re-run the training command to export "
                          "it again")


@pytest.mark.parametrize("backbone, heads", [("lenet", "biwaa"), ("lenet_tllib", "tllib")])
def test_training_model_saves_to_keras_and_exports(tmp_path, backbone, heads):
  """BIWAAModel itself: .keras save / load_model with its state, and Keras' export()."""
  import keras

  from biwaa_tf.model import backbones, schedules
  from biwaa_tf.model.biwaa import BIWAAModel, MethodConfig
  model = BIWAAModel(backbones.build_backbone(backbone, 28, "none"),
                     MethodConfig(num_classes=3, num_target=4, heads=heads),
                     *schedules.paper_optimizers(0.01), seed=1)
  model.build_all(28)
  model.step.assign(5)
  model.source_centroids.assign(np.full((3, 256), 0.5, np.float32))
  x = np.random.default_rng(0).random((4, 28, 28, 3), dtype=np.float32)
  model.save(tmp_path / "m.keras")
  loaded = keras.models.load_model(tmp_path / "m.keras")
  assert type(loaded) is BIWAAModel and loaded.config == model.config
  assert int(loaded.step.numpy()) == 5
  np.testing.assert_array_equal(loaded.source_centroids.numpy(), model.source_centroids.numpy())
  np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
  assert loaded.backbone_optimizer.get_config()["nesterov"]
  model.export(tmp_path / "saved", verbose=False)
  reloaded = tf.saved_model.load(str(tmp_path / "saved"))  # (kept: its variables live on)
  served = reloaded.serve(x).numpy()
  np.testing.assert_allclose(served, model(x).numpy(), rtol=0, atol=1e-6)
