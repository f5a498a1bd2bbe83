"""Each formula of the method against an independent NumPy computation."""

import numpy as np
import pytest
import tensorflow as tf

from biwaa_tf.model import aggregation, losses, schedules
from biwaa_tf.model.grl import gradient_reversal

RNG = np.random.default_rng(0)


def softmax(z):
  e = np.exp(z - z.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


# ----- gradient reversal -----

def test_grl_forward_is_identity():
  x = tf.constant(RNG.normal(size=(3, 4)), tf.float32)
  np.testing.assert_array_equal(gradient_reversal(x, 0.37).numpy(), x.numpy())


@pytest.mark.parametrize("coeff", [0.0, 0.25, 1.0, 3.5])
def test_grl_gradient_is_minus_coeff_times_upstream(coeff):
  x = tf.constant(RNG.normal(size=(3, 4)), tf.float32)
  upstream = RNG.normal(size=(3, 4)).astype(np.float32)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = tf.reduce_sum(gradient_reversal(x, coeff) * upstream)
  np.testing.assert_allclose(tape.gradient(y, x).numpy(), -coeff * upstream, rtol=0, atol=0)


# ----- schedules -----

def test_grl_coefficient_matches_formula():
  for i in [0, 1, 100, 5004, 20000, 100000]:
    expected = 2.0 / (1.0 + np.exp(-10.0 * i / 20000.0)) - 1.0
    assert float(schedules.grl_coefficient(i)) == pytest.approx(expected, abs=1e-6)
  assert float(schedules.grl_coefficient(5004)) == pytest.approx(0.84856, abs=1e-4)


def test_reversal_uses_the_next_steps_coefficient():
  for i in (0, 1, 4999):
    expected = 2 / (1 + np.exp(-10 * (i + 1) / 20000)) - 1
    assert float(schedules.reversal_coefficient(i)) == pytest.approx(expected, abs=1e-6)
  assert float(schedules.reversal_coefficient(0)) > 2e-4  # coeff(1); coeff(0) is 0


def test_bootstrap_reference_is_the_crop_sum_by_default():
  agg = np.array([[0.2, 0.8], [0.5, 0.5]], np.float32)
  np.testing.assert_allclose(aggregation.bootstrap_reference(agg, 10).sum(axis=1), [10, 10])
  np.testing.assert_allclose(aggregation.bootstrap_reference(agg, 10, crop_sum=False), agg)
  np.testing.assert_allclose(aggregation.bootstrap_reference(agg, 1), agg)
  # Mixed with a current softmax at u = 0.5, the crop sum keeps the earlier
  # runs' class even where the current run disagrees strongly.
  cur = np.array([[0.95, 0.05]], np.float32)
  mix = lambda ref: np.asarray(aggregation.bootstrap_mix(cur, ref, 0.5))  # noqa: E731
  assert np.argmax(mix(aggregation.bootstrap_reference(agg[:1], 10))) == 1
  assert np.argmax(mix(aggregation.bootstrap_reference(agg[:1], 10, False))) == 0


def test_bootstrap_weight_ramps_and_disables():
  assert float(schedules.bootstrap_weight(0, 500)) == 0.0
  assert float(schedules.bootstrap_weight(250, 500)) == pytest.approx(
      2 / (1 + np.exp(-5.0)) - 1, abs=1e-6)
  assert float(schedules.bootstrap_weight(10**6, 500)) == pytest.approx(1.0)
  assert float(schedules.bootstrap_weight(3, 0)) == 1.0


def test_warmup_gate_opens_at_the_warmup_step():
  gate = [float(schedules.warmup_gate(i, 3)) for i in range(6)]
  assert gate == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
  assert [float(schedules.warmup_gate(i, 0)) for i in range(2)] == [1.0, 1.0]


def test_inv_lr_and_group_multiplier():
  for i in [0, 10, 5000]:
    expected = 1e-3 * (1 + 0.001 * i) ** -0.75
    assert float(schedules.inv_lr(i, 1e-3)) == pytest.approx(expected, rel=1e-6)
    assert float(schedules.InvSchedule(1e-3, 10.0)(i)) == pytest.approx(10 * expected, rel=1e-6)


# ----- backprop-induced feature weights -----

@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_feature_weights_closed_form_for_linear_classifier(offset):
  b, d, k, factor = 5, 6, 4, 10.0
  f = RNG.normal(size=(b, d)).astype(np.float32)
  w_mat = RNG.normal(size=(d, k)).astype(np.float32)
  bias = RNG.normal(size=(k,)).astype(np.float32)
  y = np.array([0, 3, 1, 1, 2])

  def classifier(x, training=True):
    return tf.matmul(x, w_mat) + bias
  got = losses.feature_weights(tf.constant(f), tf.constant(y), classifier, factor,
                               offset).numpy()
  # dCE/df for mean CE over B: (softmax - onehot) W^T / B, then per-row L2 norm.
  g = (softmax(f @ w_mat + bias) - np.eye(k)[y]) @ w_mat.T / b
  expected = offset + factor * g / np.linalg.norm(g, axis=1, keepdims=True)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(got - offset, axis=1), factor, rtol=1e-5)


def test_feature_weights_carry_no_gradient():
  f = tf.Variable(RNG.normal(size=(3, 4)).astype(np.float32))
  dense = tf.keras.layers.Dense(2)
  with tf.GradientTape() as tape:
    w = losses.feature_weights(f, tf.constant([0, 1, 1]), dense, 10.0)
    out = tf.reduce_sum(w * f)
  # Only the explicit f factor contributes: d(sum w*f)/df = w.
  np.testing.assert_allclose(tape.gradient(out, f).numpy(), w.numpy(), rtol=1e-6)


# ----- adversarial loss -----

def test_domain_adversarial_loss_is_mean_bce():
  logits = RNG.normal(size=6).astype(np.float32)
  d = np.array([1, 1, 1, 0, 0, 0], np.float32)
  p = 1 / (1 + np.exp(-logits))
  expected = -np.mean(d * np.log(p) + (1 - d) * np.log(1 - p))
  got = float(losses.domain_adversarial_loss(tf.constant(logits), tf.constant(d)))
  assert got == pytest.approx(expected, rel=1e-5)


# ----- moving centroids -----

def test_update_centroids_moves_present_classes_only():
  k, d = 4, 3
  old = RNG.normal(size=(k, d)).astype(np.float32)
  f = RNG.normal(size=(5, d)).astype(np.float32)
  y = np.array([0, 2, 2, 0, 2])
  got = losses.update_centroids(tf.constant(old), tf.constant(f), tf.constant(y), k).numpy()
  expected = old.copy()
  for c in (0, 2):
    expected[c] = 0.7 * old[c] + 0.3 * f[y == c].mean(axis=0)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got[[1, 3]], old[[1, 3]])


def test_update_centroids_gradient_flows_through_batch_mean_only():
  old = tf.constant(np.ones((2, 2), np.float32))
  f = tf.Variable(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(old)
    c = losses.update_centroids(old, f, tf.constant([1, 1]), 2)
    s = tf.reduce_sum(c)
  # Each feature enters class 1's mean with weight 0.3 / 2.
  np.testing.assert_allclose(tape.gradient(s, f).numpy(), np.full((2, 2), 0.15), rtol=1e-6)
  assert tape.gradient(s, old) is None


def numpy_centroid_terms(cs, ct):
  k = len(cs)
  intra = sum(np.sum((cs[i] - ct[i]) ** 2) for i in range(k)) / k

  def cos(a, b):
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
  pairs = [(i, j) for i in range(k) for j in range(k) if i != j]
  st = sum(cos(cs[i], ct[j]) for i, j in pairs) / (k - 1) ** 2
  tt = sum(cos(ct[i], ct[j]) for i, j in pairs) / (k - 1) ** 2
  ss = sum(cos(cs[i], cs[j]) for i, j in pairs) / (k - 1) ** 2
  return dict(intra=intra, st=st, tt=tt, ss=ss)


def test_centroid_loss_terms_match_numpy():
  cs = RNG.normal(size=(4, 5)).astype(np.float32)
  ct = RNG.normal(size=(4, 5)).astype(np.float32)
  got = losses.centroid_loss_terms(tf.constant(cs), tf.constant(ct))
  for name, value in numpy_centroid_terms(cs, ct).items():
    assert float(got[name]) == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_combine_centroid_loss_forms():
  terms = dict(intra=1.0, st=2.0, tt=3.0, ss=4.0)
  assert float(losses.combine_centroid_loss(terms, 0.5)) == pytest.approx(0.5 * 6 + 4)
  assert float(losses.combine_centroid_loss(terms, 0.5, paper_form=True)) == pytest.approx(5.0)


# ----- aggregation and bootstrap -----

def test_within_run_update_first_visit_then_momentum():
  table = np.array([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]], np.float32)
  seen = np.array([True, False, True])
  probs = np.array([[0.6, 0.4], [0.3, 0.7]], np.float32)
  got = aggregation.within_run_update(tf.constant(table), tf.constant(seen),
                                      tf.constant([0, 1]), tf.constant(probs)).numpy()
  expected = np.array([0.9 * probs[0] + 0.1 * table[0], probs[1]])
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def _sequential_aggregation(table, seen, indices, probs, momentum=0.9):
  """The implementation's loop: one sample after the other, the table updated each time."""
  table, seen = table.astype(np.float64).copy(), seen.copy()
  out = []
  for i, p in zip(indices, probs.astype(np.float64)):
    table[i] = momentum * p + (1 - momentum) * table[i] if seen[i] else p
    seen[i] = True
    out.append(table[i].copy())
  return np.array(out), table


@pytest.mark.parametrize("indices", [
    [3, 1, 3, 0, 3, 1],      # index 3 three times, 1 twice
    [2, 2, 2, 2],            # one sample four times
    [0, 1, 2, 4],            # no repeats
])
def test_within_run_update_visits_repeated_samples_in_batch_order(indices):
  rng = np.random.default_rng(1)
  n, k = 5, 3
  table = rng.dirichlet(np.ones(k), n).astype(np.float32)
  seen = np.array([True, False, False, True, False])
  probs = rng.dirichlet(np.ones(k), len(indices)).astype(np.float32)
  expected, expected_table = _sequential_aggregation(table, seen, indices, probs)
  got = aggregation.within_run_update(tf.constant(table), tf.constant(seen),
                                      tf.constant(indices, tf.int64), tf.constant(probs))
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
  # The rows written back: each index's last occurrence, so no scatter sees a repeat.
  last = aggregation.last_occurrences(tf.constant(indices, tf.int64)).numpy()
  written = np.array(indices)[last]
  assert len(set(written.tolist())) == len(written) == len(set(indices))
  new_table = table.astype(np.float64).copy()
  new_table[written] = got.numpy()[last]
  np.testing.assert_allclose(new_table, expected_table, rtol=1e-6)


def test_bootstrap_mix():
  cur = np.array([[0.9, 0.1]], np.float32)
  prev = np.array([[0.2, 0.8]], np.float32)
  got = aggregation.bootstrap_mix(tf.constant(cur), tf.constant(prev), 0.25).numpy()
  np.testing.assert_allclose(got, 0.25 * cur + 0.75 * prev, rtol=1e-6)


def test_across_run_aggregate_decayed_mean():
  runs = [RNG.dirichlet(np.ones(3), size=4) for _ in range(3)]
  got = aggregation.across_run_aggregate(runs, decay=0.8)
  w = np.array([0.64, 0.8, 1.0])
  expected = (w[0] * runs[0] + w[1] * runs[1] + w[2] * runs[2]) / w.sum()
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(aggregation.across_run_aggregate(runs[:1]), runs[0], rtol=1e-6)


def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path):
  import os

  from biwaa_tf import io_utils
  path = tmp_path / "a.json"
  io_utils.atomic_write_json(path, {"x": 1})
  io_utils.atomic_write_json(path, {"x": 2})
  assert io_utils.read_json(path) == {"x": 2}
  assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left
  umask = os.umask(0)
  os.umask(umask)
  assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_next_loss_scale_matches_a_numpy_loop():
  from biwaa_tf.model.loss_scale import MIN_SCALE, next_loss_scale
  finite = [True, True, True, False, True, True, True, True, False, False]
  growth = 3
  scale, good, got = 8.0, 0, []
  tf_scale, tf_good = tf.constant(8.0), tf.constant(0, tf.int64)
  for f in finite:
    # Independent reference: count finite steps; the growth-th doubles; a bad one halves.
    if f:
      good += 1
      if good == growth:
        scale, good = scale * 2, 0
    else:
      scale, good = max(scale / 2, MIN_SCALE), 0
    tf_scale, tf_good = next_loss_scale(tf_scale, tf_good, tf.constant(f), growth)
    got.append((float(tf_scale), int(tf_good)))
    assert got[-1] == (scale, good)
  assert [s for s, _ in got] == [8, 8, 16, 8, 8, 8, 16, 16, 8, 4]
  low, _ = next_loss_scale(tf.constant(1.0), tf.constant(0, tf.int64), tf.constant(False))
  assert float(low) == MIN_SCALE


def test_all_finite():
  from biwaa_tf.model.loss_scale import all_finite
  assert bool(all_finite([tf.ones(3), None, tf.zeros([2, 2])]))
  assert not bool(all_finite([tf.ones(3), tf.constant([1.0, np.inf])]))
  assert not bool(all_finite([tf.constant([np.nan], tf.float16)]))
