"""What the command-line tools share: flag parsing and errors in one line.

absl parses `--config=FILE --config.optim.lr=...` inside `app.run`, before
`main`; a misspelt key used to end in a traceback from ml_collections.
`parse_flags` is the `flags_parser` given to `app.run`: any parse error (a bad
flag, an unknown config key with a "did you mean", a value of the wrong type,
a missing config file, a bad variant) becomes one line on stderr and exit
code 2, and so does a string flag given empty (`--workdir=$UNSET` would put a
run in the current folder). `fail` prints a one-line error and exits.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from typing import NoReturn, Sequence

from absl import flags

from privreid_jax import errors, paths

USAGE_EXIT = 2       # a command line that cannot be run as given
ERROR_EXIT = 1       # a user error met while running


def fail(message: str, code: int = ERROR_EXIT) -> NoReturn:
  """Prints `error: message` (one line) on stderr and exits with `code`."""
  line = " ".join(str(message).split("\n")[0].split()) or "error"
  sys.stderr.write(f"error: {line}\n")
  sys.stderr.flush()
  raise SystemExit(code)


def output_parent_error(flag: str, path: str) -> str | None:
  """The one-line error for an output `path` that cannot be created because a
  file stands where a folder on its way up must be (for the tools to check
  before any work), else None."""
  blocker = paths.file_in_the_way(path)
  return None if blocker is None else f"--{flag}={path}: {blocker} is a file, not a folder"


def output_folder_error(flag: str, path: str) -> str | None:
  """The one-line error for an output folder `path` that is a file or cannot be
  created (`output_parent_error`), else None."""
  if os.path.exists(path) and not os.path.isdir(path):
    return f"--{flag}={path} is a file; give a folder"
  return output_parent_error(flag, path)


def _check_not_empty(fv) -> None:
  """Exit 2 for a string flag given on the command line with an empty value
  (config fields, `--config.KEY=`, are not flags of the tool: an empty
  `model.pretrained` or `evals.outsider.workdir` means none)."""
  for name in fv:
    fl = fv[name]
    if ("." not in name and fl.present and fl.flag_type() == "string"
        and fl.value == ""):
      fail(f"--{name}= is empty: give a value (an unset shell variable?)", USAGE_EXIT)


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
      if not has_key(config, key):
        hint = suggest(key, config)
        return (f"--{name}.{key}: {path} has no key {key!r}"
                + (f"; did you mean --{name}.{hint}?" if hint else ""))
  text = errors.describe(error)
  text = text.replace("Flag --", "--").replace("flag --", "--")
  if "must have a value other than None" in text:
    text = text.split(":", 1)[0].split("=", 1)[0] + " is required"
  # ml_collections' boolean override reports a tuple: say what it wants instead.
  text = re.sub(r"\('Non-boolean argument to boolean flag', ('.*')\)",
                r"expected true or false, got \1", text)
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
  _check_not_empty(fv)
  return rest


def _get(config, key: str):
  value = config
  for part in key.split("."):
    value = value[part]
  return value


def suggest(key: str, config) -> str | None:
  """The existing key closest to a misspelt `key` of `config`: the first part of
  `key` that does not exist is matched against its section's keys (None:
  nothing close)."""
  parts = key.split(".")
  section, prefix = config, ""
  for i, part in enumerate(parts):
    if not (hasattr(section, "keys") and callable(section.keys)):
      return None
    if part in section.keys():
      section, prefix = section[part], prefix + part + "."
      continue
    names = [str(k) for k in section.keys()]
    hits = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
    if not hits:
      return None
    return ".".join([prefix + hits[0]] + parts[i + 1:])
  return None


def has_key(config, key: str) -> bool:
  try:
    _get(config, key)
  except (KeyError, AttributeError, TypeError):
    return False
  return True


def parse_tool_flags(flag_values, argv: Sequence[str] | None, doc: str) -> list[str]:
  """Parses `argv` (default sys.argv) into a tool's own FlagValues.

  Each tool defines its flags on a fresh `flags.FlagValues` per call (so tools
  can be run in one process, e.g. tests, and share flag names). --help prints
  the tool's doc and flags (exit 0); a bad command line (unknown or misspelt
  flag or config key, missing required flag, stray argument) is a one-line
  error with exit status 2, as `cli.parse_flags` does for main.py. Returns
  argv's unparsed rest (the program name).
  """
  from absl import flags, logging
  from ml_collections import config_dict
  argv = list(sys.argv if argv is None else argv)
  if any(a in ("--help", "-h", "--helpfull") for a in argv[1:]):
    print(doc.strip() + "\n\nflags:\n" + flag_values.get_help())
    raise SystemExit(0)
  try:
    rest = flag_values(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    fail(explain(argv, e, flag_values), USAGE_EXIT)
  for name in flag_values:
    fl = flag_values[name]
    if (fl.present and hasattr(fl, "config_filename")
        and not isinstance(fl.value, config_dict.ConfigDict)):
      fail(explain(argv, ValueError(f"--{name}: cannot load the config"), flag_values),
           USAGE_EXIT)
  if len(rest) > 1:
    fail(f"unexpected arguments: {' '.join(rest[1:])}", USAGE_EXIT)
  _check_not_empty(flag_values)
  # absl's own (global) flags: logging reads them; mark them parsed with defaults.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  logging.set_verbosity(logging.WARNING)
  return rest


def define_run_flags(fv, argv, output_help: str) -> None:
  """--checkpoint (a run), --config (a dataset config; default the run's own) and
  --output, on a tool's own FlagValues (evaluate, visrank)."""
  from ml_collections import config_flags
  flags.DEFINE_string("checkpoint", None, "A run's workdir (or its checkpoints/ folder).",
                      flag_values=fv)
  config_flags.DEFINE_config_file(
      "config", None, "Dataset config (configs/*.py[:variant]); default: the run's own.",
      flag_values=fv, lock_config=True, sys_argv=list(argv))
  flags.DEFINE_string("output", None, output_help, flag_values=fv)
