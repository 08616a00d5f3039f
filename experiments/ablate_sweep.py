"""Loading and checking a sweep for the runner (experiments/ablate.py): a sweep file's
`get_sweep()` entries become Runs, each checked (its keys, name and config file) and its
config built exactly as privreid_jax.main would parse the run's argv, so that a misspelt
key or a value of the wrong type is a SweepError naming the run and the key before
anything runs; and the runner's `--set` and `--shard` are parsed, and `--shard` and
`--only` pick the runs."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import os
import re
import sys
import warnings
from typing import Any, Mapping, Sequence

from absl import flags
from ml_collections import ConfigDict, config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+,-]*$")
_RUN_KEYS = ("name", "config", "overrides")


class SweepError(ValueError):
  """A sweep file, run or command-line option that cannot be run as written."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One entry of a sweep, resolved and checked."""
  index: int
  name: str
  config: str                  # as written in the sweep: path[:variant]
  overrides: Mapping[str, Any]
  config_file: str = ""        # absolute path[:variant], what the subprocess gets
  flags: tuple[str, ...] = ()  # --config.key=value, in order
  resolved: Any = None         # the ConfigDict the subprocess will see

  def workdir(self, root: str) -> str:
    return os.path.join(root, self.name)

  def command(self, root: str) -> list[str]:
    return [sys.executable, "-m", "privreid_jax.main", f"--config={self.config_file}",
            *self.flags, f"--workdir={self.workdir(root)}"]



def _load_module(path: str, what: str):
  spec = importlib.util.spec_from_file_location(
      f"_sweep_{abs(hash(path))}", path)
  if spec is None or spec.loader is None:
    raise SweepError(f"{what}: cannot import {path}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_sweep(spec: str) -> list[dict]:
  """The raw run dicts of `FILE[:arg]` (get_sweep() or get_sweep(arg))."""
  path, sep, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise SweepError(f"--sweep: no file {path}")
  try:
    module = _load_module(path, f"--sweep {path}")
    if not callable(getattr(module, "get_sweep", None)):
      raise SweepError(f"--sweep {path}: defines no get_sweep()")
    runs = module.get_sweep(arg) if sep else module.get_sweep()
  except SweepError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (whatever the sweep file raises)
    raise SweepError(f"--sweep {spec}: {type(e).__name__}: {_last_line(e)}") from None
  if not isinstance(runs, (list, tuple)) or not runs:
    raise SweepError(f"--sweep {path}: get_sweep() must return a non-empty list of dicts")
  return list(runs)


def _config_file(config: str, sweep_file: str, where: str) -> str:
  path, sep, variant = config.partition(":")
  bases = (os.getcwd(), REPO, os.path.dirname(os.path.abspath(sweep_file)))
  candidates = [path] if os.path.isabs(path) else [os.path.join(b, path) for b in bases]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return os.path.abspath(candidate) + sep + variant
  raise SweepError(f"{where}: config file {path!r} not found (looked in the working "
                   f"directory, {REPO} and beside the sweep file)")


def _field(config: ConfigDict, key: str, where: str) -> Any:
  """The current value of dotted `key`, or a SweepError naming the key."""
  node: Any = config
  parts = key.split(".")
  for i, part in enumerate(parts):
    if not isinstance(node, ConfigDict) or part not in node:
      options = list(node.keys()) if isinstance(node, ConfigDict) else []
      close = difflib.get_close_matches(part, options, n=1)
      hint = f" (did you mean {'.'.join(parts[:i] + close[:1])!r}?)" if close else ""
      raise SweepError(f"{where}: unknown config key {key!r}{hint}")
    node = node[part]
  if isinstance(node, ConfigDict):
    raise SweepError(f"{where}: config key {key!r} is a section; override its fields")
  return node


def _check_type(key: str, current: Any, value: Any, where: str) -> None:
  if current is None:
    return
  if isinstance(current, bool):
    ok = isinstance(value, bool)
  elif isinstance(current, int):
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif isinstance(current, float):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  elif isinstance(current, str):
    ok = isinstance(value, str)
  elif isinstance(current, (tuple, list)):
    ok = isinstance(value, (tuple, list))
  else:
    ok = True
  if not ok:
    raise SweepError(f"{where}: override {key}={value!r} ({type(value).__name__}) does not "
                     f"match the config's {current!r} ({type(current).__name__})")


def flag_value(value: Any) -> str:
  """A Python value as config_flags parses it back (bools, tuples, numbers, strings)."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  return str(value)


def _last_line(error: Exception) -> str:
  lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
  return lines[-1] if lines else type(error).__name__


def _parse_like_main(config_file: str, flag_args: Sequence[str], where: str) -> ConfigDict:
  """The config privreid_jax.main would build from the same argv."""
  argv = ["privreid_jax.main", f"--config={config_file}", *flag_args]
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", None, "config", flag_values=values,
                                           lock_config=True, sys_argv=argv)
  try:
    with warnings.catch_warnings():   # ml_collections loads configs with load_module()
      warnings.filterwarnings("ignore", "the load_module", DeprecationWarning)
      values(argv)
    return holder.value
  except Exception as e:  # pylint: disable=broad-except  (absl, ml_collections, the config)
    raise SweepError(f"{where}: {_last_line(e)}") from None


def resolve(raw: Any, index: int, sweep_file: str,
            extra: Mapping[str, Any] | None = None, root: str = "") -> Run:
  """Checks one sweep entry and builds its flags and config.

  `{root}` in a string override becomes `root` (the sweep's root folder).
  """
  where = f"sweep {sweep_file}, run #{index}"
  if not isinstance(raw, Mapping):
    raise SweepError(f"{where}: expected a dict with keys {_RUN_KEYS}, got {raw!r}")
  unknown = sorted(set(raw) - set(_RUN_KEYS))
  if unknown:
    raise SweepError(f"{where}: unknown key(s) {unknown} (expected {_RUN_KEYS})")
  name = raw.get("name")
  if not isinstance(name, str) or not _NAME_RE.match(name):
    raise SweepError(f"{where}: 'name' must be a folder name of letters, digits and "
                     f"._=+,- (got {name!r})")
  where = f"sweep {sweep_file}, run {name!r}"
  config = raw.get("config")
  if not isinstance(config, str) or not config:
    raise SweepError(f"{where}: 'config' must be a path such as 'configs/synthetic.py:tiny'")
  overrides = dict(raw.get("overrides") or {})
  overrides.update(extra or {})
  for key, value in overrides.items():
    if isinstance(value, str) and "{root}" in value:
      if not root:
        raise SweepError(f"{where}: override {key}={value!r} uses {{root}}, but no "
                         "root folder was given")
      overrides[key] = value.replace("{root}", root)
  config_file = _config_file(config, sweep_file, where)
  base = _parse_like_main(config_file, (), f"{where}: config {config!r}")
  if not isinstance(base, ConfigDict):
    raise SweepError(f"{where}: config {config!r}: get_config() returned no ConfigDict")
  flag_args = []
  for key, value in overrides.items():
    if not isinstance(key, str):
      raise SweepError(f"{where}: override keys are dotted strings, got {key!r}")
    _check_type(key, _field(base, key, where), value, where)
    flag_args.append(f"--config.{key}={flag_value(value)}")
  resolved = _parse_like_main(config_file, flag_args, where)
  return Run(index, name, config, overrides, config_file, tuple(flag_args), resolved)


def parse_set(items: Sequence[str]) -> dict[str, Any]:
  """`--set KEY=VALUE` items: Python literals where they parse, else strings."""
  out = {}
  for item in items:
    key, sep, text = item.partition("=")
    if not sep or not key:
      raise SweepError(f"--set {item!r}: expected KEY=VALUE, e.g. data.root=/data/market")
    if text.lower() in ("true", "false"):
      out[key] = text.lower() == "true"
      continue
    try:
      out[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      out[key] = text
  return out


def parse_shard(text: str) -> tuple[int, int]:
  match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
  if not match or not int(match.group(1)) < int(match.group(2)):
    raise SweepError(f"--shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/2")
  return int(match.group(1)), int(match.group(2))


def select(runs: Sequence[Run], shard: tuple[int, int] = (0, 1),
           only: Sequence[str] = ()) -> list[Run]:
  """Runs i, i+n, ... of the whole sweep (stable across machines), then `only`."""
  i, n = shard
  picked = [r for r in runs if r.index % n == i]
  if only:
    names = {r.name for r in runs}
    missing = [o for o in only if o not in names]
    if missing:
      raise SweepError(f"--only: no run named {missing} in the sweep "
                       f"(runs: {', '.join(r.name for r in runs)})")
    picked = [r for r in picked if r.name in only]
  return picked
