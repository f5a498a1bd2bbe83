"""One training run: build, (resume,) train steps with checkpoints, evaluate, save."""

import contextlib
import logging
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from biwaa_tf import config, errors, io_utils
from biwaa_tf import model_dir_layout as layout
from biwaa_tf.config import run_config
from biwaa_tf.data import pipeline
from biwaa_tf.errors import UserError
from biwaa_tf.model import aggregation, backbones, keras_hooks, schedules
from biwaa_tf.model.biwaa import BIWAAModel, MethodConfig
from biwaa_tf.train import checkpoints, distribute, metrics, progress

log = logging.getLogger(__name__)

CHECKPOINTS_KEPT = 2


class NonFiniteLoss(UserError):
  """Training produced a NaN or infinite loss."""


def image_options(cfg, normalization, ten_crop=False):
  return pipeline.ImageOptions(cfg.resize_size, cfg.image_size, cfg.random_flip,
                               normalization, ten_crop, cfg.resize_method, cfg.train_crop)


def method_config(cfg, domains):
  return MethodConfig(num_classes=domains.num_classes, num_target=domains.target.size,
                      **config.model_options(cfg))


_POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


@contextlib.contextmanager
def _image_size_errors(cfg):
  """Keras' shape checks while building: the network cannot take these images."""
  try:
    yield
  except ValueError as e:
    raise UserError(f"--backbone={cfg.backbone} cannot take {cfg.image_size} x "
                    f"{cfg.image_size} images (--image_size): {errors.reason(e)}") from None


def build_model(cfg, domains, seed):
  keras.mixed_precision.set_global_policy(_POLICIES[cfg.mixed_precision])
  keras.utils.set_random_seed(seed)
  with _image_size_errors(cfg):
    backbone = backbones.build_backbone(cfg.backbone, cfg.image_size, cfg.backbone_weights)
  backbone_opt, head_opt = schedules.paper_optimizers(cfg.lr, cfg.head_lr_multiplier,
                                                     cfg.momentum)
  model = BIWAAModel(backbone, method_config(cfg, domains), backbone_opt, head_opt, seed=seed)
  replicas = tf.distribute.get_strategy().num_replicas_in_sync
  if cfg.sync_batch_norm and replicas > 1 and backbones.synchronize_batch_norm(model):
    log.info("batch normalisation statistics over all %d replicas", replicas)
  with _image_size_errors(cfg):
    model.build_all(cfg.image_size)
  model.compile(backbone_opt, head_opt, jit_compile=cfg.jit_compile, steps_per_execution=1)
  return model


def predict_probs(model, image_list, opts, batch_size):
  """N x K softmax in list order (averaged over the 10 crops when enabled)."""
  crop = [10] if opts.ten_crop else []
  spec = tf.TensorSpec([None, *crop, opts.image_size, opts.image_size, 3], tf.float32)

  @tf.function(input_signature=[spec])  # one trace, whatever the last batch's size
  def infer(x):
    if opts.ten_crop:
      b = tf.shape(x)[0]
      p = tf.nn.softmax(model(tf.reshape(x, [-1, *x.shape[2:]]), training=False))
      return tf.reduce_mean(tf.reshape(p, [b, 10, -1]), axis=1)
    return tf.nn.softmax(model(x, training=False))
  # One trace per call by design (a new model each run; keras_hooks.traced_once_per_model).
  keras_hooks.traced_once_per_model(infer)
  parts = [infer(x).numpy() for x in pipeline.eval_dataset(image_list, opts, batch_size)]
  return np.concatenate(parts).astype(np.float32)


def train_run(cfg, domains, run, run_dir, prev_aggregate=None, balance_labels=None,
              strategy=None, callbacks=None, source_distribution=None):
  """Trains run `run` into `run_dir` (resuming from its checkpoint) and evaluates.

  `source_distribution`: the class proportions the source is loaded in (None: as
  --balanced_source says); recorded in the result as `source_class_distribution`.

  `callbacks`: Keras callbacks. The run trains with BIWAAModel.fit(), an epoch being a
  checkpoint interval (--checkpoint_every steps); its logs are the mean of its steps'
  logs. Batch hooks run after the step's checkpoint and TensorBoard scalars are
  written (model.step is the run's step). A callback setting model.stop_training ends
  the run after that step (the run is then complete: a later call with the same
  model_dir does not continue it).

  Returns the run's result dict (also written to run_dir/run_result.json last,
  which marks the run complete; by the chief only, under multi-worker training).
  """
  strategy = strategy or tf.distribute.get_strategy()
  chief = distribute.is_chief(strategy)
  seed = cfg.seed + 100 * run
  with strategy.scope():
    model = build_model(cfg, domains, seed)
  if prev_aggregate is not None:
    model.prev_aggregate.assign(aggregation.bootstrap_reference(
        prev_aggregate, 10 if cfg.ten_crop else 1, cfg.bootstrap_crop_sum))
    model.has_prev.assign(True)
  if domains.target.labelled:
    model.target_labels.assign(domains.target.labels)
  opts = image_options(cfg, domains.normalization)
  if balance_labels is not None:
    hist = np.bincount(balance_labels, minlength=domains.num_classes)
    log.info("run %d: target loaded class-balanced by labels with histogram %s",
                 run, hist.tolist())
  if source_distribution is not None:
    log.info("run %d: source loaded in the predicted target class proportions %s", run,
             np.round(source_distribution, 3).tolist())
  ckpt = tf.train.Checkpoint(model=model, backbone_optimizer=model.backbone_optimizer,
                             head_optimizer=model.head_optimizer)
  ckpt_dir = layout.checkpoint_dir(run_dir)
  # The newest readable checkpoint (damaged ones are reported, and removed by the chief).
  latest = checkpoints.resume_point(ckpt_dir, run, repair=chief)
  if not chief:  # other workers save too (collectives), into a scratch directory
    ckpt_dir = tempfile.mkdtemp(prefix="biwaa-worker-ckpt-")
  manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=CHECKPOINTS_KEPT)
  if latest:
    checkpoints.check_input_position(latest, run)
    ckpt.restore(latest).assert_existing_objects_matched()
    log.info("run %d: resumed from %s at step %d", run, latest, int(model.step.numpy()))
  size = (checkpoints.size_on_disk(latest) if latest else
          checkpoints.variables_bytes([model, model.backbone_optimizer, model.head_optimizer]))
  if chief:  # before the first step: warn of a disk that cannot take the run
    checkpoints.warn_if_short_of_space(run, ckpt_dir, size, _output_bytes(domains, model),
                                       keep=CHECKPOINTS_KEPT)
  # The input continues where the checkpoint's last batch ended.
  data = pipeline.training_pairs(domains.source, domains.target, opts, cfg.batch_size, seed,
                                 balance_labels, domains.num_classes, cfg.balanced_source,
                                 source_distribution, start=model.input_position.numpy() + 1)
  data = distribute.distribute_batches(strategy, data, cfg.batch_size)
  skipped, speed = _fit(cfg, model, data, manager, run, run_dir, chief, callbacks,
                        checkpoint_bytes=size)
  if not chief:
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return None
  if source_distribution is None:
    source_distribution = training_class_distribution(cfg, domains)
  return _evaluate_and_save(cfg, model, domains, run, run_dir, skipped, speed,
                            {"source_class_distribution": np.asarray(source_distribution)
                             .round(6).tolist()})


def _output_bytes(domains, model):
  """What a run writes besides its checkpoints: the target (and evaluation) predictions,
  and the export of the last run (its weights)."""
  probs = 4 * domains.num_classes * (domains.target.size + domains.target_eval.size)
  return probs + checkpoints.variables_bytes([model])


def training_class_distribution(cfg, domains):
  """The class proportions of the source as --balanced_source loads it."""
  if cfg.balanced_source:
    return np.full(domains.num_classes, 1.0 / domains.num_classes)
  counts = np.bincount(domains.source.labels, minlength=domains.num_classes)
  return counts / counts.sum()


class _RunEnd(keras.callbacks.Callback):
  """Ends fit() after the run's last step (which may fall inside an epoch), after the
  user's callbacks have seen it; the step is the one _RunSteps counts."""

  def __init__(self, steps):
    super().__init__()
    self.steps = steps

  def on_train_batch_end(self, batch, logs=None):
    if self.steps.step >= self.steps.cfg.steps_per_run:
      self.model.stop_training = True


class _RunSteps(keras.callbacks.Callback):
  """The run's own work after each step of fit(), before the user's callbacks: the NaN
  stop, the progress line, TensorBoard scalars, and a checkpoint at the end of each
  epoch (a checkpoint interval) and at the run's last step."""

  def __init__(self, cfg, manager, run, run_dir, chief, checkpoint_bytes):
    super().__init__()
    self.cfg, self.manager, self.run, self.run_dir = cfg, manager, run, run_dir
    self.checkpoint_bytes = checkpoint_bytes
    self.writer = (tf.summary.create_file_writer(layout.tensorboard_dir(run_dir)) if chief
                   else tf.summary.create_noop_writer())
    self.images_per_step = 2 * cfg.batch_size if cfg.adversarial else cfg.batch_size
    self.timer = progress.StepTimer()
    self.step = None
    self.chief = chief

  def on_train_begin(self, logs=None):
    self.step = int(self.model.step.numpy())
    self.shown = progress.Progress(self.run, self.step, self.cfg.steps_per_run,
                                   self.images_per_step,
                                   enabled=self.cfg.progress and self.chief)

  def on_train_batch_end(self, batch, logs=None):
    cfg = self.cfg
    self.timer.tick()
    self.step += 1
    if not np.isfinite(logs["loss"]):
      raise NonFiniteLoss(
          f"run {self.run}: non-finite loss ({logs['loss']}) at step {self.step - 1}; "
          f"stopped, the last good checkpoint ({self.manager.latest_checkpoint or 'none'}) "
          "is kept. Lower --lr?")
    self.shown.update(self.step, logs)
    last = self.step == cfg.steps_per_run
    if self.step % cfg.log_every == 0 or last:
      with _tensorboard_writes(self.run_dir), self.writer.as_default(step=self.step):
        for k, v in logs.items():
          tf.summary.scalar(f"train/{k}", v)
    if batch + 1 == self.params["steps"] or last:
      checkpoints.save(self.manager, self.step, self.checkpoint_bytes)

  def on_train_end(self, logs=None):
    with _tensorboard_writes(self.run_dir):
      self.writer.flush()


def _fit(cfg, model, data, manager, run, run_dir, chief, callbacks=None,
         checkpoint_bytes=None):
  """The run's remaining steps as BIWAAModel.fit(), an epoch being a checkpoint interval
  (--checkpoint_every steps, counted from the step it starts or resumes at)."""
  steps = _RunSteps(cfg, manager, run, run_dir, chief, checkpoint_bytes)
  start = int(model.step.numpy())
  if start < cfg.steps_per_run:
    first_epoch = start // cfg.checkpoint_every
    epochs = first_epoch + -(-(cfg.steps_per_run - start) // cfg.checkpoint_every)
    model.fit(data, epochs=epochs, initial_epoch=first_epoch,
              steps_per_epoch=cfg.checkpoint_every,
              callbacks=[steps, *(callbacks or []), _RunEnd(steps)], verbose=0)
  end = int(model.step.numpy())
  if start < end < cfg.steps_per_run:
    log.warning("run %d: stopped by a callback after step %d", run, end)
  if end == start:
    return [0, 0], None
  speed, timer = None, steps.timer
  if timer.durations:
    speed = {"train_images_per_second": steps.images_per_step / timer.median,
             "median_step_seconds": timer.median}
    log.info("run %d: median step %.1f ms (mean %.1f ms with checkpoints), %.0f training "
             "images/s (%s)", run, 1e3 * timer.median, 1e3 * timer.mean,
             speed["train_images_per_second"],
             "source + target" if cfg.adversarial else "source")
  skipped = pipeline.skipped_images(model.input_position.numpy(), end, cfg.batch_size)
  if any(skipped):
    log.warning("run %d: skipped %d source and %d target image(s) that could not be "
                "decoded during training", run, *skipped)
  return skipped, speed


def _tensorboard_writes(run_dir):
  """A full disk under TensorBoard's writer: one line, as for the checkpoints."""
  return io_utils.storage_errors(layout.tensorboard_dir(run_dir), "TensorBoard's log",
                                 hint="free space and re-run the same command to resume "
                                      "from the last checkpoint")


def _evaluate_and_save(cfg, model, domains, run, run_dir, skipped, speed=None, extra=None):
  eval_opts = image_options(cfg, domains.normalization, ten_crop=cfg.ten_crop)
  target_probs = predict_probs(model, domains.target, eval_opts, cfg.eval_batch_size)
  io_utils.atomic_save_npy(os.path.join(run_dir, layout.TARGET_PROBS), target_probs)
  if domains.target_eval is domains.target:
    eval_probs = target_probs
  else:
    eval_probs = predict_probs(model, domains.target_eval, eval_opts, cfg.eval_batch_size)
    io_utils.atomic_save_npy(os.path.join(run_dir, layout.EVAL_PROBS), eval_probs)
  if domains.heldout is not None:  # the labelled held-out source split (biwaa_tf/trust.py)
    io_utils.atomic_save_npy(os.path.join(run_dir, layout.HELDOUT_PROBS), predict_probs(
        model, domains.heldout, eval_opts, cfg.eval_batch_size))
  result = {"run": run, "steps": int(model.step.numpy()), "eval_images": int(len(eval_probs)),
            "skipped_images": {"source": skipped[0], "target": skipped[1]},
            **(speed or {"train_images_per_second": None, "median_step_seconds": None}),
            **(extra or {})}
  result.update(metrics.prediction_report(
      eval_probs, domains.target_eval.labels if domains.target_eval.labelled else None,
      domains.num_classes))
  writer = tf.summary.create_file_writer(layout.tensorboard_dir(run_dir))
  with _tensorboard_writes(run_dir), writer.as_default(step=run):
    for k in ("accuracy", "per_class_accuracy", "histogram_tv_distance", "mean_entropy",
              "im_score", "snd_score"):
      if result.get(k) is not None:
        tf.summary.scalar(f"eval/{k}", result[k])
    tf.summary.histogram("eval/predicted_class", np.argmax(target_probs, axis=1),
                         buckets=domains.num_classes)
    if cfg.adversarial:
      _log_heatmaps(cfg, model, domains)
    writer.flush()
  io_utils.atomic_write_json(os.path.join(run_dir, layout.RUN_RESULT), result)
  return result


def restore_model(cfg, domains, run, run_dir):
  """Run `run`'s model with the weights of its last checkpoint (no optimizer state)."""
  model = build_model(run_config(cfg, run), domains, cfg.seed + 100 * run)
  checkpoints.restore_weights(tf.train.Checkpoint(model=model), layout.checkpoint_dir(run_dir))
  return model


def export_run(cfg, domains, run, run_dir, export_dir):
  """Rebuilds run `run` from its last checkpoint and exports its inference path."""
  from biwaa_tf import export
  model = restore_model(cfg, domains, run, run_dir)
  export.export_saved_model(model, export_dir, domains.class_names,
                            image_options(cfg, domains.normalization, cfg.ten_crop))


def _log_heatmaps(cfg, model, domains, count=4):
  """TensorBoard images: target images | DANN map | BIWAA-weighted map (biwaa-tf heatmap)."""
  from biwaa_tf.heatmap import discriminator_maps, image_views
  picks = np.linspace(0, domains.target.size - 1, min(count, domains.target.size)).astype(int)
  raw, x = image_views(domains.target, picks, image_options(cfg, domains.normalization))
  try:
    dann, biwaa = discriminator_maps(model, x, cfg.weighting_factor, cfg.weighting_offset)
  except ValueError:  # a backbone without a convolutional feature map
    return
  size = cfg.image_size

  def overlay(maps):
    up = tf.image.resize(maps[..., None], [size, size])
    return tf.concat([up, tf.zeros_like(up), 1.0 - up], axis=-1)  # red = attended
  images = tf.concat([raw / 255.0, overlay(dann), overlay(biwaa)], axis=2)
  tf.summary.image("eval/heatmaps_image_dann_biwaa", images, max_outputs=count)
