"""Re-scores a trust suite from its saved outputs, in seconds, without retraining.

    python -m tools.experiments.trust_table --suite=runs/trust/tuning [--cells='*/*/*/seed2'] \
        [--margin=0.02] [--estimator=atc] [--by_target]

A cell is a no-flag default training (label-shift check on) whose model_dir holds
heldout_labels.npy and, for the source-only probe and every run, target_probs.npy and
heldout_probs.npy (but for the no-shift path's runs, which train on the split) beside
run_result.json (its true target accuracy: the suite's targets are labelled, and only
the table reads the labels). For each cell: the error of results.json's prior estimate
(TV from the true target class proportions), each candidate's estimated and true
accuracy, and the model a rule returns against source-only, the last run (today's
default) and the oracle (the best candidate by target labels).

The rule is the library's (trust.choose): source-only unless an adapted model is
estimated better by more than the error bar (--margin plus the adapted runs' spread), then
the latest run within --margin of the best estimate.
"""

import glob
import os
import sys

import numpy as np
from absl import app, flags

from biwaa_tf import model_dir_layout as layout
from biwaa_tf import trust

flags.DEFINE_string("suite", None, "Root of the cells (searched for results.json).")
flags.DEFINE_string("cells", "**", "Glob, under --suite, of the cell directories to score "
                    "(e.g. '*/*/*/seed2' for one seed).")
flags.DEFINE_float("margin", trust.ACCURACY_ERROR, "The estimated gain's typical error: "
                   "an adapted model must be estimated better than source-only by more than "
                   "this plus the adapted runs' spread to be returned.")
flags.DEFINE_float("one_run_margin", trust.ONE_RUN_ERROR, "--margin where a cell has one "
                   "adapted candidate (no spread between runs to add; the library's: "
                   "trust.gain_error).")
flags.DEFINE_integer("adapted", None, "Score each cell as if its training had stopped after "
                     "this many adapted candidates (BIWAA-I's run r depends only on the runs "
                     "before it): source-only and the first N runs (the prior's estimate, "
                     "too, is then theirs).", lower_bound=1)
flags.DEFINE_enum("rule", trust.RULE, ["latest", "best"], "trust.choose's rule among the "
                  "adapted models estimated within --margin of the best.")
flags.DEFINE_enum("estimator", "loo" if trust.LEAVE_ONE_OUT else "agree",
                  ["atc", "ac", "agree", "loo"], "Accuracy estimator: atc (average "
                  "thresholded confidence) or ac (average confidence), both after BCTS, "
                  "agree (agreement with the candidates' mean prediction) or loo (agreement "
                  "with the other candidates' mean prediction; trust.agreement_accuracies: "
                  "the library's).")
flags.DEFINE_bool("by_target", False, "After the cells, one table of the returned model "
                  "against source-only and the last run: a row per target, a column per task "
                  "(cells laid out as run_suite's <target>/<task>/<variant>/seed<s> under "
                  "--suite), each the mean accuracy over the cells, the worst returned - "
                  "source-only (points) and the number of cells.")
flags.DEFINE_enum("verdict_reads", trust.VERDICT_READS, ["best", "returned"], "The "
                  "adapted model the verdict reads: the best-estimated one, or the returned "
                  "one where an adapted model is returned (trust.verdict).")
FLAGS = flags.FLAGS


def estimate_accuracy(kind, heldout_probs, heldout_labels, target_probs):
  held, target = trust.calibrated(heldout_probs, heldout_labels, target_probs)
  if kind == "ac":
    return float(trust.confidence(target).mean())
  return trust.atc_accuracy(trust.atc_threshold(held, heldout_labels), target)


def cell_rows(model_dir, kind, adapted=None):
  """The cell's candidates: (name, estimated accuracy, true accuracy), and its facts; None
  where `kind` needs every candidate's held-out outputs and a run trained on the split."""
  summary = layout.read_results(model_dir)
  labels = np.load(layout.path(model_dir, layout.HELDOUT_LABELS))
  runs = layout.run_dirs(model_dir)
  if (summary.get("label_shift_check") or {}).get("shift"):
    runs = runs[1:]  # run 0 of the label-shift path is the probe itself
  dirs = [layout.probe_dir(model_dir)] + runs[:adapted]
  candidates = []
  for d in dirs:
    held, target = layout.load_heldout_probs(d), layout.load_probs(d)
    if held is None and kind not in ("agree", "loo"):
      return None
    true = layout.read_run_result(d)["accuracy"]
    # (agree, loo: the agreement below gives every estimate)
    estimate = (None if held is None or kind in ("agree", "loo") else
                estimate_accuracy(kind, held, labels, target))
    candidates.append((os.path.basename(d), estimate, true, held, target))
  counts = np.asarray(summary["target_class_counts"], np.float64)
  source_prior = layout.read_run_result(dirs[0])["source_class_distribution"]
  _, held0, target0 = candidates[0][0], candidates[0][3], candidates[0][4]
  q = trust.calibrated_mlls(held0, labels, target0, source_prior)
  true_prior = counts / counts.sum()
  consensus = np.mean([c[4] for c in candidates], axis=0)
  hist = np.bincount(consensus.argmax(1), minlength=len(true_prior)) / len(consensus)
  facts = {"true_tv": trust.total_variation(true_prior, source_prior),
           # results.json's estimate (trust.assess): the candidates' mean prediction's
           # histogram; and, for the comparison, the source-only model's calibrated MLLS
           "prior_tv_error": trust.total_variation(hist, true_prior),
           "mlls_prior_tv_error": trust.total_variation(q, true_prior),
           "path": (summary.get("label_shift_check") or {}).get("path", "?")}
  if kind in ("agree", "loo"):
    estimates = trust.agreement_accuracies([c[4] for c in candidates], kind == "loo")
    candidates = [(n, e, t, held, target)
                  for (n, _, t, held, target), e in zip(candidates, estimates)]
  facts["targets"] = [c[4] for c in candidates]
  facts["spread"] = trust.runs_spread(facts["targets"][1:])
  return [(n, e, t) for n, e, t, _, _ in candidates], facts


def adapted_gain(candidates, name):
  """The true gain over source-only of the candidate called `name`."""
  return next(t for n, _, t in candidates if n == name) - candidates[0][2]


def choose(candidates, margin, rule, spread):
  """The index of trust.choose's (the library's rule) pick among this tool's (name,
  estimate, true) rows."""
  rows = [{"name": n, "estimated_accuracy": e} for n, e, _ in candidates]
  return trust.choose(rows, margin, rule, spread)[0]


def verdict(candidates, targets, margin, spread, chosen, reads):
  """trust.verdict on this tool's rows (the disagreements from the saved outputs)."""
  rows = [{"name": n, "estimated_accuracy": e,
           "disagreement_with_source_only": trust.disagreement(t, targets[0])}
          for (n, e, _), t in zip(candidates, targets)]
  return trust.verdict(rows, chosen, margin, spread=spread, reads=reads)


def by_target(records):
  """The --by_target table's lines from (cell path under the suite, source-only, returned,
  last run) accuracies: 'source-only / returned / last run (worst returned - source-only,
  cells)', the means over each (target, task)'s cells, in %. A cell path is read as
  run_suite lays it out, <target>/<task>/<variant>/seed<s> (the variant joins the task's
  column name where the records hold more than one), or as <target>/<task>/<cell>, or as
  <target>/<cell> (one column, "(all)")."""
  keyed = []
  for name, so, chosen, last in records:
    parts = os.path.normpath(name).split(os.sep)
    if len(parts) >= 4:
      target, column = parts[-4], (parts[-3], parts[-2])
    elif len(parts) == 3:
      target, column = parts[0], (parts[1], "")
    else:
      target, column = parts[0], ("(all)", "")
    keyed.append((target, column, (so, chosen, last)))
  several = len({c[1] for _, c, _ in keyed}) > 1
  label = lambda c: f"{c[0]}/{c[1]}" if several else c[0]  # noqa: E731
  columns = sorted({c for _, c, _ in keyed})
  lines = ["| target | " + " | ".join(label(c) for c in columns) + " |",
           "|---|" + "---|" * len(columns)]
  for target in sorted({t for t, _, _ in keyed}):
    cells = []
    for column in columns:
      rows = np.array([r for t, c, r in keyed if t == target and c == column])
      cells.append("-" if not len(rows) else
                   f"{100 * rows[:, 0].mean():.1f} / {100 * rows[:, 1].mean():.1f} / "
                   f"{100 * rows[:, 2].mean():.1f} ({100 * (rows[:, 1] - rows[:, 0]).min():+.1f}"
                   f", {len(rows)})")
    lines.append(f"| {target} | " + " | ".join(cells) + " |")
  return lines


def main(argv):
  del argv
  if not FLAGS.suite:
    print("error: --suite is required", file=sys.stderr)
    return 2
  cells = sorted(os.path.dirname(p) for p in glob.glob(
      os.path.join(FLAGS.suite, FLAGS.cells, layout.RESULTS), recursive=True))
  cells = [c for c in cells if os.path.exists(layout.path(c, layout.HELDOUT_LABELS))]
  if not cells:
    print(f"error: no finished cell with held-out outputs under {FLAGS.suite}",
          file=sys.stderr)
    return 2
  print("| cell | true TV | prior TV error | runs' spread | source-only | last run | oracle | "
        "rule | rule - source-only | verdict (true gain) | estimates (est/true) |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  errors, worst, gains, oracle_gains, tv_errors, mlls_tv = [], [], [], [], [], []
  gain_errors, verdicts, last_gains, covered, records = [], [], [], [], []
  for cell in cells:
    name = os.path.relpath(cell, FLAGS.suite)
    rows = cell_rows(cell, FLAGS.estimator, FLAGS.adapted)
    if rows is None:
      print(f"skipped {name}: --estimator={FLAGS.estimator} needs every model's held-out "
            "outputs, and the no-shift path's runs trained on the split", file=sys.stderr)
      continue
    candidates, facts = rows
    so, last = candidates[0], candidates[-1]
    oracle = max(candidates, key=lambda c: c[2])
    margin = FLAGS.one_run_margin if len(candidates) == 2 else FLAGS.margin
    pick = choose(candidates, margin, FLAGS.rule, facts["spread"])
    chosen = candidates[pick]
    v = verdict(candidates, facts["targets"], margin, facts["spread"], pick,
                FLAGS.verdict_reads)
    adapted_true = adapted_gain(candidates, v["model"])
    if v["helped"] != "unchanged":  # (an interval of [0, 0]: nothing to cover)
      covered.append(v["interval"][0] <= adapted_true <= v["interval"][1])
    verdicts.append((v["helped"], adapted_true))
    last_gains.append(last[2] - so[2])
    errors += [e - t for _, e, t in candidates]
    # the error of each adapted model's estimated gain over source-only
    gain_errors += [abs((e - so[1]) - (t - so[2])) for _, e, t in candidates[1:]]
    worst.append(chosen[2] - so[2])
    gains.append(chosen[2] - so[2])
    oracle_gains.append(oracle[2] - so[2])
    tv_errors.append(facts["prior_tv_error"])
    mlls_tv.append(facts["mlls_prior_tv_error"])
    records.append((name, so[2], chosen[2], last[2]))
    print(f"| {name} | {facts['true_tv']:.3f} | {facts['prior_tv_error']:.3f} | "
          f"{100 * facts['spread']:.1f} | "
          f"{100 * so[2]:.2f} | {100 * last[2]:.2f} | {100 * oracle[2]:.2f} ({oracle[0]}) | "
          f"{100 * chosen[2]:.2f} ({chosen[0]}) | {100 * (chosen[2] - so[2]):+.2f} | "
          f"{v['helped']} ({100 * adapted_true:+.1f}) | "
          + ", ".join(f"{n} {100 * e:.1f}/{100 * t:.1f}" for n, e, t in candidates) + " |")
  if not gains:
    print(f"error: no cell under {FLAGS.suite} can be scored with --estimator="
          f"{FLAGS.estimator}", file=sys.stderr)
    return 2
  kept = sum(gains) / sum(oracle_gains) if sum(oracle_gains) > 0 else float("nan")
  likely = [g for h, g in verdicts if h == "likely"]
  below = [h for h, g in verdicts if g < -0.01]
  print(f"\nverdict: likely on {len(likely)} cells, right (a true gain > 0) on "
        f"{sum(g > 0 for g in likely)}; of the {len(below)} adapted models it read "
        f"(--verdict_reads={FLAGS.verdict_reads}) more than 1 point below source-only, "
        f"unlikely on {below.count('unlikely')}; its interval covers the true gain on "
        f"{sum(covered)} of {len(covered)} cells (those with a verdict other than "
        f"unchanged). The last run "
        f"(the paper's choice): worst {100 * min(last_gains):+.2f}, sum "
        f"{100 * sum(last_gains):+.2f}.")
  print(f"{len(gains)} cells, --estimator={FLAGS.estimator} --margin={FLAGS.margin} "
        f"--one_run_margin={FLAGS.one_run_margin} --adapted={FLAGS.adapted} "
        f"--rule={FLAGS.rule} --verdict_reads={FLAGS.verdict_reads}: "
        f"accuracy estimate MAE {100 * np.mean(np.abs(errors)):.2f} points (max "
        f"{100 * np.max(np.abs(errors)):.2f}, mean signed {100 * np.mean(errors):+.2f}), of "
        f"the gain over source-only MAE {100 * np.mean(gain_errors):.2f} (median "
        f"{100 * np.median(gain_errors):.2f}, max {100 * np.max(gain_errors):.2f}); "
        f"prior TV error median {np.median(tv_errors):.3f} (results.json's estimate, the "
        f"candidates' mean prediction's histogram; the source-only model's calibrated "
        f"MLLS: {np.median(mlls_tv):.3f}); "
        f"rule - source-only worst {100 * min(worst):+.2f}, sum {100 * sum(gains):+.2f} "
        f"against the oracle's {100 * sum(oracle_gains):+.2f} ({100 * kept:.0f}% kept)")
  if FLAGS.by_target:
    print("\nAccuracy (%): source-only / returned / last run, the mean over the cells (the "
          "worst returned - source-only in points, the number of cells):\n")
    print("\n".join(by_target(records)))
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
