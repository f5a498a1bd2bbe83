"""Paper-style tables and plots from a suite's cell directories.

    python -m tools.experiments.summarize --suite=runs/suite [--out=runs/suite/summary]

Reads <suite>/<task>/<variant>/seed<s>/results.json and writes:
  table.md, table.csv   variants x tasks (+ Avg), mean +- std over seeds (%),
                        per-class accuracy for DomainNet tasks (dn_*), else accuracy;
                        with --per_seed each seed's value, then the mean:
                        "94.12 / 93.35 / 93.26 (93.58)"
  scores.md             how well each label-free score (no target labels) ranks the
                        trained models (every run of every cell but the oracle's)
                        against their true accuracy: Spearman's rho, and the mean
                        accuracy of the model each score picks per seed
  runs.png              accuracy over iterative runs (the paper's Fig. 5), for
                        multi-run variants
  weighting.png         accuracy against the weighting factor (Fig. 4), from wf<lambda>
                        cells (and biwaa as lambda = 10, dann_bg-free)
"""

import glob
import json
import os
import sys

import numpy as np
from absl import app, flags

from biwaa_tf import model_dir_layout as layout
from biwaa_tf.train import metrics
from tools.experiments.variants import LABELS, WEIGHTING_PREFIX, label

flags.DEFINE_string("suite", "runs/suite", "Suite root directory.")
flags.DEFINE_string("out", None, "Output directory (default <suite>/summary).")
flags.DEFINE_boolean("per_seed", False, "Tables give every seed's value (2 decimals, seed "
                     "order) and their mean instead of mean +- std.")
FLAGS = flags.FLAGS


def metric_key(task):
  return "per_class_accuracy" if task.startswith("dn_") else "accuracy"


def collect(suite):
  """{(task, variant): [results dict per seed]} in seed order."""
  found = {}
  for path in sorted(glob.glob(os.path.join(suite, "*", "*", "seed*", layout.RESULTS))):
    seed_dir = os.path.dirname(path)
    variant_dir = os.path.dirname(seed_dir)
    task = os.path.basename(os.path.dirname(variant_dir))
    with open(path) as f:
      res = json.load(f)
    res["cell_seed"] = os.path.basename(seed_dir)
    found.setdefault((task, os.path.basename(variant_dir)), []).append(res)
  for cells in found.values():  # seed2 before seed10
    cells.sort(key=lambda r: (len(r["cell_seed"]), r["cell_seed"]))
  return found


def _variant_order(variants):
  known = [v for v in LABELS if v in variants]
  sweep = sorted((v for v in variants if v.startswith(WEIGHTING_PREFIX) and v not in LABELS),
                 key=lambda v: float(v[len(WEIGHTING_PREFIX):]))
  return known + sweep + sorted(v for v in variants if v not in LABELS and v not in sweep)


def _cell(vals, per_seed):
  if per_seed:
    seeds = " / ".join(f"{v:.2f}" for v in vals)
    return f"{seeds} ({vals.mean():.2f})" if len(vals) > 1 else seeds
  return f"{vals.mean():.1f} ± {vals.std():.1f}" if len(vals) > 1 else f"{vals.mean():.1f}"


def table(found, per_seed=False):
  """(header, rows): rows of [label, 'mean +- std' per task..., Avg]; values in %. With
  per_seed, each cell lists the seeds' values in seed order, then their mean."""
  tasks = sorted({t for t, _ in found})
  variants = _variant_order({v for _, v in found})
  header = ["Method", *tasks, "Avg"]
  rows = []
  for v in variants:
    cells, seed_values = [], []
    for t in tasks:
      res = found.get((t, v))
      if not res:
        cells.append("")
        continue
      vals = np.array([100 * r["runs"][-1][metric_key(t)] for r in res])
      seed_values.append(vals)
      cells.append(_cell(vals, per_seed))
    if (seed_values and len(seed_values) == len(tasks)
        and len({len(p) for p in seed_values}) == 1):
      cells.append(_cell(np.mean(seed_values, axis=0), per_seed))
    else:
      cells.append("")
    rows.append([label(v), *cells])
  return header, rows


# Label-free scores, oriented so that higher is meant to predict a more accurate model.
SCORES = [
    ("−mean entropy", lambda run, ref: -run["mean_entropy"]),
    ("IM (information maximisation)", lambda run, ref: run["im_score"]),
    ("SND (soft neighbourhood density)", lambda run, ref: run["snd_score"]),
    # How far the model moved the predicted class histogram from source-only's: whether
    # moving is good depends on the shift (the tables show both signs).
    ("change of the predicted histogram from source-only (TV)",
     lambda run, ref: metrics.total_variation(run["predicted_histogram"],
                                              ref["predicted_histogram"])),
]


def candidate_models(found, task):
  """[(seed, variant, run index, run result, source-only run of that seed)]: every run of
  every cell of `task` a user could pick without target labels (not the oracle loader,
  not cells derived from others), where the seed has a source-only cell."""
  reference = {r["cell_seed"]: r["runs"][-1] for r in found.get((task, "source_only"), [])}
  models = []
  for (t, variant), cells in sorted(found.items()):
    if t != task or variant == "oracle":
      continue
    for res in cells:
      if "derived_from" in res or res["cell_seed"] not in reference:
        continue
      for i, run in enumerate(res["runs"]):
        models.append((res["cell_seed"], variant, i, run, reference[res["cell_seed"]]))
  return models


def score_table(found):
  """(header, rows): per label-free score and task, Spearman's rho against the accuracy
  over all candidate models, and the mean over seeds of the accuracy (%) of the model it
  picks; with source-only and the best model (picked by the labels) for reference."""
  tasks = sorted({t for t, _ in found})
  header = ["Score"] + [f"{t} {c}" for t in tasks for c in ("rho", "picked (%)")]
  rows = [[name] for name, _ in SCORES] + [["(source-only)"], ["(best, by target labels)"]]
  for task in tasks:
    key = metric_key(task)
    models = [m for m in candidate_models(found, task) if m[3].get(key) is not None]
    seeds = sorted({m[0] for m in models})
    for row, (_, score) in zip(rows, SCORES):
      usable = [m for m in models if _score(score, m) is not None]
      rho = metrics.spearman([_score(score, m) for m in usable], [m[3][key] for m in usable])
      picks = [max((m for m in usable if m[0] == s), key=lambda m: _score(score, m))
               for s in seeds if any(m[0] == s for m in usable)]
      row += [f"{rho:+.2f} (n={len(usable)})" if np.isfinite(rho) else "n/a",
              f"{100 * np.mean([m[3][key] for m in picks]):.1f}" if picks else "n/a"]
    source = [m[4][key] for m in models if m[1] == "source_only"]
    best = [max(m[3][key] for m in models if m[0] == s) for s in seeds]
    rows[-2] += ["", f"{100 * np.mean(source):.1f}" if source else "n/a"]
    rows[-1] += ["", f"{100 * np.mean(best):.1f}" if best else "n/a"]
  return header, rows


def _score(score, model):
  try:
    return float(score(model[3], model[4]))
  except (KeyError, TypeError):  # a result written before the scores existed
    return None


def markdown(header, rows):
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(lines) + "\n"


def csv_text(header, rows):
  import csv
  import io
  buf = io.StringIO()
  writer = csv.writer(buf)
  writer.writerow(header)
  writer.writerows(rows)
  return buf.getvalue()


def _line_plot(lines, xlabel, title, path):
  """lines: [(label, x, mean, std)] as error-bar lines; writes the PNG."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, x, mean, std in lines:
    ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=name)
  ax.set_xlabel(xlabel)
  if xlabel == "run":
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.set_ylabel("target accuracy (%)")
  ax.set_title(title)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_runs(found, path):
  """Fig. 5: mean accuracy (%) over the iterative runs, one line per task x variant."""
  lines = []
  for (task, variant), res in sorted(found.items()):
    n = min(len(r["runs"]) for r in res)
    if n < 2:
      continue
    acc = np.array([[100 * r["runs"][i][metric_key(task)] for i in range(n)] for r in res])
    lines.append((f"{task} {label(variant)}", np.arange(1, n + 1), acc.mean(0), acc.std(0)))
  if lines:
    _line_plot(lines, "run", "Accuracy over iterative runs", path)
  return bool(lines)


def plot_weighting(found, path):
  """Fig. 4: accuracy (%) against the weighting factor lambda, per task."""
  points = {}
  for (task, variant), res in found.items():
    if variant.startswith(WEIGHTING_PREFIX):
      lam = float(variant[len(WEIGHTING_PREFIX):])
      points.setdefault(task, []).append(
          (lam, [100 * r["runs"][0][metric_key(task)] for r in res]))
  lines = []
  for task, pts in sorted(points.items()):
    pts.sort()
    lines.append((task, [p[0] for p in pts], [np.mean(p[1]) for p in pts],
                  [np.std(p[1]) for p in pts]))
  if lines:
    _line_plot(lines, "weighting factor lambda", "Accuracy against the weighting factor", path)
  return bool(lines)


def summarize(suite, out, per_seed=False):
  """Writes the tables and plots; returns the Markdown table (and the written names)."""
  from biwaa_tf.io_utils import atomic_write_text
  found = collect(suite)
  if not found:
    raise FileNotFoundError(f"{suite}: no <task>/<variant>/seed*/results.json found")
  header, rows = table(found, per_seed)
  os.makedirs(out, exist_ok=True)
  md = markdown(header, rows)
  atomic_write_text(os.path.join(out, "table.md"), md)
  atomic_write_text(os.path.join(out, "table.csv"), csv_text(header, rows))
  written = ["table.md", "table.csv"]
  scores_md = markdown(*score_table(found))
  atomic_write_text(os.path.join(out, "scores.md"), scores_md)
  written.append("scores.md")
  if plot_runs(found, os.path.join(out, "runs.png")):
    written.append("runs.png")
  if plot_weighting(found, os.path.join(out, "weighting.png")):
    written.append("weighting.png")
  return md, written


def main(argv):
  del argv
  out = FLAGS.out or os.path.join(FLAGS.suite, "summary")
  try:
    md, written = summarize(FLAGS.suite, out, FLAGS.per_seed)
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(md)
  print("Label-free scores against the true accuracy:\n")
  with open(os.path.join(out, "scores.md"), encoding="utf-8") as f:
    print(f.read())
  print(f"wrote {', '.join(os.path.join(out, w) for w in written)}")
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
