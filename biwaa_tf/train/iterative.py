"""BIWAA-I: R runs, each loading the target class-balanced by earlier runs' predictions.

Resume order (re-running the same command on the same model_dir):
  1. model_dir/flags.txt must match the resolved flags (else refuse, or --overwrite).
  2. A run whose run_<r>/run_result.json exists is complete: it is never recomputed;
     its target_probs.npy feeds the across-run aggregate.
  3. The first incomplete run restores run_<r>/ckpt (weights, both optimizers, step,
     centroid memories, aggregation tables, input iterator) and continues.
"""

import dataclasses
import logging
import os
import shutil

import numpy as np

from biwaa_tf import io_utils, label_shift
from biwaa_tf import model_dir_layout as layout
from biwaa_tf.config import (
  config_from_flags_text,
  heldout_fraction,
  probes_label_shift,
  run_config,
  source_only_config,
)
from biwaa_tf.errors import UserError
from biwaa_tf.model import aggregation
from biwaa_tf.train import distribute, lock
from biwaa_tf.train import run as run_lib
from biwaa_tf.train.preflight import prepare_data, prepare_model_dir

log = logging.getLogger(__name__)



def target_balance_labels(cfg, domains, aggregate):
  """The labels the next run's target loader balances by (None: random loading)."""
  if cfg.balanced_target == "oracle":
    return domains.target.labels
  if cfg.balanced_target == "none" or aggregate is None or cfg.prior_matching:
    return None
  return np.argmax(aggregate, axis=1).astype(np.int64)


def source_distribution(cfg, domains, run_dirs):
  """--prior_matching (and the label-shift path): the class proportions the later runs
  load the source in: run 0's predicted class histogram (floored,
  label_shift.sampling_distribution), the same for every later run. None otherwise, or
  before the first run.

  Run 0 only: the histograms of adapted runs follow their own alignment (which is what
  goes wrong under label shift), and re-estimating from each run feeds a run's errors
  into the next one's source (measured: digits M->U-LT seed 0, 88.3% after run 1, 84.1%
  after run 2 re-estimated). Of the estimates from the source-only run, the argmax
  histogram was the closest to the true prior (README, label shift)."""
  if not cfg.prior_matching or not run_dirs:
    return None
  probs = layout.load_probs(run_dirs[0])
  counts = np.bincount(np.argmax(probs, axis=1), minlength=domains.num_classes)
  return label_shift.sampling_distribution(counts)


def earlier_aggregate(cfg, run_dirs):
  """Across-run aggregate of the saved target predictions of the given runs."""
  if not run_dirs:
    return None
  probs = [layout.load_probs(d) for d in run_dirs]
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


def _check_callbacks(callbacks):
  import keras
  for c in callbacks or []:
    if isinstance(c, keras.callbacks.BackupAndRestore):
      raise UserError("callbacks: BackupAndRestore is not needed here: a training resumes "
                      "from its model_dir's checkpoints (the input position included) when "
                      "called again with the same model_dir; drop it and pass model_dir")


def train(cfg, strategy=None, domains=None, callbacks=None):
  """Trains cfg.runs runs (resuming), writes results.json, returns it.

  `callbacks`: Keras callbacks, given every run (run.train_run: epochs are checkpoint
  intervals). BackupAndRestore is refused: a model_dir resumes by itself.

  `domains`: the datasets as preflight.prepare_data returned them (read if None).
  A training that fails with a UserError before its first checkpoint leaves no
  model_dir behind (a corrected command then starts afresh). The chief holds
  model_dir's lock (train/lock.py) from before its first write to the end: a second
  training there is refused in one line.
  """
  import tensorflow as tf
  _check_callbacks(callbacks)
  strategy = strategy or tf.distribute.get_strategy()
  domains = domains or prepare_data(cfg)
  check(cfg, strategy, domains)  # before anything is written
  chief = distribute.is_chief(strategy)
  if not chief:  # the chief holds the lock and writes; workers write nothing there
    return _train_runs(cfg, strategy, domains, chief, callbacks)
  existed = os.path.isdir(cfg.model_dir)
  with lock.ModelDirLock(cfg.model_dir):  # one training per model_dir, till it ends
    fresh = not os.path.exists(layout.path(cfg.model_dir, layout.FLAGS))
    prepare_model_dir(cfg, domains)
    try:
      return _train_runs(cfg, strategy, domains, chief, callbacks)
    except UserError:
      # (the first run's, the probe's and the confirming run's checkpoints are progress)
      firsts = (layout.run_dir(cfg.model_dir, 0), layout.probe_dir(cfg.model_dir),
                layout.confirm_dir(cfg.model_dir))
      if fresh and not any(tf.train.latest_checkpoint(layout.checkpoint_dir(d))
                           for d in firsts):
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
  decision = None
  if probes_label_shift(cfg) and distribute.is_multi_worker(strategy):
    log.info("label-shift check: not under multi-worker training (the workers cannot share "
             "the probe's decision); the runs follow --first_run=%s", cfg.first_run)
  elif probes_label_shift(cfg):
    cfg, decision, trained = _check_label_shift(cfg, strategy, domains, callbacks)
  runs_domains = paper_runs_domains(cfg, domains, decision)
  for r in range(cfg.runs):
    run_dir = layout.run_dir(cfg.model_dir, r)
    done = os.path.join(run_dir, layout.RUN_RESULT)
    if os.path.exists(done):
      result = io_utils.read_json(done)
      what = "complete (skipped)"
      if decision and r == 0 and decision["shift"]:
        what = "the source-only probe"
      elif decision and r == 0 and decision.get("confirmation"):
        what = "the paper's run 0, trained by the label-shift check"
      log.info("run %d: %s, accuracy %s", r, what, result.get("accuracy"))
    else:
      agg = earlier_aggregate(cfg, run_dirs)
      result = run_lib.train_run(run_config(cfg, r), runs_domains, r, run_dir, agg,
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
  final = results[-1]
  summary = {"runs": results, "final_accuracy": final["accuracy"],
             "final_per_class_accuracy": final["per_class_accuracy"],
             "method": cfg.method, "num_classes": domains.num_classes,
             "target_subsample": cfg.target_subsample,
             "target_class_counts": (np.bincount(domains.target.labels,
                                                 minlength=domains.num_classes).tolist()
                                     if domains.target.labelled else None),
             "label_shift_check": decision}
  reference = _source_only_reference(cfg, decision)
  if reference is not None:
    probe = layout.read_run_result(reference)
    summary["source_only"] = {k: probe.get(k) for k in ("accuracy", "per_class_accuracy")}
    if domains.heldout is not None:  # the label-free estimates (biwaa_tf/trust.py)
      summary["trust"] = _assess(cfg, domains, reference, run_dirs)
    if not summary.get("trust"):  # without a held-out split: the scores' vote
      summary["verdict"] = label_shift.verdict(
          probe, final,
          layout.load_probs(reference),
          layout.load_probs(run_dirs[-1]),
          shift=decision["shift"] if decision else True)
      log.info(label_shift.describe_verdict(summary["verdict"]))
  if summary.get("trust"):
    from biwaa_tf import trust
    candidates = summary["trust"]["candidates"]
    few = trust.too_few_target_images(domains.target.size, domains.num_classes)
    if few:
      log.warning("%s", few)
    spread = summary["trust"].get("runs_spread", 0.0)
    error = trust.gain_error(len(candidates) - 1)
    summary["trust"]["gain_error_bar"] = round(trust.error_bar(error, spread), 4)
    chosen, why = (0, few) if few else trust.choose(candidates, error, spread=spread)
    summary["verdict"] = trust.verdict(candidates, chosen, error, few=bool(few),
                                       spread=spread)
    if summary["verdict"]:  # (None without an adapted candidate)
      log.info("verdict: %s", trust.describe_verdict(summary["verdict"]))
    name = candidates[chosen]["name"]
    source = (summary["source_only"] if name == "source_only" else
              next(r for r in results if layout.run_name(r["run"]) == name))
    summary["returned"] = {"model": name, "why": why, "accuracy": source.get("accuracy"),
                           "per_class_accuracy": source.get("per_class_accuracy")}
    log.info("returned model: %s (%s)", name, why)
  export_dir = layout.path(cfg.model_dir, layout.EXPORT)
  # (a resumed training whose returned model changed, as under a newer rule, re-exports:
  # the export holds the model the previous results.json returned)
  results_path = layout.path(cfg.model_dir, layout.RESULTS)
  before = layout.read_results(cfg.model_dir) if layout.is_done(cfg.model_dir) else {}
  changed = ((before.get("returned") or {}).get("model")
             != (summary.get("returned") or {}).get("model"))
  if trained or changed or not os.path.exists(export_dir):
    run_cfg, run, run_dir = returned_run(cfg, summary)
    run_lib.export_run(run_cfg, domains, run, run_dir, export_dir)
    log.info("exported the %s model to %s", (summary.get("returned") or {}).get(
        "model", "last run's"), export_dir)
  io_utils.atomic_write_json(results_path, summary)
  return summary


def returned_run(cfg, summary):
  """(configuration, run index, run directory) of the model a training returns: the one
  results.json's "returned" names (the label-free choice), else the last run."""
  name = (summary.get("returned") or {}).get("model")
  probe = layout.probe_dir(cfg.model_dir)
  if name == "source_only" and os.path.isdir(probe):  # the label-shift check's probe
    return source_only_config(cfg), 0, probe
  if name == "source_only":  # run 0 of --first_run=source_only
    name = layout.run_name(0)
  run = layout.run_index(name) if name else summary["runs"][-1]["run"]
  return effective_config(cfg, cfg.model_dir), run, layout.run_dir(cfg.model_dir, run)


def _assess(cfg, domains, reference, run_dirs):
  """trust.assess on the saved outputs of the source-only model and of every run (the
  labels of the held-out split saved beside them): results.json's "trust" block."""
  from biwaa_tf import trust
  labels = domains.heldout.labels
  io_utils.atomic_save_npy(layout.path(cfg.model_dir, layout.HELDOUT_LABELS), labels)
  # run 0 of --first_run=source_only (the label-shift path's copy of the probe, or the
  # reference itself) is the source-only model, not a candidate of its own
  runs = run_dirs[1:] if cfg.first_run == "source_only" else run_dirs
  names = ["source_only"] + [os.path.basename(d) for d in runs]
  dirs = [reference] + list(runs)
  # (the paper's runs, where no shift was found, trained on the split: no held-out outputs)
  candidates = [(name, layout.load_heldout_probs(d), layout.load_probs(d))
                for name, d in zip(names, dirs)]
  if candidates[0][1] is None:
    return None
  prior = layout.read_run_result(reference)["source_class_distribution"]
  out = trust.assess(labels, prior, candidates, seed=cfg.seed)
  out["heldout_fraction"], out["heldout_seed"] = heldout_fraction(cfg), cfg.seed
  p = out["prior"]
  # (the interval is the target's sampling noise; the models' shared errors move the estimate
  # further: a median TV of 0.13 from the true proportions on the digits suite)
  log.info("estimated target class proportions %s (90%% interval width up to %.3f, sampling "
           "noise only): TV %.3f from the source's", p["estimate"],
           max(h - lo for lo, h in zip(*p["interval_90"])), p["tv_from_source"])
  spread = (f"; the adapted runs disagree on {100 * out['runs_spread']:.1f}% of the target"
            if len(out["candidates"]) > 2 else "")
  # (models that share errors agree on them: on the digits suite these read 5.5-7.9 points
  # high on average, the gains between models 2.2-3.6 points off at the median;
  # docs/label_shift.md)
  log.info("estimated target accuracy (agreement with the other models' mean prediction; "
           "it reads high where the models share errors, so compare models by the "
           "differences): %s%s",
           ", ".join(f"{c['name']} {100 * c['estimated_accuracy']:.1f}%"
                     for c in out["candidates"]), spread)
  return out


def _source_only_reference(cfg, decision):
  """The run the verdict compares the final model with: the check's probe, or run 0 of
  --first_run=source_only; None without one (--nolabel_shift_check: the paper)."""
  if decision is not None:
    return layout.probe_dir(cfg.model_dir)
  if cfg.first_run == "source_only" and cfg.runs > 1:
    return layout.run_dir(cfg.model_dir, 0)
  return None


def paper_runs_domains(cfg, domains, decision):
  """The domains the runs train on. The held-out split leaves the probe's training, and
  the runs' where the check found a shift; where it found none (label_shift.json's
  "paper_runs_on_all_source", since 77f8a00: older files resume with the split kept
  out, one training, one source), or could not run (multi-worker: no decision), the
  paper's runs train on all of the source, bit for bit as --nolabel_shift_check. An
  explicit --heldout_fraction without the check keeps its split out."""
  if domains.unsplit_source is None:
    return domains
  if decision is None:
    paper = probes_label_shift(cfg) and cfg.heldout_fraction is None
  else:
    paper = bool(decision.get("paper_runs_on_all_source"))
  if not paper:
    return domains
  runs_domains = domains.with_all_of_the_source()
  log.info("the paper's runs train on all %d source images (the held-out split too; only "
           "the probe is scored on it)", runs_domains.source.size)
  return runs_domains


def _check_label_shift(cfg, strategy, domains, callbacks):
  """The label-shift check (chief or single process): trains the source-only probe into
  model_dir/source_only (resuming; seeded as run 0), decides from its predicted target
  class proportions (label_shift.shift_decision; kept in label_shift.json, so a resumed
  training takes the same path) and returns (the configuration the runs train with,
  the decision, whether anything was trained). Where the probe finds a shift and
  --label_shift_confirm_tv > 0, the paper's run 0 confirms it or not first (_confirm_shift;
  not confirmed: it becomes run_0 and the paper's runs follow). On label shift the probe
  is run 0 (its files linked into run_0) and the later runs start from it, the source
  loaded in its predicted class proportions: --first_run=source_only --prior_matching."""
  path = layout.path(cfg.model_dir, layout.LABEL_SHIFT)
  probe_dir = layout.probe_dir(cfg.model_dir)
  trained = False
  if os.path.exists(path):
    decision = io_utils.read_json(path)
  else:
    done = os.path.join(probe_dir, layout.RUN_RESULT)
    if os.path.exists(done):
      result = io_utils.read_json(done)
    else:
      log.info("label-shift check: a source-only probe run first (shown as run 0, kept in "
               "%s; --nolabel_shift_check skips it)", probe_dir)
      result = run_lib.train_run(source_only_config(cfg), domains, 0, probe_dir,
                                 strategy=strategy, callbacks=callbacks)
      trained = True
    decision = probe_decision(cfg, result)
    if decision["shift"] and cfg.label_shift_confirm_tv > 0:
      decision, confirm_trained = _confirm_shift(cfg, strategy, domains, callbacks, decision)
      trained = trained or confirm_trained
    io_utils.atomic_write_json(path, decision)
  (log.warning if decision.get("probe_collapsed") else log.info)(
      label_shift.describe_decision(decision))
  # run 0 is a finished run already: the probe on a shift, the confirming run where it
  # did not confirm (the paper path's own run 0)
  first, what = None, None
  if decision["shift"]:
    first, what = probe_dir, "the source-only run's copy"
  elif decision.get("confirmation"):
    first, what = layout.confirm_dir(cfg.model_dir), "the paper's run 0's copy"
  run_0 = layout.run_dir(cfg.model_dir, 0)
  if first and not os.path.exists(os.path.join(run_0, layout.RUN_RESULT)):
    _link_tree(first, run_0, what)
  if not decision["shift"]:
    return cfg, decision, trained
  if cfg.runs < 2:
    log.info("label-shift check: one adapted run after the probe (--runs=%d)", cfg.runs)
  return shifted_config(cfg, decision), decision, trained


def _confirm_shift(cfg, strategy, domains, callbacks, decision):
  """The probe found a shift: trains the paper's run 0 (on all of the source, as the
  paper's path trains it first; resuming) into model_dir/paper_run_0 and returns (the
  decision it confirms or not, label_shift.confirm_decision; whether it trained)."""
  confirm = layout.confirm_dir(cfg.model_dir)
  done = os.path.join(confirm, layout.RUN_RESULT)
  trained = False
  if os.path.exists(done):
    result = io_utils.read_json(done)
  else:
    log.info("label-shift check: the probe finds a shift (%s); the paper's run 0 trains next "
             "(kept in %s) and confirms it if its predicted class proportions lie more than "
             "%.2f (TV; --label_shift_confirm_tv, scaled up for a target with more sampling "
             "noise than the digits suite's) from the source's; if not, the paper's runs "
             "follow it", "; ".join(decision["reasons"]), confirm,
             cfg.label_shift_confirm_tv)
    # (all of the source, as the paper's path trains its run 0; paper_runs_domains)
    result = run_lib.train_run(run_config(cfg, 0), domains.with_all_of_the_source(), 0,
                               confirm, None, target_balance_labels(cfg, domains, None),
                               strategy, callbacks=callbacks)
    trained = True
  collapsed = collapse_message(0, result)
  if collapsed:  # (the paper's runs fail on this target: the shift path is the safer one)
    collapsed = collapsed.split(";")[0]
    log.warning("label-shift check: the paper's run 0 failed (%s): the shift is confirmed",
                collapsed)
  return label_shift.confirm_decision(decision, result, cfg.label_shift_confirm_tv,
                                      collapsed=collapsed), trained


def probe_decision(cfg, result):
  """The label-shift check's decision from the probe's run result (run_result.json): its
  predicted target class histogram against the source's proportions; a probe whose
  predictions collapsed to one class (collapse_message) gives no estimate."""
  return label_shift.shift_decision(result["predicted_histogram"],
                                    result["source_class_distribution"],
                                    cfg.label_shift_threshold, cfg.label_shift_rare_share,
                                    collapsed=collapse_message(0, result))


def shifted_config(cfg, decision):
  """The runs' configuration on label shift: run 0 is the probe, at least one run adapts
  after it, and (decision["prior_matching"], since 943ea4f) the adapted runs load the
  source in the probe's predicted target class proportions and the target at random
  (--prior_matching), so that both sides carry about the same label distribution.
  The class-balanced target loader instead (BIWAA-I's, kept for a training whose
  label_shift.json predates the key) aligns a target without some classes against a
  source that has them all: 17 points below the probe on a Dirichlet(0.3) target
  (docs/label_shift.md, "Prior matching on the shift path")."""
  return dataclasses.replace(cfg, first_run="source_only", runs=max(cfg.runs, 2),
                             heldout_fraction=heldout_fraction(cfg),  # the check's split
                             prior_matching=bool(decision.get("prior_matching")))


def _link_tree(src, dst, what):
  """dst as a copy of the finished run src (hard links where the file system allows),
  made under a temporary name and renamed: a kill leaves no half copy behind."""
  tmp = dst + ".link-tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.rmtree(dst, ignore_errors=True)

  def link(a, b):
    try:
      os.link(a, b)
    except OSError:
      shutil.copy2(a, b)
  with io_utils.storage_errors(dst, what):
    shutil.copytree(src, tmp, copy_function=link,
                    ignore=shutil.ignore_patterns(".tmp-*", "*_temp"))
    os.replace(tmp, dst)


def effective_config(cfg, model_dir):
  """The configuration model_dir's runs were trained with: on label shift the check made
  run 0 source-only (label_shift.json)."""
  path = layout.path(model_dir, layout.LABEL_SHIFT)
  if probes_label_shift(cfg) and os.path.exists(path):
    decision = io_utils.read_json(path)
    if decision["shift"]:
      return shifted_config(cfg, decision)
  return cfg


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
  path = layout.path(model_dir, layout.FLAGS)
  if not os.path.exists(path):
    raise UserError(f"{model_dir}: no {layout.FLAGS}; not a training directory")
  with open(path, encoding="utf-8") as f:
    cfg = effective_config(config_from_flags_text(f.read(), path), model_dir)
  if run is None:
    done = [r for r in range(cfg.runs)
            if tf.train.latest_checkpoint(layout.checkpoint_dir(layout.run_dir(model_dir, r)))]
    if not done:
      raise UserError(f"{model_dir}: no checkpoint found")
    run = done[-1]
  domains = prepare_data(cfg, check_images=False)
  model = run_lib.restore_model(cfg, domains, run, layout.run_dir(model_dir, run))
  return cfg, domains, model
