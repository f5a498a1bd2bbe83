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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Every option of a training (None: derived from other options by `resolve`)."""
  source: str = None
  target: str = None
  target_eval: str = None           # None: the target
  data_root: str = ""
  download: bool = False
  skip_invalid_images: bool = False
  resize_size: int = None           # None: 8/7 of image_size
  image_size: int = 224
  resize_method: str = "bicubic"
  train_crop: str = None            # None: by backbone
  random_flip: bool = True
  ten_crop: bool = False
  balanced_target: str = "auto"
  prior_matching: bool = False      # label-shifted targets: source sampled by the target prior
  first_run: str = "adapt"
  label_shift_check: bool = True    # a source-only probe run decides the path (label_shift.py)
  label_shift_threshold: float = 0.3  # TV of the probe's predicted prior that counts as shift
  label_shift_rare_share: float = 0.2  # rare-classes share that counts as shift (label_shift.py)
  heldout_fraction: float = None    # None: 0.05 with the label-shift check, else 0
  target_subsample: str = "none"    # none | long_tail:R | reverse_tail:R | step:R | partial:N
  backbone: str = "resnet50"
  backbone_weights: str = None      # None: by backbone
  num_classes: int = 0
  batch_norm: str = "per_domain"
  bottleneck_dim: int = 256
  heads: str = "biwaa"              # whose bottleneck and discriminator (model/biwaa._heads)
  method: str = "biwaa"
  feature_weighting: bool = None    # None: by method
  ms_loss: bool = None              # None: by method
  weighting_factor: float = 10.0
  weighting_offset: float = 0.0
  loss_form: str = "implementation"
  grl_ramp_steps: float = 20000.0
  centroid_decay: float = 0.7
  ms_warmup_steps: int = 0
  within_run_aggregation: bool = True
  within_run_momentum: float = 0.9
  across_run_aggregation: bool = True
  across_run_decay: float = 0.8
  bootstrap_steps: int = 500
  bootstrap_crop_sum: bool = True
  batch_size: int = 36
  balanced_source: bool = True
  steps_per_run: int = 5004
  runs: int = 1
  lr: float = 1e-3
  head_lr_multiplier: float = 10.0
  momentum: float = 0.9
  weight_decay: float = 1e-3
  seed: int = 0
  model_dir: str = None
  checkpoint_every: int = 500
  eval_batch_size: int = 64
  log_every: int = 50
  overwrite: bool = False
  deterministic: bool = False
  progress: bool = True
  distribution_strategy: str = "auto"
  cpu_replicas: int = 0
  sync_batch_norm: bool = True
  mixed_precision: str = "none"
  jit_compile: bool = False
  dry_run: bool = False

  @property
  def adversarial(self):
    return self.method != "source_only"


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def default(name):
  """The default of option `name` (the command line's flag default)."""
  return FIELDS[name].default


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
  for name in ("source", "target", "model_dir"):
    _require(getattr(cfg, name), name, "is required")
  for name, choices in CHOICES.items():
    value = getattr(cfg, name)
    _require(value is None or value in choices, name,
             f"{value!r} is not one of {', '.join(choices)}")
  default_on = cfg.method == "biwaa"
  values = dataclasses.asdict(cfg)
  values["feature_weighting"] = (default_on if cfg.feature_weighting is None
                                 else cfg.feature_weighting)
  values["ms_loss"] = default_on if cfg.ms_loss is None else cfg.ms_loss
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
  check runs and none otherwise (the benchmarks train on all of the source)."""
  if cfg.heldout_fraction is not None:
    return cfg.heldout_fraction
  return HELDOUT_FRACTION if probes_label_shift(cfg) else 0.0


HELDOUT_FRACTION = 0.05


def probes_label_shift(cfg):
  """Whether the training starts with the label-shift check's source-only probe: on by
  default for an adversarial BIWAA-I whose runs start by adapting (--first_run=adapt)
  and load the target by pseudo-labels; the other settings already say how to treat
  label shift."""
  return (cfg.label_shift_check and cfg.adversarial and cfg.first_run == "adapt"
          and not cfg.prior_matching and cfg.balanced_target in ("auto", "pseudo"))


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
