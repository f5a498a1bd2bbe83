"""The train step on a tiny model, and the command line end to end."""

import json
import os
import re
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import BIWAA_TF, REPO, run_main, tiny_flags

from biwaa_tf.model import losses, schedules
from biwaa_tf.model.biwaa import BIWAAModel, MethodConfig


def tiny_model(**overrides):
  keras.utils.set_random_seed(0)
  backbone = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                               keras.layers.Dense(8, activation="relu")])
  config = MethodConfig(num_classes=3, num_target=10, bottleneck_dim=5, **overrides)
  model = BIWAAModel(backbone, config, *schedules.paper_optimizers(0.005), seed=0)
  model.build_all(4)
  return model


def tiny_batch(seed=0):
  rng = np.random.default_rng(seed)
  x_s = tf.constant(rng.normal(size=(6, 4, 4, 3)), tf.float32)
  x_t = tf.constant(rng.normal(size=(6, 4, 4, 3)), tf.float32)
  y_s = tf.constant([0, 1, 2, 0, 1, 2], tf.int64)
  idx = tf.constant([0, 1, 2, 3, 4, 5], tf.int64)
  return (x_s, y_s), (x_t, idx, tf.constant([0, 1, 2, 0, 1, -1], tf.int64))


def test_train_step_lowers_source_loss_and_is_finite():
  model = tiny_model()
  batch = tiny_batch()
  step = tf.function(model.train_step)
  first = step(batch)
  for _ in range(15):
    logs = step(batch)
  for v in logs.values():
    assert np.isfinite(float(v))
  assert float(logs["loss_cls"]) < 0.5 * float(first["loss_cls"])
  assert int(model.step.numpy()) == 16
  # Step i reverses with coeff(i + 1), as the implementation.
  assert float(first["grl_coeff"]) == pytest.approx(2 / (1 + np.exp(-10 / 20000)) - 1, rel=1e-3)


def test_train_step_updates_state_like_numpy():
  model = tiny_model(bootstrap_steps=0)
  batch = tiny_batch()
  (x_s, y_s), (x_t, idx, _) = batch
  # Expected memories after one step, computed from the pre-step weights.
  f_s = model.features(x_s, training=True).numpy()
  model.train_step(batch)
  cs = model.source_centroids.numpy()
  for k in range(3):
    np.testing.assert_allclose(cs[k], 0.3 * f_s[y_s.numpy() == k].mean(axis=0), rtol=1e-4,
                               atol=1e-5)
  seen = model.agg_seen.numpy()
  assert seen[:6].all() and not seen[6:].any()
  np.testing.assert_allclose(model.agg_table.numpy()[:6].sum(axis=1), 1.0, rtol=1e-5)


def test_centroid_loss_warmup_trains_without_it_but_moves_the_memories():
  # --ms_warmup_steps=3: steps 0-2 train exactly as without the centroid loss, while the
  # memories follow the batches; from step 3 the loss (and its gradient) is back.
  warm, plain = tiny_model(ms_warmup_steps=3), tiny_model(ms_loss=False)
  full = tiny_model()
  batch = tiny_batch()
  for _ in range(3):
    logs = warm.train_step(batch)
    plain.train_step(batch)
    assert float(logs["loss_ms"]) == 0.0 and float(logs["ms_intra"]) > 0.0
  for a, b in zip(warm.trainable_variables, plain.trainable_variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
  assert np.abs(warm.source_centroids.numpy()).sum() > 0
  logs = warm.train_step(batch)
  assert float(logs["loss_ms"]) != 0.0
  full_logs = full.train_step(batch)
  assert float(full_logs["loss_ms"]) != 0.0  # without warm-up the loss is on from step 0
  for _ in range(3):  # both models now at 4 steps
    full.train_step(batch)
  moved = [np.abs(a.numpy() - b.numpy()).max()
           for a, b in zip(warm.trainable_variables, full.trainable_variables)]
  assert max(moved) > 1e-4  # the warm-up changed the trajectory


def test_source_only_step_leaves_discriminator_untouched():
  model = tiny_model(adversarial=False, feature_weighting=False, ms_loss=False)
  before = [v.numpy().copy() for v in model.discriminator.trainable_variables]
  model.train_step(tiny_batch())
  for b, v in zip(before, model.discriminator.trainable_variables):
    np.testing.assert_array_equal(b, v.numpy())


def test_discriminator_gradient_is_reversed_for_features():
  # With only L_d (no CE, no centroid loss), the bottleneck moves to *raise*
  # the discriminator loss: check the sign through the reversal layer.
  model = tiny_model(ms_loss=False, feature_weighting=False)
  (x_s, _), (x_t, _, _) = tiny_batch()
  f = tf.Variable(tf.concat([model.features(x_s), model.features(x_t)], 0))
  with tf.GradientTape(persistent=True) as tape:
    from biwaa_tf.model.grl import gradient_reversal
    d = tf.concat([tf.ones([6]), tf.zeros([6])], 0)
    plain = model.discriminator(f, training=False)[:, 0]
    rev = model.discriminator(gradient_reversal(f, 0.5), training=False)[:, 0]
    lp = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(d, plain))
    lr = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(d, rev))
  np.testing.assert_allclose(tape.gradient(lr, f).numpy(), -0.5 * tape.gradient(lp, f).numpy(),
                             rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_discriminator_input_is_offset_plus_weights_times_features(offset):
  # --weighting_offset=a: L_d is the BCE of G_d(a f + f * w), w the paper's weights.
  model = tiny_model(ms_loss=False, weighting_offset=offset)
  (x_s, y_s), (x_t, _, _) = tiny_batch()
  f_s, f_t = model.features(x_s), model.features(x_t)
  y_t = tf.constant([2, 1, 0, 0, 1, 2], tf.int64)
  step = tf.constant(0, tf.int64)
  loss, _ = model.adversarial_loss(f_s, y_s, f_t, y_t, 1.0, 1.0, step)
  f = tf.concat([f_s, f_t], 0)
  w = losses.feature_weights(f, tf.concat([y_s, y_t], 0), model.classifier, 10.0)
  logits = model.discriminator(offset * f + f * w, step=step, rows=tf.range(12),
                               global_rows=12, training=True)[:, 0]
  d = tf.concat([tf.ones([6]), tf.zeros([6])], 0)
  expected = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(d, logits))
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-6)


# ----- command line -----

def test_end_to_end_writes_results(tiny_domains, tmp_path):
  root, src, tgt = tiny_domains
  out = tmp_path / "m"
  res = run_main(tiny_flags(root, src, tgt, out))
  assert res.returncode == 0, res.stderr[-2000:]
  results = json.loads((out / "results.json").read_text())
  run0 = results["runs"][0]
  assert 0.0 <= run0["accuracy"] <= 1.0 and 0.0 <= run0["per_class_accuracy"] <= 1.0
  assert results["final_accuracy"] == run0["accuracy"]
  probs = np.load(out / "run_0" / "target_probs.npy")
  assert probs.shape == (19, 3) and probs.dtype == np.float32
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
  assert "--method=biwaa" in (out / "flags.txt").read_text()
  assert list(os.listdir(out / "run_0" / "tb"))
  assert "final" in res.stdout


def test_iterative_three_runs(tiny_domains, tmp_path):
  root, src, tgt = tiny_domains
  out = tmp_path / "m"
  res = run_main(tiny_flags(root, src, tgt, out, "--runs=3"))
  assert res.returncode == 0, res.stderr[-2000:]
  results = json.loads((out / "results.json").read_text())
  assert [r["run"] for r in results["runs"]] == [0, 1, 2]
  assert "balanced by labels" in res.stderr  # runs 1 and 2 load the target balanced
  # Re-running the same command recomputes nothing.
  before = (out / "run_0" / "target_probs.npy").read_bytes()
  again = run_main(tiny_flags(root, src, tgt, out, "--runs=3"))
  assert again.returncode == 0 and "(skipped)" in again.stderr
  assert (out / "run_0" / "target_probs.npy").read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["--method=nope"], "error: flag --method=nope"),
    (["--batch_size=0"], "error: --batch_size: must be positive, got 0"),
    (["--ms_warmup_steps=-1"], "error: --ms_warmup_steps: must be >= 0"),
    (["--weighting_offset=-1"], "error: --weighting_offset: must be >= 0"),
    (["--flagfile=/no/such.flags"], "error:"),
    (["--backbone=vgg"], "error: --backbone=vgg: unknown"),
    (["--source=/no/such/list.txt"], "error: /no/such/list.txt: no such list file"),
])
def test_bad_flags_exit_2_with_one_line(tiny_domains, tmp_path, args, message):
  root, src, tgt = tiny_domains
  out = tmp_path / "m"
  res = run_main(tiny_flags(root, src, tgt, out) + args)
  assert res.returncode == 2
  lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
  assert len(lines) == 1 and lines[0].startswith(message), res.stderr
  assert not out.exists()


def test_model_dir_with_other_flags_is_refused(tiny_domains, tmp_path):
  root, src, tgt = tiny_domains
  out = tmp_path / "m"
  assert run_main(tiny_flags(root, src, tgt, out, "--steps_per_run=2")).returncode == 0
  res = run_main(tiny_flags(root, src, tgt, out, "--steps_per_run=2", "--lr=0.5"))
  assert res.returncode == 2 and "holds a training with different flags" in res.stderr
  assert "--lr=" in res.stderr


def test_non_finite_loss_stops_with_message(tiny_domains, tmp_path):
  root, src, tgt = tiny_domains
  res = run_main(tiny_flags(root, src, tgt, tmp_path / "m", "--lr=1e30"))
  assert res.returncode == 2
  assert "non-finite loss" in res.stderr


def test_help_lists_every_flag():
  res = run_main(["--help"])
  assert res.returncode == 0
  for flag in ("--source", "--target", "--weighting_factor", "--runs", "--method",
               "--bootstrap_steps", "--balanced_target", "--model_dir"):
    assert flag in res.stdout


@pytest.mark.slow
def test_demo_flagfile_end_to_end(tmp_path):
  env = {"BIWAA_TF_DATA": str(tmp_path / "data")}
  res = run_main(["--flagfile=configs/demo.flags", "--steps_per_run=150",
                  f"--model_dir={tmp_path / 'demo'}", "--noprogress"],
                 env=env, module="biwaa_tf.demo")
  assert res.returncode == 0, res.stderr[-2000:]
  assert "source_only" in res.stdout and "biwaa" in res.stdout and "verdict" in res.stdout
  biwaa = json.loads((tmp_path / "demo" / "biwaa" / "results.json").read_text())
  src = biwaa["source_only"]  # the label-shift check's probe is the baseline
  assert src["accuracy"] > 0.3 and biwaa["final_accuracy"] > 0.3
  assert re.search(rf"source_only\s+{100 * src['accuracy']:.2f}\s", res.stdout), res.stdout
  # The heatmap tool (Fig. 1) on the demo model.
  png = tmp_path / "heat.png"
  res = subprocess.run([BIWAA_TF, "heatmap",
                        f"--model_dir={tmp_path / 'demo' / 'biwaa'}", "--count=3",
                        f"--output={png}"], cwd=REPO, env=dict(os.environ, **env),
                       capture_output=True, text=True)
  assert res.returncode == 0, res.stderr[-2000:]
  assert png.read_bytes()[:4] == b"\x89PNG"


def test_heatmap_maps_differ_with_weighting():
  from biwaa_tf.heatmap import discriminator_maps
  model = tiny_conv_model()
  x = tf.constant(np.random.default_rng(0).normal(size=(2, 28, 28, 3)), tf.float32)
  dann, biwaa = discriminator_maps(model, x)
  assert dann.shape == biwaa.shape == (2, 4, 4)
  assert dann.min() >= 0 and dann.max() == pytest.approx(1.0)
  assert np.abs(dann - biwaa).max() > 1e-3


def tiny_conv_model():
  from biwaa_tf.model import backbones
  keras.utils.set_random_seed(0)
  backbone = backbones.build_backbone("lenet", 28, "none")
  model = BIWAAModel(backbone, MethodConfig(num_classes=3, num_target=4), seed=0)
  f = model.features(tf.zeros([1, 28, 28, 3]))
  model.classifier(f)
  model.discriminator(f)
  return model


def test_flags_added_later_or_resume_free_do_not_block_resume():
  from biwaa_tf.train.preflight import _changed_flags
  old = "--lr=0.01\n--random_flip\n--runs=1\n"
  assert _changed_flags(old, "--lr=0.01\n--random_flip\n--runs=3\n--new_flag=1\n") == []
  assert _changed_flags(old, "--lr=0.02\n--norandom_flip\n--runs=1\n") == [
      "--lr=0.02", "--norandom_flip"]


def test_float16_step_with_overflowing_scale_is_skipped_by_both_optimizers():
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    model = tiny_model(loss_scaling=True, loss_scale_growth_steps=2)
    step = tf.function(model.train_step)
    model.loss_scale.assign(2.0 ** 100)  # the scaled float16 gradients overflow
    before = [v.numpy().copy() for v in model.trainable_variables]
    logs = step(tiny_batch())
    assert np.isfinite(float(logs["loss"]))
    for b, v in zip(before, model.trainable_variables):  # neither group moved
      np.testing.assert_array_equal(b, v.numpy())
    assert model.backbone_optimizer.iterations.numpy() == 0
    assert model.head_optimizer.iterations.numpy() == 0
    assert float(model.loss_scale.numpy()) == 2.0 ** 99 and model.good_steps.numpy() == 0
    model.loss_scale.assign(2.0 ** 8)
    step(tiny_batch())
    assert model.head_optimizer.iterations.numpy() == 1 and model.good_steps.numpy() == 1
    assert any(np.abs(b - v.numpy()).max() > 0 for b, v in zip(before, model.trainable_variables))
    step(tiny_batch())  # the second finite step in a row doubles the scale
    assert float(model.loss_scale.numpy()) == 2.0 ** 9 and model.good_steps.numpy() == 0
  finally:
    keras.mixed_precision.set_global_policy("float32")


def test_a_collapsed_run_is_named_in_one_line():
  from biwaa_tf.train.iterative import collapse_message
  assert collapse_message(0, {"predicted_histogram": [0.6, 0.3, 0.1], "eval_images": 100}) \
      is None
  assert collapse_message(0, {"predicted_histogram": [1.0, 0.0], "eval_images": 5}) is None
  assert collapse_message(1, {"predicted_histogram": [0.005, 0, 0, 0, 0.995],
                              "eval_images": 10000}) == (
      "run 1: the target predictions collapsed to one class (class 4: 99.5% of them); "
      "lower --lr, or check the data")


def test_a_collapsed_run_stops_before_feeding_the_next(tiny_domains, tmp_path):
  # A backbone whose weights are all zero outputs zeros for every image (and, behind
  # ReLUs, gets no gradient): every target image gets the same prediction.
  from conftest import make_domain

  from biwaa_tf.model import backbones
  root, src, _ = tiny_domains
  tgt = make_domain(root, "tgt30", [12, 10, 8], seed=3, shift=50.0)
  dead = backbones.lenet(28, "none")
  dead.set_weights([np.zeros_like(w) for w in dead.get_weights()])
  weights = str(tmp_path / "dead.weights.h5")
  dead.save_weights(weights)
  res = run_main(tiny_flags(root, src, tgt, tmp_path / "m", "--runs=2",
                            f"--backbone_weights={weights}"))
  assert res.returncode == 2, res.stderr[-1500:]
  assert re.fullmatch(
      r"error: run 0: the target predictions collapsed to one class \(class \d: 100.0% of "
      r"them\); lower --lr, or check the data; stopped before run 1 \(run 0 is kept\)",
      res.stderr.strip().splitlines()[-1])
  assert (tmp_path / "m" / "run_0" / "run_result.json").exists()
  assert not (tmp_path / "m" / "run_1").exists()


def test_lenet_initial_weights_are_those_of_its_layers_built_in_order():
  # Keras seeds each initializer when its layer is constructed: building lenet's layers
  # in another order changed the demo's numbers once (74.67 -> 81.78 source-only).
  from biwaa_tf.model import backbones
  keras.utils.set_random_seed(0)
  ours = backbones.build_backbone("lenet", 28, "none").get_weights()
  keras.utils.set_random_seed(0)
  reference = keras.Sequential([
      keras.Input((28, 28, 3)), keras.layers.Conv2D(32, 5, activation="relu"),
      keras.layers.MaxPooling2D(2), keras.layers.Conv2D(48, 5, activation="relu"),
      keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
      keras.layers.Dense(500, activation="relu")]).get_weights()
  for a, b in zip(ours, reference, strict=True):
    np.testing.assert_array_equal(a, b)
