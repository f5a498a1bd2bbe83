"""How close label-free estimates of the target's class prior come to the true one.

    python -m tools.experiments.prior_estimates --suite=runs/digits_lt [--variant=source_only]

For every <task>/<variant>/seed*/ cell of a suite with a labelled target, compares the
true target class proportions (results.json: target_class_counts) with three estimates
from run 0's saved target predictions (run_0/target_probs.npy): the argmax histogram
(what --prior_matching uses), the mean predicted probability, and EM (Saerens et al.
2002; label_shift.em_prior, under the uniform prior a class-balanced source trains
with). Prints the total variation distance of each, per cell and on average.
"""

import glob
import json
import os
import sys

import numpy as np
from absl import app, flags

from biwaa_tf import label_shift
from biwaa_tf import model_dir_layout as layout
from biwaa_tf.train import metrics

flags.DEFINE_string("suite", "runs/digits_lt", "Suite root directory.")
flags.DEFINE_string("variant", "source_only", "Variant whose run 0 predictions are used.")
FLAGS = flags.FLAGS

ESTIMATORS = {
    "argmax histogram": lambda p: np.bincount(p.argmax(1), minlength=p.shape[1]) / len(p),
    "mean probability": lambda p: p.mean(axis=0),
    "EM": lambda p: label_shift.em_prior(p, np.full(p.shape[1], 1.0 / p.shape[1])),
}


def estimate_errors(suite, variant):
  """[(cell, {estimator: TV to the true prior})] for the cells with known class counts."""
  rows = []
  for path in sorted(glob.glob(os.path.join(suite, "*", variant, "seed*", layout.RESULTS))):
    with open(path) as f:
      counts = json.load(f).get("target_class_counts")
    probs_path = os.path.join(layout.run_dir(os.path.dirname(path), 0), layout.TARGET_PROBS)
    if not counts or not os.path.exists(probs_path):
      continue
    truth = np.asarray(counts, np.float64) / np.sum(counts)
    probs = np.load(probs_path).astype(np.float64)
    cell = os.path.relpath(os.path.dirname(path), suite)
    rows.append((cell, {name: metrics.total_variation(f(probs), truth)
                        for name, f in ESTIMATORS.items()}))
  return rows


def main(argv):
  del argv
  rows = estimate_errors(FLAGS.suite, FLAGS.variant)
  if not rows:
    print(f"error: {FLAGS.suite}: no {FLAGS.variant} cell with target_class_counts and "
          "run_0/target_probs.npy", file=sys.stderr)
    return 2
  names = list(ESTIMATORS)
  print("TV distance to the true target class proportions (lower is better)\n")
  print("| cell | " + " | ".join(names) + " |")
  print("|---|" + "---|" * len(names))
  for cell, tv in rows:
    print(f"| {cell} | " + " | ".join(f"{tv[n]:.3f}" for n in names) + " |")
  print("| mean | " + " | ".join(f"{np.mean([tv[n] for _, tv in rows]):.3f}" for n in names)
        + " |")
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
