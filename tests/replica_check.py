"""Helper for test_distribute.py: 1 device vs 2 logical CPU replicas, same batches.

Run as a script (the logical devices must be set before TensorFlow starts). Prints one
JSON line with the measured differences.

The check compares arithmetic, one step at a time: before each step the one-device
state (every weight, the centroid and aggregation memories, both optimizers' slots and
counters) is copied into the replicas, both take the step, and the step's loss,
pseudo-labels, feature weights and new state are compared.

A whole trajectory is not compared: it tests chaos, not the replicas. The step is
piecewise linear in the weights (the ReLUs of the backbone and the discriminator), and
its gradient jumps where a pre-activation crosses zero; a rounding difference of 1e-7
that moves one of the 2 x 1024 discriminator units or 8 backbone units across zero
changes the update by ~1e-5, and more units cross as the runs part. Measured on one
device alone (no replicas), inputs scaled by 1 + 1e-6 noise: the loss parts by 1.5e-2 at
step 9, the figures an AVX2-only CPU gives for one device against two replicas; with
GELU in place of both ReLUs every such run stays within 6e-5; the pseudo-labels never
flipped. The `trajectory` figures below are reported, not asserted.

Arguments: method switches as key=0/1 (e.g. ms_loss=0, for bisecting), and
`inject=loss_scale` or `inject=local_centroids` (a replica bug the check must catch).
"""

import json
import os
import re
import sys
import threading
from unittest import mock

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

from biwaa_tf.model import aggregation, backbones, losses, replicas, schedules  # noqa: E402
from biwaa_tf.model.biwaa import BIWAAModel, MethodConfig  # noqa: E402

STEPS, B, K, N = int(os.environ.get("STEPS", 20)), 8, 3, 16
ARGS = dict(a.split("=") for a in sys.argv[1:])
INJECT = ARGS.pop("inject", None)
OVERRIDES = {k: bool(int(v)) for k, v in ARGS.items()}
STATE = ("source_centroids", "target_centroids", "agg_table", "agg_seen", "step")


# What a step traced, per thread: MirroredStrategy traces each replica's step in a thread
# of its own, interleaved at the collectives.
SEEN = threading.local()


class Probe(BIWAAModel):
  """BIWAAModel whose step also returns its branch points: each replica's pseudo-labels,
  the margin of their argmax (top-1 minus top-2 probability) and the feature weights."""

  def target_pseudo_labels(self, idx_t, logits_t, step):
    y = super().target_pseudo_labels(idx_t, logits_t, step)
    top = tf.math.top_k(SEEN.mixed, 2).values
    SEEN.logs.update(pseudo=y, margin=top[:, 0] - top[:, 1])
    return y

  def train_step(self, data):
    SEEN.logs = {}
    logs = super().train_step(data)
    return {**logs, **SEEN.logs}


_mix = aggregation.bootstrap_mix


def _recorded_mix(current, previous, u):
  """aggregation.bootstrap_mix, its result kept for Probe (the argmax's input)."""
  SEEN.mixed = _mix(current, previous, u)
  return SEEN.mixed


aggregation.bootstrap_mix = _recorded_mix
_weights = losses.feature_weights


def _recorded_weights(*args, **kwargs):
  SEEN.logs["w"] = _weights(*args, **kwargs)
  return SEEN.logs["w"]


losses.feature_weights = _recorded_weights

if INJECT == "loss_scale":  # gradients not divided by the replicas: twice the step
  _apply = BIWAAModel._apply_groups
  Probe._apply_groups = lambda self, grads: _apply(
      self, [g if g is None else g * tf.distribute.get_replica_context().num_replicas_in_sync
             for g in grads])
elif INJECT == "local_centroids":  # each replica's centroids from its own rows only
  def _local_semantic_loss(self, *args):
    with mock.patch.object(replicas, "gather_global", lambda *t: t):
      return BIWAAModel.semantic_loss(self, *args)
  Probe.semantic_loss = _local_semantic_loss
elif INJECT:
  sys.exit(f"inject={INJECT}: choose loss_scale or local_centroids")


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
    model = Probe(backbone, MethodConfig(num_classes=K, num_target=N, bottleneck_dim=5,
                                         **OVERRIDES),
                  *schedules.paper_optimizers(0.005), seed=0)
    model.build_all(4)
  return model


def batches(ulp=False):
  """STEPS global batches with their (unused) stream positions, as the runs' input;
  `ulp`: every image value moved by one float32 ulp (up)."""
  rng = np.random.default_rng(0)
  x_s = rng.normal(size=(STEPS, B, 4, 4, 3)).astype(np.float32)
  y_s = rng.integers(0, K, (STEPS, B))
  x_t = rng.normal(size=(STEPS, B, 4, 4, 3)).astype(np.float32)
  idx_t = np.stack([rng.choice(N, B, replace=False) for _ in range(STEPS)])
  y_t = rng.integers(0, K, (STEPS, B))
  if ulp:
    x_s, x_t = (np.nextafter(x, np.float32(np.inf)) for x in (x_s, x_t))
  data = ((x_s, y_s), (x_t, idx_t, y_t))
  return tf.data.Dataset.from_tensor_slices((data, np.zeros((STEPS, 2), np.int64)))


def variables(model):
  """Every variable a step reads or writes, in a fixed order (both models build alike)."""
  return (list(model.weights) + list(model.backbone_optimizer.variables)
          + list(model.head_optimizer.variables))


def snapshot(model):
  return [np.array(v.numpy()) for v in variables(model)]


def restore(model, values):
  for v, value in zip(variables(model), values, strict=True):
    v.assign(value)


class Stepper:
  """One step at a time of `model` on the runs' replica split of the batches."""

  def __init__(self, strategy, model, data):
    self.strategy, self.model = strategy, model
    self.it = iter(distribute.distribute_batches(strategy, data, B))
    self.step = tf.function(lambda: strategy.run(model.train_step, args=(next(self.it),)))

  def __call__(self):
    logs = self.step()
    local = lambda v: [np.asarray(x) for x in self.strategy.experimental_local_results(v)]
    out = {"loss": float(self.strategy.reduce(tf.distribute.ReduceOp.MEAN, logs["loss"],
                                              axis=None))}
    for k in ("pseudo", "margin"):
      if k in logs:
        out[k] = np.concatenate(local(logs[k]), 0)
    if "w" in logs:  # each replica's [source; target] rows -> the global [source; target]
      halves = [np.split(w, 2) for w in local(logs["w"])]
      out["w"] = np.concatenate([h[0] for h in halves] + [h[1] for h in halves], 0)
    return out


def trajectory(strategy, data, sync_bn=True):
  """STEPS steps, each from the state the last one left (what a training does)."""
  model = build(strategy, sync_bn)
  stepper = Stepper(strategy, model, data)
  return model, [stepper() for _ in range(STEPS)]


def _plain(path):
  """A variable's path without Keras' uniquifying suffixes (sgd_3 -> sgd)."""
  return re.sub(r"_\d+(?=/|_|$)", "", path)


def stepwise(one_strategy, two_strategy, sync_bn=True):
  """Each step from the same state on both: the largest difference of each quantity."""
  one = build(one_strategy)
  two = build(two_strategy, sync_bn)
  names = [_plain(v.path) for v in variables(one)]
  assert names == [_plain(v.path) for v in variables(two)], "the models' variables differ"
  step_one, step_two = Stepper(one_strategy, one, batches()), Stepper(two_strategy, two,
                                                                       batches())
  diff = {"loss": 0.0, "state": 0.0, "w": 0.0, "pseudo_flips": 0, "min_margin": np.inf}
  worst = {}
  for _ in range(STEPS):
    before = snapshot(one)
    restore(two, before)
    a, b = step_one(), step_two()
    after_one, after_two = snapshot(one), snapshot(two)
    diff["loss"] = max(diff["loss"], abs(a["loss"] - b["loss"]))
    for name, x, y in zip(names, after_one, after_two):
      d = float(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max()) \
          if np.size(x) else 0.0
      diff["state"] = max(diff["state"], d)
      key = next((s for s in STATE if name.endswith(s)), None)
      if key:
        worst[key] = max(worst.get(key, 0.0), d)
    if "w" in a:
      diff["w"] = max(diff["w"], float(np.abs(a["w"] - b["w"]).max()))
    if "pseudo" in a:
      diff["pseudo_flips"] += int((a["pseudo"] != b["pseudo"]).sum())
      diff["min_margin"] = min(diff["min_margin"], float(a["margin"].min()))
  # Every replica holds the same state (the first replica's value is kept).
  spread = {}
  for name in STATE:
    var = getattr(getattr(two, name), "_value", getattr(two, name))
    values = [np.asarray(v.numpy(), np.float64) for v in getattr(var, "values", [var])]
    spread[name] = (float(max(np.abs(v - values[0]).max() for v in values)), len(values))
  return diff, worst, spread, one


def first_flip(a, b):
  """The first step whose pseudo-labels differ, with the margin of the flipped one."""
  for i, (x, y) in enumerate(zip(a, b)):
    if "pseudo" in x and (x["pseudo"] != y["pseudo"]).any():
      return i, float(x["margin"][x["pseudo"] != y["pseudo"]].min())
  return -1, None


def main():
  cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
  one_strategy = tf.distribute.OneDeviceStrategy(cpus[0])
  two_strategy = tf.distribute.MirroredStrategy(
      cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
  diff, worst, spread, one = stepwise(one_strategy, two_strategy)
  out = {"replicas": two_strategy.num_replicas_in_sync, "steps": STEPS, "inject": INJECT,
         "step_loss_max_abs_diff": diff["loss"], "step_state_max_abs_diff": diff["state"],
         "step_weights_w_max_abs_diff": diff["w"], "step_pseudo_label_flips": diff["pseudo_flips"],
         "min_pseudo_label_margin": diff["min_margin"],
         "weights_moved": max(float(np.abs(v.numpy()).max())
                              for v in one.discriminator.trainable_variables)}
  for name in STATE:
    out[f"{name}_step_vs_one_device"] = worst.get(name, 0.0)
    out[f"{name}_replica_spread"], out[f"{name}_copies"] = spread[name]
  if INJECT:  # the injected bug's figures are all the caller needs
    print(json.dumps(out))
    return
  out["local_bn_step_loss_max_abs_diff"] = stepwise(one_strategy, two_strategy,
                                                    sync_bn=False)[0]["loss"]
  # Diagnostics (not asserted): whole trajectories, replicas and a 1-ulp input change on
  # one device, each against one device's.
  _, ref = trajectory(one_strategy, batches())
  for label, (strategy, data) in {"two_replicas": (two_strategy, batches()),
                                  "one_device_1ulp": (one_strategy, batches(ulp=True))}.items():
    _, run = trajectory(strategy, data)
    losses_ = np.array([s["loss"] for s in run])
    ref_losses = np.array([s["loss"] for s in ref])
    flip, margin = first_flip(ref, run)
    out[f"trajectory_{label}"] = {
        "loss_max_abs_diff": float(np.abs(losses_ - ref_losses).max()),
        "first_pseudo_label_flip_step": flip, "flipped_margin": margin}
  print(json.dumps(out))


if __name__ == "__main__":
  sys.exit(main())
