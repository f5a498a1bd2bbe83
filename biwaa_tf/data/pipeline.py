"""tf.data pipelines: balanced source, random or balanced target, evaluation.

Every element carries its sample index. Class balancing uses
``Dataset.rejection_resample`` on (index, label) pairs, before any file is
read, so a rejected candidate costs no decoding.
"""

import logging

import numpy as np
import tensorflow as tf

from biwaa_tf.data import preprocess
from biwaa_tf.data.preprocess import ImageOptions  # noqa: F401  (the pipeline's options)

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE


def balanced_target_distribution(labels, num_classes, batch_size=None):
  """Uniform over the classes that occur in `labels` (others dropped).

  With `batch_size`, a class with floor(n_c * K / batch_size) < 1 samples (too few to
  fill its share of a batch) is dropped as well, as the implementation's
  class-balanced loader does for pseudo-labels; if that would drop every class,
  only the empty ones are dropped.
  Returns (target_dist, initial_dist, dropped classes).
  """
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
  present = counts > 0
  if batch_size is not None:
    enough = np.floor(counts * num_classes / batch_size) >= 1
    if enough.any():
      present = enough
  target = present / present.sum()
  initial = counts / counts.sum()
  return target, initial, np.flatnonzero(~present)


def acceptance_probabilities(target, initial):
  """Rejection sampling: a_k = (t_k / p_k) / max_j (t_j / p_j), 0 where p_k = 0.

  Accepting a candidate of class k (drawn with probability p_k) with
  probability a_k yields class frequencies proportional to t_k.
  """
  ratio = np.divide(target, initial, out=np.zeros_like(target, dtype=np.float64),
                    where=initial > 0)
  return ratio / ratio.max()


def index_stream(labels, seed, balance_labels=None, num_classes=None, batch_size=None,
                 class_distribution=None):
  """Infinite shuffled dataset of (index, label); class-balanced if asked.

  `balance_labels` (N ints) are the labels to balance by (true labels for the
  source, pseudo- or oracle labels for the target); None loads uniformly. With
  `batch_size`, classes too small for their share of a batch are dropped
  (`balanced_target_distribution`). `class_distribution` (K, with balance_labels)
  loads the classes in these proportions instead of uniformly (--prior_matching).

  Balancing is rejection resampling of (index, label) pairs before any file is
  read, as ``Dataset.rejection_resample`` does with a known initial
  distribution, but with a stateless uniform draw per candidate (seeded by its
  position in the stream), so that the iterator can be checkpointed (TF cannot
  serialise rejection_resample's stateful RNG) and a resumed run draws the
  same candidates.
  """
  n = len(labels)
  by = np.asarray(labels if balance_labels is None else balance_labels, np.int64)
  ds = tf.data.Dataset.from_tensor_slices((np.arange(n, dtype=np.int64), by))
  ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
  if balance_labels is None:
    return ds
  target, initial, dropped = balanced_target_distribution(by, num_classes, batch_size)
  if class_distribution is not None:
    target = np.where(initial > 0, np.asarray(class_distribution, np.float64), 0.0)
    target, dropped = target / target.sum(), np.flatnonzero(target <= 0)
  if len(dropped):
    log.warning("class-balanced loading: %d class(es) have %s and are dropped: %s",
                len(dropped), "no sample" if batch_size is None else
                "too few samples for a batch share", dropped.tolist())
  accept = tf.constant(acceptance_probabilities(target, initial), tf.float32)
  base = tf.constant([seed, 1], tf.int64)

  def keep(position, element):
    draw = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(
        base, position))
    return draw < tf.gather(accept, element[1])
  return ds.enumerate().filter(keep).map(lambda position, element: element)


def image_loader(image_list):
  """index -> H x W x 3 uint8: decoded from the file, or a row of an in-memory dataset."""
  if image_list.images is not None:
    images = tf.constant(image_list.images)
    return lambda index: tf.gather(images, index)
  paths = tf.constant(list(image_list.paths))
  return lambda index: preprocess.decode(tf.gather(paths, index))


def train_dataset(image_list, opts, batch_size, seed, balance_labels=None, num_classes=None,
                  drop_small_classes=False, class_distribution=None, start=0):
  """Batches of (images, labels, indices, positions), infinite.

  `positions` number the elements of the (balanced) index stream: augmentation
  is seeded by them (stateless), and a file that cannot be decoded during training
  is skipped, leaving a gap in them by which it is counted (see `skipped_images`).
  `start`: the position to begin at. The stream before it is skipped before any
  file is read, so a resumed run continues with exactly the batches it would have
  trained on (a new dataset's first iterator draws its order from the seed alone).
  """
  read = image_loader(image_list)
  labels = tf.constant(image_list.labels)
  base = tf.constant([seed, 0], tf.int64)

  def load(position, element):
    index = element[0]
    image = read(index)
    view = preprocess.train_view(image, opts,
                                 tf.random.experimental.stateless_fold_in(base, position))
    return view, tf.gather(labels, index), index, position

  ds = index_stream(image_list.labels, seed, balance_labels, num_classes,
                    batch_size if drop_small_classes else None, class_distribution).enumerate()
  if start:
    ds = ds.skip(start)
  ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
  ds = ds.ignore_errors(log_warning=True)
  return ds.batch(batch_size, drop_remainder=True)


def skipped_images(last_positions, steps, batch_size):
  """Images skipped as undecodable: stream positions used minus images consumed.

  `last_positions` is the largest element position of each domain's latest batch.
  """
  return [int(p) + 1 - steps * batch_size for p in last_positions]


def training_pairs(source, target, opts, batch_size, seed, target_balance=None,
                   num_classes=None, balance_source=True, source_distribution=None,
                   start=(0, 0)):
  """Elements (((x_s, y_s), (x_t, index_t, y_t)), last_positions).

  The source is class-balanced by its labels (uniform when not `balance_source`; in
  the proportions `source_distribution` when given), the target by `target_balance`
  (uniform when None; a class predicted for fewer than batch_size / K samples is
  dropped, as in the implementation). y_t is -1 when unknown. `last_positions` (2,)
  is each domain's largest stream position in the batch: one past it is where a
  resumed run starts (`start`, per domain), and it feeds `skipped_images`.
  """
  by_class = balance_source or source_distribution is not None
  src = train_dataset(source, opts, batch_size, seed, source.labels if by_class else None,
                      num_classes, class_distribution=source_distribution, start=start[0])
  tgt = train_dataset(target, opts, batch_size, seed + 1, target_balance, num_classes,
                      drop_small_classes=True, start=start[1])

  def pair(s, t):
    (x_s, y_s, _, p_s), (x_t, y_t, i_t, p_t) = s, t
    return ((x_s, y_s), (x_t, i_t, y_t)), tf.stack([tf.reduce_max(p_s), tf.reduce_max(p_t)])
  ds = tf.data.Dataset.zip(src, tgt).map(pair)
  return ds.prefetch(AUTOTUNE)


def fit_dataset(source, target, opts, batch_size, seed=0, target_balance=None, num_classes=None,
                balance_source=True, source_distribution=None):
  """The paired training batches for BIWAAModel.fit(): ((x_s, y_s), (x_t, index_t, y_t)).

  The same batches the command line trains on (`training_pairs`), without their
  stream positions; infinite: give fit() `steps_per_epoch`.
  """
  num_classes = num_classes or len(source.class_names)  # the source's classes by default
  return training_pairs(source, target, opts, batch_size, seed, target_balance, num_classes,
                        balance_source, source_distribution).map(lambda batch, positions: batch)


def eval_dataset(image_list, opts, batch_size):
  """Finite, in list order: batches of images (B x S x S x 3, or B x 10 x ... )."""
  read = image_loader(image_list)

  def load(index):
    return preprocess.eval_views(read(index), opts)
  ds = tf.data.Dataset.range(image_list.size)
  ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
  return ds.batch(batch_size).prefetch(AUTOTUNE)
