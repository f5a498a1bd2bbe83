"""Step rate of BIWAAModel.fit() with steps_per_execution 1 and 10, on the demo's digits.

    python -m tools.benchmarks.benchmark_fit [--steps=600] [--batch_size=36]

Same model, data and step; after a warm-up epoch, the wall time of one epoch of
--steps steps for each setting (steps_per_execution > 1 runs several steps per
host round trip: what keeps a GPU busy when a step is short).
"""

import sys
import time

import biwaa_tf  # noqa: F401  (before TensorFlow: keeps its start-up lines quiet)

# isort: split
from absl import app, flags

flags.DEFINE_integer("steps", 600, "Timed steps per setting.")
flags.DEFINE_integer("batch_size", 36, "Images per domain per step.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import keras

  from biwaa_tf.data import demo_digits
  x_s, y_s = demo_digits.load_arrays("digits_source")
  x_t, _ = demo_digits.load_arrays("digits_target")
  source, target = biwaa_tf.from_arrays("source", x_s, y_s), biwaa_tf.from_arrays("target", x_t)
  opts = biwaa_tf.ImageOptions(32, 28, False, "unit", train_crop="random")
  rows = []
  for spe in (1, 10):
    keras.utils.set_random_seed(0)
    data = biwaa_tf.fit_dataset(source, target, opts, FLAGS.batch_size, num_classes=10)
    model = biwaa_tf.BIWAAModel(biwaa_tf.build_backbone("lenet", 28, "none"),
                                biwaa_tf.MethodConfig(num_classes=10, num_target=target.size))
    model.build_all(28)
    model.compile(lr=0.01, steps_per_execution=spe)
    model.fit(data, epochs=1, steps_per_epoch=100, verbose=0)  # warm-up: tracing
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=FLAGS.steps, verbose=0)
    seconds = time.perf_counter() - start
    rows.append((spe, FLAGS.steps / seconds, 1e3 * seconds / FLAGS.steps))
  print(f"\nfit() on the demo digits, lenet, batch {FLAGS.batch_size} + {FLAGS.batch_size}, "
        f"{FLAGS.steps} steps after a warm-up epoch")
  print(f"{'steps_per_execution':>19} {'steps/s':>8} {'ms/step':>8}")
  for spe, rate, ms in rows:
    print(f"{spe:>19} {rate:8.1f} {ms:8.2f}")
  print("rerun: python -m tools.benchmarks.benchmark_fit " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
  app.run(main)
