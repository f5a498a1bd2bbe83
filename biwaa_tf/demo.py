"""The built-in demo: source-only vs BIWAA on shifted, long-tailed digits.

    python -m biwaa_tf.demo [--flagfile=configs/demo.flags] [--flag=value ...]

Trains BIWAA-I with the defaults a user gets (the label-shift check first: its
source-only probe is the baseline) into <model_dir>/biwaa and prints the target
accuracies side by side, with the verdict. With --nolabel_shift_check the baseline is
trained separately, into <model_dir>/source_only. Re-running resumes/reuses.
"""

import os
import sys

from biwaa_tf import flags as biwaa_flags
from biwaa_tf import main as main_lib
from biwaa_tf import model_dir_layout as layout
from biwaa_tf.errors import UserError

DEFAULT_FLAGFILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "configs", "demo.flags")


def _train(method, model_dir):
  """Trains the parsed flags' configuration with `method` into model_dir, through the
  command line's launch path; (exit status, results.json's summary or None)."""
  print(f"== {method} -> {model_dir}", flush=True)
  try:
    cfg = biwaa_flags.config_from_flags(main_lib.FLAGS, method=method, model_dir=model_dir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return e.exit_status, None
  status = main_lib.train(cfg)
  return status, (None if status or cfg.dry_run else layout.read_results(model_dir))


def run(argv=None):
  argv = list(sys.argv if argv is None else argv)
  if not any(a.startswith("--flagfile") for a in argv[1:]):
    argv.insert(1, f"--flagfile={DEFAULT_FLAGFILE}")
  status = main_lib.parse(argv)
  if status is not None:
    return status
  root = main_lib.FLAGS.model_dir or "runs/demo"
  status, biwaa = _train("biwaa", os.path.join(root, "biwaa"))
  if status or biwaa is None:
    return status
  baseline = biwaa.get("source_only")
  if baseline is None:  # no probe (--nolabel_shift_check): the baseline trained apart
    status, res = _train("source_only", os.path.join(root, "source_only"))
    if status:
      return status
    baseline = {"accuracy": res["final_accuracy"],
                "per_class_accuracy": res["final_per_class_accuracy"]}
  rows = [("source_only", baseline["accuracy"], baseline["per_class_accuracy"]),
          ("biwaa", biwaa["final_accuracy"], biwaa["final_per_class_accuracy"])]
  print("\ndemo: target accuracy on shifted, long-tailed digits (%)")
  print(f"{'method':<12} {'accuracy':>9} {'per-class':>10}")
  for method, accuracy, per_class in rows:
    print(f"{method:<12} {100 * accuracy:9.2f} {100 * per_class:10.2f}")
  print(f"BIWAA - source-only: {100 * (rows[1][1] - rows[0][1]):+.2f} points")
  returned = biwaa.get("returned")
  if returned and returned.get("accuracy") is not None:
    print(f"returned model: {returned['model']}, {100 * returned['accuracy']:.2f} "
          f"({returned['why']})")
  verdict = biwaa.get("verdict")
  if verdict:
    from biwaa_tf import trust
    print(f"verdict (no target labels used): {trust.describe_verdict(verdict)}")
  return 0


if __name__ == "__main__":
  sys.exit(run())
