"""The paper's Fig. 1 for a trained model: where the discriminator looks, DANN vs BIWAA.

    biwaa-tf heatmap --model_dir=runs/demo/biwaa [--count=6] [--output=heatmap.png]

For --count target images (evenly spaced through the target list): the image, the
Grad-CAM map of the discriminator on the plain features (DANN) and on the
backprop-weighted features (BIWAA), over the last convolutional feature map.
"""

import contextlib
import os
import sys

import numpy as np
from absl import flags

import biwaa_tf  # noqa: F401  (before TensorFlow: keeps its start-up lines quiet)

flags.DEFINE_string("model_dir", None, "A finished training's --model_dir.")
flags.DEFINE_integer("count", 6, "Target images to show.")
flags.DEFINE_string("output", None, "PNG path (default <model_dir>/heatmap.png).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from biwaa_tf.errors import UserError
  from biwaa_tf.heatmap import discriminator_maps, image_views
  from biwaa_tf.io_utils import storage_errors
  from biwaa_tf.train import iterative, lock
  from biwaa_tf.train import run as run_lib
  if not FLAGS.model_dir:
    print("error: --model_dir is required", file=sys.stderr)
    return 2
  try:
    import matplotlib  # noqa: F401  (an extra: pip install 'biwaa_tf[plots]')
  except ModuleNotFoundError:
    print("error: the heatmap is drawn with matplotlib: pip install 'biwaa_tf[plots]'",
          file=sys.stderr)
    return 2
  model_dir, count, output = FLAGS.model_dir, FLAGS.count, FLAGS.output
  output = output or os.path.join(model_dir, "heatmap.png")
  inside = os.path.commonpath([os.path.abspath(output),
                               os.path.abspath(model_dir)]) == os.path.abspath(model_dir)
  try:
    # Writing into a model_dir takes its lock: refused while a training runs there.
    with (lock.ModelDirLock(model_dir, f"writing {os.path.basename(output)} there")
          if inside and os.path.isdir(model_dir) else contextlib.nullcontext()):
      cfg, domains, model = iterative.restore_trained(model_dir)
      target = domains.target
      picks = np.linspace(0, target.size - 1, min(count, target.size)).astype(int)
      raw, inputs = image_views(target, picks,
                                run_lib.image_options(cfg, domains.normalization))
      dann, biwaa = discriminator_maps(model, inputs, cfg.weighting_factor,
                                       cfg.weighting_offset)
      with storage_errors(output, "the heatmap"):
        plot(raw, dann, biwaa, output)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return e.exit_status
  print(f"wrote {output}")
  return 0


def plot(raw, dann, biwaa, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  n = len(raw)
  fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), squeeze=False)
  size = raw[0].shape[0]
  for r in range(n):
    for c, (title, m) in enumerate((("image", None), ("DANN", dann[r]), ("BIWAA", biwaa[r]))):
      ax = axes[r, c]
      ax.imshow(raw[r])
      if m is not None:
        ax.imshow(m, cmap="jet", alpha=0.5, extent=(-0.5, size - 0.5, size - 0.5, -0.5),
                  vmin=0, vmax=1, interpolation="bilinear")
      ax.set_axis_off()
      if r == 0:
        ax.set_title(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def run(argv):
  """`biwaa-tf heatmap`; returns the exit status."""
  from biwaa_tf import cli
  return cli.run_command(argv, __doc__, __name__, main)


if __name__ == "__main__":
  sys.exit(run(sys.argv))
