"""Every command-line flag, defined in one function, and the config derived from them.

Defaults follow the authors' implementation (../shared/reference-notes.md).
Flags are never mutated: `config_from_flags` derives a frozen TrainConfig.
"""

import dataclasses

from absl import flags

from biwaa_tf.errors import UserError

METHODS = ("biwaa", "dann", "source_only")
_DEFINED = []


def define_flags():
  """Defines the flags once (idempotent)."""
  if _DEFINED:
    return
  _DEFINED.append(True)
  # Data.
  flags.DEFINE_string("source", None, "Labelled source domain: a list file "
                      "('relative/path label' a line) or a class-subfolder directory.")
  flags.DEFINE_string("target", None, "Unlabelled target domain for training (list "
                      "file or directory; labels, if present, are used only to report "
                      "accuracy and for --balanced_target=oracle).")
  flags.DEFINE_string("target_eval", None, "Target evaluation set; defaults to --target.")
  flags.DEFINE_string("data_root", "", "Directory the list files' paths are relative to.")
  flags.DEFINE_boolean("skip_invalid_images", False, "Drop missing, empty, truncated or "
                       "non-image files (and report how many) instead of stopping.")
  flags.DEFINE_integer("resize_size", None, "Images are resized to this square size "
                       "before cropping (default: 8/7 of --image_size, rounded: 256 for "
                       "224 as in the paper, 32 for 28).")
  flags.DEFINE_integer("image_size", 224, "Crop size fed to the backbone.")
  flags.DEFINE_enum("resize_method", "bicubic", ["bicubic", "bilinear"], "Resize filter: "
                    "bicubic = PIL's default as the authors' torchvision pipeline "
                    "(antialiased, 8-bit values); bilinear = TensorFlow's bilinear without "
                    "antialiasing (this project's behaviour before 2026-11-30).")
  flags.DEFINE_enum("train_crop", None, ["resized", "random"], "Training crop: resized = "
                    "torchvision's RandomResizedCrop (area 8-100%, aspect ratio 3/4-4/3, "
                    "resized to --image_size), as the authors; random = a plain random "
                    "--image_size crop of the resized image. Default: resized for the "
                    "ResNets, random for lenet (digits would not survive 8% crops).")
  flags.DEFINE_boolean("random_flip", True, "Random horizontal flips in training.")
  flags.DEFINE_boolean("ten_crop", False, "Evaluate with 10 crops (4 corners + centre, "
                       "and their flips), softmax averaged, as the paper does.")
  flags.DEFINE_enum("balanced_target", "auto", ["auto", "none", "pseudo", "oracle"],
                    "Target loader: auto = random in run 0 and balanced by the previous "
                    "runs' predictions after (BIWAA-I); none = always random; pseudo = "
                    "balanced by predictions when there are any; oracle = balanced by "
                    "the true target labels (the paper's upper bound; ablation only).")
  # Model.
  flags.DEFINE_string("backbone", "resnet50", "Backbone: resnet50 (torchvision's ResNet-50 "
                      "v1.5, the authors' network), resnet50_keras (Keras' ResNet-50 v1 with "
                      "Caffe weights), or lenet (digits).")
  flags.DEFINE_string("backbone_weights", None, "imagenet (resnet50: torchvision's weights, "
                      "fetched once through huggingface_hub; resnet50_keras: Keras' download), "
                      "none (random init), or a weights file (resnet50: torchvision-format "
                      ".safetensors, or .pth with PyTorch installed; others: a Keras weights "
                      "file). Default: imagenet for the ResNets, none for lenet.")
  flags.DEFINE_integer("num_classes", 0, "Number of classes; 0: one more than the "
                       "source's largest label, and then every class needs a source image "
                       "(a label with gaps is refused as a likely typo).")
  flags.DEFINE_enum("batch_norm", "per_domain", ["per_domain", "joint"], "Training "
                    "forward pass: per_domain = source and target in two passes, each batch "
                    "norm layer normalising (and updating its running statistics with) each "
                    "domain's own statistics, as the authors' implementation; joint = one "
                    "pass over [source; target] (this project before 2026-11-30).")
  flags.DEFINE_integer("bottleneck_dim", 256, "Width of the bottleneck features f.")
  # Method.
  flags.DEFINE_enum("method", "biwaa", list(METHODS), "biwaa: weighting + centroid loss; "
                    "dann: plain adversarial; source_only: no adaptation.")
  flags.DEFINE_boolean("feature_weighting", None, "Backprop-induced feature weighting "
                       "(default: on for biwaa, off for dann). --method=dann "
                       "--feature_weighting gives DANN+BG.")
  flags.DEFINE_boolean("ms_loss", None, "Moving-semantic centroid loss (default: on for "
                       "biwaa, off for dann).")
  flags.DEFINE_float("weighting_factor", 10.0, "lambda: scale of the L2-normalised "
                     "feature weights.")
  flags.DEFINE_enum("loss_form", "implementation", ["implementation", "paper"],
                    "implementation: L = CE + L_d + coeff (intra + st + tt) + ss with the "
                    "ramp in the reversal layer; paper: L = CE + s(i) L_d + s(i) L_MS.")
  flags.DEFINE_float("grl_ramp_steps", 20000.0, "Length of the reversal coefficient "
                     "ramp 2/(1+exp(-10 i/len)) - 1.")
  flags.DEFINE_float("centroid_decay", 0.7, "Moving centroid memory: C <- d C + (1-d) mean.")
  flags.DEFINE_boolean("within_run_aggregation", True, "Aggregate each target sample's "
                       "probabilities over its visits within a run.")
  flags.DEFINE_float("within_run_momentum", 0.9, "Within-run aggregate: p_a <- m p + "
                     "(1-m) p_a.")
  flags.DEFINE_boolean("across_run_aggregation", True, "Aggregate predictions of all "
                       "earlier runs (else only the previous run's are used).")
  flags.DEFINE_float("across_run_decay", 0.8, "Weight of each older run relative to the "
                     "next newer one in the across-run aggregate.")
  flags.DEFINE_integer("bootstrap_steps", 500, "Bootstrap length j_t: in runs after the "
                       "first, pseudo-labels mix in the earlier runs' aggregate with "
                       "weight 1-u(j); 0 disables.")
  flags.DEFINE_boolean("bootstrap_crop_sum", True, "With --ten_crop, the bootstrap mixes "
                       "the earlier runs' predictions summed over the 10 crops (rows sum to "
                       "10, so they outweigh the current run's softmax for longer), as the "
                       "authors' implementation; --nobootstrap_crop_sum: their mean "
                       "(the paper's formula).")
  # Optimisation.
  flags.DEFINE_integer("batch_size", 36, "Images per domain per step.")
  flags.DEFINE_boolean("balanced_source", True, "Load the source class-balanced (as the "
                       "authors' implementation); --nobalanced_source samples it uniformly "
                       "(shuffled epochs), as most other libraries do.")
  flags.DEFINE_integer("steps_per_run", 5004, "Training steps per run.")
  flags.DEFINE_integer("runs", 1, "Iterative runs (BIWAA-I uses 10), each from the same "
                       "initial weights, seed + 100 x run.")
  flags.DEFINE_float("lr", 1e-3, "Base learning rate of the inv schedule "
                     "lr(i) = lr (1 + 0.001 i)^-0.75.")
  flags.DEFINE_float("head_lr_multiplier", 10.0, "Learning-rate multiplier of the new "
                     "layers (bottleneck, classifier, discriminator).")
  flags.DEFINE_float("momentum", 0.9, "SGD Nesterov momentum.")
  flags.DEFINE_float("weight_decay", 1e-3, "Coupled L2 weight decay added to every "
                     "gradient (the reference's 5e-4 x decay multiplier 2).")
  # Run control.
  flags.DEFINE_integer("seed", 0, "Random seed; run r uses seed + 100 r.")
  flags.DEFINE_string("model_dir", None, "Output directory: flags, checkpoints, "
                      "TensorBoard logs, predictions and results.json.")
  flags.DEFINE_integer("checkpoint_every", 500, "Save a checkpoint every this many steps.")
  flags.DEFINE_integer("eval_batch_size", 64, "Batch size for evaluation.")
  flags.DEFINE_integer("log_every", 50, "Write TensorBoard scalars every this many steps.")
  flags.DEFINE_boolean("overwrite", False, "Replace a model_dir that holds a training "
                       "with different flags.")
  flags.DEFINE_boolean("deterministic", False, "The same bits for the same command, also "
                       "under CPU load and across kill and resume: TensorFlow op determinism "
                       "and one inter-op thread (independent ops of a step run one after "
                       "another; each op still uses all cores).")
  flags.DEFINE_boolean("progress", True, "Show training progress: a live bar in a "
                       "terminal; in a log file or pipe, a line (step, losses, images/s, "
                       "ETA) at every tenth of a run and at least once a minute.")
  # Scale-out and speed.
  flags.DEFINE_enum("distribution_strategy", "auto",
                    ["auto", "one_device", "mirrored", "multi_worker_mirrored"],
                    "auto: MirroredStrategy over all local GPUs (or --cpu_replicas logical "
                    "CPUs) when there are two or more, else one device; "
                    "multi_worker_mirrored takes the cluster from TF_CONFIG. --batch_size "
                    "stays the global batch per domain.")
  flags.DEFINE_integer("cpu_replicas", 0, "Split the CPU into this many logical devices "
                       "(to run and test MirroredStrategy without GPUs).")
  flags.DEFINE_boolean("sync_batch_norm", True, "With several replicas, compute the "
                       "backbone's batch-normalisation statistics over the global batch "
                       "(an all-reduce per layer), as one device does; --nosync_batch_norm: "
                       "each replica normalises its own share.")
  flags.DEFINE_enum("mixed_precision", "none", ["none", "bfloat16", "float16"],
                    "Compute the backbone, bottleneck and discriminator in bfloat16 (GPUs "
                    "from Ampere on, TPUs, recent CPUs) or float16 (any CUDA GPU; with "
                    "dynamic loss scaling). Variables, the classifier, the weighting and "
                    "the losses stay float32.")
  flags.DEFINE_boolean("jit_compile", False, "Compile the training step with XLA (a GPU "
                       "option: slower for ResNet-50 on CPU).")
  flags.DEFINE_boolean("dry_run", False, "Run every check of a real training (flags, "
                       "lists, image files, model_dir, devices, backbone and its weights), "
                       "print the plan and exit without training or writing anything.")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  source: str
  target: str
  target_eval: str
  data_root: str
  skip_invalid_images: bool
  resize_size: int
  image_size: int
  resize_method: str
  train_crop: str
  random_flip: bool
  ten_crop: bool
  balanced_target: str
  backbone: str
  backbone_weights: str
  num_classes: int
  batch_norm: str
  bottleneck_dim: int
  method: str
  feature_weighting: bool
  ms_loss: bool
  weighting_factor: float
  loss_form: str
  grl_ramp_steps: float
  centroid_decay: float
  within_run_aggregation: bool
  within_run_momentum: float
  across_run_aggregation: bool
  across_run_decay: float
  bootstrap_steps: int
  bootstrap_crop_sum: bool
  batch_size: int
  balanced_source: bool
  steps_per_run: int
  runs: int
  lr: float
  head_lr_multiplier: float
  momentum: float
  weight_decay: float
  seed: int
  model_dir: str
  checkpoint_every: int
  eval_batch_size: int
  log_every: int
  overwrite: bool
  deterministic: bool
  progress: bool
  distribution_strategy: str
  cpu_replicas: int
  sync_batch_norm: bool
  mixed_precision: str
  jit_compile: bool
  dry_run: bool

  @property
  def adversarial(self):
    return self.method != "source_only"


def _require(ok, flag, message):
  if not ok:
    raise UserError(f"--{flag}: {message}")


def config_from_flags(fv=None):
  """The validated TrainConfig for parsed flag values `fv` (default: absl FLAGS)."""
  fv = fv or flags.FLAGS
  for name in ("source", "target", "model_dir"):
    _require(getattr(fv, name), name, "is required")
  values = {f.name: getattr(fv, f.name) for f in dataclasses.fields(TrainConfig)}
  default_on = fv.method == "biwaa"
  values["feature_weighting"] = (default_on if fv.feature_weighting is None
                                 else fv.feature_weighting)
  values["ms_loss"] = default_on if fv.ms_loss is None else fv.ms_loss
  values["target_eval"] = fv.target_eval or fv.target
  values["resize_size"] = fv.resize_size or default_resize_size(fv.image_size)
  values["backbone_weights"] = fv.backbone_weights or default_backbone_weights(fv.backbone)
  values["train_crop"] = fv.train_crop or default_train_crop(fv.backbone)
  _require(fv.num_classes >= 0, "num_classes", f"must be >= 0, got {fv.num_classes}")
  for name in ("resize_size", "image_size", "batch_size", "steps_per_run", "runs",
               "checkpoint_every", "eval_batch_size", "log_every", "bottleneck_dim"):
    _require(values[name] > 0, name, f"must be positive, got {values[name]}")
  _require(fv.image_size <= values["resize_size"], "image_size",
           f"{fv.image_size} is larger than --resize_size={values['resize_size']}")
  _require(fv.lr > 0, "lr", f"must be positive, got {fv.lr}")
  _require(fv.weighting_factor >= 0, "weighting_factor", "must be >= 0")
  _require(fv.bootstrap_steps >= 0, "bootstrap_steps", "must be >= 0")
  _require(0 <= fv.across_run_decay <= 1, "across_run_decay", "must be in [0, 1]")
  _require(0 <= fv.centroid_decay <= 1, "centroid_decay", "must be in [0, 1]")
  _require(0 <= fv.within_run_momentum <= 1, "within_run_momentum", "must be in [0, 1]")
  _require(fv.grl_ramp_steps > 0, "grl_ramp_steps", "must be positive")
  _require(fv.cpu_replicas >= 0, "cpu_replicas", "must be >= 0")
  if fv.backbone == "lenet":
    _require(values["backbone_weights"] != "imagenet", "backbone_weights",
             "lenet has no ImageNet weights; use none or a weights file")
  if fv.method == "source_only":
    _require(not values["feature_weighting"], "feature_weighting",
             "needs an adversarial method (--method=dann or biwaa)")
    _require(not values["ms_loss"], "ms_loss",
             "needs an adversarial method (--method=dann or biwaa)")
  return TrainConfig(**values)


def default_resize_size(image_size):
  """The resize before the crop: 8/7 of the crop (224 -> 256, as the paper; 28 -> 32)."""
  return int(round(image_size * 8 / 7))


def default_backbone_weights(backbone):
  """Pretrained weights where the backbone has them (resnet50), else none."""
  return "imagenet" if backbone.startswith("resnet") else "none"


def default_train_crop(backbone):
  """torchvision's RandomResizedCrop for the ImageNet networks; a plain random crop for
  the digits network (an 8% crop of a digit is no longer a digit)."""
  return "random" if backbone == "lenet" else "resized"


def resolved_flags_text(cfg):
  """The fully resolved configuration, one --flag=value a line (a valid flagfile)."""
  lines = []
  for f in dataclasses.fields(cfg):
    v = getattr(cfg, f.name)
    if isinstance(v, bool):
      lines.append(f"--{f.name}" if v else f"--no{f.name}")
    else:
      lines.append(f"--{f.name}={v}")
  return "\n".join(lines) + "\n"
