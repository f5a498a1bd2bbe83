"""The one exception type that reaches the user as a one-line message."""


class UserError(Exception):
  """Bad flags, files or data: main prints ``error: <message>`` and exits 2."""
