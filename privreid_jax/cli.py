"""What the command-line tools share: flag parsing and errors in one line.

absl parses `--config=FILE --config.optim.lr=...` inside `app.run`, before
`main`; a misspelt key used to end in a traceback from ml_collections.
`parse_flags` is the `flags_parser` given to `app.run`: any parse error (a bad
flag, an unknown config key with a "did you mean", a value of the wrong type,
a missing config file, a bad variant) becomes one line on stderr and exit
code 2. `fail` prints a one-line error and exits.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from absl import flags

from privreid_jax import errors

USAGE_EXIT = 2       # a command line that cannot be run as given
ERROR_EXIT = 1       # a user error met while running


def fail(message: str, code: int = ERROR_EXIT) -> NoReturn:
  """Prints `error: message` (one line) on stderr and exits with `code`."""
  line = " ".join(str(message).split("\n")[0].split()) or "error"
  sys.stderr.write(f"error: {line}\n")
  sys.stderr.flush()
  raise SystemExit(code)


def _config_flags(fv) -> list[str]:
  """Names of the config-file flags (ml_collections' `_ConfigFlag`s) defined."""
  from ml_collections.config_flags import config_flags
  return [name for name in fv if config_flags.is_config_flag(fv[name])]


def _flag_value(argv: list[str], name: str) -> str | None:
  """The value given to --name on the command line (last one wins), else None."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      value = arg.split("=", 1)[1]
    elif arg == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _overrides(argv: list[str], name: str) -> list[str]:
  """The config keys set by --name.KEY[=...] / --noname.KEY on the command line."""
  keys = []
  for arg in argv:
    for prefix in (f"--{name}.", f"--no{name}."):
      if arg.startswith(prefix):
        keys.append(arg[len(prefix):].split("=", 1)[0])
  return keys


def _load(path: str):
  """(config, None) of `FILE[:variant]`, or (None, one-line reason)."""
  from ml_collections import config_dict
  from ml_collections.config_flags import config_flags
  filename = path.split(":", 1)[0]
  if not filename:
    return None, "no config file given"
  if not os.path.isfile(filename):
    return None, f"no such config file: {filename}"
  try:
    config = config_flags.ConfigFileFlagParser("config", lock_config=False).parse(path)
  except (TypeError, ValueError) as e:   # re-raised with the traceback as its text
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    last = lines[-1] if lines else str(e)
    for prefix in ("ValueError: ", "TypeError: ", "ConfigError: "):
      last = last[len(prefix):] if last.startswith(prefix) else last
    return None, last
  if not isinstance(config, config_dict.ConfigDict):
    return None, f"{filename}: get_config() did not return a ConfigDict"
  return config, None


def explain(argv: list[str], error: BaseException, fv=None) -> str:
  """One line saying what is wrong with the command line `argv`."""
  from privreid_jax import config_checks
  fv = fv or flags.FLAGS
  for name in _config_flags(fv):
    path = _flag_value(argv, name)
    keys = _overrides(argv, name)
    if path is None:
      if keys:
        return f"--{name}.{keys[0]} needs --{name}=FILE before it"
      continue
    config, reason = _load(path)
    if config is None:
      return f"--{name}={path}: {reason}"
    for key in keys:
      if not config_checks.has_key(config, key):
        hint = config_checks.suggest(key, config)
        return (f"--{name}.{key}: {path} has no key {key!r}"
                + (f"; did you mean --{name}.{hint}?" if hint else ""))
  text = errors.describe(error)
  text = text.replace("Flag --", "--").replace("flag --", "--")
  if "must have a value other than None" in text:
    text = text.split(":", 1)[0].split("=", 1)[0] + " is required"
  return text


def parse_flags(argv: list[str]) -> list[str]:
  """`app.run`'s flags_parser: absl's parsing, with one-line errors (exit code 2)."""
  fv = flags.FLAGS
  try:
    rest = fv(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    fail(explain(argv, e, fv), USAGE_EXIT)
  # A missing config file is not an error for absl until the config is read.
  from ml_collections import config_dict
  for name in _config_flags(fv):
    if fv[name].present and not isinstance(fv[name].value, config_dict.ConfigDict):
      fail(explain(argv, ValueError(f"--{name}: cannot load the config"), fv), USAGE_EXIT)
  return rest
