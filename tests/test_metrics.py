"""Label-free scores against direct computations (loops, scipy-free formulas)."""

import math

import numpy as np
import pytest

from biwaa_tf.train import metrics


def entropy(p):
  return -sum(x * math.log(x) for x in p if x > 0)


def test_entropy_and_im_score_match_loops():
  probs = np.random.default_rng(0).dirichlet(np.ones(4), 30)
  per_sample = [entropy(row) for row in probs]
  assert metrics.mean_entropy(probs) == pytest.approx(np.mean(per_sample), rel=1e-9)
  marginal = entropy(probs.mean(axis=0))
  assert metrics.information_maximization(probs) == pytest.approx(
      marginal - np.mean(per_sample), rel=1e-9)
  # Confident and diverse beats confident and collapsed.
  diverse, collapsed = np.eye(4)[np.arange(40) % 4], np.eye(4)[np.zeros(40, int)]
  assert metrics.information_maximization(diverse) == pytest.approx(math.log(4))
  assert metrics.information_maximization(collapsed) == pytest.approx(0, abs=1e-9)


def test_snd_matches_a_loop():
  probs = np.random.default_rng(1).dirichlet(np.ones(3), 12)
  z = probs / np.linalg.norm(probs, axis=1, keepdims=True)
  values = []
  for i in range(len(z)):
    sims = [float(z[i] @ z[j]) / 0.05 for j in range(len(z)) if j != i]
    w = np.exp(np.array(sims) - max(sims))
    values.append(entropy(w / w.sum()))
  assert metrics.soft_neighborhood_density(probs) == pytest.approx(np.mean(values), rel=1e-9)
  # Identical predictions within a class: the neighbourhood is that class (log of its size).
  one_hot = np.eye(3)[np.arange(30) % 3]
  assert metrics.soft_neighborhood_density(one_hot) == pytest.approx(math.log(9), rel=1e-6)


def test_prediction_report_carries_the_scores_without_labels():
  probs = np.random.default_rng(2).dirichlet(np.ones(3), 20)
  report = metrics.prediction_report(probs, None, 3)
  assert report["accuracy"] is None
  assert set(report) >= {"mean_entropy", "im_score", "snd_score", "predicted_histogram"}


def test_spearman_matches_scipy_with_ties():
  from scipy.stats import spearmanr
  rng = np.random.default_rng(0)
  x = rng.integers(0, 5, 40).astype(float)  # many ties
  y = x + rng.normal(0, 2, 40)
  assert metrics.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
  np.testing.assert_array_equal(metrics.ranks([3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0])
  assert metrics.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  assert np.isnan(metrics.spearman([1, 1, 1], [1, 2, 3]))
