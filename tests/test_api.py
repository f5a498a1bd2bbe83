"""The Python API: adapt() and BIWAAModel.fit() with Keras callbacks."""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import biwaa_tf
from biwaa_tf.data.demo_digits import load_arrays
from biwaa_tf.errors import UserError

OPTS = biwaa_tf.ImageOptions(32, 28, False, "unit", train_crop="random")
STEP_LOGS = {"loss", "loss_cls", "loss_adv", "loss_ms", "disc_acc", "pseudo_acc", "lr",
             "grl_coeff"}


@pytest.fixture(scope="module")
def arrays():
  return load_arrays("digits_source"), load_arrays("digits_target")


@pytest.fixture()
def fit_setup(arrays):
  (xs, ys), (xt, yt) = arrays
  src = biwaa_tf.from_arrays("source", xs, ys)
  tgt = biwaa_tf.from_arrays("target", xt, yt)

  def make(**compile_options):
    keras.utils.set_random_seed(0)
    model = biwaa_tf.BIWAAModel(biwaa_tf.build_backbone("lenet", 28, "none"),
                                biwaa_tf.MethodConfig(num_classes=10, num_target=tgt.size))
    model.build_all(28)
    model.compile(lr=0.01, **compile_options)
    return model
  data = biwaa_tf.fit_dataset(src, tgt, OPTS, batch_size=18, num_classes=10)
  return make, data, tgt, yt


class Recorder(keras.callbacks.Callback):
  def __init__(self):
    super().__init__()
    self.batches = []

  def on_train_batch_end(self, batch, logs=None):
    self.batches.append((batch, dict(logs)))


def test_fit_callbacks_see_the_step_logs_and_steps_per_execution(fit_setup):
  make, data, tgt, yt = fit_setup
  for spe in (1, 5):
    model, rec = make(steps_per_execution=spe), Recorder()
    history = model.fit(data, epochs=2, steps_per_epoch=10, callbacks=[rec], verbose=0)
    assert int(model.step.numpy()) == 20
    assert len(rec.batches) == 20 // spe
    # An epoch's logs: each value's mean over its steps (as Keras' metrics would give).
    second = [logs["loss_cls"] for _, logs in rec.batches[10 // spe:]]
    assert history.history["loss_cls"][1] == pytest.approx(np.mean(second), rel=1e-6)
    assert STEP_LOGS <= set(rec.batches[-1][1])
    # lr follows the inv schedule: step 19's backbone lr.
    assert rec.batches[-1][1]["lr"] == pytest.approx(0.01 * (1 + 0.001 * 19) ** -0.75,
                                                     rel=1e-5)
  probs = model.predict(biwaa_tf.eval_dataset(tgt, OPTS, 64), verbose=0)
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
  labelled = tf.data.Dataset.zip(biwaa_tf.eval_dataset(tgt, OPTS, 64),
                                 tf.data.Dataset.from_tensor_slices(yt).batch(64))
  ev = model.evaluate(labelled, verbose=0, return_dict=True)
  assert ev["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == yt), abs=1e-6)


def test_fit_tensorboard_and_model_checkpoint(fit_setup, tmp_path):
  make, data, _, _ = fit_setup
  model = make()
  ckpt = str(tmp_path / "w.weights.h5")
  model.fit(data, epochs=2, steps_per_epoch=5, verbose=0, callbacks=[
      keras.callbacks.TensorBoard(str(tmp_path / "tb"), update_freq=1),
      keras.callbacks.ModelCheckpoint(ckpt, save_weights_only=True)])
  tags = set()
  for path in glob.glob(str(tmp_path / "tb" / "train" / "*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(v.tag for v in event.summary.value)
  assert {"batch_disc_acc", "batch_loss_cls", "epoch_pseudo_acc"} <= tags, tags
  # The checkpoint holds the method's state too (step, centroid memories).
  fresh = make()
  fresh.load_weights(ckpt)
  assert int(fresh.step.numpy()) == 10
  np.testing.assert_array_equal(fresh.source_centroids.numpy(),
                                model.source_centroids.numpy())
  assert np.abs(model.source_centroids.numpy()).max() > 0


def test_fit_terminate_on_nan(arrays):
  (xs, ys), (xt, _) = arrays
  src = biwaa_tf.from_arrays("source", xs, ys)
  tgt = biwaa_tf.from_arrays("target", xt)
  data = biwaa_tf.fit_dataset(src, tgt, OPTS, batch_size=18, num_classes=10)
  model = biwaa_tf.BIWAAModel(biwaa_tf.build_backbone("lenet", 28, "none"),
                              biwaa_tf.MethodConfig(num_classes=10, num_target=tgt.size))
  model.build_all(28)
  model.compile(lr=1e6)  # diverges within a few steps
  rec = Recorder()
  model.fit(data, epochs=3, steps_per_epoch=10, verbose=0,
            callbacks=[keras.callbacks.TerminateOnNaN(), rec])
  assert model.stop_training and len(rec.batches) < 30
  assert not np.isfinite(rec.batches[-1][1]["loss"])
  assert all(np.isfinite(logs["loss"]) for _, logs in rec.batches[:-1])


def test_fit_backup_and_restore_resumes_where_it_stopped(fit_setup, tmp_path):
  make, data, _, _ = fit_setup

  class Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      if epoch == 2:
        raise KeyboardInterrupt

  backup = str(tmp_path / "backup")
  model = make()
  with pytest.raises(KeyboardInterrupt):
    model.fit(data, epochs=4, steps_per_epoch=5, verbose=0,
              callbacks=[keras.callbacks.BackupAndRestore(backup), Interrupt()])
  assert int(model.step.numpy()) == 10
  resumed, rec = make(), Recorder()  # a new process would build it afresh
  resumed.fit(data, epochs=4, steps_per_epoch=5, verbose=0,
              callbacks=[keras.callbacks.BackupAndRestore(backup), rec])
  # Epochs 0-1 restored (with the step counter and the optimizers), 2-3 trained.
  assert len(rec.batches) == 10 and int(resumed.step.numpy()) == 20
  assert int(resumed.backbone_optimizer.iterations.numpy()) == 20


EQUAL_SCRIPT = """
import biwaa_tf, json, sys
import numpy as np
import tensorflow as tf
tf.config.threading.set_inter_op_parallelism_threads(1)  # before TF starts: bitwise
from biwaa_tf.data.demo_digits import load_arrays
(xs, ys), (xt, yt) = load_arrays("digits_source"), load_arrays("digits_target")
opts = dict(backbone="lenet", image_size=28, resize_size=32, random_flip=False,
            steps_per_run=30, runs=2, lr=0.01, deterministic=True, verbose=False,
            label_shift_check=False)  # the check's probe: tests/test_label_shift.py
a = biwaa_tf.adapt((xs, ys), (xt, yt), **opts)
f = biwaa_tf.adapt("builtin:digits_source", "builtin:digits_target", **opts)
p = a.predict(xt[:20])
print(json.dumps({"same": bool(np.array_equal(a.target_probs, f.target_probs)),
                  "acc": [a.final_accuracy, f.final_accuracy], "runs": len(a.runs),
                  "shape": list(a.target_probs.shape), "model_dir": a.model_dir,
                  "predict_diff": float(np.abs(p - a.target_probs[:20]).max()),
                  "output_shape": list(a.model.output_shape)}))
"""


@pytest.mark.slow
def test_adapt_on_arrays_equals_adapt_on_the_same_files():
  # In its own process: bitwise equality needs one inter-op thread from the start.
  import json
  import subprocess
  import sys
  out = subprocess.run([sys.executable, "-c", EQUAL_SCRIPT], capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  r = json.loads(out.stdout.strip().splitlines()[-1])
  assert r["same"] and r["acc"][0] == r["acc"][1], r
  assert r["runs"] == 2 and r["shape"] == [450, 10] and r["model_dir"] is None
  # .predict: raw images through the evaluation path; .model: crops -> probabilities.
  assert r["predict_diff"] < 1e-5 and r["output_shape"] == [None, 10]


def test_adapt_with_a_keras_backbone_and_a_model_dir(arrays, tmp_path):
  (xs, ys), (xt, _) = arrays
  inputs = keras.Input((28, 28, 3))
  fmap = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
  backbone = keras.Model(inputs, keras.layers.BatchNormalization()(fmap), name="tiny_cnn")
  before = [w.numpy().copy() for w in backbone.weights]
  result = biwaa_tf.adapt((xs, ys), xt[:, :, :, None], backbone=backbone, image_size=28,
                          steps_per_run=10, runs=1, verbose=False, label_shift_check=False,
                          model_dir=str(tmp_path / "m"))
  assert result.final_accuracy is None  # no target labels given
  assert result.model_dir == str(tmp_path / "m")
  assert os.path.exists(tmp_path / "m" / "results.json")
  for b, w in zip(before, backbone.weights):  # the user's model is left as it was
    np.testing.assert_array_equal(b, w.numpy())


def test_adapt_target_subsample_is_applied_and_recorded(arrays, tmp_path):
  (xs, ys), (xt, yt) = arrays
  result = biwaa_tf.adapt((xs, ys), (xt, yt), backbone="lenet", image_size=28,
                          steps_per_run=2, method="source_only", verbose=False,
                          target_subsample="reverse_tail:5", model_dir=str(tmp_path / "m"))
  import json
  summary = json.loads((tmp_path / "m" / "results.json").read_text())
  counts = np.array(summary["target_class_counts"])
  assert summary["target_subsample"] == "reverse_tail:5"
  assert counts.sum() == len(result.target_probs) < len(xt)
  assert counts[-1] == np.sum(yt == 9)  # the reverse tail keeps the last class whole
  assert {"mean_entropy", "im_score", "snd_score"} <= set(result.runs[0])


def test_adapt_refuses_bad_input_in_one_line(arrays):
  (xs, ys), (xt, _) = arrays
  with pytest.raises(UserError, match="source: 898 images but 3 labels"):
    biwaa_tf.adapt((xs, ys[:3]), xt, backbone="lenet", verbose=False)
  with pytest.raises(UserError, match=r"float images must lie in \[0, 1\]"):
    biwaa_tf.adapt((xs.astype(np.float32), ys), xt, backbone="lenet", verbose=False)
  with pytest.raises(UserError, match="unknown option"):
    biwaa_tf.adapt((xs, ys), xt, backbone="lenet", learning_rate=0.1, verbose=False)


def test_import_biwaa_tf_does_not_load_tensorflow():
  import subprocess
  import sys
  code = "import sys, biwaa_tf; print(biwaa_tf.adapt.__name__, 'tensorflow' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  # Loading `adapt` imports only the API module; TensorFlow waits for a call.
  assert out.stdout.split() == ["adapt", "False"]


def test_adapt_resumes_past_a_damaged_checkpoint(arrays, tmp_path, caplog):
  (xs, ys), (xt, yt) = arrays
  options = dict(backbone="lenet", image_size=28, steps_per_run=4, checkpoint_every=2, runs=1,
                 lr=0.01, verbose=False, model_dir=str(tmp_path / "m"), label_shift_check=False)
  first = biwaa_tf.adapt((xs[:120], ys[:120]), (xt[:60], yt[:60]), **options)
  for name in ("results.json", "run_0/run_result.json"):
    os.remove(tmp_path / "m" / name)
  data = glob.glob(str(tmp_path / "m" / "run_0" / "ckpt" / "ckpt-4.data-*"))[0]
  os.truncate(data, os.path.getsize(data) // 2)
  again = biwaa_tf.adapt((xs[:120], ys[:120]), (xt[:60], yt[:60]), **options)
  ckpt = tmp_path / "m" / "run_0" / "ckpt"
  assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
      f"run 0: checkpoint {ckpt}/ckpt-4 cannot be read (Read less bytes than requested): "
      f"removed; resuming from {ckpt}/ckpt-2"]
  np.testing.assert_allclose(again.target_probs, first.target_probs, atol=1e-5)


@pytest.mark.parametrize("with_input", [False, True])
def test_adapt_with_a_sequential_backbone(arrays, with_input):
  (xs, ys), (xt, _) = arrays
  layers = [keras.layers.Conv2D(8, 3, strides=2, activation="relu"), keras.layers.Flatten(),
            keras.layers.Dense(16)]
  backbone = keras.Sequential(([keras.Input((28, 28, 3))] if with_input else []) + layers)
  result = biwaa_tf.adapt((xs[:90], ys[:90]), xt[:40], backbone=backbone, image_size=28,
                          steps_per_run=2, runs=1, verbose=False, label_shift_check=False)
  assert result.target_probs.shape == (40, 10)


def test_a_backbone_of_another_input_size_is_refused_in_one_line(arrays):
  (xs, ys), (xt, _) = arrays
  backbone = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3)], name="cnn32")
  with pytest.raises(UserError) as e:
    biwaa_tf.adapt((xs[:90], ys[:90]), xt[:40], backbone=backbone, image_size=28,
                   steps_per_run=2, runs=1, verbose=False)
  assert str(e.value) == (
      "backbone cnn32: takes inputs of shape (32, 32, 3), but the images are 28 x 28 x 3 "
      "(image_size=28); set image_size to the model's, or build it with an input shape of "
      "(None, None, 3)")


def test_adapt_leaves_the_process_as_it_found_it(arrays):
  import logging
  import random

  from biwaa_tf.model import backbones
  (xs, ys), (xt, _) = arrays
  backbone = keras.Sequential([keras.Input((28, 28, 3)), keras.layers.Flatten(),
                               keras.layers.Dense(8)], name="flat")  # (draws Python seeds)
  np.random.seed(123)
  random.seed(123)
  expected_numpy, expected_python = np.random.rand(3), random.random()
  np.random.seed(123)
  random.seed(123)
  registry = dict(backbones.BACKBONES)
  handlers = list(logging.getLogger("biwaa_tf").handlers)
  biwaa_tf.adapt((xs[:90], ys[:90]), xt[:40], backbone=backbone, image_size=28,
                 steps_per_run=2, runs=1, verbose=True, progress=False,
                 mixed_precision="bfloat16", deterministic=True, label_shift_check=False)
  np.testing.assert_array_equal(np.random.rand(3), expected_numpy)
  assert random.random() == expected_python
  assert keras.mixed_precision.global_policy().name == "float32"
  assert keras.layers.Dense(2).dtype_policy.name == "float32"
  assert backbones.BACKBONES == registry
  assert logging.getLogger("biwaa_tf").handlers == handlers
  from tensorflow.python.framework import config as tf_config
  assert not tf_config.is_op_determinism_enabled()


def test_adapt_refuses_other_arrays_in_its_model_dir(arrays, tmp_path):
  (xs, ys), (xt, _) = arrays
  options = dict(backbone="lenet", image_size=28, steps_per_run=2, runs=1, verbose=False,
                 model_dir=str(tmp_path / "m"), label_shift_check=False)
  biwaa_tf.adapt((xs[:90], ys[:90]), xt[:40], **options)
  with pytest.raises(UserError, match=r"holds a training with different flags "
                                      r"\(source=array:source:90x32x32-uint8-[0-9a-f]{16}.*; "
                                      r"use another model_dir or overwrite$"):
    biwaa_tf.adapt((xs[90:180], ys[90:180]), xt[:40], **options)  # the same size


def test_adapt_takes_one_hot_labels_and_refuses_negative_ones(arrays):
  (xs, ys), (xt, _) = arrays
  one_hot = np.eye(10, dtype=np.float32)[ys[:90]]
  result = biwaa_tf.adapt((xs[:90], one_hot), (xt[:40], np.eye(10)[np.zeros(40, int)]),
                          backbone="lenet", image_size=28, steps_per_run=1, runs=1,
                          method="source_only", verbose=False)
  assert result.runs[0]["accuracy"] == np.mean(np.argmax(result.target_probs, 1) == 0)
  bad = ys[:90].copy()
  bad[5] = -1
  with pytest.raises(UserError, match=r"^source: label -1 at index 5; labels are 0..K-1 "
                                      r"\(pass no labels for an unlabelled domain\)$"):
    biwaa_tf.adapt((xs[:90], bad), xt[:40], backbone="lenet", verbose=False)


def test_adapt_dry_run_trains_nothing_and_cpu_replicas_are_refused_late(arrays, tmp_path):
  (xs, ys), (xt, _) = arrays
  plan = biwaa_tf.adapt((xs[:90], ys[:90]), xt[:40], backbone="lenet", image_size=28,
                        dry_run=True, verbose=False, model_dir=str(tmp_path / "m"))
  assert plan.splitlines()[0].startswith("method    biwaa (feature weighting on")
  assert not (tmp_path / "m").exists()
  with pytest.raises(UserError, match="^cpu_replicas=2: TensorFlow's devices were set up"):
    biwaa_tf.adapt((xs[:90], ys[:90]), xt[:40], backbone="lenet", image_size=28,
                   cpu_replicas=2, verbose=False)


@pytest.mark.parametrize("ten_crop", [False, True])
def test_result_model_takes_raw_images_and_survives_a_keras_file(arrays, tmp_path, ten_crop):
  (xs, ys), (xt, yt) = arrays
  result = biwaa_tf.adapt((xs[:120], ys[:120]), (xt[:40], yt[:40]), backbone="lenet",
                          image_size=28, resize_size=32, random_flip=False, steps_per_run=3,
                          runs=1, verbose=False, ten_crop=ten_crop, label_shift_check=False)
  raw = xt[:40, :, :, None]  # 32 x 32 grey uint8, as stored
  # The model preprocesses as the training evaluated its target (tf.data there).
  np.testing.assert_allclose(result.model.predict(raw, verbose=0), result.target_probs,
                             atol=1e-6)
  assert result.model.get_layer("preprocess").get_config()["resize_size"] == 32
  result.model.save(tmp_path / "m.keras")
  loaded = keras.models.load_model(tmp_path / "m.keras")
  np.testing.assert_array_equal(loaded.predict(raw, verbose=0),
                                result.model.predict(raw, verbose=0))


def test_the_readme_keras_way_and_what_fit_refuses(arrays):
  """The README's "Keras way" snippet as written (no num_classes given), Keras' one
  `optimizer=`, and one line for data fit() cannot train on."""
  (xs, ys), (xt, _) = arrays
  data = biwaa_tf.fit_dataset(biwaa_tf.from_arrays("source", xs, ys),
                              biwaa_tf.from_arrays("target", xt), OPTS, batch_size=18)
  model = biwaa_tf.BIWAAModel(biwaa_tf.build_backbone("lenet", 28, "none"),
                              biwaa_tf.MethodConfig(num_classes=10, num_target=len(xt)))
  model.build_all(28)
  model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
  assert model.backbone_optimizer is not model.head_optimizer
  assert model.head_optimizer.get_config()["momentum"] == 0.9
  history = model.fit(data, epochs=1, steps_per_epoch=3, verbose=0)
  assert len(history.history["loss"]) == 1
  for bad in ((xs, ys), tf.data.Dataset.zip((tf.data.Dataset.from_tensor_slices(xs),
                                             tf.data.Dataset.from_tensor_slices(ys)))):
    with pytest.raises(ValueError, match=r"^BIWAAModel.fit\(\) takes the paired dataset"):
      model.fit(*bad) if isinstance(bad, tuple) else model.fit(bad)


def test_adapt_takes_tf_data_datasets(arrays):
  (xs, ys), (xt, yt) = arrays
  source = tf.data.Dataset.from_tensor_slices((xs[:90], ys[:90])).batch(16)  # batched pairs
  target = tf.data.Dataset.from_tensor_slices(xt[:40])                        # images
  from_data = biwaa_tf.adapt(source, target, backbone="lenet", image_size=28, steps_per_run=2,
                             runs=1, method="source_only", verbose=False, deterministic=True)
  from_arrays = biwaa_tf.adapt((xs[:90], ys[:90]), xt[:40], backbone="lenet", image_size=28,
                               steps_per_run=2, runs=1, method="source_only", verbose=False,
                               deterministic=True)
  np.testing.assert_allclose(from_data.target_probs, from_arrays.target_probs, atol=1e-6)
  with pytest.raises(UserError, match="^source: a dataset of"):
    biwaa_tf.adapt(tf.data.Dataset.range(3), target, backbone="lenet", verbose=False)


def test_adapt_errors_name_keywords_and_image_sizes(arrays):
  (xs, ys), (xt, _) = arrays
  small = xs[:60, :8, :8]
  with pytest.raises(UserError) as e:
    biwaa_tf.adapt((small, ys[:60]), small, backbone="lenet", verbose=False)
  assert str(e.value) == ("source: 8 x 8 images, and the default image_size=224 would upscale "
                          "them 28x; pass image_size=8 (or the size the backbone wants)")
  with pytest.raises(UserError, match=r"^backbone=lenet cannot take 8 x 8 images "
                                      r"\(image_size\): Computed output size"):
    biwaa_tf.adapt((small, ys[:60]), small, backbone="lenet", image_size=8, resize_size=8,
                   verbose=False)
  with pytest.raises(UserError, match=r"^backbone_weights=/nonexistent.h5: no such file$"):
    biwaa_tf.adapt((xs, ys), xt, backbone="lenet", image_size=28,
                   backbone_weights="/nonexistent.h5", verbose=False)


def test_restore_trained_on_an_array_training_says_why_in_one_line(arrays, tmp_path):
  from biwaa_tf.train import iterative
  (xs, ys), (xt, _) = arrays
  biwaa_tf.adapt((xs[:90], ys[:90]), xt[:40], backbone="lenet", image_size=28,
                 steps_per_run=1, runs=1, method="source_only", verbose=False,
                 model_dir=str(tmp_path / "m"))
  with pytest.raises(UserError, match=r"^source: this training was given NumPy arrays "
                                      r"\(array:source:90x32x32-uint8-[0-9a-f]{16}\), which "
                                      r"are not kept on disk; call biwaa_tf.adapt\(\) again"):
    iterative.restore_trained(str(tmp_path / "m"))


def test_estimator_fit_predict_score_save_load(arrays, tmp_path):
  (xs, ys), (xt, yt) = arrays
  names = [f"digit {k}" for k in range(10)]
  clf = biwaa_tf.BIWAA(backbone="lenet", image_size=28, steps_per_run=2, runs=2,
                       class_names=names)
  assert clf.get_params()["runs"] == 2 and clf.set_params(runs=1) is clf
  with pytest.raises(UserError, match="not fitted yet"):
    clf.predict(xt[:2])
  one_hot = np.eye(10)[ys[:90]]
  source = tf.data.Dataset.from_tensor_slices((xs[:90, :, :, None], one_hot)).batch(16)
  assert clf.fit(source, None, xt[:40]) is clf  # a dataset of (image, one-hot label)
  assert clf.class_names_ == names and list(clf.classes_) == list(range(10))
  assert clf.label_shift_check_["path"] in ("paper", "source_only_first")
  assert clf.verdict_["helped"] in ("likely", "unlikely", "unsure", "unchanged")
  probs = clf.predict_proba(xt[:12])
  assert probs.shape == (12, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
  np.testing.assert_array_equal(clf.predict(xt[:12]), probs.argmax(1))
  assert clf.score(xt[:12], yt[:12]) == np.mean(probs.argmax(1) == yt[:12])
  path = str(tmp_path / "clf.keras")
  clf.save(path)
  again = biwaa_tf.load(path)
  np.testing.assert_allclose(again.predict_proba(xt[:12]), probs, atol=1e-6)
  assert again.class_names_ == names and again.verdict_ == clf.verdict_
  assert keras.models.load_model(path).name == "biwaa_classifier"  # still a Keras file
  with pytest.raises(UserError, match="not a file saved by BIWAA.save"):
    biwaa_tf.load(str(tmp_path / "missing.keras"))
  with pytest.raises(UserError, match="the target images are required"):
    clf.fit(xs, ys)


@pytest.mark.slow
def test_adapt_gives_keras_callbacks_epochs(arrays, tmp_path):
  """Epochs are checkpoint intervals: Keras' epoch callbacks do their job under adapt()."""
  import csv

  (xs, ys), (xt, yt) = arrays
  epochs = []

  class Epochs(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      epochs.append((epoch, dict(logs)))
  options = dict(backbone="lenet", image_size=28, steps_per_run=12, checkpoint_every=4,
                 runs=1, lr=0.01, verbose=False, label_shift_check=False)
  result = biwaa_tf.adapt((xs[:200], ys[:200]), xt[:200], callbacks=[
      Epochs(), keras.callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch}.keras")),
      keras.callbacks.TensorBoard(str(tmp_path / "tb")),
      keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
      keras.callbacks.TerminateOnNaN()], **options)
  assert [e for e, _ in epochs] == [0, 1, 2] and result.runs[0]["steps"] == 12
  assert set(epochs[0][1]) >= {"loss", "loss_cls", "loss_adv", "lr"}
  saved = keras.models.load_model(tmp_path / "m-3.keras")  # the model after step 12
  assert int(saved.step.numpy()) == 12
  np.testing.assert_allclose(saved.predict(np.zeros((1, 28, 28, 3)), verbose=0).sum(), 1.0,
                             rtol=1e-5)
  with open(tmp_path / "log.csv") as f:
    rows = list(csv.DictReader(f))
  assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
  np.testing.assert_allclose(float(rows[1]["loss"]), epochs[1][1]["loss"], rtol=1e-5)
  events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
  assert events and sum(e.stat().st_size for e in events) > 500  # epoch_loss and others
  # EarlyStopping: no improvement of 10 in an epoch ends the run after epoch 1 (step 8).
  stopped = biwaa_tf.adapt((xs[:200], ys[:200]), xt[:200], callbacks=[
      keras.callbacks.EarlyStopping(monitor="loss", min_delta=10, patience=0)], **options)
  assert stopped.runs[0]["steps"] == 8
  # A callback that stops mid-epoch ends the run there, for good: the same call again
  # (same model_dir) returns that run and trains nothing more.
  class StopAfter5(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
      if int(self.model.step.numpy()) == 5:
        self.model.stop_training = True
  kept = dict(options, model_dir=str(tmp_path / "stopped"))
  first = biwaa_tf.adapt((xs[:200], ys[:200]), xt[:200], callbacks=[StopAfter5()], **kept)
  again = biwaa_tf.adapt((xs[:200], ys[:200]), xt[:200], **kept)
  assert first.runs[0]["steps"] == again.runs[0]["steps"] == 5
  assert again.runs[0]["accuracy"] == first.runs[0]["accuracy"]
  with pytest.raises(UserError, match="BackupAndRestore is not needed"):
    biwaa_tf.adapt((xs[:200], ys[:200]), xt[:200], callbacks=[
        keras.callbacks.BackupAndRestore(str(tmp_path / "b"))], **options)


def test_a_model_per_run_does_not_warn_of_retracing(fit_setup, caplog):
  """Every model traces its step function once; TensorFlow counts those traces by the
  code across models and, after five, warns of excessive retracing (a notebook's sixth
  adapt(), a 10-run training). Five models here: no such warning."""
  make, data, _, _ = fit_setup
  for _ in range(5):
    make().fit(data, epochs=1, steps_per_epoch=1, verbose=0)
  assert not [r for r in caplog.records if "retracing" in r.getMessage()]
