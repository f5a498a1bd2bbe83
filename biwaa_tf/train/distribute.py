"""tf.distribute: which strategy, logical CPU replicas, and the per-replica input.

`--batch_size` is the global batch per domain. With R replicas each replica
gets rows [r*b, (r+1)*b) of every global batch (b = batch_size / R), across
workers too, so that R replicas see exactly the batches one device would.
"""

import json
import logging
import os

import tensorflow as tf

from biwaa_tf.errors import UserError

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored")


def configure_cpu_replicas(n):
  """Splits the CPU into n logical devices (call before TensorFlow starts its runtime)."""
  if n <= 1:
    return
  cpus = tf.config.list_physical_devices("CPU")
  tf.config.set_logical_device_configuration(
      cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)])


def make_strategy(name):
  """The tf.distribute strategy `name` stands for (see --distribution_strategy)."""
  if name == "multi_worker_mirrored":  # before anything initialises the runtime
    if "TF_CONFIG" not in os.environ:
      raise UserError("--distribution_strategy=multi_worker_mirrored needs TF_CONFIG "
                      "(the cluster and this worker's task) in the environment")
    try:
      json.loads(os.environ["TF_CONFIG"])
    except ValueError as e:
      raise UserError(f"TF_CONFIG is not valid JSON: {e}") from None
    return tf.distribute.MultiWorkerMirroredStrategy()
  gpus = tf.config.list_logical_devices("GPU")
  cpus = tf.config.list_logical_devices("CPU")
  devices = [d.name for d in (gpus or cpus)]
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(devices[0])
  if name == "auto" and len(devices) < 2:
    return tf.distribute.get_strategy()
  if name in ("auto", "mirrored"):
    ops = None if gpus else tf.distribute.ReductionToOneDevice()
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=ops)
  raise UserError(f"--distribution_strategy={name}: choose from {', '.join(STRATEGIES)}")


def is_multi_worker(strategy):
  """Whether the training spans several processes (a cluster in TF_CONFIG)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  return bool(resolver is not None and resolver.task_type)


def is_chief(strategy):
  """Whether this process writes the outputs (always, but on non-chief workers)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == "chief" or (
      resolver.task_type == "worker" and resolver.task_id == 0
      and "chief" not in resolver.cluster_spec().as_dict())


def check_batch(strategy, batch_size):
  r = strategy.num_replicas_in_sync
  if batch_size % r:
    raise UserError(f"--batch_size={batch_size} is not divisible by the {r} replicas")
  if r > 1:
    log.info("%d replicas: %d source + %d target images each per step", r,
                 batch_size // r, batch_size // r)


def check_jit(strategy, jit_compile):
  """XLA under (multi-worker) MirroredStrategy needs GPUs: on CPUs each replica's
  step synchronises through merge_call, which an XLA-compiled function cannot."""
  if not jit_compile or not isinstance(
      strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)):
    return
  devices = strategy.extended.worker_devices
  if not all("GPU" in d.upper() for d in devices):
    raise UserError(f"--jit_compile under {type(strategy).__name__} needs GPUs (these are "
                    f"{', '.join(sorted({d.split('/')[-1] for d in devices}))}); "
                    "drop --jit_compile or use --distribution_strategy=one_device")


def distribute_batches(strategy, dataset, batch_size):
  """The dataset of global batches as fit() takes it under `strategy`: replica r gets
  rows r*b..(r+1)*b of every global batch (b = batch_size / replicas).

  Elements are (batch, extra): `extra` (the batch's stream positions) goes whole to
  every replica. Each worker reads the same global batches from its own pipeline and
  keeps its replicas' rows; with one replica the dataset is returned as it is.
  """
  r = strategy.num_replicas_in_sync
  if r == 1:
    return dataset
  b = batch_size // r

  def per_worker(ctx):
    local = r // ctx.num_input_pipelines
    first = ctx.input_pipeline_id * local

    def replicas(batch, extra):  # this worker's replicas' rows, one element each
      rows = [_replica_rows(batch, first + j, b) for j in range(local)]
      return tf.data.Dataset.from_tensor_slices(
          (tf.nest.map_structure(lambda *t: tf.stack(t), *rows),
           tf.repeat(extra[None], local, axis=0)))
    return dataset.flat_map(replicas)
  return strategy.distribute_datasets_from_function(per_worker)


def _replica_rows(batch, replica, rows):
  return tf.nest.map_structure(lambda t: t[replica * rows:(replica + 1) * rows], batch)
