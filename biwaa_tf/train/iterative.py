"""BIWAA-I: R runs, each loading the target class-balanced by earlier runs' predictions.

Resume order (re-running the same command on the same model_dir):
  1. model_dir/flags.txt must match the resolved flags (else refuse, or --overwrite).
  2. A run whose run_<r>/run_result.json exists is complete: it is never recomputed;
     its target_probs.npy feeds the across-run aggregate.
  3. The first incomplete run restores run_<r>/ckpt (weights, both optimizers, step,
     centroid memories, aggregation tables, input iterator) and continues.
"""

import logging
import os
import shutil
import signal

import numpy as np

from biwaa_tf import io_utils
from biwaa_tf.data import lists
from biwaa_tf.errors import UserError
from biwaa_tf.flags import resolved_flags_text
from biwaa_tf.model import backbones
from biwaa_tf.train import aggregation, distribute
from biwaa_tf.train import run as run_lib

FLAGS_FILE = "flags.txt"
RESULTS_FILE = "results.json"
EXPORT_DIR = "export"
# Flags that do not change what is trained: a resumed command may differ in them.
_RESUME_FREE = ("runs", "overwrite", "progress", "log_every", "checkpoint_every",
                "eval_batch_size", "dry_run", "distribution_strategy", "cpu_replicas",
                "jit_compile")


def prepare_data(cfg, check_images=True):
  """Reads and validates the three datasets; writes nothing."""
  normalization = backbones.normalization(cfg.backbone)  # refuses an unknown one first
  source = lists.load_image_list(cfg.source, cfg.data_root)
  if not source.labelled:
    raise UserError(f"{source.name}: the source needs a label on every line")
  k = len(source.class_names)
  target = lists.load_image_list(cfg.target, cfg.data_root, k)
  lists.check_same_classes(source, target)
  target_eval = target
  if cfg.target_eval != cfg.target:
    target_eval = lists.load_image_list(cfg.target_eval, cfg.data_root, k)
    lists.check_same_classes(source, target_eval)
  if check_images:
    source = _validated(source, cfg.skip_invalid_images)
    same = target_eval is target
    target = _validated(target, cfg.skip_invalid_images)
    target_eval = target if same else _validated(target_eval, cfg.skip_invalid_images)
  if cfg.balanced_target == "oracle" and not target.labelled:
    raise UserError(f"--balanced_target=oracle needs labels in {target.name}")
  return run_lib.Domains(source, target, target_eval, source.class_names,
                         normalization)


def _validated(image_list, skip_invalid):
  kept, dropped = lists.validate_images(image_list, skip_invalid)
  if dropped:
    logging.warning("%s: dropped %d invalid image(s)", image_list.name, dropped)
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


def prepare_model_dir(cfg, domains):
  """Creates model_dir, or checks that it holds this same training."""
  flags_text = resolved_flags_text(cfg)
  path = os.path.join(cfg.model_dir, FLAGS_FILE)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = f.read()
    changed = _changed_flags(old, flags_text)
    if changed:
      if not cfg.overwrite:
        raise UserError(f"{cfg.model_dir} holds a training with different flags "
                        f"({', '.join(changed[:4])}); use another --model_dir or --overwrite")
      shutil.rmtree(cfg.model_dir)
  elif os.path.isdir(cfg.model_dir) and os.listdir(cfg.model_dir) and not cfg.overwrite:
    raise UserError(f"--model_dir={cfg.model_dir}: exists, is not empty and holds no "
                    f"{FLAGS_FILE}; use another --model_dir or --overwrite")
  os.makedirs(cfg.model_dir, exist_ok=True)
  io_utils.atomic_write_text(path, flags_text)
  io_utils.atomic_write_json(os.path.join(cfg.model_dir, "class_names.json"),
                             list(domains.class_names))


def target_balance_labels(cfg, domains, aggregate):
  """The labels the next run's target loader balances by (None: random loading)."""
  if cfg.balanced_target == "oracle":
    return domains.target.labels
  if cfg.balanced_target == "none" or aggregate is None:
    return None
  return np.argmax(aggregate, axis=1).astype(np.int64)


def earlier_aggregate(cfg, run_dirs):
  """Across-run aggregate of the saved target predictions of the given runs."""
  if not run_dirs:
    return None
  probs = [np.load(os.path.join(d, run_lib.TARGET_PROBS)) for d in run_dirs]
  if not cfg.across_run_aggregation:
    probs = probs[-1:]
  return aggregation.across_run_aggregate(probs, cfg.across_run_decay)


def train(cfg, strategy=None):
  """Trains cfg.runs runs (resuming), writes results.json, returns it."""
  import tensorflow as tf
  strategy = strategy or tf.distribute.get_strategy()
  distribute.check_batch(strategy, cfg.batch_size)
  domains = prepare_data(cfg)
  chief = distribute.is_chief(strategy)
  if chief:
    prepare_model_dir(cfg, domains)
  logging.info("source %s: %d images; target %s: %d; eval %s: %d; %d classes",
               domains.source.name, domains.source.size, domains.target.name,
               domains.target.size, domains.target_eval.name, domains.target_eval.size,
               domains.num_classes)
  results, run_dirs, trained = [], [], False
  for r in range(cfg.runs):
    run_dir = os.path.join(cfg.model_dir, f"run_{r}")
    done = os.path.join(run_dir, run_lib.RESULT_FILE)
    if os.path.exists(done):
      result = io_utils.read_json(done)
      logging.info("run %d: complete, accuracy %s (skipped)", r, result.get("accuracy"))
    else:
      agg = earlier_aggregate(cfg, run_dirs)
      result = run_lib.train_run(cfg, domains, r, run_dir, agg,
                                 target_balance_labels(cfg, domains, agg), strategy)
      trained = True
      if not chief:
        run_dirs.append(run_dir)
        continue
      if run_lib._FAULT == f"{r}:done":
        os.kill(os.getpid(), signal.SIGKILL)
    results.append(result)
    run_dirs.append(run_dir)
  if not chief:
    return None
  export_dir = os.path.join(cfg.model_dir, EXPORT_DIR)
  if trained or not os.path.exists(export_dir):
    run_lib.export_run(cfg, domains, cfg.runs - 1, run_dirs[-1], export_dir)
    logging.info("exported the last run's model to %s", export_dir)
  final = results[-1]
  summary = {"runs": results, "final_accuracy": final["accuracy"],
             "final_per_class_accuracy": final["per_class_accuracy"],
             "method": cfg.method, "num_classes": domains.num_classes}
  io_utils.atomic_write_json(os.path.join(cfg.model_dir, RESULTS_FILE), summary)
  return summary


def plan(cfg):
  """The plan of a training as text (lists are read, images are not)."""
  d = prepare_data(cfg, check_images=False)
  on = {True: "on", False: "off"}
  lines = [
      f"method    {cfg.method} (feature weighting {on[cfg.feature_weighting]}, "
      f"MS loss {on[cfg.ms_loss]}, loss form {cfg.loss_form})",
      f"runs      {cfg.runs} x {cfg.steps_per_run} steps, batch {cfg.batch_size} source + "
      f"{cfg.batch_size} target, lr {cfg.lr:g}, target loader {cfg.balanced_target}",
      f"backbone  {cfg.backbone} ({cfg.backbone_weights}), {cfg.image_size} px crops of "
      f"{cfg.resize_size}, {'10-crop' if cfg.ten_crop else 'centre-crop'} evaluation",
  ]
  for role, ds in (("source", d.source), ("target", d.target), ("eval", d.target_eval)):
    labels = "labelled" if ds.labelled else "unlabelled"
    lines.append(f"{role:<9} {ds.name}: {ds.size} images, {labels}")
  lines.append(f"classes   {d.num_classes}; images under --data_root={cfg.data_root or '.'}")
  lines.append(f"output    {cfg.model_dir}/ (flags.txt, run_0..run_{cfg.runs - 1}/, "
               f"export/, results.json)")
  return "\n".join(lines)


def format_table(summary):
  """The per-run results as an aligned text table."""
  def pct(v):
    return "  n/a " if v is None else f"{100 * v:6.2f}"
  rows = ["run  accuracy  per-class  hist-TV"]
  for r in summary["runs"]:
    tv = r.get("histogram_tv_distance")
    rows.append(f"{r['run']:>3}  {pct(r['accuracy'])}    {pct(r['per_class_accuracy'])}"
                f"    {'  n/a' if tv is None else f'{tv:.3f}'}")
  rows.append(f"final {pct(summary['final_accuracy'])}    "
              f"{pct(summary['final_per_class_accuracy'])}   (%)")
  return "\n".join(rows)


def restore_trained(model_dir, run=None):
  """(cfg, domains, model) of a finished training, from its flags.txt and checkpoint.

  `run` defaults to the last run with a checkpoint. Uses the global absl FLAGS.
  """
  import tensorflow as tf
  from absl import flags as absl_flags

  from biwaa_tf.flags import config_from_flags, define_flags
  define_flags()
  path = os.path.join(model_dir, FLAGS_FILE)
  if not os.path.exists(path):
    raise UserError(f"{model_dir}: no {FLAGS_FILE}; not a training directory")
  fv = absl_flags.FLAGS
  fv.unparse_flags()
  fv(["biwaa_tf", f"--flagfile={path}"])
  cfg = config_from_flags(fv)
  if run is None:
    done = [r for r in range(cfg.runs)
            if tf.train.latest_checkpoint(os.path.join(model_dir, f"run_{r}", "ckpt"))]
    if not done:
      raise UserError(f"{model_dir}: no checkpoint found")
    run = done[-1]
  domains = prepare_data(cfg, check_images=False)
  model = run_lib.restore_model(cfg, domains, run, os.path.join(model_dir, f"run_{run}"))
  return cfg, domains, model
