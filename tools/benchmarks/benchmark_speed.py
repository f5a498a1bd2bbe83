"""Cost of the BIWAA training step against DANN, source-only and the machine.

    python -m tools.benchmarks.benchmark_speed [--configs=resnet50:224,resnet50:112,lenet:28]
        [--batch_size=12] [--repeats=5] [--jit_compile] [--batch_norm=per_domain|joint]

For each backbone and size, in one process, after warm-up, the median step time
of source-only, DANN and BIWAA training steps (same backbone, batch and input),
steps/s and the ratios. For ResNet-50 at 224 also the achieved GFLOP/s (training
counted as 3x the forward FLOPs, from TensorFlow's profiler) against the measured
float32 matmul rate, and the peak resident memory.
"""

import os
import sys

import biwaa_tf  # noqa: F401  (before TensorFlow: keeps its start-up lines quiet)

# isort: split
from absl import app, flags

flags.DEFINE_list("configs", ["resnet50:224", "resnet50:112", "lenet:28"],
                  "backbone:image_size pairs to time.")
flags.DEFINE_integer("batch_size", 12, "Images per domain per step.")
flags.DEFINE_integer("repeats", 5, "Timed steps per method (median).")
flags.DEFINE_integer("num_classes", 31, "Classes (Office-31 has 31).")
flags.DEFINE_boolean("jit_compile", False, "Compile the step with XLA.")
flags.DEFINE_enum("batch_norm", "per_domain", ["per_domain", "joint"], "Training forward "
                  "pass: two per-domain passes (the authors') or one joint pass.")
FLAGS = flags.FLAGS


def forward_flops(backbone, size):
  """FLOPs of one image through the backbone (TensorFlow profiler count)."""
  import logging

  import tensorflow as tf
  from tensorflow.python.profiler import model_analyzer, option_builder
  logging.getLogger("tensorflow").setLevel(logging.ERROR)  # the profiler's v1 deprecations
  tf.autograph.set_verbosity(0)
  concrete = tf.function(lambda x: backbone(x, training=False)).get_concrete_function(
      tf.TensorSpec([1, size, size, 3], tf.float32))
  opts = option_builder.ProfileOptionBuilder.float_operation()
  opts["output"] = "none"
  return model_analyzer.profile(concrete.graph, options=opts).total_float_ops


def time_config(name, size):
  import keras
  import numpy as np
  import tensorflow as tf

  from biwaa_tf import config
  from biwaa_tf.model import backbones, schedules
  from biwaa_tf.model.biwaa import BIWAAModel
  from tools.benchmarks import bench_util
  b, k = FLAGS.batch_size, FLAGS.num_classes
  rng = tf.random.Generator.from_seed(0)
  batch = ((rng.normal([b, size, size, 3]), tf.range(b, dtype=tf.int64) % k),
           (rng.normal([b, size, size, 3]), tf.range(b, dtype=tf.int64),
            -tf.ones([b], tf.int64)))
  steps, flops = {}, None
  for method in config.METHODS:
    keras.utils.set_random_seed(0)
    backbone = backbones.build_backbone(name, size, "none")
    config = bench_util.method_config(method, k, b, FLAGS.batch_norm == "per_domain")
    model = BIWAAModel(backbone, config, *schedules.paper_optimizers(1e-3))
    model.build_all(size)
    step = tf.function(model.train_step, jit_compile=FLAGS.jit_compile)
    for _ in range(2):  # warm-up: tracing, allocation
      float(step(batch)["loss"])
    steps[method] = step
    if flops is None:
      flops = forward_flops(backbone, size)
  # Round-robin: each repetition times every method once, so that drift in the
  # machine's speed hits all methods alike; the median per method is reported.
  samples = {m: [] for m in steps}
  for _ in range(FLAGS.repeats):
    for method, step in steps.items():
      samples[method].append(bench_util.median_time(
          lambda step=step: float(step(batch)["loss"]), 1, warmup=0))
  times = {m: float(np.median(v)) for m, v in samples.items()}
  return times, flops


def main(argv):
  del argv
  from tools.benchmarks import bench_util
  rows = []
  matmul = bench_util.matmul_gflops()
  for spec in FLAGS.configs:
    name, size = spec.split(":")
    times, flops = time_config(name, int(size))
    rows.append((spec, times, flops))
  b = FLAGS.batch_size
  print(f"\nbatch {b} source + {b} target, median of {FLAGS.repeats} steps, "
        f"{os.cpu_count()} cores, XLA {'on' if FLAGS.jit_compile else 'off'}, "
        f"batch norm {FLAGS.batch_norm}")
  print(f"{'backbone':<14} {'src-only s/step':>15} {'DANN s/step':>12} {'BIWAA s/step':>13} "
        f"{'BIWAA steps/s':>13} {'BIWAA/DANN':>11} {'DANN/src':>9}")
  for spec, t, _ in rows:
    print(f"{spec:<14} {t['source_only']:15.4f} {t['dann']:12.4f} {t['biwaa']:13.4f} "
          f"{1 / t['biwaa']:13.2f} {t['biwaa'] / t['dann']:11.3f} "
          f"{t['dann'] / t['source_only']:9.3f}")
  for spec, t, flops in rows:
    if spec.startswith("resnet50"):
      achieved = 3 * flops * 2 * b / t["biwaa"] / 1e9
      print(f"{spec}: forward {flops / 1e9:.2f} GFLOP/image; BIWAA step achieves "
            f"{achieved:.1f} GFLOP/s = {100 * achieved / matmul:.0f}% of the measured "
            f"float32 matmul rate ({matmul:.1f} GFLOP/s)")
  print(f"peak resident memory: {bench_util.peak_rss_mib():.0f} MiB")
  print("rerun: python -m tools.benchmarks.benchmark_speed " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
  app.run(main)
