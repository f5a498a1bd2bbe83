"""Writes a list file ('relative/path label' a line) from a class-subfolder directory.

    biwaa-tf make-list DIRECTORY OUTPUT.txt [--relative_to=DATA_ROOT]

Classes are the sorted sub-folder names (index = position); paths are written
relative to --relative_to (default: DIRECTORY's parent), so that the list works
with --data_root=<that folder>. The class names go to OUTPUT.classes.json.
"""

import json
import os
import sys

from absl import flags

from biwaa_tf.data import lists
from biwaa_tf.errors import UserError
from biwaa_tf.io_utils import atomic_write_text

flags.DEFINE_string("relative_to", None, "Folder the written paths are relative to "
                    "(default: the directory's parent).")
FLAGS = flags.FLAGS


def make_list(directory, output, relative_to=None):
  """Returns the number of images written."""
  if not os.path.isdir(directory):
    raise UserError(f"{directory}: not a directory")
  image_list = lists.read_folder(directory)
  base = relative_to or os.path.dirname(os.path.abspath(directory))
  lines = [f"{os.path.relpath(os.path.abspath(p), base)} {int(y)}"
           for p, y in zip(image_list.paths, image_list.labels)]
  atomic_write_text(output, "\n".join(lines) + "\n")
  atomic_write_text(os.path.splitext(output)[0] + ".classes.json",
                    json.dumps(list(image_list.class_names), indent=1) + "\n")
  return len(lines)


def main(argv):
  if len(argv) != 3:
    print("usage: biwaa-tf make-list DIRECTORY OUTPUT.txt [--relative_to=DIR]",
          file=sys.stderr)
    return 2
  try:
    n = make_list(argv[1], argv[2], FLAGS.relative_to)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"{argv[2]}: {n} images")
  return 0


def run(argv):
  """`biwaa-tf make-list`; returns the exit status."""
  from biwaa_tf import cli
  return cli.run_command(argv, __doc__, __name__, main, positional=True)


if __name__ == "__main__":
  sys.exit(run(sys.argv))
