"""Pseudo-label aggregation within a run, across runs, and the bootstrap mix."""

import numpy as np
import tensorflow as tf


def within_run_update(table, seen, indices, probs, momentum=0.9):
  """Aggregated target probabilities for a batch, visited in batch order.

  First visit of sample i: p_a = p. Later visits: p_a = momentum * p +
  (1 - momentum) * p_a(previous visit) (the implementation's constants; eq. 11 of
  the paper writes the same recursion with a factor r). A sample that occurs twice
  in one batch (a balanced loader's batch can span two epochs) is visited twice,
  in batch order, as the implementation's sample-by-sample update does: its second
  occurrence sees the aggregate of its first.

  Args:
    table: N x K aggregated probabilities (any values for unseen rows).
    seen: N booleans, whether row i was visited before in this run.
    indices: B sample indices of the batch.
    probs: B x K current probabilities.
  Returns:
    B x K aggregated probabilities, row b being the aggregate after visit b. The
    table's new rows are those of each index's last occurrence (`last_occurrences`).
  """
  indices = tf.convert_to_tensor(indices)
  probs = tf.convert_to_tensor(probs)
  old = tf.gather(table, indices)
  was_seen = tf.gather(seen, indices)[:, None]
  first_visit = tf.where(was_seen, momentum * probs + (1.0 - momentum) * old, probs)
  prev, depth = _previous_occurrences(indices)
  has_prev = (prev >= 0)[:, None]
  safe_prev = tf.maximum(prev, 0)

  def visit(agg):  # one more link of every chain of repeated indices
    return (tf.where(has_prev, momentum * probs + (1.0 - momentum) * tf.gather(agg, safe_prev),
                     first_visit),)
  return tf.while_loop(lambda agg: True, visit, (first_visit,), maximum_iterations=depth)[0]


def _previous_occurrences(indices):
  """For each row, the row of the same index just before it (-1 if none), and the
  longest run of repeats (how many links the recursion needs)."""
  b = tf.shape(indices)[0]
  pos = tf.range(b)
  same = tf.equal(indices[:, None], indices[None, :])
  earlier = tf.logical_and(same, pos[None, :] < pos[:, None])  # [row, earlier row]
  prev = tf.reduce_max(tf.where(earlier, pos[None, :], -1), axis=1)
  depth = tf.reduce_max(tf.concat([tf.reduce_sum(tf.cast(earlier, tf.int32), axis=1), [0]], 0))
  return prev, depth


def last_occurrences(indices):
  """B booleans: row b holds the last occurrence of its index in the batch (the rows
  to write back, so that a scatter never sees a repeated index)."""
  indices = tf.convert_to_tensor(indices)
  pos = tf.range(tf.shape(indices)[0])
  later = tf.logical_and(tf.equal(indices[:, None], indices[None, :]),
                         pos[None, :] > pos[:, None])
  return tf.logical_not(tf.reduce_any(later, axis=1))


def bootstrap_mix(current, previous, u):
  """p_b = u p_a + (1 - u) p_prev (eq. 13); u ramps from 0 to 1 over the run."""
  return u * current + (1.0 - u) * previous


def bootstrap_reference(aggregate, crops=1, crop_sum=True):
  """What the bootstrap mixes in from earlier runs: their aggregate (rows sum to 1)
  times the number of evaluation crops when `crop_sum`, as the implementation,
  which saves the 10-crop softmax sum (rows sum to 10) and mixes that."""
  return np.asarray(aggregate, np.float32) * np.float32(crops if crop_sum else 1)


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
