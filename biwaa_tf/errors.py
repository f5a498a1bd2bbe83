"""The exception types that reach the user as a one-line message."""

import re


class UserError(Exception):
  """Bad flags, files or data: main prints ``error: <message>`` and exits 2."""
  exit_status = 2


class StorageError(UserError):
  """A write failed for want of space or quota, or on a read-only or failing disk: the
  same one line, exit status 1 (the command itself was right: re-run it once the disk
  takes the writes, and it resumes)."""
  exit_status = 1


def reason(exc):
  """The first line of an exception's message, without TensorFlow's op and function
  decorations ('{{function_node ...}}', '[Op:RestoreV2]'): the 'why' of a one-line error."""
  text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
  text = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", text)
  return re.sub(r"\s*\[Op:\w+\]$", "", text)[:200]
