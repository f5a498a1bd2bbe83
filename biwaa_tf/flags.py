"""The command-line flags, derived from config.TrainConfig (the CLI layer only).

Each option is defined once, as a TrainConfig field with its default, help text and
group (config.py); this module turns the fields into absl flags and prints `--help` by
group. `config_from_flags` gives the frozen config.
"""

import textwrap

from absl import flags

from biwaa_tf import config

_DEFINED = []


class _OrNone(flags.ArgumentParser):
  """A number flag whose unset value (None: decided from the other options) is written
  "None" in flags.txt, so that the file reads back as a flagfile."""

  def __init__(self, parser):
    self._parser = parser
    self.syntactic_help = f"{parser.syntactic_help} or None"

  def parse(self, argument):
    return None if argument in (None, "None") else self._parser.parse(argument)

  def flag_type(self):
    return self._parser.flag_type()


def _define(name, field):
  default, text = field.default, field.metadata["help"]
  if name in config.CHOICES:
    flags.DEFINE_enum(name, default, list(config.CHOICES[name]), text)
    return
  kind = field.type if isinstance(field.type, str) else field.type.__name__
  if default is None and kind in ("int", "float"):
    number = flags.IntegerParser() if kind == "int" else flags.FloatParser()
    flags.DEFINE(_OrNone(number), name, None, text, serializer=flags.ArgumentSerializer())
    return
  define = {"str": flags.DEFINE_string, "int": flags.DEFINE_integer,
            "float": flags.DEFINE_float, "bool": flags.DEFINE_boolean}[kind]
  define(name, default, text)


def define_flags():
  """Defines one flag per TrainConfig field (idempotent)."""
  if _DEFINED:
    return
  _DEFINED.append(True)
  for name, field in config.FIELDS.items():
    _define(name, field)


def _default_text(name):
  value = config.default(name)
  if name in config.REQUIRED:
    return "required"
  if value is None:
    return "derived"
  if isinstance(value, bool):
    return "true" if value else "false"
  return repr(value) if value == "" else str(value)


def grouped_help(width=100):
  """--help: every flag, by group (config.GROUPS), in the order the config defines them."""
  out = []
  for group in config.GROUPS:
    out.append(f"\n{group}:")
    for name in config.FIELDS:
      if config.group(name) != group:
        continue
      choices = f" ({'|'.join(config.CHOICES[name])})" if name in config.CHOICES else ""
      out.append(f"  --{name}{choices}  [default: {_default_text(name)}]")
      out.extend(textwrap.wrap(config.help_text(name), width=width, initial_indent="      ",
                               subsequent_indent="      ", break_on_hyphens=False))
  return "\n".join(out)


def config_from_flags(fv=None, **overrides):
  """The validated TrainConfig for parsed flag values `fv` (default: absl FLAGS), with
  `overrides` (option name -> value) in place of the flags' values."""
  fv = fv or flags.FLAGS
  values = {name: getattr(fv, name) for name in config.FIELDS}
  return config.resolve(config.TrainConfig(**{**values, **overrides}))
