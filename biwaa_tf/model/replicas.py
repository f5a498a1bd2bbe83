"""A replica's rows in the global batch: what the step needs to compute, on N replicas,
what one device computes (the centroids and pseudo-labels from all rows, dropout masks
drawn for the global batch). Identity on one device."""

import tensorflow as tf


def gather_global(*tensors):
  """All replicas' rows, in replica order (identity on one device; differentiable)."""
  ctx = tf.distribute.get_replica_context()
  if ctx.num_replicas_in_sync == 1:
    return tensors
  return tuple(ctx.all_gather(t, axis=0) for t in tensors)


def local_rows(t, b):
  """This replica's b rows of a tensor gathered by `gather_global`."""
  ctx = tf.distribute.get_replica_context()
  if ctx.num_replicas_in_sync == 1:
    return t
  first = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * b
  return t[first:first + b]


def domain_rows(b):
  """Rows of this replica's b rows of one domain in that domain's global batch."""
  ctx = tf.distribute.get_replica_context()
  r = ctx.num_replicas_in_sync
  first = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * b
  return tf.range(b) + first, b * r


def global_rows(b):
  """Rows of this replica's [source; target] batch in the global [source; target] batch."""
  local, global_b = domain_rows(b)
  return tf.concat([local, local + global_b], 0), 2 * global_b
