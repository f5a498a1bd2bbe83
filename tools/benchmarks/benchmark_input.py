"""Input pipeline throughput against what a ResNet-50 BIWAA step consumes.

    python -m tools.benchmarks.benchmark_input [--images=400] [--batch_size=36] [--step_batch=8]

Writes synthetic 256x256 JPEGs, then measures in one process:
  1. images/s of the training pipeline alone (decode, resize 256, random 224 crop,
     flip, normalise; class-balanced source + random target, batch per domain);
  2. images/s the ResNet-50 BIWAA training step consumes (2 x step_batch images a
     step: source + target) on this machine.
The pipeline should deliver at least twice what the step consumes.
"""

import os
import tempfile
import time

import biwaa_tf  # noqa: F401  (before TensorFlow: keeps its start-up lines quiet)

# isort: split
from absl import app, flags

flags.DEFINE_integer("images", 400, "Synthetic JPEGs to write.")
flags.DEFINE_integer("batch_size", 36, "Pipeline batch per domain.")
flags.DEFINE_integer("batches", 40, "Pipeline batches to time (after 5 warm-up).")
flags.DEFINE_integer("step_batch", 8, "Images per domain in the timed training step.")
flags.DEFINE_integer("steps", 3, "Timed training steps (median).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import tensorflow as tf

  from biwaa_tf.data import pipeline
  from biwaa_tf.model import backbones, schedules
  from biwaa_tf.model.biwaa import BIWAAModel
  from tools.benchmarks import bench_util

  tmp = tempfile.mkdtemp(prefix="biwaa-bench-input-")
  data = bench_util.write_jpegs(tmp, FLAGS.images)
  opts = pipeline.ImageOptions(256, 224, True, "caffe")
  ds = pipeline.training_pairs(data, data, opts, FLAGS.batch_size, seed=0, num_classes=10)
  it = iter(ds)
  for _ in range(5):
    next(it)
  start = time.perf_counter()
  for _ in range(FLAGS.batches):
    next(it)
  pipe_rate = 2 * FLAGS.batch_size * FLAGS.batches / (time.perf_counter() - start)

  backbone = backbones.build_backbone("resnet50", 224, "none")
  model = BIWAAModel(backbone, bench_util.method_config("biwaa", 10, data.size),
                     *schedules.paper_optimizers(1e-3))
  model.build_all(224)
  b = FLAGS.step_batch
  batch = ((tf.random.normal([b, 224, 224, 3]), tf.range(b, dtype=tf.int64) % 10),
           (tf.random.normal([b, 224, 224, 3]), tf.range(b, dtype=tf.int64),
            -tf.ones([b], tf.int64)))
  step = tf.function(model.train_step)
  t = bench_util.median_time(lambda: float(step(batch)["loss"]), FLAGS.steps)
  step_rate = 2 * b / t
  print(f"{'what':<44} {'images/s':>9}")
  print(f"{'input pipeline (JPEG 256 -> 224, both domains)':<44} {pipe_rate:9.1f}")
  print(f"{'ResNet-50 BIWAA training step consumes':<44} {step_rate:9.1f}")
  print(f"ratio pipeline / step: {pipe_rate / step_rate:.1f}x  (cores: {os.cpu_count()})")
  print("rerun: python -m tools.benchmarks.benchmark_input")


if __name__ == "__main__":
  app.run(main)
