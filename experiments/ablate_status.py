"""A run folder's state for the runner (experiments/ablate.py): the names of the files a
run's workdir holds (`run.json`, `ablate.log`, `eval_metrics.jsonl`), reading and writing
`run.json`, the newest checkpoint, whether a run is finished, still being trained by a
live process on this host (busy) or was written for another config or other overrides,
and a one-line summary of its last evaluation."""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Mapping

from experiments.ablate_sweep import Run, SweepError

RUN_FILE = "run.json"
LOG_FILE = "ablate.log"
EVAL_FILE = "eval_metrics.jsonl"   # privreid_jax.metric_writers.EVAL_FILE (no jax import here)


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


def normalised(value: Any) -> Any:
  return json.loads(json.dumps(value, default=str))


def check_folder(run: Run, root: str) -> None:
  """A run folder must have been written for the same config and overrides."""
  old = read_status(run.workdir(root))
  if not old:
    return
  if (old.get("config"), old.get("overrides")) != (run.config, normalised(run.overrides)):
    raise SweepError(
        f"run {run.name!r}: {os.path.join(run.workdir(root), RUN_FILE)} was written for "
        f"config {old.get('config')!r} with overrides {old.get('overrides')}, the sweep now "
        f"says {run.config!r} with {normalised(run.overrides)}; rename the run or delete "
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
