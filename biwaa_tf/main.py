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
from biwaa_tf import quiet  # noqa: E402
from biwaa_tf.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS
biwaa_flags.define_flags()

USAGE = """BIWAA unsupervised domain adaptation (Westfechtel et al., WACV 2023).

usage: python -m biwaa_tf.main --flagfile=configs/TASK.flags [--flag=value ...]
       python -m biwaa_tf.main --source=SRC --target=TGT --model_dir=OUT [...]
"""


def parse(argv):
  """Parses argv into FLAGS; returns an exit status, or None to go on."""
  if any(a in ("-h", "--help", "-help", "--helpfull", "--helpshort") for a in argv[1:]):
    print(USAGE)
    print(FLAGS.module_help(biwaa_flags))
    return 0
  try:
    rest = FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}".splitlines()[0], file=sys.stderr)
    return 2
  if len(rest) > 1:
    print(f"error: unexpected argument {rest[1]!r} (flags look like --name=value)",
          file=sys.stderr)
    return 2
  return None


def run(argv=None):
  """The command line; returns the exit status."""
  argv = list(sys.argv if argv is None else argv)
  status = parse(argv)
  if status is not None:
    return status
  from biwaa_tf.train import preflight
  quiet.configure_logging()
  try:
    # Flags, lists, images and model_dir are checked before TensorFlow loads,
    # so that a mistake is reported at once.
    cfg = biwaa_flags.config_from_flags(FLAGS)
    domains = preflight.prepare_data(cfg)
    preflight.check_model_dir(cfg)
    try:
      import tensorflow as tf
    except ModuleNotFoundError as e:
      if e.name != "tensorflow":
        raise
      raise UserError("TensorFlow is not installed: pip install 'biwaa_tf[cpu]', or "
                      "'biwaa_tf[cuda]' for NVIDIA GPUs (-e '.[cpu]' in a clone)") from None

    from biwaa_tf.train import distribute, iterative
    if cfg.deterministic:
      # Op determinism, and one op at a time: with several inter-op threads, 1 of 3
      # concurrent trainings on a loaded machine drifted from its twins (the race
      # between two ops of the step is not identified yet; see the README).
      tf.config.experimental.enable_op_determinism()
      try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
      except RuntimeError:  # a second training in this process: set by the first
        pass
    # The strategy first: collective ops must be set up before TF runs anything.
    distribute.configure_cpu_replicas(cfg.cpu_replicas)
    strategy = distribute.make_strategy(cfg.distribution_strategy)
    if cfg.dry_run:
      iterative.check(cfg, strategy, domains)  # the devices, the backbone and its weights
      print(preflight.plan(cfg, domains))
      return 0
    summary = iterative.train(cfg, strategy, domains)
    if summary is None:  # a non-chief worker: the chief writes the results
      return 0
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return e.exit_status  # 2; 1 for a disk that would not take a write
  except KeyboardInterrupt:
    print("interrupted: re-run the same command to resume from the last checkpoint",
          file=sys.stderr)
    return 130
  print(iterative.format_table(summary))
  print(f"results: {os.path.join(cfg.model_dir, iterative.RESULTS_FILE)}")
  return 0


if __name__ == "__main__":
  sys.exit(run())
