"""Evaluate an exported model on a labelled list: accuracy, per-class table, confusion PNG.

    biwaa-tf evaluate --saved_model=RUN/export --list=LIST --data_root=ROOT
        [--output_dir=eval]
"""

import os
import sys

import biwaa_tf  # noqa: F401  (before TensorFlow: keeps its start-up lines quiet)

# isort: split
import numpy as np
from absl import flags

flags.DEFINE_string("saved_model", None, "Exported model directory (model_dir/export).")
flags.DEFINE_string("list", None, "Labelled list file or class-subfolder directory.")
flags.DEFINE_string("data_root", "", "Root of the list file's relative paths.")
flags.DEFINE_string("output_dir", "eval", "Where metrics.json and confusion_matrix.png go.")
flags.DEFINE_integer("batch_size", 32, "Images per call.")
FLAGS = flags.FLAGS


def confusion_matrix(labels, pred, k):
  m = np.zeros((k, k), np.int64)
  np.add.at(m, (labels, pred), 1)
  return m


def plot_confusion(matrix, names, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  k = len(names)
  rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  fig, ax = plt.subplots(figsize=(max(4, 0.35 * k + 2), max(4, 0.35 * k + 2)))
  ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
  ax.set_xticks(range(k), names, rotation=90, fontsize=7)
  ax.set_yticks(range(k), names, fontsize=7)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  if k <= 15:
    for i in range(k):
      for j in range(k):
        if matrix[i, j]:
          ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                  color="white" if rows[i, j] > 0.5 else "black")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  from biwaa_tf import export, io_utils
  from biwaa_tf.data import lists
  from biwaa_tf.errors import UserError
  from biwaa_tf.train import metrics
  try:
    for name in ("saved_model", "list"):
      if not getattr(FLAGS, name):
        raise UserError(f"--{name} is required")
    loaded, names = export.load(FLAGS.saved_model)
    data = lists.load_image_list(FLAGS.list, FLAGS.data_root, len(names))
    if not data.labelled:
      raise UserError(f"{data.name}: evaluation needs a label on every line")
    data, _ = lists.validate_images(data, skip_invalid=False)
    probs = export.predict_files(loaded, list(data.paths), FLAGS.batch_size)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  k = len(names)
  pred = probs.argmax(axis=1)
  matrix = confusion_matrix(data.labels, pred, k)
  acc = metrics.accuracy(pred, data.labels)
  pca = metrics.per_class_accuracy(pred, data.labels, k)
  print(f"{'class':<24} {'n':>6} {'accuracy':>9}")
  per_class = {}
  for i, name in enumerate(names):
    n = int(matrix[i].sum())
    if n:
      per_class[name] = matrix[i, i] / n
      print(f"{name[:24]:<24} {n:>6} {100 * per_class[name]:9.2f}")
  print(f"\naccuracy {100 * acc:.2f}%   mean per-class accuracy {100 * pca:.2f}%  "
        f"({len(pred)} images)")
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  io_utils.atomic_write_json(os.path.join(FLAGS.output_dir, "metrics.json"), {
      "accuracy": acc, "per_class_accuracy": pca, "per_class": per_class,
      "confusion_matrix": matrix.tolist(), "class_names": names})
  png = os.path.join(FLAGS.output_dir, "confusion_matrix.png")
  try:
    import matplotlib  # noqa: F401  (an extra: pip install 'biwaa_tf[plots]')
  except ModuleNotFoundError:
    print(f"wrote {FLAGS.output_dir}/metrics.json (no confusion_matrix.png: matplotlib is "
          "not installed; pip install 'biwaa_tf[plots]')")
    return 0
  plot_confusion(matrix, names, png)
  print(f"wrote {FLAGS.output_dir}/metrics.json and {png}")
  return 0


def run(argv):
  """`biwaa-tf evaluate`; returns the exit status."""
  from biwaa_tf import cli
  return cli.run_command(argv, __doc__, __name__, main)


if __name__ == "__main__":
  sys.exit(run(sys.argv))
