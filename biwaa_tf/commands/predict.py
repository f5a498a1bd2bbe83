"""Classify images with an exported model: CSV of path, class, probability.

    biwaa-tf predict --saved_model=RUN/export --images=DIR_OR_LIST
        [--data_root=ROOT] --output=predictions.csv

--images is a folder (searched recursively) or a list file (first field a path
under --data_root; a trailing label is ignored).
"""

import csv
import os
import sys

import biwaa_tf  # noqa: F401  (before TensorFlow: keeps its start-up lines quiet)

# isort: split
from absl import flags

flags.DEFINE_string("saved_model", None, "Exported model directory (model_dir/export).")
flags.DEFINE_string("images", None, "A folder of images or a list file.")
flags.DEFINE_string("data_root", "", "Root of the list file's relative paths.")
flags.DEFINE_string("output", "predictions.csv", "CSV to write.")
flags.DEFINE_integer("batch_size", 32, "Images per call.")
FLAGS = flags.FLAGS


def image_paths(spec, data_root):
  from biwaa_tf.data.lists import IMAGE_EXTENSIONS, read_list_file
  from biwaa_tf.errors import UserError
  if os.path.isdir(spec):
    found = [os.path.join(r, f) for r, _, fs in sorted(os.walk(spec)) for f in sorted(fs)
             if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not found:
      raise UserError(f"{spec}: no images")
    return found
  if not os.path.isfile(spec):
    raise UserError(f"{spec}: no such file or directory")
  return list(read_list_file(spec, data_root).paths)


def main(argv):
  del argv
  from biwaa_tf import export, io_utils
  from biwaa_tf.errors import UserError
  try:
    for name in ("saved_model", "images"):
      if not getattr(FLAGS, name):
        raise UserError(f"--{name} is required")
    paths = image_paths(FLAGS.images, FLAGS.data_root)
    loaded, names = export.load(FLAGS.saved_model)
    probs = export.predict_files(loaded, paths, FLAGS.batch_size, progress=True)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  import io
  buf = io.StringIO()
  writer = csv.writer(buf)
  writer.writerow(["path", "class", "probability"])
  for p, row in zip(paths, probs):
    k = int(row.argmax())
    writer.writerow([p, names[k], f"{row[k]:.6f}"])
  io_utils.atomic_write_text(FLAGS.output, buf.getvalue())
  print(f"{FLAGS.output}: {len(paths)} predictions")
  return 0


def run(argv):
  """`biwaa-tf predict`; returns the exit status."""
  from biwaa_tf import cli
  return cli.run_command(argv, __doc__, __name__, main)


if __name__ == "__main__":
  sys.exit(run(sys.argv))
