"""The Keras plumbing of BIWAAModel, apart from the algorithm (model/biwaa.py).

Two optimizers (backbone, new layers) behind Keras' compile(); fit() over the paired
dataset with epoch logs that are the means of the steps'; replicas and float16 loss
scaling in the optimizer step; saving (get_config / from_config, .keras, export). The
private Keras and TensorFlow hooks it needs are in model/keras_hooks.py.
"""

import dataclasses

import keras
import tensorflow as tf

from biwaa_tf.model import keras_hooks, loss_scale, losses, schedules


def _is_paired(spec):
  """Whether a dataset's element_spec is fit_dataset's ((x_s, y_s), (x_t, idx_t, y_t))."""
  return (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], tuple)
          and len(spec[0]) == 2 and isinstance(spec[1], tuple) and len(spec[1]) == 3)


class KerasTraining(keras.Model):
  """What BIWAAModel needs from Keras, and gives it: the model (a subclass) defines
  `config_class`, the layers (backbone, bottleneck, classifier, discriminator), the
  state and train_step; this class the rest of the Keras protocol."""

  config_class = None  # the subclass's method configuration (get_config / from_config)

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
                cls.config_class(**config.pop("config")), seed=config.pop("seed"), **optimizers,
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
      step = keras_hooks.traced_once_per_model(tf.function(step, jit_compile=True))

    def placed_step(data):  # each replica's rows on its device (collectives need it)
      return step(tf.nest.map_structure(tf.identity, data))

    def steps(iterator):
      for _ in range(self.steps_per_execution):
        logs = strategy.run(placed_step, args=(next(iterator),))
      return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
              for k, v in logs.items()}
    if not self.run_eagerly:
      steps = keras_hooks.traced_once_per_model(tf.function(steps))

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
    keras_hooks.merge_call(self._apply_if_finite, tf.distribute.get_strategy(), grads,
                           tf.equal(bad, 0.0))

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
