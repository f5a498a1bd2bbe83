"""Pseudo-label aggregation within a run, across runs, and the bootstrap mix."""

import numpy as np
import tensorflow as tf


def within_run_update(table, seen, indices, probs, momentum=0.9):
  """Aggregated target probabilities for a batch, and the updated table rows.

  First visit of sample i: p_a = p. Later visits: p_a = momentum * p +
  (1 - momentum) * p_a(old) (the implementation's constants; eq. 11 of the paper
  writes the same recursion with a factor r).

  Args:
    table: N x K aggregated probabilities (any values for unseen rows).
    seen: N booleans, whether row i was visited before in this run.
    indices: B sample indices of the batch.
    probs: B x K current probabilities.
  Returns:
    The B x K aggregated probabilities for the batch (also the new table rows).
  """
  old = tf.gather(table, indices)
  was_seen = tf.gather(seen, indices)[:, None]
  return tf.where(was_seen, momentum * probs + (1.0 - momentum) * old, probs)


def bootstrap_mix(current, previous, u):
  """p_b = u p_a + (1 - u) p_prev (eq. 13); u ramps from 0 to 1 over the run."""
  return u * current + (1.0 - u) * previous


def across_run_aggregate(run_probs, decay=0.8):
  """Decayed weighted mean of saved per-run probabilities, oldest first.

  The newest run has weight 1, each older one ``decay`` times the next newer
  one; the weights are normalised to sum to 1. Returns N x K float32.
  """
  if not run_probs:
    raise ValueError("across_run_aggregate needs at least one run")
  n = len(run_probs)
  weights = np.array([decay ** (n - 1 - r) for r in range(n)], dtype=np.float64)
  stacked = np.stack([np.asarray(p, np.float64) for p in run_probs])
  agg = np.tensordot(weights / weights.sum(), stacked, axes=1)
  return agg.astype(np.float32)
