"""Helper for test_distribute.py: 1 device vs 2 logical CPU replicas, same batches.

Run as a script (the logical devices must be set before TensorFlow starts).
Prints one JSON line with the measured differences.
"""

import json
import os
import sys

import biwaa_tf  # noqa: F401  (before TensorFlow: keeps its start-up lines quiet)

# isort: split
import tensorflow as tf

from biwaa_tf.train import distribute

distribute.configure_cpu_replicas(2)
# One op at a time, as --deterministic runs: with several inter-op threads two ops
# of the step race under load (README, "--deterministic"), and this check compares
# arithmetic, not schedules.
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from biwaa_tf.model import backbones, schedules  # noqa: E402
from biwaa_tf.model.biwaa import BIWAAModel, MethodConfig  # noqa: E402

STEPS, B, K, N = int(os.environ.get("STEPS", 20)), 8, 3, 16
# Method switches as key=0/1 arguments, e.g. ms_loss=0 (for bisecting).
OVERRIDES = {k: bool(int(v)) for k, v in (a.split("=") for a in sys.argv[1:])}


def build(strategy, sync_bn=True):
  with strategy.scope():
    keras.utils.set_random_seed(0)
    # Batch normalisation in the backbone, as in ResNet-50: with replicas its
    # statistics are taken over all of them (backbones.synchronize_batch_norm).
    backbone = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                                 keras.layers.Dense(8), keras.layers.BatchNormalization(),
                                 keras.layers.ReLU()])
    if sync_bn and strategy.num_replicas_in_sync > 1:
      backbones.synchronize_batch_norm(backbone)
    model = BIWAAModel(backbone, MethodConfig(num_classes=K, num_target=N, bottleneck_dim=5,
                                              **OVERRIDES),
                       *schedules.paper_optimizers(0.005), seed=0)
    model.build_all(4)
  return model


def batches():
  """STEPS global batches with their (unused) stream positions, as the runs' input."""
  rng = np.random.default_rng(0)
  data = ((rng.normal(size=(STEPS, B, 4, 4, 3)).astype(np.float32),
           rng.integers(0, K, (STEPS, B))),
          (rng.normal(size=(STEPS, B, 4, 4, 3)).astype(np.float32),
           np.stack([rng.choice(N, B, replace=False) for _ in range(STEPS)]),
           rng.integers(0, K, (STEPS, B))))
  return tf.data.Dataset.from_tensor_slices((data, np.zeros((STEPS, 2), np.int64)))


def train(strategy, sync_bn=True):
  """STEPS steps through the runs' replica split (distribute.distribute_batches)."""
  model = build(strategy, sync_bn)
  it = iter(distribute.distribute_batches(strategy, batches(), B))
  step = tf.function(lambda: strategy.run(model.train_step, args=(next(it),)))
  losses = []
  for _ in range(STEPS):
    logs = step()
    losses.append(float(strategy.reduce(tf.distribute.ReduceOp.MEAN, logs["loss"], axis=None)))
  return model, np.array(losses)


def replica_spread(var):
  var = getattr(var, "_value", var)  # a Keras variable's tf.Variable (per replica)
  values = [np.asarray(v.numpy(), np.float64) for v in var.values] if hasattr(
      var, "values") else [np.asarray(var.numpy(), np.float64)]
  return float(max(np.abs(v - values[0]).max() for v in values)), len(values)


def main():
  cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
  one, one_losses = train(tf.distribute.OneDeviceStrategy(cpus[0]))
  two_strategy = tf.distribute.MirroredStrategy(
      cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
  two, two_losses = train(two_strategy)
  _, local_bn_losses = train(two_strategy, sync_bn=False)
  diverged = np.abs(one_losses - two_losses) > 1e-4
  weights = max(float(np.abs(a.numpy() - b.numpy()).max())
                for a, b in zip(one.trainable_variables, two.trainable_variables))
  out = {"replicas": two_strategy.num_replicas_in_sync,
         "loss_max_abs_diff": float(np.abs(one_losses - two_losses).max()),
         "first_divergent_step": int(np.argmax(diverged)) if diverged.any() else -1,
         "loss_first": float(one_losses[0]), "loss_last": float(one_losses[-1]),
         "weights_max_abs_diff": weights,
         # Without synchronised batch norm (each replica its own statistics).
         "local_bn_loss_max_abs_diff": float(np.abs(one_losses - local_bn_losses).max()),
         "losses_one": one_losses[:6].tolist(), "losses_two": two_losses[:6].tolist(),
         "weights_moved": max(float(np.abs(v.numpy()).max()) for v in
                              one.discriminator.trainable_variables)}
  for name in ("source_centroids", "target_centroids", "agg_table", "agg_seen", "step"):
    spread, copies = replica_spread(getattr(two, name))
    out[f"{name}_replica_spread"] = spread
    out[f"{name}_copies"] = copies
    a = getattr(one, name).numpy().astype(np.float64)
    b = getattr(two, name).numpy().astype(np.float64)
    out[f"{name}_vs_one_device"] = float(np.abs(a - b).max())
  print(json.dumps(out))


if __name__ == "__main__":
  sys.exit(main())
