"""Entry point: python -m biwaa_tf.main --flagfile=configs/oh_c2p.flags [--flag=value ...]

Parses the flags, then hands over to the iterative training. Bad flags or data
end with a one-line ``error:`` message and exit status 2; a full disk (or any write the
disk refuses) with one such line and exit status 1.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from biwaa_tf import flags as biwaa_flags  # noqa: E402
from biwaa_tf import model_dir_layout as layout  # noqa: E402
from biwaa_tf.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS
biwaa_flags.define_flags()

USAGE = """BIWAA unsupervised domain adaptation (Westfechtel et al., WACV 2023).

usage: biwaa-tf train --flagfile=configs/TASK.flags [--flag=value ...]
       biwaa-tf train --source=SRC --target=TGT --model_dir=OUT [...]
       (python -m biwaa_tf.main is the same command)
"""


def parse(argv):
  """Parses argv into FLAGS; returns an exit status, or None to go on."""
  from biwaa_tf import cli
  return cli.parse_flags(argv, USAGE, lambda: "Flags (a flagfile holds the same, one a "
                         "line; --noNAME turns a boolean off):\n" + biwaa_flags.grouped_help())[0]


def run(argv=None):
  """The command line; returns the exit status."""
  argv = list(sys.argv if argv is None else argv)
  status = parse(argv)
  if status is not None:
    return status
  try:
    cfg = biwaa_flags.config_from_flags(FLAGS)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return e.exit_status
  return train(cfg)


def train(cfg):
  """Trains `cfg` as the command line does (the launch path of biwaa_tf/launch.py); prints
  the per-run table, or the plan of a dry run; returns the exit status."""
  from biwaa_tf import launch
  from biwaa_tf.train import preflight
  try:
    with launch.process_scope():
      # Lists, images and model_dir are checked before TensorFlow loads, so that a
      # mistake is reported at once.
      domains = preflight.prepare_data(cfg)
      outcome = launch.launch(cfg, domains)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return e.exit_status  # 2; 1 for a disk that would not take a write
  except KeyboardInterrupt:
    print("interrupted: re-run the same command to resume from the last checkpoint",
          file=sys.stderr)
    return 130
  if cfg.dry_run:
    print(outcome)
  elif outcome is not None:  # None: a non-chief worker (the chief writes the results)
    from biwaa_tf.train import iterative
    print(iterative.format_table(outcome))
    print(f"results: {layout.path(cfg.model_dir, layout.RESULTS)}")
  return 0


if __name__ == "__main__":
  sys.exit(run())
