"""Accuracy of every variant on the demo's shifted digits, 3 seeds, as a Markdown table.

    python -m tools.benchmarks.benchmark_accuracy [--output=runs/accuracy] [--seeds=0,1,2]
        [--iterative_runs=3] [--steps_per_run=450] [-- TRAINING FLAGS...]

Variants: source-only, DANN, DANN+BG, BIWAA (one run), BIWAA-I (--runs runs) and
the oracle class-balanced loader (true target labels, loading only). BIWAA is run 0
of BIWAA-I (same seed, same computation), so it is read from there, not retrained.
Resumable: completed cells are skipped (tools/experiments/run_suite.py).
"""

import copy
import json
import os
import sys

from absl import app, flags

from biwaa_tf import model_dir_layout as layout
from tools.experiments import run_suite, summarize

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_integer("steps_per_run", 450, "Training steps per run (600 took 17 min on 2 cores).")
flags.DEFINE_string("task", os.path.join(REPO, "configs", "demo.flags"),
                    "Task flagfile.")
FLAGS = flags.FLAGS
flags.DEFINE_list("extra_variants", [], "More variants after the standard ones (e.g. "
                  "biwaa_i_pm,biwaa_i_so: the label-shift options).")
VARIANTS = ["source_only", "dann", "dann_bg", "biwaa_i", "oracle"]


def derive_biwaa_cells(output, task):
  """biwaa/seed<s>: the first run of biwaa_i/seed<s>, as its own results.json."""
  from biwaa_tf.io_utils import atomic_write_json
  base = os.path.join(output, task)
  for seed_dir in sorted(os.listdir(os.path.join(base, "biwaa_i"))):
    with open(layout.path(os.path.join(base, "biwaa_i", seed_dir), layout.RESULTS)) as f:
      res = json.load(f)
    first = copy.deepcopy(res["runs"][0])
    atomic_write_json(layout.path(os.path.join(base, "biwaa", seed_dir), layout.RESULTS), {
        "runs": [first], "final_accuracy": first["accuracy"],
        "final_per_class_accuracy": first["per_class_accuracy"],
        "derived_from": f"biwaa_i/{seed_dir} run 0"})


def main(argv):
  extra = argv[1:]  # training flags after "--", e.g. -- --ms_warmup_steps=0
  output = FLAGS.output if FLAGS.output != "runs/suite" else "runs/accuracy"
  runs = FLAGS.iterative_runs or 3
  failed = run_suite.run_suite([FLAGS.task], FLAGS.seeds, VARIANTS + FLAGS.extra_variants,
                               output, runs,
                               [f"--steps_per_run={FLAGS.steps_per_run}", *extra],
                               log=lambda m: print(m, flush=True))
  if failed:
    print(f"error: {failed} cell(s) failed", file=sys.stderr)
    return 1
  derive_biwaa_cells(output, run_suite.task_name(FLAGS.task))
  md, written = summarize.summarize(output, os.path.join(output, "summary"))
  print(f"\nTarget accuracy (%), mean ± std over seeds {','.join(FLAGS.seeds)}, "
        f"{FLAGS.steps_per_run} steps a run, BIWAA-I = {runs} runs:\n")
  print(md)
  print("Label-free scores against the true accuracy (tools/experiments/summarize.py):\n")
  with open(os.path.join(output, "summary", "scores.md"), encoding="utf-8") as f:
    print(f.read())
  print(f"wrote {', '.join(os.path.join(output, 'summary', w) for w in written)}")
  print("rerun: python -m tools.benchmarks.benchmark_accuracy " + " ".join(sys.argv[1:]))
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
