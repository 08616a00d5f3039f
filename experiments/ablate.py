"""Runs a sweep of named training runs, one workdir each: resumable, shardable.

  python -m experiments.ablate --sweep experiments/sweeps/baseline_synthetic.py --root /tmp/sweep
  python -m experiments.ablate --sweep experiments/sweeps/baseline_synthetic.py:tiny \
      --root /tmp/sweep --shard 0/2          # runs 0, 2, 4, ... (the other machine: 1/2)
  python -m experiments.ablate --sweep ... --root DIR --only gem_s0,wrt_s0 --dry_run
  python -m experiments.ablate --sweep ... --root DIR --set data.root=/data/market

A sweep file defines `get_sweep(arg=None) -> list[dict]` (`--sweep FILE:arg`
passes `arg`), each dict `{"name": str, "config": "configs/x.py[:variant]",
"overrides": {"optim.epochs": 5, ...}}`. Config paths are relative to the
working directory, the repository or the sweep file. `--set KEY=VALUE` adds an
override to every run (a dataset path, say) and wins over the sweep's. In a
string override, `{root}` stands for the sweep's root folder, so one run can
point at another's workdir (method A's third-party model: "{root}/third_party").

Every run gets `ROOT/<name>/` (the trainer's workdir) with `run.json` (config,
overrides, command, status running/done/failed/interrupted, host, attempts,
wall time, the git commit of the code per attempt) and `ablate.log` (the run's
output). A run whose status is done and
whose latest checkpoint is at the final epoch is skipped; any other run is
started, and the trainer resumes from the workdir's checkpoint. All configs
and overrides are checked before anything runs: a misspelt key or a value of
the wrong type stops the sweep naming the run and the key; so does a run
folder written for a different config or different overrides.

Runs execute in a subprocess, `python -m privreid_jax.main --config=...
--config.key=value --workdir=...`: a crash (an XLA abort, out of memory, a
NaN stop) cannot take the runner down, each run starts with fresh device
memory and JAX state, and flags are parsed exactly as a user's command line
(the runner parses the same argv in-process first, with the same
`config_flags`, to check it). The price, a few seconds of imports per run, is
kept down by a persistent compilation cache shared by the sweep's runs
(`--compile_cache`, default `ROOT/.jax_cache`). A failed run is reported and
the sweep goes on; the exit code is 1 if any run failed, 2 for a bad sweep.

Stopping the runner stops its run: Ctrl-C reaches both (one process group);
a SIGTERM to the runner (`kill`, a scheduler's preemption) is passed on to the
run, which saves a checkpoint as it does for its own SIGTERM, and the run is
marked interrupted. A run whose `run.json` says running, written on this
host by a runner or run process that is still alive, is left alone (reported
as busy, exit code 1) rather than started again, whose trainer would stop at
the workdir's lock and leave the run marked failed.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import difflib
import importlib.util
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import warnings
from typing import Any, Mapping, Sequence

from absl import flags
from ml_collections import ConfigDict, config_flags

from privreid_jax import interrupts   # signals only: no JAX import

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_FILE = "run.json"
LOG_FILE = "ablate.log"
EVAL_FILE = "eval_metrics.jsonl"   # privreid_jax.metric_writers.EVAL_FILE (no jax import here)
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


# --- sweep files ------------------------------------------------------------------


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


# --- run folders ------------------------------------------------------------------


def read_status(workdir: str) -> dict:
  path = os.path.join(workdir, RUN_FILE)
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise SweepError(f"{path}: not valid JSON ({e}); delete it to rerun the run") from None


def write_status(workdir: str, status: Mapping[str, Any]) -> None:
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, RUN_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(status, f, indent=1, sort_keys=False, default=str)
    f.write("\n")
  os.replace(path + ".tmp", path)


def latest_checkpoint(workdir: str) -> tuple[int | None, dict]:
  """(step, metadata) of the newest committed checkpoint (orbax's folder layout)."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    return None, {}
  steps = [int(n) for n in os.listdir(ckpt_dir) if n.isdigit()]
  if not steps:
    return None, {}
  step = max(steps)
  try:
    with open(os.path.join(ckpt_dir, str(step), "meta", "metadata")) as f:
      return step, json.load(f)
  except (OSError, json.JSONDecodeError):
    return step, {}


def is_finished(run: Run, root: str) -> bool:
  """Status done and a checkpoint at the final epoch."""
  workdir = run.workdir(root)
  if read_status(workdir).get("status") != "done":
    return False
  _, meta = latest_checkpoint(workdir)
  return meta.get("epoch") == run.resolved.optim.epochs


def _is_process(pid: Any, arg_test) -> bool:
  """Whether `pid` is a live process other than this one with a command-line
  argument passing `arg_test` (where /proc is missing: whether it is alive)."""
  if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
    return False
  try:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      args = f.read().decode(errors="replace").split("\0")
    return any(arg_test(a) for a in args)
  except FileNotFoundError:
    if os.path.isdir("/proc"):
      return False
  except OSError:
    pass
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def busy_pid(run: Run, root: str) -> int | None:
  """The pid still training `run` on this host, per its run.json, else None."""
  workdir = run.workdir(root)
  status = read_status(workdir)
  if status.get("status") != "running" or status.get("host") != socket.gethostname():
    return None
  if _is_process(status.get("child_pid"), lambda a: a == f"--workdir={workdir}"):
    return status["child_pid"]
  if _is_process(status.get("pid"), lambda a: "ablate" in a):
    return status["pid"]
  return None


def _normalised(value: Any) -> Any:
  return json.loads(json.dumps(value, default=str))


def check_folder(run: Run, root: str) -> None:
  """A run folder must have been written for the same config and overrides."""
  old = read_status(run.workdir(root))
  if not old:
    return
  if (old.get("config"), old.get("overrides")) != (run.config, _normalised(run.overrides)):
    raise SweepError(
        f"run {run.name!r}: {os.path.join(run.workdir(root), RUN_FILE)} was written for "
        f"config {old.get('config')!r} with overrides {old.get('overrides')}, the sweep now "
        f"says {run.config!r} with {_normalised(run.overrides)}; rename the run or delete "
        "its folder")


def read_last_eval(workdir: str) -> dict[str, dict]:
  """{setting: row} of the last evaluation in a workdir's eval_metrics.jsonl."""
  path = os.path.join(workdir, EVAL_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  if not rows:
    return {}
  last = max(r["step"] for r in rows)
  return {r["setting"]: r for r in rows if r["step"] == last}


def summary(workdir: str, limit: int = 4) -> str:
  parts = []
  for setting, row in read_last_eval(workdir).items():
    if "rank1" in row and len(parts) < limit:
      part = f"{setting} R1 {100 * row['rank1']:.1f}"
      if "mAP" in row:
        part += f" mAP {100 * row['mAP']:.1f}"
      parts.append(part)
  return ", ".join(parts)


def _now() -> str:
  return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def code_version(path: str = os.path.dirname(os.path.abspath(__file__))) -> str:
  """The git commit of the checkout holding `path` (this tool's, so the package it
  trains), "+dirty" when tracked files are changed; "" outside a git checkout."""
  def git(*args: str) -> str:
    return subprocess.run(["git", "-C", path, *args], capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()
  try:
    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
  except (OSError, subprocess.SubprocessError):
    return ""
  return commit + ("+dirty" if dirty else "")


def _tail(path: str, lines: int = 1) -> str:
  try:
    with open(path, errors="replace") as f:
      text = [ln.rstrip() for ln in f.readlines()[-200:] if ln.strip()]
  except OSError:
    return ""
  return " | ".join(text[-lines:])


def execute(run: Run, root: str, sweep_file: str, env: Mapping[str, str]) -> tuple[str, str]:
  """Trains one run in a subprocess; returns (outcome, message)."""
  workdir = run.workdir(root)
  os.makedirs(workdir, exist_ok=True)
  old = read_status(workdir)
  status = {
      "name": run.name, "sweep": os.path.abspath(sweep_file), "sweep_index": run.index,
      "config": run.config, "overrides": _normalised(run.overrides),
      "command": shlex.join(run.command(root)), "status": "running",
      "host": socket.gethostname(), "pid": os.getpid(),
      "attempts": int(old.get("attempts", 0)) + 1, "started": _now(), "finished": None,
      "wall_time_s": float(old.get("wall_time_s", 0.0)), "last_attempt_s": None,
      "returncode": None,
      # one entry per attempt: a resumed run shows every commit it trained under
      "code_versions": list(old.get("code_versions", [])) + [code_version()],
      "resolved_config": json.loads(run.resolved.to_json_best_effort()),
  }
  write_status(workdir, status)
  log_path = os.path.join(workdir, LOG_FILE)
  t0 = time.time()

  def finish(state: str, returncode: int | None) -> None:
    elapsed = time.time() - t0
    status.update(status=state, finished=_now(), returncode=returncode,
                  last_attempt_s=round(elapsed, 2),
                  wall_time_s=round(status["wall_time_s"] + elapsed, 2))
    write_status(workdir, status)

  with open(log_path, "a") as log:
    log.write(f"==== {_now()} attempt {status['attempts']} on {status['host']}: "
              f"{status['command']}\n")
    log.flush()
    with interrupts.handled():   # SIGTERM too becomes a KeyboardInterrupt here
      proc = subprocess.Popen(run.command(root), stdout=log, stderr=subprocess.STDOUT,
                              env=dict(env))
      status["child_pid"] = proc.pid
      write_status(workdir, status)
      try:
        returncode = proc.wait()
      except KeyboardInterrupt as e:
        # Ctrl-C reached the child too (same process group); anything else sent to
        # the runner alone (kill's SIGTERM) is passed on. The child saves a checkpoint.
        signum = getattr(e, "signum", signal.SIGINT)
        if signum != signal.SIGINT and proc.poll() is None:
          proc.send_signal(signum)
        try:
          proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
          proc.kill()
          proc.wait()
        finish("interrupted", proc.returncode)
        raise
  elapsed = time.time() - t0
  if returncode == 0:
    finish("done", 0)
    return "done", f"done in {elapsed:.1f}s" + (f": {summary(workdir)}" if summary(workdir) else "")
  finish("failed", returncode)
  return "failed", (f"FAILED (exit {returncode}) after {elapsed:.1f}s: {_tail(log_path)} "
                    f"(log: {log_path})")


def child_env(compile_cache: str) -> dict[str, str]:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
  if compile_cache:
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.abspath(compile_cache))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  return env


# --- command line -----------------------------------------------------------------


def _define(fv: flags.FlagValues) -> flags.FlagValues:
  """The runner's flags (absl, snake_case) on `fv`."""
  flags.DEFINE_string("sweep", None, "Sweep file (experiments/sweeps/NAME.py[:arg]).",
                      flag_values=fv)
  flags.DEFINE_string("root", None, "Folder holding one workdir per run.", flag_values=fv)
  flags.DEFINE_string("shard", "0/1", "i/n: run only runs i, i+n, ... (0-based).",
                      flag_values=fv)
  flags.DEFINE_multi_string("only", [], "Run only these runs (comma-separated or repeated).",
                            flag_values=fv)
  flags.DEFINE_multi_string("set", [], "KEY=VALUE: an override for every run, e.g. "
                            "data.root=/data/market (repeatable).", flag_values=fv)
  flags.DEFINE_boolean("dry_run", False, "Print what would run (and the commands); "
                       "write nothing.", flag_values=fv)
  flags.DEFINE_string("compile_cache", None, "Persistent JAX compilation cache shared by "
                      "the runs (default ROOT/.jax_cache; '' disables).", flag_values=fv)
  for name in ("sweep", "root"):
    flags.mark_flag_as_required(name, flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the sweep; argv without the program name (default sys.argv[1:])."""
  from privreid_jax import cli
  argv = list(sys.argv[1:] if argv is None else argv)
  args = _define(flags.FlagValues())
  cli.parse_tool_flags(args, ["python -m experiments.ablate", *argv], __doc__)
  root = os.path.abspath(args.root)
  try:
    extra = parse_set(args.set)
    shard = parse_shard(args.shard)
    only = [n for item in args.only for n in item.split(",") if n]
    raw = load_sweep(args.sweep)
    sweep_file = args.sweep.partition(":")[0]
    runs = [resolve(r, i, sweep_file, extra, root) for i, r in enumerate(raw)]
    seen: set[str] = set()
    for r in runs:
      if r.name in seen:
        raise SweepError(f"sweep {sweep_file}: two runs are named {r.name!r}")
      seen.add(r.name)
    picked = select(runs, shard, only)
    for r in picked:
      check_folder(r, root)
  except SweepError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2

  cache = os.path.join(root, ".jax_cache") if args.compile_cache is None else args.compile_cache
  env = child_env(cache)
  total = len(picked)
  print(f"sweep {sweep_file}: {len(runs)} runs, {total} selected (shard {shard[0]}/{shard[1]})"
        f" -> {root}", flush=True)
  counts = {"done": 0, "skipped": 0, "failed": 0, "busy": 0}
  for k, run in enumerate(picked, 1):
    head = f"[{k}/{total}] {run.name}:"
    step, _ = latest_checkpoint(run.workdir(root))
    finished = is_finished(run, root)
    if args.dry_run:
      state = ("done, would skip" if finished else
               f"would resume from step {step}" if step is not None else "would run")
      print(f"{head} {state}\n    {shlex.join(run.command(root))}", flush=True)
      continue
    if finished:
      counts["skipped"] += 1
      print(f"{head} skipped, finished (checkpoint at step {step}): "
            f"{summary(run.workdir(root))}", flush=True)
      continue
    pid = busy_pid(run, root)
    if pid is not None:
      counts["busy"] += 1
      print(f"{head} busy: pid {pid} on this host is still training it "
            f"({os.path.join(run.workdir(root), RUN_FILE)} says running); stop that process "
            "or let it finish, then rerun", flush=True)
      continue
    doing = f"resuming from step {step}" if step is not None else "training"
    print(f"{head} {doing} ...", end=" ", flush=True)
    try:
      outcome, message = execute(run, root, sweep_file, env)
    except KeyboardInterrupt:
      print("interrupted; rerun the same command to resume", flush=True)
      return 130
    counts[outcome] += 1
    print(message, flush=True)
  if not args.dry_run:
    print(f"{total} runs: {counts['done']} trained, {counts['skipped']} skipped, "
          f"{counts['failed']} failed" + (f", {counts['busy']} busy" if counts["busy"] else ""),
          flush=True)
  return 1 if counts["failed"] or counts["busy"] else 0


if __name__ == "__main__":
  sys.exit(main())
