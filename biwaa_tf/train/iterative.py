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

import numpy as np

from biwaa_tf import io_utils
from biwaa_tf.config import config_from_flags_text, run_config
from biwaa_tf.errors import UserError
from biwaa_tf.model import aggregation, label_shift
from biwaa_tf.train import distribute, lock
from biwaa_tf.train import run as run_lib
from biwaa_tf.train.preflight import FLAGS_FILE, prepare_data, prepare_model_dir

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
EXPORT_DIR = "export"


def target_balance_labels(cfg, domains, aggregate):
  """The labels the next run's target loader balances by (None: random loading)."""
  if cfg.balanced_target == "oracle":
    return domains.target.labels
  if cfg.balanced_target == "none" or aggregate is None or cfg.prior_matching:
    return None
  return np.argmax(aggregate, axis=1).astype(np.int64)


def source_distribution(cfg, domains, run_dirs):
  """--prior_matching: the class proportions the later runs load the source in: run 0's
  predicted class histogram (floored, label_shift.sampling_distribution), the same for
  every later run. None otherwise, or before the first run.

  Run 0 only: the histograms of adapted runs follow their own alignment (which is what
  goes wrong under label shift), and re-estimating from each run feeds a run's errors
  into the next one's source (measured: digits M->U-LT seed 0, 88.3% after run 1, 84.1%
  after run 2 re-estimated). Of the estimates from the source-only run, the argmax
  histogram was the closest to the true prior (README, label shift)."""
  if not cfg.prior_matching or not run_dirs:
    return None
  probs = np.load(os.path.join(run_dirs[0], run_lib.TARGET_PROBS))
  counts = np.bincount(np.argmax(probs, axis=1), minlength=domains.num_classes)
  return label_shift.sampling_distribution(counts)


def earlier_aggregate(cfg, run_dirs):
  """Across-run aggregate of the saved target predictions of the given runs."""
  if not run_dirs:
    return None
  probs = [np.load(os.path.join(d, run_lib.TARGET_PROBS)) for d in run_dirs]
  if not cfg.across_run_aggregation:
    probs = probs[-1:]
  return aggregation.across_run_aggregate(probs, cfg.across_run_decay)


def collapse_message(run, result, limit=0.99, min_images=20):
  """Why run `run` failed if its target predictions fall (almost) all in one class, else
  None. Such a run must not feed the next one: its 'class-balanced' loader would load one
  class (the training stops there, in one line; a last run is reported with a warning)."""
  hist = np.asarray(result.get("predicted_histogram") or [])
  n = result.get("eval_images", min_images)
  if len(hist) > 1 and n >= min_images and hist.max() > limit:
    return (f"run {run}: the target predictions collapsed to one class (class "
            f"{int(hist.argmax())}: {100 * hist.max():.1f}% of them); lower --lr, or check "
            "the data")
  return None


def check(cfg, strategy, domains):
  """The checks that need TensorFlow: replicas, XLA, and building the model (which
  loads the backbone's weights). Writes nothing."""
  distribute.check_jit(strategy, cfg.jit_compile)
  distribute.check_batch(strategy, cfg.batch_size)
  with strategy.scope():
    run_lib.build_model(cfg, domains, cfg.seed)


def train(cfg, strategy=None, domains=None, callbacks=None):
  """Trains cfg.runs runs (resuming), writes results.json, returns it.

  `callbacks`: Keras callbacks called at every step of every run (run.train_run).

  `domains`: the datasets as preflight.prepare_data returned them (read if None).
  A training that fails with a UserError before its first checkpoint leaves no
  model_dir behind (a corrected command then starts afresh). The chief holds
  model_dir's lock (train/lock.py) from before its first write to the end: a second
  training there is refused in one line.
  """
  import tensorflow as tf
  strategy = strategy or tf.distribute.get_strategy()
  domains = domains or prepare_data(cfg)
  check(cfg, strategy, domains)  # before anything is written
  chief = distribute.is_chief(strategy)
  if not chief:  # the chief holds the lock and writes; workers write nothing there
    return _train_runs(cfg, strategy, domains, chief, callbacks)
  existed = os.path.isdir(cfg.model_dir)
  with lock.ModelDirLock(cfg.model_dir):  # one training per model_dir, till it ends
    fresh = not os.path.exists(os.path.join(cfg.model_dir, FLAGS_FILE))
    prepare_model_dir(cfg, domains)
    try:
      return _train_runs(cfg, strategy, domains, chief, callbacks)
    except UserError:
      if fresh and not tf.train.latest_checkpoint(os.path.join(cfg.model_dir, "run_0", "ckpt")):
        shutil.rmtree(cfg.model_dir, ignore_errors=True)
        if existed:
          os.makedirs(cfg.model_dir, exist_ok=True)
      raise


def _train_runs(cfg, strategy, domains, chief, callbacks=None):
  log.info("source %s: %d images; target %s: %d; eval %s: %d; %d classes",
               domains.source.name, domains.source.size, domains.target.name,
               domains.target.size, domains.target_eval.name, domains.target_eval.size,
               domains.num_classes)
  results, run_dirs, trained = [], [], False
  for r in range(cfg.runs):
    run_dir = os.path.join(cfg.model_dir, f"run_{r}")
    done = os.path.join(run_dir, run_lib.RESULT_FILE)
    if os.path.exists(done):
      result = io_utils.read_json(done)
      log.info("run %d: complete, accuracy %s (skipped)", r, result.get("accuracy"))
    else:
      agg = earlier_aggregate(cfg, run_dirs)
      result = run_lib.train_run(run_config(cfg, r), domains, r, run_dir, agg,
                                 target_balance_labels(cfg, domains, agg), strategy,
                                 callbacks=callbacks,
                                 source_distribution=source_distribution(cfg, domains, run_dirs))
      trained = True
      if not chief:
        run_dirs.append(run_dir)
        continue
      collapsed = collapse_message(r, result)
      if collapsed and r < cfg.runs - 1:
        raise UserError(f"{collapsed}; stopped before run {r + 1} (run {r} is kept)")
      if collapsed:
        log.warning(collapsed)
    results.append(result)
    run_dirs.append(run_dir)
  if not chief:
    return None
  export_dir = os.path.join(cfg.model_dir, EXPORT_DIR)
  if trained or not os.path.exists(export_dir):
    run_lib.export_run(cfg, domains, cfg.runs - 1, run_dirs[-1], export_dir)
    log.info("exported the last run's model to %s", export_dir)
  final = results[-1]
  summary = {"runs": results, "final_accuracy": final["accuracy"],
             "final_per_class_accuracy": final["per_class_accuracy"],
             "method": cfg.method, "num_classes": domains.num_classes,
             "target_subsample": cfg.target_subsample,
             "target_class_counts": (np.bincount(domains.target.labels,
                                                 minlength=domains.num_classes).tolist()
                                     if domains.target.labelled else None)}
  io_utils.atomic_write_json(os.path.join(cfg.model_dir, RESULTS_FILE), summary)
  return summary


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

  `run` defaults to the last run with a checkpoint.
  """
  import tensorflow as tf
  path = os.path.join(model_dir, FLAGS_FILE)
  if not os.path.exists(path):
    raise UserError(f"{model_dir}: no {FLAGS_FILE}; not a training directory")
  with open(path, encoding="utf-8") as f:
    cfg = config_from_flags_text(f.read(), path)
  if run is None:
    done = [r for r in range(cfg.runs)
            if tf.train.latest_checkpoint(os.path.join(model_dir, f"run_{r}", "ckpt"))]
    if not done:
      raise UserError(f"{model_dir}: no checkpoint found")
    run = done[-1]
  domains = prepare_data(cfg, check_images=False)
  model = run_lib.restore_model(cfg, domains, run, os.path.join(model_dir, f"run_{run}"))
  return cfg, domains, model
