"""The BIWAA model: inference path in call(), one BIWAA step in train_step()."""

import dataclasses

import keras
import tensorflow as tf

from biwaa_tf import config as options
from biwaa_tf.model import aggregation, layers, loss_scale, losses, schedules
from biwaa_tf.model.grl import gradient_reversal


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
  heads: str = _option("heads")     # biwaa: the authors' heads; tllib: tllib's (see _heads)
  loss_scaling: bool = False        # float16: dynamic loss scale (model/loss_scale.py)
  loss_scale_growth_steps: int = loss_scale.GROWTH_STEPS


def _is_paired(spec):
  """Whether a dataset's element_spec is fit_dataset's ((x_s, y_s), (x_t, idx_t, y_t))."""
  return (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], tuple)
          and len(spec[0]) == 2 and isinstance(spec[1], tuple) and len(spec[1]) == 3)


def _traced_once_per_model(function):
  """`function` (a tf.function) without TensorFlow's "excessive retracing" warning.

  Each model traces its step function once, by design: a training builds a model per
  run, and a notebook calls adapt() again and again. TensorFlow counts the traces by
  the Python code across every model of the process and warns after five (a notebook's
  sixth adapt(), a 10-run training). It marks the functions it restores from a
  SavedModel the same way (saved_model/function_deserialization.py)."""
  function._omit_frequent_tracing_warning = True
  return function


def _split_positions(data):
  """(batch, positions) of a training element; positions None when it has none."""
  if len(data) == 2 and not isinstance(data[1], (tuple, list)):
    return data[0], data[1]
  return data, None


def _xavier_dense(units, name, activation=None):
  return keras.layers.Dense(units, activation=activation, name=name,
                            kernel_initializer="glorot_normal", bias_initializer="zeros")


class Discriminator(keras.layers.Layer):
  """G_d: 256 -> 1024 -> 1024 -> 1 logit, ReLU and dropout 0.5 between (the authors');
  `batch_norm`: Linear-BN-ReLU twice, no dropout, PyTorch's initialisation (tllib's
  DomainDiscriminator, one joint pass over [source; target]).

  Dropout is stateless: the masks are drawn for the whole global batch from
  (seed, training step) and each replica takes its rows (`rows`), so that a
  resumed training, and N replicas, draw the masks one device would.
  """

  def __init__(self, seed=0, rate=0.5, batch_norm=False, in_dim=256, **kwargs):
    super().__init__(**kwargs)
    self.seed = int(seed or 0)
    self.rate = 0.0 if batch_norm else rate
    if batch_norm:
      self.hidden = [keras.Sequential([layers.torch_dense(1024, fan_in, name=f"d{j + 1}"),
                                       _batch_norm(f"d{j + 1}_bn"), keras.layers.ReLU()],
                                      name=f"block{j + 1}")
                     for j, fan_in in enumerate((in_dim, 1024))]
      self.out = layers.torch_dense(1, 1024, name="d_out")
    else:
      self.hidden = [_xavier_dense(1024, "d1", "relu"), _xavier_dense(1024, "d2", "relu")]
      self.out = _xavier_dense(1, "d_out")

  def call(self, x, step=None, rows=None, global_rows=None, training=False):
    h = x
    for j, layer in enumerate(self.hidden):
      h = layer(h, training=training)
      if training and self.rate > 0:
        key = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64) * 2 + j])
        h = layers.dropout_rows(h, key, [global_rows, tf.shape(h)[1]], rows, self.rate)
    return self.out(h)


def _batch_norm(name):
  """PyTorch's BatchNorm1d defaults (momentum 0.1 of the new value, eps 1e-5)."""
  return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def _heads(c, seed):
  """bottleneck, classifier G_c and discriminator G_d.

  biwaa (the authors'): Linear bottleneck and classifier with Xavier-normal weights, the
  discriminator with dropout. tllib (its DANN/CDAN digits and Office scripts): bottleneck
  Linear + BatchNorm + ReLU, Linear classifier, discriminator Linear-BN-ReLU x 2, all with
  PyTorch's default initialisation. The classifier stays float32 under mixed precision:
  the logits, the losses and the backprop-induced weights are computed in float32.
  """
  if c.heads == "tllib":
    # Built in the order tllib builds them; the bottleneck's input width is set on build.
    bottleneck = _TllibBottleneck(c.bottleneck_dim, name="bottleneck")
    classifier = layers.torch_dense(c.num_classes, c.bottleneck_dim, name="classifier",
                                    dtype="float32")
    return bottleneck, classifier, Discriminator(seed, batch_norm=True, in_dim=c.bottleneck_dim,
                                                 name="discriminator")
  # (Keras draws each initializer's seed at construction: this order fixes the weights.)
  bottleneck = _xavier_dense(c.bottleneck_dim, "bottleneck")
  classifier = keras.layers.Dense(
      c.num_classes, name="classifier", kernel_initializer="glorot_normal",
      bias_initializer="zeros", dtype="float32")
  return bottleneck, classifier, Discriminator(seed, name="discriminator")


class _TllibBottleneck(keras.layers.Layer):
  """Linear(backbone features, D) + BatchNorm1d + ReLU; PyTorch's initialisation (its
  fan-in known once the backbone's width is)."""

  def __init__(self, units, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.bn = _batch_norm("bn")

  def build(self, input_shape):
    self.dense = layers.torch_dense(self.units, int(input_shape[-1]), name="dense")
    self.dense.build(input_shape)
    self.bn.build((*input_shape[:-1], self.units))

  def call(self, x, training=False):
    return tf.nn.relu(self.bn(self.dense(x), training=training))


@keras.saving.register_keras_serializable(package="biwaa_tf")
class BIWAAModel(keras.Model):
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
  """

  def __init__(self, backbone, config, backbone_optimizer=None, head_optimizer=None,
               seed=None, **kwargs):
    super().__init__(**kwargs)
    self.config = c = config
    self.backbone = backbone
    self.dropout_seed = int(seed or 0)
    self.bottleneck, self.classifier, self.discriminator = _heads(c, seed)
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

  def build_all(self, image_size):
    """Creates every variable (the discriminator's and the optimizers' too)."""
    x = tf.zeros([2, image_size, image_size, 3])
    f = self.features(x)
    self.classifier(f)
    self.discriminator(f)
    for opt, variables in self._optimizer_groups():
      if opt is not None:  # (compile() sets them later)
        opt.build(variables)
    self.image_size = image_size
    self.built = True
    self(x)  # Keras' first call: records the input signature (export(), save())

  def build(self, input_shape):
    self.build_all(int(input_shape[1]))

  # ----- saving: model.save("m.keras") / keras.models.load_model, and export() -----
  def get_config(self):
    """Everything to rebuild this model: the backbone (a Keras model), the method's
    configuration, the dropout seed, the two optimizers and the image size."""
    optimizers = {name: keras.optimizers.serialize(opt) if opt is not None else None
                  for name, opt in (("backbone_optimizer", self.backbone_optimizer),
                                    ("head_optimizer", self.head_optimizer))}
    return {"backbone": keras.saving.serialize_keras_object(self.backbone),
            "config": dataclasses.asdict(self.config), "seed": self.dropout_seed,
            "image_size": getattr(self, "image_size", None), "name": self.name, **optimizers}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    image_size = config.pop("image_size", None)
    optimizers = {name: config.pop(name, None) for name in ("backbone_optimizer",
                                                             "head_optimizer")}
    optimizers = {k: v and keras.optimizers.deserialize(v) for k, v in optimizers.items()}
    model = cls(keras.saving.deserialize_keras_object(config.pop("backbone")),
                MethodConfig(**config.pop("config")), seed=config.pop("seed"), **optimizers,
                **config)
    if image_size:  # variables exist before Keras loads the saved weights into them
      model.build_all(image_size)
    return model

  def export(self, filepath, format="tf_saved_model", **kwargs):
    """Keras' export() of the inference path (images -> logits), with the input
    signature of this model's images (a batch of S x S x 3 float32, preprocessed).
    For raw images with the preprocessing inside, see biwaa_tf.export."""
    if "input_signature" not in kwargs and getattr(self, "image_size", None):
      kwargs["input_signature"] = [tf.TensorSpec([None, self.image_size, self.image_size, 3],
                                                 tf.float32, name="images")]
    return super().export(filepath, format=format, **kwargs)

  # ----- the Keras way: compile, fit, evaluate, predict -----
  def compile(self, backbone_optimizer=None, head_optimizer=None, *, lr=1e-3,
              head_lr_multiplier=10.0, momentum=0.9, **kwargs):
    """Sets the two optimizers (default: the paper's SGD/Nesterov with the inv schedule,
    `lr` on the backbone, `lr x head_lr_multiplier` on the new layers) and Keras'
    options (`steps_per_execution`, `jit_compile`, `run_eagerly`, ...).

    `optimizer=` (Keras' single optimizer, an instance or a name) gives the backbone that
    optimizer and the new layers a copy of it (same settings, its own state).

    No loss or metrics: the step computes the method's losses (train_step) and
    evaluate() reports the classification loss and accuracy."""
    optimizer = kwargs.pop("optimizer", None)
    if optimizer is not None:  # Keras' one optimizer: a copy of it for each group
      if backbone_optimizer is not None or head_optimizer is not None:
        raise ValueError("compile(): give optimizer= or backbone_optimizer= and "
                         "head_optimizer=, not both")
      optimizer = keras.optimizers.get(optimizer)
      backbone_optimizer = optimizer
      head_optimizer = optimizer.__class__.from_config(optimizer.get_config())
    if backbone_optimizer is None or head_optimizer is None:
      backbone_optimizer, head_optimizer = schedules.paper_optimizers(
          lr, head_lr_multiplier, momentum)
    self.backbone_optimizer, self.head_optimizer = backbone_optimizer, head_optimizer
    super().compile(optimizer=head_optimizer, **kwargs)
    if self.classifier.built:  # after build_all(): the optimizers' slots now
      for opt, variables in self._optimizer_groups():
        opt.build(variables)

  def get_compile_config(self):
    """Keras' options of compile(); the optimizers travel in get_config()."""
    if not self.compiled:
      return None
    return {"steps_per_execution": self.steps_per_execution,
            "jit_compile": bool(self.jit_compile)}

  def compile_from_config(self, config):
    """load_model(): compile again with the restored optimizers."""
    self.compile(self.backbone_optimizer, self.head_optimizer, **config)

  def fit(self, x=None, *args, shuffle=False, **kwargs):
    """Keras' fit(); the paired dataset (pipeline.fit_dataset) is infinite and already
    shuffled: give `steps_per_epoch`. Batch logs are the step's values (loss, loss_cls,
    loss_adv, ..., lr); an epoch's logs are each value's mean over the epoch's steps.

    The training runs (command line, adapt()) call it too, with batches that carry
    their input stream positions (see train_step) and, under several replicas, a
    distributed dataset (train.distribute.distribute_batches)."""
    spec = getattr(x, "element_spec", None)
    if args or "y" in kwargs or spec is None or not (
        _is_paired(spec) or (isinstance(spec, tuple) and len(spec) == 2
                             and _is_paired(spec[0]))):
      raise ValueError(
          "BIWAAModel.fit() takes the paired dataset of biwaa_tf.fit_dataset(source, "
          "target, options, batch_size): ((source images, labels), (target images, "
          "indices, labels)) batches; for arrays use biwaa_tf.from_arrays for each domain, "
          "or biwaa_tf.adapt()")
    return super().fit(x, shuffle=shuffle, **kwargs)

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    # Keras builds a model under a strategy from a batch of a first iterator of the
    # data; a tf.data shuffle reshuffles for each new iterator, so the training's own
    # iterator would not start where one device's does. build_all() made every
    # variable already: nothing is drawn.
    if not self.built:
      super()._maybe_symbolic_build(iterator, data_batch)

  def make_train_function(self, force=False):
    """fit()'s step function: `steps_per_execution` train steps on each replica, their
    last logs averaged over the replicas; in Python it also sums each step's logs for
    the epoch's means. jit_compile compiles train_step itself (within each replica)."""
    if self.train_function is not None and not force:
      return self.train_function
    strategy = self.distribute_strategy
    step = self.train_step
    if self.jit_compile and not self.run_eagerly:
      step = _traced_once_per_model(tf.function(step, jit_compile=True))

    def placed_step(data):  # each replica's rows on its device (collectives need it)
      return step(tf.nest.map_structure(tf.identity, data))

    def steps(iterator):
      for _ in range(self.steps_per_execution):
        logs = strategy.run(placed_step, args=(next(iterator),))
      return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
              for k, v in logs.items()}
    if not self.run_eagerly:
      steps = _traced_once_per_model(tf.function(steps))

    def train_function(iterator):
      logs = {k: float(v) for k, v in steps(iterator).items()}
      for k, v in logs.items():
        self._epoch_sums[k] = self._epoch_sums.get(k, 0.0) + v
      self._epoch_steps += 1
      return logs
    self.train_function = train_function
    return train_function

  def reset_metrics(self):
    super().reset_metrics()
    self._epoch_sums, self._epoch_steps = {}, 0

  def get_metrics_result(self):
    """In fit(): the epoch's mean of each step log (Keras makes them the epoch's logs)."""
    if self._epoch_steps:
      return {k: v / self._epoch_steps for k, v in self._epoch_sums.items()}
    return super().get_metrics_result()

  def test_step(self, data):
    """evaluate() on (images, labels) batches: mean cross-entropy and accuracy."""
    x, y = data[0], data[1]
    logits = self(x, training=False)
    self.eval_loss.update_state(losses.cross_entropy(logits, y))
    self.eval_accuracy.update_state(y, logits)
    return {"loss": self.eval_loss.result(), "accuracy": self.eval_accuracy.result()}

  def predict_step(self, data):
    """predict(): class probabilities (softmax of call()'s logits)."""
    x = data[0] if isinstance(data, (tuple, list)) else data
    return tf.nn.softmax(self(x, training=False))

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
    local, global_b = _domain_rows(b)

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
    f = features(tf.concat([x_s, x_t], 0), *_global_rows(b), 0)
    logits = self.classifier(f, training=True)
    return f[:b], logits[:b], f[b:], logits[b:]

  def target_pseudo_labels(self, idx_t, logits_t, step):
    """y~_t: softmax, within-run aggregate (table update), bootstrap, argmax."""
    c = self.config
    p = tf.stop_gradient(tf.nn.softmax(logits_t))
    if c.within_run_aggregation:
      # Over the global batch in its order (a sample may occur twice), then this
      # replica's rows; each index's last occurrence is written back.
      all_idx, all_p = _gather_global(idx_t, p)
      agg = aggregation.within_run_update(self.agg_table, self.agg_seen, all_idx, all_p,
                                          c.within_run_momentum)
      p = _local_rows(agg, tf.shape(idx_t)[0])
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
    f_s, y_s, f_t, y_t = _gather_global(tf.cast(f_s, tf.float32), y_s,
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
    rows, global_rows = _global_rows(tf.shape(f_s)[0])
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

  # ----- optimisation -----
  def _optimizer_groups(self):
    head = (self.bottleneck.trainable_variables + self.classifier.trainable_variables
            + self.discriminator.trainable_variables)
    return ((self.backbone_optimizer, self.backbone.trainable_variables),
            (self.head_optimizer, head))

  def apply_losses(self, tape, total):
    """SGD step per layer group (10x lr on new layers), coupled weight decay.

    Replicas: every loss is a mean over the replica's share of the global batch
    (or, for the centroid loss, the same global value on every replica), and the
    Keras optimizers sum gradients over replicas: so the gradients, and the
    decay term, are divided by the number of replicas here, once.
    float16: the loss is scaled before the backward pass and the gradients
    unscaled after it; a step with a non-finite gradient on any replica is
    skipped by both optimizers (see model/loss_scale.py).
    """
    ctx = tf.distribute.get_replica_context()
    variables = [v for _, vs in self._optimizer_groups() for v in vs]
    # float16: d(S * total)/dv, the scale S entering as the loss's upstream gradient.
    scale = tf.identity(self.loss_scale) if self.config.loss_scaling else None
    grads = tape.gradient(total, variables, output_gradients=scale)
    divisor = ctx.num_replicas_in_sync if scale is None else scale * ctx.num_replicas_in_sync
    grads = [g if g is None else g / divisor for g in grads]
    if scale is None:
      return self._apply_groups(grads)
    bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                         1.0 - tf.cast(loss_scale.all_finite(grads), tf.float32))
    # Like Keras' LossScaleOptimizer: a merge_call where the strategy needs one
    # (a cond whose branch steps the optimizers must then run cross-replica).
    tf.__internal__.distribute.interim.maybe_merge_call(
        self._apply_if_finite, tf.distribute.get_strategy(), grads, tf.equal(bad, 0.0))

  def _apply_if_finite(self, strategy, grads, finite):
    """Both optimizers step only if every replica's gradients are finite; the scale follows."""
    if tf.distribute.in_cross_replica_context():
      finite = strategy.experimental_local_results(finite)[0]
      step = lambda: strategy.extended.call_for_each_replica(  # noqa: E731
          self._apply_groups, args=(grads,))
    else:  # replica context: `finite` is the same on every replica (all-reduced)
      step = lambda: self._apply_groups(grads)  # noqa: E731

    def apply():
      step()
      return tf.constant(True)

    tf.cond(finite, apply, lambda: tf.constant(False))
    new_scale, new_good = loss_scale.next_loss_scale(
        self.loss_scale, self.good_steps, finite, self.config.loss_scale_growth_steps)
    self.loss_scale.assign(new_scale)
    self.good_steps.assign(new_good)

  def _apply_groups(self, grads):
    """Applies per-replica gradients (already divided by the replicas) per group."""
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    decay = self.config.weight_decay / replicas
    start = 0
    for opt, variables in self._optimizer_groups():
      g = grads[start:start + len(variables)]
      start += len(variables)
      opt.apply_gradients([(gi + decay * v, v) for gi, v in zip(g, variables)
                           if gi is not None])


def _current_lr(optimizer):
  """The optimizer's learning rate for this step (its schedule at its iteration count)."""
  return tf.cast(optimizer.learning_rate, tf.float32)


def _gather_global(*tensors):
  """All replicas' rows, in replica order (identity on one device; differentiable)."""
  ctx = tf.distribute.get_replica_context()
  if ctx.num_replicas_in_sync == 1:
    return tensors
  return tuple(ctx.all_gather(t, axis=0) for t in tensors)


def _local_rows(t, b):
  """This replica's b rows of a tensor gathered by `_gather_global`."""
  ctx = tf.distribute.get_replica_context()
  if ctx.num_replicas_in_sync == 1:
    return t
  first = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * b
  return t[first:first + b]


def _domain_rows(b):
  """Rows of this replica's b rows of one domain in that domain's global batch."""
  ctx = tf.distribute.get_replica_context()
  r = ctx.num_replicas_in_sync
  first = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * b
  return tf.range(b) + first, b * r


def _global_rows(b):
  """Rows of this replica's [source; target] batch in the global [source; target] batch."""
  local, global_b = _domain_rows(b)
  return tf.concat([local, local + global_b], 0), 2 * global_b
