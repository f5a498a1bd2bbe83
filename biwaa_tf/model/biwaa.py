"""The BIWAA model: inference path in call(), one BIWAA step in train_step()."""

import dataclasses

import keras
import tensorflow as tf

from biwaa_tf import config as options
from biwaa_tf.model import aggregation, heads, layers, loss_scale, losses, replicas, schedules
from biwaa_tf.model.grl import gradient_reversal
from biwaa_tf.model.keras_training import KerasTraining


def _option(name):
  """The default of training option `name` (config.py defines each option once)."""
  return dataclasses.field(default=options.default(name))


@dataclasses.dataclass(frozen=True)
class MethodConfig:
  """What the step computes: the options marked model=True in config.TrainConfig (same
  names, same defaults) and four read off others (config.model_options)."""
  num_classes: int
  num_target: int
  adversarial: bool = True          # DANN branch (off for source_only)
  feature_weighting: bool = True    # backprop-induced weighting of f
  ms_loss: bool = True              # moving-semantic (centroid) loss
  weighting_factor: float = _option("weighting_factor")  # lambda
  weighting_offset: float = _option("weighting_offset")  # a: the discriminator sees f * (a + w)
  paper_loss: bool = False          # eq. form: sigma(i) on L_d and on all of L_MS
  grl_ramp_steps: float = _option("grl_ramp_steps")
  per_domain_batch_norm: bool = True  # two forward passes (False: one joint pass)
  centroid_decay: float = _option("centroid_decay")
  ms_warmup_steps: int = _option("ms_warmup_steps")  # centroid loss off before this step
  within_run_aggregation: bool = _option("within_run_aggregation")
  within_run_momentum: float = _option("within_run_momentum")
  bootstrap_steps: int = _option("bootstrap_steps")
  weight_decay: float = _option("weight_decay")  # coupled L2 (added to the gradient)
  bottleneck_dim: int = _option("bottleneck_dim")
  heads: str = _option("heads")     # biwaa: the authors' heads; tllib: tllib's (model/heads.py)
  loss_scaling: bool = False        # float16: dynamic loss scale (model/loss_scale.py)
  loss_scale_growth_steps: int = loss_scale.GROWTH_STEPS


def _split_positions(data):
  """(batch, positions) of a training element; positions None when it has none."""
  if len(data) == 2 and not isinstance(data[1], (tuple, list)):
    return data[0], data[1]
  return data, None


@keras.saving.register_keras_serializable(package="biwaa_tf")
class BIWAAModel(KerasTraining):
  """G_c(bottleneck(G_f(x))) with the adversarial branch used only in training.

  State kept across steps (non-trainable variables, checkpointed):
    step                         the global step i of the run
    source/target_centroids      the moving centroid memories C_s, C_t (K x D)
    agg_table, agg_seen          within-run aggregated target probabilities
    prev_aggregate, has_prev     the across-run aggregate from earlier runs
    target_labels                true target labels (-1 unknown): diagnostics only
    input_position               each domain's input stream position of the last batch
                                 trained on (-1: none), when the batches carry it
    loss_scale, good_steps       the dynamic loss scale (float16 only)

  The Keras protocol (compile, fit, evaluate, predict, saving, the optimizer step) is
  KerasTraining's (model/keras_training.py); this class is the algorithm.
  """

  config_class = MethodConfig

  def __init__(self, backbone, config, backbone_optimizer=None, head_optimizer=None,
               seed=None, **kwargs):
    super().__init__(**kwargs)
    self.config = c = config
    self.backbone = backbone
    self.dropout_seed = int(seed or 0)
    self.bottleneck, self.classifier, self.discriminator = heads.build_heads(c, seed)
    self.backbone_optimizer = backbone_optimizer
    self.head_optimizer = head_optimizer
    self.optimizer = head_optimizer  # what Keras' callbacks read (compile() sets it too)
    k, d, n = c.num_classes, c.bottleneck_dim, max(c.num_target, 1)
    # State: Keras weights (saved by save_weights, ModelCheckpoint, BackupAndRestore
    # and tf.train.Checkpoint alike). Every replica computes the same new value
    # (from all replicas' samples): the first replica's is kept.
    def state(name, shape, dtype="float32", value=0):
      return self.add_weight(shape=shape, dtype=dtype, name=name, trainable=False,
                             initializer=keras.initializers.Constant(value),
                             aggregation="only_first_replica")
    self.step = state("step", (), "int64")
    self.source_centroids = state("source_centroids", (k, d))
    self.target_centroids = state("target_centroids", (k, d))
    self.agg_table = state("agg_table", (n, k))
    self.agg_seen = state("agg_seen", (n,), "bool", False)
    self.prev_aggregate = state("prev_aggregate", (n, k))
    self.has_prev = state("has_prev", (), "bool", False)
    self.target_labels = state("target_labels", (n,), "int64", -1)
    self.input_position = state("input_position", (2,), "int64", -1)
    self._epoch_sums, self._epoch_steps = {}, 0  # fit(): the epoch's logs are means
    if c.loss_scaling:
      self.loss_scale = state("loss_scale", (), "float32", loss_scale.INITIAL_SCALE)
      self.good_steps = state("good_steps", (), "int64")
    # evaluate(): averaged over the batches (Keras resets them per evaluate call).
    self.eval_loss = keras.metrics.Mean(name="loss")
    self.eval_accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

  # ----- inference -----
  def features(self, x, training=False):
    return self.bottleneck(self.backbone(x, training=training), training=training)

  def call(self, x, training=False):
    """Images -> class logits (the inference path; no discriminator)."""
    return self.classifier(self.features(x, training=training), training=training)

  # ----- training -----
  def train_step(self, data):
    """One BIWAA step (Algorithm 1, lines 6-27). `data`: ((x_s, y_s), (x_t, idx_t,
    y_t)), or that and the batch's input stream positions (recorded for resuming)."""
    data, positions = _split_positions(data)
    (x_s, y_s), (x_t, idx_t, y_t_true) = data
    c = self.config
    # The step counter is read once, before any replica synchronises (see below).
    step = tf.identity(self.step)
    coeff = schedules.grl_coefficient(step, c.grl_ramp_steps)
    reversal = schedules.reversal_coefficient(step, c.grl_ramp_steps)  # coeff(i + 1)
    lr = _current_lr(self.backbone_optimizer)  # the backbone's; new layers x10
    with tf.GradientTape() as tape:
      f_s, logits_s, f_t, logits_t = self.forward(x_s, x_t, step)       # line 8
      loss_cls = losses.cross_entropy(logits_s, y_s)                      # line 18
      total, logs = loss_cls, {"loss_cls": loss_cls}
      if c.adversarial:
        y_t = self.target_pseudo_labels(idx_t, logits_t, step)            # lines 9-12
        if c.ms_loss:                                                     # lines 13-16
          loss_ms, terms, centroids = self.semantic_loss(f_s, y_s, f_t, y_t, coeff, step)
          total += loss_ms
          logs.update(loss_ms=loss_ms, **{f"ms_{k}": v for k, v in terms.items()})
        loss_adv, disc_acc = self.adversarial_loss(f_s, y_s, f_t, y_t, reversal, coeff,
                                                   step)                  # lines 17-24
        total += loss_adv
        logs.update(loss_adv=loss_adv, disc_acc=disc_acc,
                    pseudo_acc=self.pseudo_label_accuracy(y_t, y_t_true))
    self.apply_losses(tape, total)                                        # line 27
    # The state is written only after every replica has read it (total depends
    # on each read; merge_call joins all replicas' control dependencies).
    with tf.control_dependencies([total]):
      if c.adversarial and c.ms_loss:
        self.source_centroids.assign(centroids[0])
        self.target_centroids.assign(centroids[1])
      self.step.assign_add(1)
      if positions is not None:
        self.input_position.assign(positions)
    logs.update(loss=total, grl_coeff=reversal, lr=lr)
    if c.loss_scaling:
      logs["loss_scale"] = tf.identity(self.loss_scale)
    return logs

  def forward(self, x_s, x_t, step=0):
    """Source and target through G_f and the bottleneck, then G_c.

    Per-domain batch norm (the implementation): two passes, so every BN layer
    normalises each domain by its own batch statistics and updates its running
    statistics twice, source then target. Joint: one pass over [source; target].
    A backbone's StatelessDropout layers draw the masks of (seed, step, pass) for the
    global batch, one device's, and keep this replica's rows.
    """
    b = tf.shape(x_s)[0]
    local, global_b = replicas.domain_rows(b)

    def features(x, rows, global_rows, pass_id):
      with layers.masks(self.dropout_seed, step, rows, global_rows, pass_id):
        return self.features(x, training=True)

    if not self.config.adversarial:
      f_s = features(x_s, local, global_b, 0)
      return f_s, self.classifier(f_s, training=True), None, None
    if self.config.per_domain_batch_norm:
      f_s = features(x_s, local, global_b, 0)
      f_t = features(x_t, local, global_b, 1)
      return (f_s, self.classifier(f_s, training=True),
              f_t, self.classifier(f_t, training=True))
    f = features(tf.concat([x_s, x_t], 0), *replicas.global_rows(b), 0)
    logits = self.classifier(f, training=True)
    return f[:b], logits[:b], f[b:], logits[b:]

  def target_pseudo_labels(self, idx_t, logits_t, step):
    """y~_t: softmax, within-run aggregate (table update), bootstrap, argmax."""
    c = self.config
    p = tf.stop_gradient(tf.nn.softmax(logits_t))
    if c.within_run_aggregation:
      # Over the global batch in its order (a sample may occur twice), then this
      # replica's rows; each index's last occurrence is written back.
      all_idx, all_p = replicas.gather_global(idx_t, p)
      agg = aggregation.within_run_update(self.agg_table, self.agg_seen, all_idx, all_p,
                                          c.within_run_momentum)
      p = replicas.local_rows(agg, tf.shape(idx_t)[0])
      last = aggregation.last_occurrences(all_idx)
      rows = tf.boolean_mask(all_idx, last)[:, None]
      with tf.control_dependencies([agg]):  # after every replica's read (see train_step)
        self.agg_table.assign(
            tf.tensor_scatter_nd_update(self.agg_table, rows, tf.boolean_mask(agg, last)))
        self.agg_seen.assign(tf.tensor_scatter_nd_update(
            self.agg_seen, rows, tf.ones_like(rows[:, 0], tf.bool)))
    if c.bootstrap_steps > 0:
      u = schedules.bootstrap_weight(step, c.bootstrap_steps)
      u = tf.where(self.has_prev, u, 1.0)
      p = aggregation.bootstrap_mix(p, tf.gather(self.prev_aggregate, idx_t), u)
    return tf.argmax(p, axis=1, output_type=tf.int64)

  def semantic_loss(self, f_s, y_s, f_t, y_t, coeff, step):
    """Moving-centroid loss on the unweighted features; also the new memories.

    Before step ``ms_warmup_steps`` of a run the loss is 0 (the memories still move).
    """
    c = self.config
    f_s, y_s, f_t, y_t = replicas.gather_global(tf.cast(f_s, tf.float32), y_s,
                                        tf.cast(f_t, tf.float32), y_t)
    new_s = losses.update_centroids(self.source_centroids, f_s, y_s, c.num_classes,
                                    c.centroid_decay)
    new_t = losses.update_centroids(self.target_centroids, f_t, y_t, c.num_classes,
                                    c.centroid_decay)
    terms = losses.centroid_loss_terms(new_s, new_t)
    loss = losses.combine_centroid_loss(terms, coeff, c.paper_loss)
    if c.ms_warmup_steps > 0:
      loss = schedules.warmup_gate(step, c.ms_warmup_steps) * loss
    return loss, terms, (new_s, new_t)

  def adversarial_loss(self, f_s, y_s, f_t, y_t, reversal, coeff, step):
    """L_d = BCE(G_d(GRL(f * w)), d), w the backprop-induced weights (eq. 6-8).

    Implementation form: the ramp lives in the reversal coefficient `reversal`;
    paper form: reversal 1 and the loss times sigma(i) = `coeff`.
    """
    c = self.config
    f = tf.concat([f_s, f_t], 0)
    if c.feature_weighting:
      # One joint pass: the per-sample L2 normalisation cancels the batch-mean
      # factor, so this equals the two per-domain passes of the reference.
      w = losses.feature_weights(tf.cast(f, tf.float32), tf.concat([y_s, y_t], 0),
                                 self.classifier, c.weighting_factor, c.weighting_offset)
      f = f * tf.cast(w, f.dtype)
    reversal = 1.0 if c.paper_loss else reversal
    rows, global_rows = replicas.global_rows(tf.shape(f_s)[0])
    d_logits = tf.cast(self.discriminator(gradient_reversal(f, reversal), step=step,
                                          rows=rows, global_rows=global_rows,
                                          training=True)[:, 0], tf.float32)
    b = tf.shape(f_s)[0]
    d = tf.concat([tf.ones([b]), tf.zeros([tf.shape(f_t)[0]])], 0)
    loss = losses.domain_adversarial_loss(d_logits, d)
    if c.paper_loss:
      loss = coeff * loss
    acc = tf.reduce_mean(tf.cast(tf.equal(tf.cast(d_logits > 0, tf.float32), d), tf.float32))
    return loss, acc

  def pseudo_label_accuracy(self, y_t, y_true):
    """Agreement of y~_t with the true target labels where known (diagnostic)."""
    known = y_true >= 0
    hits = tf.cast(tf.logical_and(known, tf.equal(y_t, y_true)), tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(hits), tf.reduce_sum(tf.cast(known, tf.float32)))


def _current_lr(optimizer):
  """The optimizer's learning rate for this step (its schedule at its iteration count)."""
  return tf.cast(optimizer.learning_rate, tf.float32)
