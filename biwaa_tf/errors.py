"""The exception types that reach the user as a one-line message."""


class UserError(Exception):
  """Bad flags, files or data: main prints ``error: <message>`` and exits 2."""
  exit_status = 2


class StorageError(UserError):
  """A write failed for want of space or quota, or on a read-only or failing disk: the
  same one line, exit status 1 (the command itself was right: re-run it once the disk
  takes the writes, and it resumes)."""
  exit_status = 1
