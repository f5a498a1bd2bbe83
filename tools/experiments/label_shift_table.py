"""The label-shift check's table: what the default (check on) ends with on each cell of a
shift suite, against source-only and the other methods, and the verdict's hit rate.

    python -m tools.experiments.label_shift_table --suite=runs/shift [--threshold=0.3] [--summary]

The suite holds <suite>/<shift>/<task>/<variant>/seed<s>/ cells of
tools/experiments/run_suite.py with the variants source_only, the shift path's variant
(--shift_variant) and biwaa_i (3 runs), and dann where measured. The default's result is
read from them, not retrained: its probe is the source_only cell (the same configuration and
seed, bit for bit: tests/test_label_shift.py), and it trains exactly the shift variant when
the check finds shift and biwaa_i when it does not (the same test); with --confirm_tv the
biwaa_i cell's run 0 confirms the probe's shift or not, as the check's paper_run_0 does.
The shift variant is
biwaa_i_pm since 943ea4f (source in the probe's predicted proportions); biwaa_i_so for the
default before it, which the published tables of this tool measured. The verdict is
label_shift.verdict on a final model against the probe; "right" when "likely" came with a
gain over source-only or "unlikely" with a loss ("unsure" and "unchanged" are counted
apart). Its hit rate is given twice: on the default's final models, and on every adapted
final model of the suite (the other methods' too, which is where the losses are), with each
verdict's count of gains and losses. --summary prints only the default's gain over
source-only, per shift and direction, seed by seed (the README's table).
"""

import glob
import os

from absl import app, flags

from biwaa_tf import label_shift
from biwaa_tf import model_dir_layout as layout

flags.DEFINE_string("suite", "runs/shift", "Root of the suite's cells.")
flags.DEFINE_float("threshold", 0.3, "--label_shift_threshold to evaluate.")
flags.DEFINE_float("rare_share", 0.2, "--label_shift_rare_share to evaluate (0: off).")
flags.DEFINE_float("confirm_tv", 0.0, "--label_shift_confirm_tv to evaluate: where the probe "
                   "finds a shift, the biwaa_i cell's run 0 (the paper's run 0, as the check "
                   "trains it) confirms it or not (0: the probe alone, as the default before "
                   "session 9 and this tool's published tables).")
flags.DEFINE_bool("summary", False, "Only the default's gain over source-only, seed by seed.")
flags.DEFINE_enum("shift_variant", "biwaa_i_pm", ["biwaa_i_pm", "biwaa_i_so"],
                  "The variant the default trains on a shift: biwaa_i_pm since 943ea4f, "
                  "biwaa_i_so before it.")
FLAGS = flags.FLAGS

SHIFT_NAMES = {"biwaa_i_pm": "source-only first + prior matching",
               "biwaa_i_so": "source-only first"}


def columns():
  """(variant, column name) of the table, the shift path's variant second."""
  return (("biwaa_i", "BIWAA-I (paper)"),
          (FLAGS.shift_variant, SHIFT_NAMES[FLAGS.shift_variant]), ("dann", "DANN"))


def last_run(cell):
  """(result dict, target probs) of a finished cell's last run, or None."""
  if not layout.is_done(cell):
    return None
  last = layout.run_dirs(cell)[-1]
  return layout.read_run_result(last), layout.load_probs(last)


def judge(so, final, shift):
  """(verdict, "right" | "wrong" | "unsure", gained): the verdict against the true gain."""
  v = label_shift.verdict(so[0], final[0], so[1], final[1], shift)["helped"]
  gained = final[0]["accuracy"] >= so[0]["accuracy"]
  if v not in ("likely", "unlikely"):
    return v, "unsure", gained
  return v, "right" if (v == "likely") == gained else "wrong", gained


def pct(cell):
  return f"{100 * cell[0]['accuracy']:.2f}" if cell else "-"


def main(argv):
  del argv
  rows, below, measured = [], [], 0
  hits = {"right": 0, "wrong": 0, "unsure": 0}
  hits_all = {"right": 0, "wrong": 0, "unsure": 0}
  wrong_all = []
  outcomes = {}  # (verdict, gained) -> count, every adapted model
  gains = {}  # (shift, task) -> the default's gains over source-only, seed by seed
  for so_cell in sorted(glob.glob(os.path.join(FLAGS.suite, "*", "*", "source_only", "seed*"))):
    task_dir, seed = os.path.dirname(os.path.dirname(so_cell)), os.path.basename(so_cell)
    shift, task = task_dir.split(os.sep)[-2:]
    so = last_run(so_cell)
    if so is None:
      continue
    decision = label_shift.shift_decision(so[0]["predicted_histogram"],
                                          so[0]["source_class_distribution"], FLAGS.threshold,
                                          FLAGS.rare_share)
    paper = os.path.join(task_dir, "biwaa_i", seed, layout.run_name(0), layout.RUN_RESULT)
    if decision["shift"] and FLAGS.confirm_tv > 0:
      if not os.path.exists(paper):
        continue  # (the confirming run is not measured)
      decision = label_shift.confirm_decision(decision, layout.read_run_result(
          os.path.dirname(paper)), FLAGS.confirm_tv)
    others = {v: last_run(os.path.join(task_dir, v, seed)) for v, _ in columns()}
    for variant in sorted(os.listdir(task_dir)):
      final = last_run(os.path.join(task_dir, variant, seed))
      if variant != "source_only" and final is not None:
        v, hit, gained = judge(so, final, decision["shift"])
        hits_all[hit] += 1
        outcomes[v, gained] = outcomes.get((v, gained), 0) + 1
        if hit == "wrong":
          wrong_all.append(f"{shift} {task} {seed} {variant}")
    chosen = others[FLAGS.shift_variant if decision["shift"] else "biwaa_i"]
    row = [shift, task, seed, pct(so), f"{decision['prior_shift']:.2f}",
           f"{decision['rare_share']:.2f}",
           "shift" if decision["shift"] else "none", *(pct(others[v]) for v, _ in columns())]
    if chosen is None:
      gains.setdefault((shift, task), []).append("-")
      rows.append(row + ["(not measured)", "", ""])
      continue
    measured += 1
    gain = chosen[0]["accuracy"] - so[0]["accuracy"]
    gains.setdefault((shift, task), []).append(
        f"{100 * gain:+.2f}" + ("" if decision["shift"] else " (paper)"))
    if gain < 0:
      below.append(f"{shift} {task} {seed} ({100 * gain:+.2f})")
    v, hit, _ = judge(so, chosen, decision["shift"])
    hits[hit] += 1
    rows.append(row + [f"**{pct(chosen)}**", f"{100 * gain:+.2f}", v])
  if FLAGS.summary:
    print("| shift | task | default - source-only, points (seed 0 / 1 / 2) |\n|---|---|---|")
    for (shift, task), values in sorted(gains.items()):
      print(f"| {shift} | {task} | {' / '.join(values)} |")
    print(f"\nat or above source-only on {measured - len(below)} of {measured} cells")
    return
  header = ["shift", "task", "seed", "source-only", "probe's TV", "rare share", "check",
            *(name for _, name in columns()), "default (check on)", "default - source-only",
            "verdict"]
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * len(header))
  for row in rows:
    print("| " + " | ".join(row) + " |")
  print(f"\nthe default at or above source-only on {measured - len(below)} of {measured} "
        f"measured cells" + (f"; below on {', '.join(below)}" if below else ""))
  print(f"verdict on the default's final model: {hits['right']} right, {hits['wrong']} wrong, "
        f"{hits['unsure']} unsure or unchanged (thresholds: TV {FLAGS.threshold}, rare share "
        f"{FLAGS.rare_share})")
  print(f"verdict on every adapted final model of the suite: {hits_all['right']} right, "
        f"{hits_all['wrong']} wrong, {hits_all['unsure']} unsure or unchanged"
        + (f" (wrong: {', '.join(wrong_all)})" if wrong_all else ""))
  print("  " + "; ".join(f"{v}: {outcomes.get((v, True), 0)} gained, "
                         f"{outcomes.get((v, False), 0)} lost"
                         for v in ("likely", "unlikely", "unsure", "unchanged")))


if __name__ == "__main__":
  app.run(main)
