"""The training configuration: one frozen dataclass, its defaults and its checks.

The command line (flags.py) and the Python API (api.py) both build a TrainConfig
here; the training code takes one and never reads flags. Defaults follow the
authors' implementation (../shared/reference-notes.md); `--help` explains each
option (the names are the command line's flag names).
"""

import dataclasses

from biwaa_tf.errors import UserError

METHODS = ("biwaa", "dann", "source_only")
# Options with a closed set of values.
CHOICES = {
    "resize_method": ("bicubic", "bilinear"),
    "train_crop": ("resized", "random"),
    "balanced_target": ("auto", "none", "pseudo", "oracle"),
    "first_run": ("adapt", "source_only"),
    "batch_norm": ("per_domain", "joint"),
    "heads": ("biwaa", "tllib"),
    "method": METHODS,
    "loss_form": ("implementation", "paper"),
    "distribution_strategy": ("auto", "one_device", "mirrored", "multi_worker_mirrored"),
    "mixed_precision": ("none", "bfloat16", "float16"),
}


# --help prints the options in these groups, in this order.
GROUPS = ("data", "model", "method", "label shift", "optimisation", "runs", "scale-out",
          "output")


def option(default, group, help_text, model=False):
  """A TrainConfig field: its default, its --help group and text, and whether the model's
  MethodConfig takes it as it is (model/biwaa.py; `model_options`)."""
  assert group in GROUPS, group
  return dataclasses.field(default=default,
                           metadata={"group": group, "help": help_text, "model": model})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Every option of a training, with its help (None: derived from other options by
  `resolve`). The command-line flags (flags.py), `--help` and adapt()'s keywords are
  derived from these fields; an option is defined here once."""
  source: str = option(None, "data",
      "Labelled source domain: a list file ('relative/path label' a line) or a "
      "class-subfolder directory.")
  target: str = option(None, "data",
      "Unlabelled target domain for training (list file or directory; labels, if present, are "
      "used only to report accuracy and for --balanced_target=oracle).")
  target_eval: str = option(None, "data",
      "Target evaluation set; defaults to --target.")
  data_root: str = option("", "data",
      "Directory the list files' paths are relative to.")
  download: bool = option(False, "data",
      "Fetch the files of builtin:mnist_*/svhn_* datasets into --data_root (checksummed, "
      "resumable); without it a missing file is an error naming its URL.")
  skip_invalid_images: bool = option(False, "data",
      "Drop missing, empty, truncated or non-image files (and report how many) instead of "
      "stopping.")
  resize_size: int = option(None, "data",
      "Images are resized to this square size before cropping (default: 8/7 of --image_size, "
      "rounded: 256 for 224 as in the paper, 32 for 28).")
  image_size: int = option(224, "data",
      "Crop size fed to the backbone.")
  resize_method: str = option("bicubic", "data",
      "Resize filter: bicubic = PIL's default as the authors' torchvision pipeline "
      "(antialiased, 8-bit values); bilinear = TensorFlow's bilinear without antialiasing.")
  train_crop: str = option(None, "data",
      "Training crop: resized = torchvision's RandomResizedCrop (area 8-100%, aspect ratio "
      "3/4-4/3, resized to --image_size), as the authors; random = a plain random "
      "--image_size crop of the resized image. Default: resized for the ResNets, random for "
      "lenet (digits would not survive 8% crops).")
  random_flip: bool = option(True, "data",
      "Random horizontal flips in training.")
  ten_crop: bool = option(False, "data",
      "Evaluate with 10 crops (4 corners + centre, and their flips), softmax averaged, as the "
      "paper does.")
  balanced_target: str = option("auto", "runs",
      "Target loader: auto = random in run 0 and balanced by the previous runs' predictions "
      "after (BIWAA-I; always random with --prior_matching, and on the label-shift check's "
      "shift path; any other value turns the check off); none = always random; pseudo = "
      "balanced by predictions when there are any; oracle = balanced by the true target "
      "labels (the paper's upper bound; ablation only).")
  prior_matching: bool = option(False, "label shift",
      "For label-shifted targets (some classes far more frequent in the target than others): "
      "from run 1 on, load the source in the class proportions of run 0's target predictions "
      "and the target at random, instead of loading the target class-balanced by "
      "pseudo-labels (the paper). Use with --first_run=source_only; the label-shift check "
      "turns both on when it finds a shift. docs/label_shift.md measures it.")
  first_run: str = option("adapt", "runs",
      "adapt = run 0 adapts (the paper); source_only = run 0 trains on the source alone and "
      "only seeds the later runs (their loaders and bootstrap); use with --runs >= 2.")
  label_shift_check: bool = option(True, "label shift",
      "Guard against label shift (the target's class proportions differing from the "
      "source's), on by default for your data: a source-only probe run first, a labelled "
      "share of the source held out (--heldout_fraction); if the probe's predicted target "
      "class proportions are far from the source's (and the paper's run 0 confirms it, "
      "--label_shift_confirm_tv), the adapted runs start from the probe and load "
      "the source in the probe's predicted proportions (as --first_run=source_only "
      "--prior_matching), else the paper's runs are trained unchanged, on all of the "
      "source. The training returns the source-only probe unless an adapted run is "
      "estimated better by more than the estimates' error bar (then the latest run "
      "estimated within that error of the best) and ends with a verdict (did "
      "adaptation likely help?). The "
      "benchmark flagfiles turn it off (--nolabel_shift_check: the paper).")
  label_shift_threshold: float = option(0.3, "label shift",
      "The label-shift check finds a shift when the probe's predicted target class "
      "proportions are more than this total-variation distance from the source's (0: always "
      "take the label-shift path, 1: never, unless --label_shift_rare_share finds rare "
      "classes).")
  label_shift_rare_share: float = option(0.2, "label shift",
      "The label-shift check also finds a shift when the probe predicts its least-predicted "
      "30% of the classes for less than this fraction of the share the source loads them in: "
      "absent or rare target classes (partial targets), which the total variation alone "
      "barely sees. 0 turns this test off.")
  label_shift_confirm_tv: float = option(0.10, "label shift",
      "Where the probe finds a shift, the paper's run 0 (one BIWAA run on all of the source) "
      "trains next, and the shift is confirmed only if run 0's predicted target class "
      "proportions lie more than this total-variation distance from the source's; if not, "
      "the paper's later runs follow it (no run is lost). A source-only probe's own domain "
      "bias can look like a shift (unshifted USPS -> MNIST: flagged on 8 of 12 seeds). The "
      "threshold is raised (in proportion to it) by the excess sampling noise of a target's "
      "class histogram with fewer images or more classes than the unshifted 10-class digits "
      "targets of 9,298 images or more it was measured on. 0: the probe alone decides, no "
      "confirming run. docs/label_shift.md measures it.")
  heldout_fraction: float = option(None, "label shift",
      "The share of each source class kept out of training, labelled, for calibration and the "
      "label-free estimates of the target's class proportions and of each model's target "
      "accuracy (saved as run_<r>/heldout_probs.npy). Default: 0.05 with the label-shift "
      "check, 0 without it (all of the source trains). Where the check finds no shift, only "
      "the probe leaves the split out: the paper's runs train on all of the source.")
  target_subsample: str = option("none", "label shift",
      "Label-shift experiments on a labelled target: long_tail:R keeps a fraction "
      "R^(-k/(K-1)) of class k's images (class 0 all, the last 1/R; drawn with --seed), "
      "reverse_tail:R the mirror image, step:R keeps 1/R of the second half of the classes, "
      "partial:N leaves the last N classes out (partial-set adaptation); each optionally "
      ":shuffled (the classes' order drawn from --seed); dirichlet:A draws the class "
      "proportions from a Dirichlet(A) with --seed. The target evaluation list too when it is "
      "the same list. none: the target as given.")
  backbone: str = option("resnet50", "model",
      "Backbone: resnet50 (torchvision's ResNet-50 v1.5, the authors' network), "
      "resnet50_keras (Keras' ResNet-50 v1 with Caffe weights), lenet (digits) lenet_bn "
      "(lenet with batch norm on its features: the digits benchmark) or lenet_tllib (tllib's "
      "digits LeNet: conv 20/50, dropout).")
  backbone_weights: str = option(None, "model",
      "imagenet (resnet50: torchvision's weights, fetched once through huggingface_hub; "
      "resnet50_keras: Keras' download), none (random init), or a weights file (resnet50: "
      "torchvision-format .safetensors, or .pth with PyTorch installed; others: a Keras "
      "weights file). Default: imagenet for the ResNets, none for lenet.")
  num_classes: int = option(0, "model",
      "Number of classes; 0: one more than the source's largest label, and then every class "
      "needs a source image (a label with gaps is refused as a likely typo).")
  batch_norm: str = option("per_domain", "model",
      "Training forward pass: per_domain = source and target in two passes, each batch norm "
      "layer normalising (and updating its running statistics with) each domain's own "
      "statistics, as the authors' implementation; joint = one pass over [source; target].")
  bottleneck_dim: int = option(256, "model",
      "Width of the bottleneck features f.", model=True)
  heads: str = option("biwaa", "model",
      "Bottleneck, classifier and discriminator: biwaa = the authors' (Linear bottleneck, "
      "Xavier init, discriminator with dropout); tllib = tllib's (bottleneck Linear + batch "
      "norm + ReLU, discriminator Linear-BN-ReLU x 2, PyTorch's init; its digits network with "
      "--backbone=lenet_tllib --batch_norm=joint).", model=True)
  method: str = option("biwaa", "method",
      "biwaa: weighting + centroid loss; dann: plain adversarial; source_only: no adaptation.")
  feature_weighting: bool = option(None, "method",
      "Backprop-induced feature weighting (default: on for biwaa, off for dann). "
      "--method=dann --feature_weighting gives DANN+BG.", model=True)
  ms_loss: bool = option(None, "method",
      "Moving-semantic centroid loss (default: on for biwaa, off for dann).", model=True)
  weighting_factor: float = option(10.0, "method",
      "lambda: scale of the L2-normalised feature weights.", model=True)
  weighting_offset: float = option(0.0, "method",
      "a: the discriminator sees f * (a + w) = a f + f * w, the unweighted features beside "
      "the weighted ones (DANN's marginal alignment added to the class-conditional one); 0 = "
      "the paper's f * w. The digits configs use 1 (docs/digits.md).", model=True)
  loss_form: str = option("implementation", "method",
      "implementation: L = CE + L_d + coeff (intra + st + tt) + ss with the ramp in the "
      "reversal layer; paper: L = CE + s(i) L_d + s(i) L_MS.")
  grl_ramp_steps: float = option(20000.0, "method",
      "Length of the reversal coefficient ramp 2/(1+exp(-10 i/len)) - 1.", model=True)
  centroid_decay: float = option(0.7, "method",
      "Moving centroid memory: C <- d C + (1-d) mean.", model=True)
  ms_warmup_steps: int = option(0, "method",
      "The centroid loss starts at this step of each run (the memories move from step 0); 0 = "
      "from the first step, as the authors. For networks trained from scratch, whose first "
      "pseudo-labels are a random network's (the digits configs).", model=True)
  within_run_aggregation: bool = option(True, "runs",
      "Aggregate each target sample's probabilities over its visits within a run.", model=True)
  within_run_momentum: float = option(0.9, "runs",
      "Within-run aggregate: p_a <- m p + (1-m) p_a.", model=True)
  across_run_aggregation: bool = option(True, "runs",
      "Aggregate predictions of all earlier runs (else only the previous run's are used).")
  across_run_decay: float = option(0.8, "runs",
      "Weight of each older run relative to the next newer one in the across-run aggregate.")
  bootstrap_steps: int = option(500, "runs",
      "Bootstrap length j_t: in runs after the first, pseudo-labels mix in the earlier runs' "
      "aggregate with weight 1-u(j); 0 disables.", model=True)
  bootstrap_crop_sum: bool = option(True, "runs",
      "With --ten_crop, the bootstrap mixes the earlier runs' predictions summed over the 10 "
      "crops (rows sum to 10, so they outweigh the current run's softmax for longer), as the "
      "authors' implementation; --nobootstrap_crop_sum: their mean (the paper's formula).")
  batch_size: int = option(36, "optimisation",
      "Images per domain per step.")
  balanced_source: bool = option(True, "optimisation",
      "Load the source class-balanced (as the authors' implementation); --nobalanced_source "
      "samples it uniformly (shuffled epochs), as most other libraries do.")
  steps_per_run: int = option(5004, "optimisation",
      "Training steps per run.")
  runs: int = option(1, "runs",
      "Iterative runs (BIWAA-I uses 10), each from the same initial weights, seed + 100 x "
      "run.")
  lr: float = option(0.001, "optimisation",
      "Base learning rate of the inv schedule lr(i) = lr (1 + 0.001 i)^-0.75.")
  head_lr_multiplier: float = option(10.0, "optimisation",
      "Learning-rate multiplier of the new layers (bottleneck, classifier, discriminator).")
  momentum: float = option(0.9, "optimisation",
      "SGD Nesterov momentum.")
  weight_decay: float = option(0.001, "optimisation",
      "Coupled L2 weight decay added to every gradient (the reference's 5e-4 x decay "
      "multiplier 2).", model=True)
  seed: int = option(0, "optimisation",
      "Random seed; run r uses seed + 100 r.")
  model_dir: str = option(None, "output",
      "Output directory: flags, checkpoints, TensorBoard logs, predictions and results.json.")
  checkpoint_every: int = option(500, "output",
      "Save a checkpoint every this many steps.")
  eval_batch_size: int = option(64, "output",
      "Batch size for evaluation.")
  log_every: int = option(50, "output",
      "Write TensorBoard scalars every this many steps.")
  overwrite: bool = option(False, "output",
      "Replace a model_dir that holds a training with different flags.")
  deterministic: bool = option(False, "optimisation",
      "The same bits for the same command, also under CPU load and across kill and resume: "
      "TensorFlow op determinism and one inter-op thread (independent ops of a step run one "
      "after another; each op still uses all cores).")
  progress: bool = option(True, "output",
      "Show training progress: a live bar in a terminal; in a log file or pipe, a line (step, "
      "losses, images/s, ETA) at every tenth of a run and at least once a minute.")
  distribution_strategy: str = option("auto", "scale-out",
      "auto: MirroredStrategy over all local GPUs (or --cpu_replicas logical CPUs) when there "
      "are two or more, else one device; multi_worker_mirrored takes the cluster from "
      "TF_CONFIG. --batch_size stays the global batch per domain.")
  cpu_replicas: int = option(0, "scale-out",
      "Split the CPU into this many logical devices (to run and test MirroredStrategy without "
      "GPUs).")
  sync_batch_norm: bool = option(True, "scale-out",
      "With several replicas, compute the backbone's batch-normalisation statistics over the "
      "global batch (an all-reduce per layer), as one device does; --nosync_batch_norm: each "
      "replica normalises its own share.")
  mixed_precision: str = option("none", "scale-out",
      "Compute the backbone, bottleneck and discriminator in bfloat16 (GPUs from Ampere on, "
      "TPUs, recent CPUs) or float16 (any CUDA GPU; with dynamic loss scaling). Variables, "
      "the classifier, the weighting and the losses stay float32.")
  jit_compile: bool = option(False, "scale-out",
      "Compile the training step with XLA (a GPU option: slower for ResNet-50 on CPU).")
  dry_run: bool = option(False, "output",
      "Run every check of a real training (flags, lists, image files, model_dir, devices, "
      "backbone and its weights), print the plan and exit without training or writing "
      "anything.")

  @property
  def adversarial(self):
    return method_switches(self.method)["adversarial"]


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
REQUIRED = ("source", "target", "model_dir")


def default(name):
  """The default of option `name` (the command line's flag default)."""
  return FIELDS[name].default


def help_text(name):
  return FIELDS[name].metadata["help"]


def group(name):
  return FIELDS[name].metadata["group"]


def method_switches(method):
  """What --method switches on by default: the adversarial branch, the feature weighting
  and the centroid loss."""
  return {"adversarial": method != "source_only", "feature_weighting": method == "biwaa",
          "ms_loss": method == "biwaa"}


def model_options(cfg):
  """The options the model's MethodConfig takes (model/biwaa.py): the fields marked
  model=True as they are, and four read off other options."""
  values = {name: getattr(cfg, name) for name, f in FIELDS.items() if f.metadata["model"]}
  values.update(adversarial=cfg.adversarial, paper_loss=cfg.loss_form == "paper",
                per_domain_batch_norm=cfg.batch_norm == "per_domain",
                loss_scaling=cfg.mixed_precision == "float16")
  return values


def _require(ok, name, message):
  if not ok:
    raise UserError(f"--{name}: {message}")


def make_config(**options):
  """A resolved, checked TrainConfig from option names and values (unknown names refused)."""
  check_names(options)
  return resolve(TrainConfig(**options))


def check_names(names, known=()):
  """Refuses names that are not options (or in `known`), with the closest option's name."""
  import difflib
  valid = set(FIELDS) | set(known)
  unknown = sorted(set(names) - valid)
  if unknown:
    hints = [f"{name} (did you mean {close[0]}?)" if (
        close := difflib.get_close_matches(name, sorted(valid), n=1)) else name
        for name in unknown]
    raise UserError(f"unknown option(s) {', '.join(hints)}; python -m biwaa_tf.main --help "
                    "lists them")


def resolve(cfg):
  """Fills the derived defaults and checks every value; returns a new TrainConfig."""
  for name in REQUIRED:
    _require(getattr(cfg, name), name, "is required")
  for name, choices in CHOICES.items():
    value = getattr(cfg, name)
    _require(value is None or value in choices, name,
             f"{value!r} is not one of {', '.join(choices)}")
  switches = method_switches(cfg.method)
  values = dataclasses.asdict(cfg)
  for name in ("feature_weighting", "ms_loss"):
    values[name] = switches[name] if values[name] is None else values[name]
  values["target_eval"] = cfg.target_eval or cfg.target
  values["resize_size"] = cfg.resize_size or default_resize_size(cfg.image_size)
  values["backbone_weights"] = cfg.backbone_weights or default_backbone_weights(cfg.backbone)
  values["train_crop"] = cfg.train_crop or default_train_crop(cfg.backbone)
  _require(cfg.num_classes >= 0, "num_classes", f"must be >= 0, got {cfg.num_classes}")
  for name in ("resize_size", "image_size", "batch_size", "steps_per_run", "runs",
               "checkpoint_every", "eval_batch_size", "log_every", "bottleneck_dim"):
    _require(values[name] > 0, name, f"must be positive, got {values[name]}")
  _require(cfg.image_size <= values["resize_size"], "image_size",
           f"{cfg.image_size} is larger than --resize_size={values['resize_size']}")
  _require(cfg.lr > 0, "lr", f"must be positive, got {cfg.lr}")
  _require(cfg.weighting_factor >= 0, "weighting_factor", "must be >= 0")
  _require(cfg.weighting_offset >= 0, "weighting_offset", "must be >= 0")
  _require(cfg.bootstrap_steps >= 0, "bootstrap_steps", "must be >= 0")
  _require(0 <= cfg.across_run_decay <= 1, "across_run_decay", "must be in [0, 1]")
  _require(0 <= cfg.centroid_decay <= 1, "centroid_decay", "must be in [0, 1]")
  _require(cfg.ms_warmup_steps >= 0, "ms_warmup_steps", "must be >= 0")
  _require(0 <= cfg.within_run_momentum <= 1, "within_run_momentum", "must be in [0, 1]")
  _require(cfg.grl_ramp_steps > 0, "grl_ramp_steps", "must be positive")
  _require(cfg.cpu_replicas >= 0, "cpu_replicas", "must be >= 0")
  _require(0 <= cfg.label_shift_threshold <= 1, "label_shift_threshold", "must be in [0, 1]")
  _require(0 <= cfg.label_shift_rare_share <= 1, "label_shift_rare_share", "must be in [0, 1]")
  _require(0 <= cfg.label_shift_confirm_tv <= 1, "label_shift_confirm_tv", "must be in [0, 1]")
  _require(cfg.heldout_fraction is None or 0 <= cfg.heldout_fraction < 0.5, "heldout_fraction",
           "must be in [0, 0.5)")
  parse_subsample(cfg.target_subsample)
  _require(not (cfg.prior_matching and cfg.balanced_target in ("pseudo", "oracle")),
           "balanced_target", f"{cfg.balanced_target} loads the target class-balanced, but "
           "--prior_matching loads it at random and matches the source to it instead")
  _require(cfg.first_run == "adapt" or cfg.adversarial, "first_run",
           "source_only needs an adversarial --method (dann or biwaa) for the later runs")
  if cfg.backbone.startswith("lenet"):
    _require(values["backbone_weights"] != "imagenet", "backbone_weights",
             "lenet has no ImageNet weights; use none or a weights file")
  if cfg.method == "source_only":
    _require(not values["feature_weighting"], "feature_weighting",
             "needs an adversarial method (--method=dann or biwaa)")
    _require(not values["ms_loss"], "ms_loss",
             "needs an adversarial method (--method=dann or biwaa)")
  return TrainConfig(**values)


def source_only_config(cfg):
  """cfg without the adversarial branch (the source-only run and probe)."""
  return dataclasses.replace(cfg, method="source_only", feature_weighting=False, ms_loss=False)


def run_config(cfg, run):
  """The configuration run `run` trains with: --first_run=source_only makes run 0 a
  source-only run (its predictions seed the later runs' loaders and bootstrap)."""
  if run == 0 and cfg.first_run == "source_only":
    return source_only_config(cfg)
  return cfg


def heldout_fraction(cfg):
  """The share of each source class held out of training (labelled, for the label-free
  estimates of biwaa_tf/trust.py): --heldout_fraction, by default 5% when the label-shift
  check runs and none otherwise (the benchmarks train on all of the source). With the
  check it leaves the probe's training, and the runs' on a shift only
  (iterative.paper_runs_domains)."""
  if cfg.heldout_fraction is not None:
    return cfg.heldout_fraction
  return HELDOUT_FRACTION if probes_label_shift(cfg) else 0.0


HELDOUT_FRACTION = 0.05


def probes_label_shift(cfg):
  """Whether the training starts with the label-shift check's source-only probe: on by
  default for an adversarial BIWAA-I whose runs start by adapting (--first_run=adapt)
  and load the target as BIWAA-I does (--balanced_target=auto: the check's shift path
  replaces that loader); the other settings already say how to treat label shift."""
  return (cfg.label_shift_check and cfg.adversarial and cfg.first_run == "adapt"
          and not cfg.prior_matching and cfg.balanced_target == "auto")


SUBSAMPLE_KINDS = ("long_tail", "reverse_tail", "step", "partial", "dirichlet")  # data/lists.py


def parse_subsample(spec):
  """'none' -> None; 'long_tail:20' -> ('long_tail', 20.0, False); 'long_tail:20:shuffled'
  -> ('long_tail', 20.0, True) (the classes' order drawn from the seed); 'dirichlet:0.3'
  -> ('dirichlet', 0.3, True); anything else refused."""
  if spec in (None, "none"):
    return None
  kind, _, rest = str(spec).partition(":")
  ratio, _, order = rest.partition(":")
  try:
    value = float(ratio)
  except ValueError:
    value = 0.0
  ok = (kind in SUBSAMPLE_KINDS and order in ("", "shuffled")
        and (value > 0 if kind == "dirichlet" else value >= 1)
        and (kind != "partial" or value == int(value)))
  _require(ok, "target_subsample",
           f"{spec!r}: use none, long_tail:R, reverse_tail:R or step:R with R >= 1 (largest "
           "/ smallest class), partial:N (N classes absent), each optionally :shuffled (the "
           "classes' order drawn from --seed), or dirichlet:A (class proportions drawn from "
           "a Dirichlet(A) with --seed, A > 0)")
  return kind, value, order == "shuffled" or kind == "dirichlet"


def default_resize_size(image_size):
  """The resize before the crop: 8/7 of the crop (224 -> 256, as the paper; 28 -> 32)."""
  return int(round(image_size * 8 / 7))


def default_backbone_weights(backbone):
  """Pretrained weights where the backbone has them (the ResNets), else none."""
  return "imagenet" if backbone.startswith("resnet") else "none"


def default_train_crop(backbone):
  """torchvision's RandomResizedCrop for the ImageNet networks; a plain random crop for
  the digits network (an 8% crop of a digit is no longer a digit) and user backbones."""
  return "resized" if backbone.startswith("resnet") else "random"


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


def config_from_flags_text(text, source="flags.txt"):
  """The TrainConfig a `resolved_flags_text` describes (options it lacks: defaults;
  options it has that this version does not know: ignored)."""
  values = {}
  for number, line in enumerate(text.splitlines(), 1):
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    if not line.startswith("--"):
      raise UserError(f"{source}:{number}: not a --flag line: {line[:60]!r}")
    name, eq, value = line[2:].partition("=")
    if not eq:  # --name / --noname
      name, value = (name[2:], False) if name.startswith("no") and name[2:] in FIELDS \
          else (name, True)
    if name not in FIELDS:
      continue
    values[name] = _typed(FIELDS[name], value)
  return resolve(TrainConfig(**values))


def _typed(field, value):
  """A flags-file value as the option's type (field.type: str, int, float or bool)."""
  if isinstance(value, bool):
    return value
  if value == "None":
    return None
  return field.type(value)
