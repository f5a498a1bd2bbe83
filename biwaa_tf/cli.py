"""`biwaa-tf`: the user commands, one console script.

    biwaa-tf train --flagfile=configs/oh_c2p.flags [--flag=value ...]
    biwaa-tf predict --saved_model=RUN/export --images=DIR_OR_LIST --output=predictions.csv
    biwaa-tf evaluate --saved_model=RUN/export --list=LIST --data_root=ROOT
    biwaa-tf make-list DIRECTORY OUTPUT.txt
    biwaa-tf heatmap --model_dir=RUN
    biwaa-tf demo

`python -m biwaa_tf.main` is `biwaa-tf train`. Each command parses its own flags (absl),
says `--help`, and ends a mistake with one `error:` line and exit status 2.
"""

import difflib
import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# command -> (module, one line of help); the module's run(argv) returns the exit status.
COMMANDS = {
    "train": ("biwaa_tf.main", "train BIWAA(-I) from flags or a flagfile (--help lists them)"),
    "predict": ("biwaa_tf.commands.predict", "classify images with an exported model (CSV)"),
    "evaluate": ("biwaa_tf.commands.evaluate",
                 "accuracy, per-class table and confusion matrix of an exported model"),
    "make-list": ("biwaa_tf.commands.make_list",
                  "write a list file from a class-subfolder directory"),
    "heatmap": ("biwaa_tf.commands.heatmap",
                "where the discriminator looks, DANN vs BIWAA (the paper's Fig. 1)"),
    "demo": ("biwaa_tf.demo", "source-only vs BIWAA on shifted, long-tailed digits"),
}


def usage():
  width = max(map(len, COMMANDS))
  lines = ["usage: biwaa-tf COMMAND [--flag=value ...]   (biwaa-tf COMMAND --help)", "",
           "commands:"]
  lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
  return "\n".join(lines)


def parse_flags(argv, usage, help_text, positional=False):
  """Parses argv into absl's FLAGS for a command: (None, the program name and the
  positional arguments), or (exit status, None) after --help (`usage`, then
  `help_text()`) or a flag error (one line). Without `positional`, an argument that is
  not a flag is refused in one line."""
  from absl import flags
  if any(a in ("-h", "--help", "-help", "--helpfull", "--helpshort") for a in argv[1:]):
    print(usage)
    print(help_text())
    return 0, None
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}".splitlines()[0], file=sys.stderr)
    return 2, None
  if len(rest) > 1 and not positional:
    print(f"error: unexpected argument {rest[1]!r} (flags look like --name=value)",
          file=sys.stderr)
    return 2, None
  return None, rest


def run_command(argv, doc, module_name, main, positional=False):
  """A command module's run(argv): its flags parsed (--help: its docstring and flags),
  then main(the program name and the positional arguments); the exit status."""
  from absl import flags
  status, rest = parse_flags(argv, doc, lambda: flags.FLAGS.module_help(module_name),
                             positional)
  return status if status is not None else main(rest)


def main(argv=None):
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(usage())
    return 0 if len(argv) >= 2 else 2
  name = argv[1]
  if name not in COMMANDS:
    close = difflib.get_close_matches(name, COMMANDS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    print(f"error: unknown command {name!r}{hint}; biwaa-tf --help lists them",
          file=sys.stderr)
    return 2
  module = importlib.import_module(COMMANDS[name][0])
  return module.run([f"biwaa-tf {name}", *argv[2:]])


if __name__ == "__main__":
  sys.exit(main())
