"""Everything checked before TensorFlow starts: the datasets, the model_dir, the plan.

Nothing here imports TensorFlow, so bad flags, lists or images, and a model_dir
that holds another training, are refused within a second or two.
"""

import glob
import logging
import os
import shutil

import numpy as np

from biwaa_tf import io_utils
from biwaa_tf import model_dir_layout as layout
from biwaa_tf.config import (
  heldout_fraction,
  parse_subsample,
  probes_label_shift,
  resolved_flags_text,
)
from biwaa_tf.data import lists
from biwaa_tf.errors import UserError
from biwaa_tf.model.backbones import normalization as backbone_normalization
from biwaa_tf.train import lock

log = logging.getLogger(__name__)

# Flags that do not change what is trained: a resumed command may differ in them.
_RESUME_FREE = ("runs", "overwrite", "download", "progress", "log_every", "checkpoint_every",
                "eval_batch_size", "dry_run", "distribution_strategy", "cpu_replicas",
                "jit_compile", "sync_batch_norm")


def prepare_data(cfg, check_images=True, load=None):
  """Reads and validates the three datasets; writes nothing.

  `load(spec, num_classes)` reads one dataset (default: a list file, folder or builtin
  under --data_root; the Python API passes one that also knows in-memory arrays)."""
  load = load or (lambda spec, k: _load_files(spec, cfg, k))
  normalization = backbone_normalization(cfg.backbone)  # refuses an unknown one first
  if cfg.backbone_weights not in ("imagenet", "none") and not os.path.isfile(
      cfg.backbone_weights):
    raise UserError(f"--backbone_weights={cfg.backbone_weights}: no such file")
  source = load(cfg.source, cfg.num_classes or None)
  if not source.labelled:
    raise UserError(f"{source.name}: the source needs a label on every line")
  if not cfg.num_classes:
    lists.check_every_class_present(source)
  elif len(source.class_names) != cfg.num_classes:
    raise UserError(f"--num_classes={cfg.num_classes}, but {source.name} has "
                    f"{len(source.class_names)} class folders")
  k = len(source.class_names)
  if k < 2:
    raise UserError(f"{source.name}: the source has {k} class; classification needs at "
                    "least 2")
  target = lists.match_classes(source, load(cfg.target, k))
  target_eval = target
  if cfg.target_eval != cfg.target:
    target_eval = lists.match_classes(source, load(cfg.target_eval, k))
  if check_images:
    source = _validated(source, cfg.skip_invalid_images)
    same = target_eval is target
    target = _validated(target, cfg.skip_invalid_images)
    target_eval = target if same else _validated(target_eval, cfg.skip_invalid_images)
  if cfg.balanced_target == "oracle" and not target.labelled:
    raise UserError(f"--balanced_target=oracle needs labels in {target.name}")
  target, target_eval = subsample_target(cfg, target, target_eval)
  heldout = unsplit = None
  fraction = heldout_fraction(cfg)
  if fraction > 0:
    unsplit = source
    source, heldout, alone = lists.split_heldout(source, fraction, cfg.seed)
    if alone:
      log.warning("held-out source split: class(es) %s have one source image, which trains; "
                  "no held-out image represents them", alone)
  return lists.Domains(source, target, target_eval, source.class_names, normalization,
                       heldout, unsplit)


def _load_files(spec, cfg, num_classes):
  """A dataset named on the command line (or in a flags.txt); a domain that adapt() was
  given as NumPy arrays (recorded as array:<role>:...) is not on disk: said in one line."""
  if spec.startswith(lists.ARRAY):
    raise UserError(f"{spec.split(':')[1]}: this training was given NumPy arrays "
                    f"({spec}), which are not kept on disk; call biwaa_tf.adapt() again "
                    "with the same arrays and model_dir (it resumes and returns the model)")
  return lists.load_image_list(spec, cfg.data_root, num_classes, cfg.download)


def subsample_target(cfg, target, target_eval):
  """--target_subsample: the label-shifted target (and evaluation list, if the same)."""
  shift = parse_subsample(cfg.target_subsample)
  if shift is None:
    return target, target_eval
  if not target.labelled:
    raise UserError(f"--target_subsample={cfg.target_subsample} needs labels in {target.name}")
  k = len(target.class_names)
  shifted = target.subset(lists.label_shift_mask(target.labels, k, *shift, seed=cfg.seed))
  log.info("target %s subsampled %s: %d of %d images, class counts %s", target.name,
           cfg.target_subsample, shifted.size, target.size,
           np.bincount(shifted.labels, minlength=k).tolist())
  return shifted, shifted if target_eval is target else target_eval


def _validated(image_list, skip_invalid):
  kept, dropped = lists.validate_images(image_list, skip_invalid)
  if dropped:
    log.warning("%s: dropped %d invalid image(s)", image_list.name, dropped)
  return kept


def _flag_lines(text):
  """{flag name: its line} of a resolved flags file, without the resume-free flags."""
  lines = {}
  for line in text.splitlines():
    name = line.lstrip("-").split("=")[0]
    if name.startswith("no") and "=" not in line:
      name = name[2:]
    if name not in _RESUME_FREE:
      lines[name] = line
  return lines


def _changed_flags(old_text, new_text):
  """Lines that differ; a flag the older file does not know (added later) is not a change."""
  old, new = _flag_lines(old_text), _flag_lines(new_text)
  return sorted(new[k] for k in new if k in old and old[k] != new[k])


def check_model_dir(cfg):
  """Refuses a model_dir that a running training holds, or that holds another training
  (unless --overwrite); reads only.

  Returns True when model_dir holds this same training (a resume).
  """
  lock.check_free(cfg.model_dir, "starting a second training there" if not cfg.overwrite
                  else "overwriting it")
  return _check_flags(cfg)


def _check_flags(cfg):
  """check_model_dir without the lock (for its holder)."""
  path = layout.path(cfg.model_dir, layout.FLAGS)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      changed = _changed_flags(f.read(), resolved_flags_text(cfg))
    if changed and not cfg.overwrite:
      raise UserError(f"{cfg.model_dir} holds a training with different flags "
                      f"({', '.join(changed[:4])}); use another --model_dir or --overwrite")
    return not changed
  if _contents(cfg.model_dir) and not cfg.overwrite:
    raise UserError(f"--model_dir={cfg.model_dir}: exists, is not empty and holds no "
                    f"{layout.FLAGS}; use another --model_dir or --overwrite")
  return False


def _contents(model_dir):
  """model_dir's entries but its lock file ([] when it does not exist)."""
  if not os.path.isdir(model_dir):
    return []
  return [n for n in os.listdir(model_dir) if n != layout.LOCK]


def clear_model_dir(model_dir):
  """Removes everything in model_dir but its lock file (held by this process)."""
  for name in _contents(model_dir):
    path = os.path.join(model_dir, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)


def remove_leftovers(model_dir):
  """Removes what a killed process leaves of its atomic writes: .tmp-* files (io_utils)
  and .export-* directories (export.py), in model_dir and its run directories."""
  tmp, export = layout.SCRATCH_PATTERNS
  for parent in [model_dir] + layout.run_dirs(model_dir):
    for path in glob.glob(os.path.join(glob.escape(parent), tmp)):
      os.remove(path)
    for path in glob.glob(os.path.join(glob.escape(parent), export)):
      shutil.rmtree(path, ignore_errors=True)


def prepare_model_dir(cfg, domains):
  """Creates model_dir (clearing it under --overwrite), or checks it holds this training.
  The caller holds model_dir's lock (lock.ModelDirLock)."""
  same = _check_flags(cfg)
  if not same and os.path.exists(layout.path(cfg.model_dir, layout.FLAGS)):
    clear_model_dir(cfg.model_dir)  # another training, and --overwrite
  os.makedirs(cfg.model_dir, exist_ok=True)
  remove_leftovers(cfg.model_dir)
  io_utils.atomic_write_text(layout.path(cfg.model_dir, layout.FLAGS), resolved_flags_text(cfg))
  io_utils.atomic_write_json(layout.path(cfg.model_dir, layout.CLASS_NAMES),
                             list(domains.class_names))


def plan(cfg, domains=None):
  """The plan of a training as text (`domains` as prepare_data returns them)."""
  d = domains or prepare_data(cfg, check_images=False)
  on = {True: "on", False: "off"}
  weighting = on[cfg.feature_weighting]
  if cfg.feature_weighting and cfg.weighting_offset:
    weighting += f" + offset {cfg.weighting_offset:g}"
  lines = [
      f"method    {cfg.method} (feature weighting {weighting}, "
      f"MS loss {on[cfg.ms_loss]}, loss form {cfg.loss_form})",
      f"runs      {cfg.runs} x {cfg.steps_per_run} steps, batch {cfg.batch_size} source + "
      f"{cfg.batch_size} target, lr {cfg.lr:g}",
      f"backbone  {cfg.backbone} (weights: {cfg.backbone_weights}), images resized to "
      f"{cfg.resize_size} px, {cfg.image_size} px crops, "
      f"{'10-crop' if cfg.ten_crop else 'centre-crop'} evaluation",
      f"loaders   source {'class-balanced' if cfg.balanced_source else 'uniform'}, "
      f"target {cfg.balanced_target}"
      + ("" if cfg.target_subsample == "none" else f", target subsampled {cfg.target_subsample}"),
  ]
  if cfg.prior_matching:
    lines.append("          from run 1: source in run 0's predicted target class "
                 "proportions (prior matching), target at random")
  if cfg.first_run == "source_only":
    lines.append("          run 0: source only (seeds the later runs)")
  for role, ds in (("source", d.source), ("target", d.target), ("eval", d.target_eval)):
    labels = "labelled" if ds.labelled else "unlabelled"
    lines.append(f"{role:<9} {ds.name}: {ds.size} images, {labels}")
  if probes_label_shift(cfg):
    confirm = (f"; where it finds a shift, the paper's run 0 confirms it (TV > "
               f"{cfg.label_shift_confirm_tv:g}, scaled by the target's sampling noise)"
               if cfg.label_shift_confirm_tv > 0 else "")
    lines.append(f"check     label shift: a source-only probe first{confirm}; a shift: the "
                 "adapted runs start from the probe, the source in its predicted proportions; "
                 "none: the paper's runs")
  if d.heldout is not None:
    use = ("the probe does not train on them, nor do the runs on a label shift (without one "
           "the paper's runs train on all of the source)" if probes_label_shift(cfg) else
           "not trained on")
    lines.append(f"held out  {d.heldout.size} labelled source images "
                 f"({100 * heldout_fraction(cfg):g}% of each class, seed {cfg.seed}) for "
                 f"calibration and the label-free estimates: {use}")
  lines.append(f"classes   {d.num_classes}; images under --data_root={cfg.data_root or '.'}")
  lines.append(f"output    {cfg.model_dir}/ (flags.txt, run_0..run_{cfg.runs - 1}/, "
               f"export/, results.json)")
  return "\n".join(lines)
