"""The method's formulas as small pure TensorFlow functions.

Notation: B samples, D feature dimensions (256, the bottleneck), K classes.
Each function's docstring gives the formula; tests compare each with an
independent NumPy computation.
"""

import tensorflow as tf


def cross_entropy(logits, labels):
  """Batch-mean softmax cross entropy: mean_i -log softmax(logits_i)[y_i]."""
  return tf.reduce_mean(
      tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def feature_weights(features, labels, classifier, factor, offset=0.0):
  """Backprop-induced weights w = offset + factor * g / ||g||_2, g = dCE(G_c(f), y)/df.

  offset 0 is the paper's weighting. With offset a > 0 the discriminator's input
  f * w = a f + f * (factor g / ||g||) also carries the unweighted features.

  The gradient is taken through the classifier head only: it equals the
  gradient the authors obtain with full backward passes through the backbone
  (the backbone is upstream of f). CE is the batch mean, as in the reference.
  Returned as a constant (no gradient flows through the weights).
  """
  f = tf.stop_gradient(features)
  with tf.GradientTape() as tape:
    tape.watch(f)
    loss = cross_entropy(classifier(f, training=True), labels)
  grad = tape.gradient(loss, f)
  return tf.stop_gradient(offset + factor * tf.math.l2_normalize(grad, axis=1, epsilon=1e-24))


def domain_adversarial_loss(domain_logits, domain_labels):
  """L_d = mean BCE(sigmoid(logit), d) over source (d=1) and target (d=0) samples."""
  return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
      labels=tf.cast(domain_labels, domain_logits.dtype), logits=domain_logits))


def update_centroids(centroids, features, labels, num_classes, decay=0.7):
  """Moving centroids: C_k <- decay C_k + (1 - decay) mean{f_i : y_i = k}.

  Classes absent from the batch keep their old centroid. The gradient flows
  through the batch means (the old memory is a constant).
  """
  onehot = tf.one_hot(labels, num_classes, dtype=features.dtype)  # B x K
  counts = tf.reduce_sum(onehot, axis=0)  # K
  sums = tf.matmul(onehot, features, transpose_a=True)  # K x D
  means = sums / tf.maximum(counts, 1.0)[:, None]
  old = tf.stop_gradient(centroids)
  present = (counts > 0)[:, None]
  return tf.where(present, decay * old + (1.0 - decay) * means, old)


def _mean_off_diagonal_cosine(a, b):
  """sum_{k != j} cos(a_k, b_j) / (K - 1)^2."""
  k = tf.cast(tf.shape(a)[0], a.dtype)
  cos = tf.matmul(tf.math.l2_normalize(a, axis=1, epsilon=1e-24),
                  tf.math.l2_normalize(b, axis=1, epsilon=1e-24), transpose_b=True)
  off = tf.reduce_sum(cos) - tf.linalg.trace(cos)
  return off / tf.square(k - 1.0)


def centroid_loss_terms(source_centroids, target_centroids):
  """The moving-semantic loss parts of eq. 10, as the implementation weighs them.

  intra = (1/K) sum_k ||C_s,k - C_t,k||^2
  st    = sum_{k != j} cos(C_s,k, C_t,j) / (K-1)^2   (tt, ss likewise)
  Returns a dict with keys intra, st, tt, ss.
  """
  k = tf.cast(tf.shape(source_centroids)[0], source_centroids.dtype)
  intra = tf.reduce_sum(tf.square(source_centroids - target_centroids)) / k
  return dict(
      intra=intra,
      st=_mean_off_diagonal_cosine(source_centroids, target_centroids),
      tt=_mean_off_diagonal_cosine(target_centroids, target_centroids),
      ss=_mean_off_diagonal_cosine(source_centroids, source_centroids))


def combine_centroid_loss(terms, coeff, paper_form=False):
  """Implementation: coeff (intra + st + tt) + ss; paper (eq. 10): coeff * all four."""
  ramped = terms["intra"] + terms["st"] + terms["tt"]
  if paper_form:
    return coeff * (ramped + terms["ss"])
  return coeff * ramped + terms["ss"]
