"""The label-shift check's table: what the default (check on) ends with on each cell of a
shift suite, against source-only and the paper's BIWAA-I, and the verdict's hit rate.

    python tools/label_shift_table.py --suite=runs/shift [--threshold=0.3]

The suite holds <suite>/<shift>/<task>/<variant>/seed<s>/ cells of tools/run_suite.py
with the variants source_only, biwaa_i_so and (where measured) biwaa_i, 3 runs. The
default's result is read from them, not retrained: its probe is the source_only cell
(the same configuration and seed, bit for bit: tests/test_label_shift.py), and it
trains exactly biwaa_i_so when the check finds shift and biwaa_i when it does not
(the same test). The verdict is label_shift.verdict on the final model of that path
against the probe; "right" when "likely" came with a gain over source-only or
"unlikely" with a loss ("unsure"/"unchanged" are counted apart).
"""

import glob
import json
import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from biwaa_tf.model import label_shift  # noqa: E402

flags.DEFINE_string("suite", "runs/shift", "Root of the suite's cells.")
flags.DEFINE_float("threshold", 0.3, "--label_shift_threshold to evaluate.")
FLAGS = flags.FLAGS


def last_run(cell):
  """(result dict, target probs) of a finished cell's last run, or None."""
  if not os.path.exists(os.path.join(cell, "results.json")):
    return None
  runs = sorted(glob.glob(os.path.join(cell, "run_*")), key=lambda d: int(d.rsplit("_", 1)[1]))
  with open(os.path.join(runs[-1], "run_result.json"), encoding="utf-8") as f:
    result = json.load(f)
  return result, np.load(os.path.join(runs[-1], "target_probs.npy"))


def main(argv):
  del argv
  rows, hits = [], {"right": 0, "wrong": 0, "unsure": 0}
  for so_cell in sorted(glob.glob(os.path.join(FLAGS.suite, "*", "*", "source_only", "seed*"))):
    task_dir, seed = os.path.dirname(os.path.dirname(so_cell)), os.path.basename(so_cell)
    shift, task = task_dir.split(os.sep)[-2:]
    so = last_run(so_cell)
    if so is None:
      continue
    decision = label_shift.shift_decision(so[0]["predicted_histogram"],
                                          so[0]["source_class_distribution"], FLAGS.threshold)
    paper = last_run(os.path.join(task_dir, "biwaa_i", seed))
    chosen = last_run(os.path.join(task_dir, "biwaa_i_so" if decision["shift"] else "biwaa_i",
                                   seed))
    cells = [f"{100 * so[0]['accuracy']:.2f}", f"{decision['prior_shift']:.2f}",
             "shift" if decision["shift"] else "none",
             f"{100 * paper[0]['accuracy']:.2f}" if paper else "-"]
    if chosen is None:
      rows.append([shift, task, seed, *cells, "(not measured)", "", ""])
      continue
    gain = chosen[0]["accuracy"] - so[0]["accuracy"]
    v = label_shift.verdict(so[0], chosen[0], so[1], chosen[1], decision["shift"])
    if v["helped"] in ("likely", "unlikely"):
      hits["right" if (v["helped"] == "likely") == (gain >= 0) else "wrong"] += 1
    else:
      hits["unsure"] += 1
    rows.append([shift, task, seed, *cells, f"{100 * chosen[0]['accuracy']:.2f}",
                 f"{100 * gain:+.2f}", v["helped"]])
  print("| shift | task | seed | source-only | probe's TV | check | BIWAA-I (paper) | "
        "default (check on) | default - source-only | verdict |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for row in rows:
    print("| " + " | ".join(row) + " |")
  print(f"\nverdict: {hits['right']} right, {hits['wrong']} wrong, {hits['unsure']} unsure or "
        f"unchanged (threshold {FLAGS.threshold})")


if __name__ == "__main__":
  app.run(main)
