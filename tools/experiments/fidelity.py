"""Measures the differences left between biwaa_tf and the authors' implementation.

    python -m tools.experiments.fidelity [--model_dir=runs/demo/biwaa]

Prints one line per difference with its measured size (the README's "Fidelity"
table):
  nesterov   Keras' SGD momentum form against PyTorch's, with the inv schedule;
  batches    rejection-sampled against stratified class-balanced batches;
  bn_var     biased (Keras) against unbiased (PyTorch) running variance;
  crops      10-crop corners at 256 - 224 (torchvision) against 256 - 224 - 1 (the
             implementation's PlaceCrop), on a trained model (--model_dir, needs a
             training with --ten_crop or not: the crops are made here).
"""

import sys

import biwaa_tf  # noqa: F401  (before TensorFlow: keeps its start-up lines quiet)

# isort: split
import numpy as np
from absl import app, flags

flags.DEFINE_string("model_dir", None, "A finished training, for the crop-offset "
                    "measurement (skipped without).")
flags.DEFINE_integer("steps", 5004, "Optimizer steps for the momentum comparison.")
FLAGS = flags.FLAGS


def nesterov_difference(steps, base_lr=1e-3, momentum=0.9, seed=0):
  """Relative difference of Keras' and PyTorch's Nesterov SGD under the inv schedule.

  Same gradient sequence (i.i.d. normal, 1000 coordinates) for both; Keras' real
  optimizer against PyTorch's update written out:
    buf = m buf + g;  p -= lr_i (g + m buf).
  Returns (median per-step relative update difference, relative difference of the
  total displacement after `steps`).
  """
  import keras
  import tensorflow as tf

  from biwaa_tf.model import schedules
  rng = np.random.default_rng(seed)
  grads = rng.normal(size=(steps, 1000)).astype(np.float32)
  var = tf.Variable(tf.zeros([1000]))
  opt = keras.optimizers.SGD(schedules.InvSchedule(base_lr), momentum=momentum, nesterov=True)
  p, buf = np.zeros(1000, np.float64), np.zeros(1000, np.float64)
  step_diff = []
  for i in range(steps):
    before = var.numpy().copy()
    opt.apply_gradients([(tf.constant(grads[i]), var)])
    keras_update = var.numpy() - before
    lr = base_lr * (1 + 0.001 * i) ** -0.75
    buf = momentum * buf + grads[i]
    torch_update = -lr * (grads[i] + momentum * buf)
    p += torch_update
    step_diff.append(np.linalg.norm(keras_update - torch_update) / np.linalg.norm(torch_update))
  total = np.linalg.norm(var.numpy() - p) / np.linalg.norm(p)
  return float(np.median(step_diff)), float(total)


def batch_composition(num_classes, batch_size, batches=2000, seed=0):
  """Distinct classes per batch and the largest class count, for stratified batches
  (rounds of one sample per class in a shuffled class order, as the implementation)
  and rejection-sampled ones (i.i.d. uniform classes, as here). Returns
  {name: (mean distinct, mean max count)}."""
  rng = np.random.default_rng(seed)
  stream = np.concatenate([rng.permutation(num_classes)
                           for _ in range(batches * batch_size // num_classes + 2)])
  strat = stream[:batches * batch_size].reshape(batches, batch_size)
  rejection = rng.integers(0, num_classes, (batches, batch_size))
  out = {}
  for name, b in (("stratified", strat), ("rejection", rejection)):
    counts = np.stack([np.bincount(row, minlength=num_classes) for row in b])
    out[name] = (float((counts > 0).sum(1).mean()), float(counts.max(1).mean()))
  return out


def crop_offset_effect(model_dir):
  """Fraction of target predictions that change, and both accuracies, when the 10-crop
  corners move one pixel inwards (the implementation's offsets)."""
  import tensorflow as tf

  from biwaa_tf.data import preprocess
  from biwaa_tf.train import iterative
  from biwaa_tf.train import run as run_lib
  cfg, domains, model = iterative.restore_trained(model_dir)
  opts = run_lib.image_options(cfg, domains.normalization)
  r, s = opts.resize_size, opts.image_size
  probs = {0: [], 1: []}
  for path in domains.target.paths:
    image = preprocess.resize(preprocess.decode(path), r, opts.resize_method)
    for inset in (0, 1):
      last = r - s - inset
      crops = tf.stack([image[:s, :s], image[:s, last:last + s], image[last:last + s, :s],
                        image[last:last + s, last:last + s], preprocess.center_crop(image, s)])
      crops = preprocess.normalize(tf.concat([crops, tf.reverse(crops, [2])], 0), opts.mode)
      probs[inset].append(tf.reduce_mean(tf.nn.softmax(model(crops)), 0).numpy())
  pred = {k: np.argmax(np.stack(v), 1) for k, v in probs.items()}
  labels = domains.target.labels
  acc = {k: float(np.mean(v == labels)) if domains.target.labelled else None
         for k, v in pred.items()}
  return float(np.mean(pred[0] != pred[1])), acc, f"{r} -> {s}"


def main(argv):
  del argv
  model_dir, steps, args = FLAGS.model_dir, FLAGS.steps, " ".join(sys.argv[1:])
  median, total = nesterov_difference(steps)
  print(f"nesterov: Keras vs PyTorch form, inv schedule, {steps} steps: per-step update "
        f"differs by {100 * median:.3f}% (median), total displacement by {100 * total:.3f}%")
  for k, name in ((31, "Office-31"), (65, "Office-Home")):
    comp = batch_composition(k, 36)
    (ds, ms), (dr, mr) = comp["stratified"], comp["rejection"]
    print(f"batches: {name} (K={k}, batch 36): distinct classes per batch {ds:.1f} "
          f"stratified vs {dr:.1f} rejection-sampled; largest class count {ms:.1f} vs {mr:.1f}")
  n = 36 * 7 * 7
  print(f"bn_var: running variance biased vs unbiased: factor (n-1)/n, n >= {n} (batch 36, "
        f"ResNet-50's 7x7 maps): at most {100 / n:.3f}%")
  if model_dir:
    changed, acc, sizes = crop_offset_effect(model_dir)
    fmt = lambda a: "n/a" if a is None else f"{100 * a:.2f}%"  # noqa: E731
    print(f"crops: 10-crop corners 1 px inwards ({sizes}, {model_dir}): "
          f"{100 * changed:.2f}% of target predictions change; accuracy {fmt(acc[0])} "
          f"(torchvision offsets) vs {fmt(acc[1])} (the implementation's)")
  print("rerun: python -m tools.experiments.fidelity " + args)


if __name__ == "__main__":
  app.run(main)
