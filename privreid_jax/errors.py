"""User errors: what the command-line tools report as one line, without a traceback.

A *user error* is one the user can fix from its message alone: a bad flag or
config value, a missing or unreadable file, a workdir in use, a resume with a
different config, a run that diverged. `main.py` and `anonymize.py` print
`error: <one line>` on stderr for these and exit non-zero; anything else is an
internal error and keeps its traceback.
"""

from __future__ import annotations

import errno


class UserError(Exception):
  """Base of the errors this package raises for the user to fix (one-line message)."""


class ConfigError(UserError, ValueError):
  """A config value is invalid; the message names the key and the value."""


class ResumeMismatchError(ConfigError):
  """The workdir's checkpoint was written with a config that differs in meaning."""


class CheckpointError(UserError, ValueError):
  """A checkpoint on disk cannot be read (damaged or not a privreid_jax one); the
  message names its folder and step."""


class NonFiniteLossError(FloatingPointError):
  """Raised when a training loss, the parameters or evaluation features turn NaN
  or inf (nothing is saved after it; the message names the step)."""


# OSErrors that come from what the user asked for (paths, permissions, space), not
# from a bug: reported in one line.
FILE_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError,
               IsADirectoryError)
_USER_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENAMETOOLONG}


def is_user_error(e: BaseException) -> bool:
  """True for the errors `describe` reports in one line (see the module docstring)."""
  from privreid_jax.data.records import DatasetError
  if isinstance(e, (UserError, DatasetError) + FILE_ERRORS):
    return True
  if isinstance(e, OSError) and e.errno in _USER_ERRNOS:
    return True
  return isinstance(e, NonFiniteLossError)       # a run that diverged


def describe(e: BaseException) -> str:
  """One line for a user error: its message's first line, or `path: reason` for
  an OSError raised by the operating system."""
  if isinstance(e, OSError) and e.strerror and e.filename is not None:
    msg = f"{e.filename}: {e.strerror}"
    if e.filename2 is not None:
      msg += f" ({e.filename2})"
  else:
    msg = str(e)
    if isinstance(e, KeyError) and len(e.args) == 1:
      msg = str(e.args[0])
  lines = [line.strip() for line in msg.splitlines() if line.strip()]
  return lines[0] if lines else type(e).__name__
