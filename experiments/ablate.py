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

import datetime
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Mapping, Sequence

from absl import flags

from experiments.ablate_status import (LOG_FILE, RUN_FILE, busy_pid, check_folder, is_finished,
                                       latest_checkpoint, normalised, read_status, summary,
                                       write_status)
from experiments.ablate_sweep import (REPO, Run, SweepError, load_sweep, parse_set, parse_shard,
                                      resolve, select)
from privreid_jax import interrupts   # signals only: no JAX import


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
      "config": run.config, "overrides": normalised(run.overrides),
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
