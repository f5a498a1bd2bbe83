"""The Python API: `adapt()` runs a whole BIWAA(-I) training from Python.

    import biwaa_tf
    result = biwaa_tf.adapt((x_source, y_source), x_target, backbone="lenet",
                            image_size=28, steps_per_run=800, runs=3, lr=0.01)
    result.final_accuracy, result.target_probs, result.predict(x_new)

Options are the command line's flags, with its defaults (`python -m biwaa_tf.main
--help`). The command line and this function run the same training code
(train/iterative.py); this module only turns Python values into its inputs.
"""

import dataclasses
import hashlib
import os
import re
import shutil
import sys
import tempfile

import numpy as np

from biwaa_tf import config as config_lib
from biwaa_tf import model_dir_layout as layout
from biwaa_tf.data import lists
from biwaa_tf.errors import UserError

ARRAY = lists.ARRAY


def _images_and_labels(data):
  """(images, labels or None) of an array domain: images alone, or (images, labels)."""
  return data if isinstance(data, (tuple, list)) and len(data) == 2 else (data, None)


def array_spec(role, data):
  """'array:<role>:<N>x<H>x<W>x<C>-<dtype>-<digest>' for (images[, labels]), as flags.txt
  records an array domain: the shape, dtype and a BLAKE2b digest of the images and
  labels, so that a model_dir refuses other arrays of the same size."""
  images, labels = _images_and_labels(data)
  if isinstance(images, (list, tuple)):
    shapes = sorted({np.shape(i) for i in images})
    if len(shapes) > 1:
      raise UserError(f"{role}: the images have different sizes ({', '.join(map(str, shapes[:3]))}"
                      f"{', ...' if len(shapes) > 3 else ''}); resize them to one size, or "
                      "write them to a folder (folders take images of any size)")
  images = np.asarray(images)
  digest = hashlib.blake2b(digest_size=8)
  digest.update(np.ascontiguousarray(images).data)
  if labels is not None:
    digest.update(np.ascontiguousarray(np.asarray(labels)).data)
  shape = "x".join(str(d) for d in images.shape)
  return f"{ARRAY}{role}:{shape}-{images.dtype}-{digest.hexdigest()}"


@dataclasses.dataclass
class AdaptResult:
  """What adapt() returns.

  model:        Keras model, raw images (N x H x W x 1 or 3: floats in [0, 1], or 0-255
                values, uint8 or float; export.Preprocess) -> class probabilities: the
                training's evaluation preprocessing (layer "preprocess") and the returned
                model's inference path (layer "logits_model" when ten_crop is off: crops
                -> logits). Saves to
                .keras; keras.models.load_model reads it back after `import biwaa_tf`.
  target_probs: N x K, the returned model's (10-crop if ten_crop) target probabilities.
  runs:         the per-run result dicts (accuracy, per_class_accuracy, histogram, ...).
  final_accuracy, final_per_class_accuracy: the returned model's, None without target
                labels. The returned model is the label-free choice among the source-only
                probe and every run (returned, in results.json) when the label-shift check
                ran with a held-out split, else the last run.
  model_dir:    where the training lives (None when it ran in a temporary directory).
  verdict:      did adaptation likely help, against the label-shift check's source-only
                probe: trust.verdict's "helped", "model", "estimated_gain", "interval"
                and "returned" (label_shift.verdict's "helped", "confidence" and
                "evidence" for a training without a held-out split); None with
                label_shift_check=False.
  label_shift_check: the check's decision (estimated prior, its shift, the path taken).
  source_only:  the probe's accuracy and per_class_accuracy (None without labels or probe).
  """
  model: object
  target_probs: np.ndarray
  runs: list
  final_accuracy: float
  final_per_class_accuracy: float
  class_names: tuple
  config: config_lib.TrainConfig
  model_dir: str
  image_options: object
  verdict: dict = None
  label_shift_check: dict = None
  source_only: dict = None

  def predict(self, images, batch_size=64):
    """Class probabilities of raw images (NumPy N x H x W x {1,3}, uint8, or float in
    [0, 1] as adapt() takes them, or a tf.data.Dataset of them), through `model` (which
    preprocesses as the training evaluated its target: resize, crop(s), normalisation)."""
    return self.model.predict(unit_images(images, "images"), batch_size=batch_size, verbose=0)


def unit_images(images, role):
  """NumPy images or a tf.data.Dataset (of images or (image, label) pairs) -> N x H x W x 3
  float32 in [0, 1], what every face gives the served model."""
  data = _materialize(images, role)
  if data is not images:  # a tf.data.Dataset: its images (labels, if any, unused)
    images = _images_and_labels(data)[0]
  return lists.unit_float_rgb(images, role)


def _loader(cfg, arrays, class_names=None):
  """prepare_data's `load`: the placeholder specs of NumPy domains -> in-memory lists."""

  def load(spec, num_classes):
    if spec not in arrays:
      return lists.load_image_list(spec, cfg.data_root, num_classes, cfg.download)
    images, labels = _images_and_labels(arrays[spec])
    return lists.from_arrays(spec[len(ARRAY):].split(":")[0], images, labels, num_classes,
                             class_names)
  return load


def adapt(source, target, target_eval=None, *, model_dir=None, callbacks=None,
          normalization=None, strategy=None, verbose=True, class_names=None, **options):
  """Trains BIWAA (or another --method) from `source` to `target`; returns AdaptResult.

  source:      a list file, a class-folder directory, "builtin:digits_source", or NumPy
               (images, labels); images N x H x W x {1,3}, uint8 or float in [0, 1].
  target:      the same kinds, or NumPy images alone (labels only report accuracy).
  target_eval: evaluated after each run (default: the target).
  class_names: the class names of NumPy / tf.data domains (default class_0, class_1, ...).
  model_dir:   keep the training there (resumable: call again with the same arguments);
               None trains in a temporary directory, removed afterwards. The training
               holds model_dir's lock while it runs (another training there raises
               ModelDirBusy; README, "Long trainings"); a full disk raises StorageError.
  callbacks:   Keras callbacks, given to every run's BIWAAModel.fit(), an epoch being a
               checkpoint interval (checkpoint_every steps; its logs the mean of its
               steps'; model.step is the run's step); on_train_batch_end sees the
               step's logs: loss, loss_cls,
               loss_adv, loss_ms, disc_acc, pseudo_acc, lr, grl_coeff. A callback that
               sets stop_training ends that run. BackupAndRestore is refused (model_dir
               resumes by itself).
  backbone=:   a registered name ("resnet50", "lenet", ...) or a Keras model (Functional
               or Sequential) mapping images to features or a feature map (pooled
               here); every run starts from its current weights. `normalization`
               says what such a model expects: "torch", "caffe", "unit" (default,
               x / 127.5 - 1) or "raw" (0-255).
  **options:   any command-line flag by name: image_size=28, runs=3, method="dann", ...
               distribution_strategy= and cpu_replicas= as on the command line (the CPU
               split needs a process whose TensorFlow has not set up its devices yet);
               dry_run=True runs every check and returns the plan (text), training nothing.

  Labels: integers 0..K-1 or one-hot rows. A model_dir records the arrays it was trained
  on (shape, dtype, digest) and refuses others. The process is left as it was found
  (dtype policy, random states, backbone registry, logging; launch.process_scope).
  """
  from biwaa_tf import launch
  with launch.process_scope(verbose):
    try:
      return _adapt(source, target, target_eval, model_dir, callbacks, normalization,
                    strategy, verbose, options, class_names)
    except UserError as e:  # the same one line, with keywords where it names flags
      raise type(e)(python_wording(str(e))) from None


# help(adapt) shows the main options with their defaults (every flag is an option).
MAIN_OPTIONS = ("method", "runs", "steps_per_run", "batch_size", "image_size", "lr", "seed",
                "deterministic", "label_shift_check", "ten_crop", "mixed_precision",
                "checkpoint_every", "progress")
adapt.__doc__ += "\n  Main options (keyword=default):\n" + "".join(
    f"    {name}={config_lib.default(name)!r}\n" for name in MAIN_OPTIONS)


def python_wording(message):
  """A message that names command-line flags, as it reads for adapt()'s keywords:
  '--backbone_weights=x' -> 'backbone_weights=x', '--overwrite' -> 'overwrite'."""
  return re.sub(r"(?<![\w-])--(\w+)", r"\1", message)


def _materialize(data, role):
  """A tf.data.Dataset of images, or of (image, label) pairs, batched or not -> NumPy
  (images[, labels]); any other value is returned as it is."""
  tf = sys.modules.get("tensorflow")
  if tf is None or not isinstance(data, tf.data.Dataset):
    return data
  spec = data.element_spec
  pairs = isinstance(spec, tuple) and len(spec) == 2
  image_spec = spec[0] if pairs else spec
  if not isinstance(image_spec, tf.TensorSpec) or image_spec.shape.rank not in (2, 3, 4):
    raise UserError(f"{role}: a dataset of {spec}; give one of images (H x W x C) or of "
                    "(image, label) pairs, batched or not")
  shape = image_spec.shape
  if shape.rank == 4 or (shape.rank == 3 and shape[-1] not in (1, 3)):  # batches
    data = data.unbatch()  # (B x H x W x C, or B x H x W grey)
  images, labels = [], []
  for element in data.as_numpy_iterator():
    images.append(element[0] if pairs else element)
    if pairs:
      labels.append(element[1])
  if len({i.shape for i in images}) > 1:
    raise UserError(f"{role}: the dataset's images have different sizes "
                    f"({sorted({i.shape for i in images})[:3]}...); resize them to one size "
                    "(e.g. Dataset.map(tf.image.resize)) first")
  if not images:
    raise UserError(f"{role}: the dataset is empty")
  return (np.stack(images), np.stack(labels)) if pairs else np.stack(images)


def _adapt(source, target, target_eval, model_dir, callbacks, normalization, strategy,
           verbose, options, class_names=None):
  from biwaa_tf import launch
  from biwaa_tf.model import backbones
  from biwaa_tf.train import preflight
  backbone = options.pop("backbone", config_lib.default("backbone"))
  if not isinstance(backbone, str):
    name = f"keras:{backbone.name}"
    backbones.register(name, backbones.from_keras_model(backbone), normalization or "unit")
    backbone = name
  elif normalization is not None:
    raise UserError("normalization= applies to a Keras-model backbone only")
  same_eval = target_eval is None or target_eval is target
  source, target = _materialize(source, "source"), _materialize(target, "target")
  target_eval = target if same_eval else _materialize(target_eval, "target_eval")
  given = {"source": source, "target": target, "target_eval": target_eval}
  specs, arrays = {}, {}
  for role, data in given.items():
    if isinstance(data, (str, os.PathLike)):
      specs[role] = os.fspath(data)
    elif role == "target_eval" and data is target:
      specs[role] = specs["target"]
    else:
      specs[role] = array_spec(role, data)
      arrays[specs[role]] = data
  temporary = model_dir is None  # (made after the checks above: nothing to leave behind)
  if temporary:
    model_dir = tempfile.mkdtemp(prefix="biwaa-adapt-")
  try:
    cfg = config_lib.make_config(
        **specs, model_dir=os.fspath(model_dir), backbone=backbone,
        progress=options.pop("progress", verbose), overwrite=options.pop("overwrite", temporary),
        **options)
    domains = preflight.prepare_data(cfg, load=_loader(cfg, arrays, class_names))
    if "image_size" not in options:
      _check_default_image_size(cfg, domains)
    outcome = launch.launch(cfg, domains, strategy, callbacks)
    if cfg.dry_run:
      return outcome  # the plan
    return _result(cfg, domains, outcome, None if temporary else model_dir)
  finally:
    if temporary:
      shutil.rmtree(model_dir, ignore_errors=True)


def _check_default_image_size(cfg, domains):
  """Refuses the default image_size (224, for ImageNet backbones) on array images less
  than half its size: they would train upscaled, slowly and for nothing."""
  images = domains.source.images
  if images is not None and 2 * min(images.shape[1:3]) < cfg.image_size:
    h, w = images.shape[1:3]
    raise UserError(f"source: {h} x {w} images, and the default image_size={cfg.image_size} "
                    f"would upscale them {cfg.image_size / min(h, w):.0f}x; pass image_size="
                    f"{min(h, w)} (or the size the backbone wants)")


def _result(cfg, domains, summary, kept_dir):
  """The AdaptResult of a finished training (`summary`: results.json's)."""
  from biwaa_tf import export
  from biwaa_tf.train import iterative
  from biwaa_tf.train import run as run_lib
  # The model the training returns: the label-free choice (results.json "returned"), else
  # the last run.
  run_cfg, run, run_dir = iterative.returned_run(cfg, summary)
  model = run_lib.restore_model(run_cfg, domains, run, run_dir)
  opts = run_lib.image_options(cfg, domains.normalization, cfg.ten_crop)
  returned = summary.get("returned") or {"accuracy": summary["final_accuracy"],
                                         "per_class_accuracy":
                                             summary["final_per_class_accuracy"]}
  return AdaptResult(
      model=export.classifier_model(model, opts),
      target_probs=layout.load_probs(run_dir),
      runs=summary["runs"], final_accuracy=returned["accuracy"],
      final_per_class_accuracy=returned["per_class_accuracy"],
      class_names=tuple(domains.class_names), config=cfg, model_dir=kept_dir,
      image_options=opts, verdict=summary.get("verdict"),
      label_shift_check=summary.get("label_shift_check"),
      source_only=summary.get("source_only"))
