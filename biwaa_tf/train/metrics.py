"""Accuracy, mean per-class accuracy, class histograms and their distance."""

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


def prediction_report(probs, labels, num_classes):
  """Metrics of probabilities against labels (None when labels are unknown)."""
  pred = np.argmax(probs, axis=1)
  hist = class_histogram(pred, num_classes)
  report = {"predicted_histogram": [round(float(h), 6) for h in hist],
            "accuracy": None, "per_class_accuracy": None, "histogram_tv_distance": None}
  if labels is not None:
    report.update(
        accuracy=accuracy(pred, labels),
        per_class_accuracy=per_class_accuracy(pred, labels, num_classes),
        histogram_tv_distance=total_variation(hist, class_histogram(labels, num_classes)))
  return report
