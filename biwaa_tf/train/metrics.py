"""Accuracy, mean per-class accuracy, class histograms and their distance, and scores
computed without target labels (for choosing among runs and methods without them)."""

import numpy as np


def accuracy(pred, labels):
  """Fraction of predictions equal to the labels."""
  return float(np.mean(np.asarray(pred) == np.asarray(labels)))


def per_class_accuracy(pred, labels, num_classes):
  """Mean over the classes present in `labels` of each class's accuracy."""
  pred, labels = np.asarray(pred), np.asarray(labels)
  accs = [np.mean(pred[labels == k] == k) for k in range(num_classes) if np.any(labels == k)]
  return float(np.mean(accs))


def class_histogram(labels, num_classes):
  """Normalised class frequencies."""
  counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
  return counts / max(counts.sum(), 1.0)


def total_variation(p, q):
  """TV(p, q) = 0.5 sum |p - q|."""
  return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


def mean_entropy(probs):
  """Mean Shannon entropy (nats) of the predicted distributions: low = confident."""
  p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
  return float(np.mean(-np.sum(p * np.log(p), axis=1)))


def information_maximization(probs):
  """IM score: H(mean prediction) - mean H(prediction) (diverse and confident is high)."""
  p = np.asarray(probs, np.float64)
  return mean_entropy(p.mean(axis=0, keepdims=True)) - mean_entropy(p)


def soft_neighborhood_density(probs, temperature=0.05, max_samples=2000, seed=0):
  """SND (Saito et al., ICCV 2021) on the L2-normalised predictions: the mean entropy of
  each sample's softmax over its cosine similarities to the others / temperature (high
  = dense neighbourhoods). At most `max_samples` samples (seeded subsample)."""
  p = np.asarray(probs, np.float64)
  if len(p) > max_samples:
    p = p[np.random.default_rng(seed).choice(len(p), max_samples, replace=False)]
  z = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
  sim = z @ z.T / temperature
  np.fill_diagonal(sim, -np.inf)
  sim -= sim.max(axis=1, keepdims=True)
  soft = np.exp(sim)
  soft /= soft.sum(axis=1, keepdims=True)
  return mean_entropy(soft)


def ranks(values):
  """1-based ranks, ties given their average rank."""
  values = np.asarray(values, np.float64)
  order = np.argsort(values, kind="mergesort")
  r = np.empty(len(values))
  r[order] = np.arange(1, len(values) + 1)
  for v in np.unique(values):
    tied = values == v
    r[tied] = r[tied].mean()
  return r


def spearman(x, y):
  """Spearman's rank correlation (Pearson's r of the average ranks); nan if either is
  constant or fewer than 3 pairs."""
  if len(x) < 3:
    return float("nan")
  rx, ry = ranks(x), ranks(y)
  if rx.std() == 0 or ry.std() == 0:
    return float("nan")
  return float(np.corrcoef(rx, ry)[0, 1])


def label_free_scores(probs):
  """The scores above, for results.json and TensorBoard (no labels used)."""
  return {"mean_entropy": mean_entropy(probs), "im_score": information_maximization(probs),
          "snd_score": soft_neighborhood_density(probs)}


def prediction_report(probs, labels, num_classes):
  """Metrics of probabilities against labels (None when labels are unknown), and the
  label-free scores."""
  pred = np.argmax(probs, axis=1)
  hist = class_histogram(pred, num_classes)
  report = {"predicted_histogram": [round(float(h), 6) for h in hist],
            "accuracy": None, "per_class_accuracy": None, "histogram_tv_distance": None,
            **label_free_scores(probs)}
  if labels is not None:
    report.update(
        accuracy=accuracy(pred, labels),
        per_class_accuracy=per_class_accuracy(pred, labels, num_classes),
        histogram_tv_distance=total_variation(hist, class_histogram(labels, num_classes)))
  return report
