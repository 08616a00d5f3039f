"""Reading a sweep for the report (experiments/report.py): every workdir under a root
holding an `eval_metrics.jsonl` is a Run (its evaluation rows, the last row of each
setting, its run.json), ordered as in the sweep; runs named NAME_s<seed> are grouped
by NAME; and each run's training scalars are read from its TensorBoard event files."""

from __future__ import annotations

import glob
import json
import math
import os
import re
import struct
from typing import Any, Iterable, Mapping, Sequence

from experiments import ablate_status, ablate_sweep

EVAL_FILE = ablate_status.EVAL_FILE
ROW_KEYS = ("step", "epoch", "setting")


class Run:
  """One workdir's evaluation rows and its run.json."""

  def __init__(self, name: str, workdir: str, rows: list[dict], meta: Mapping[str, Any]):
    self.name = name
    self.workdir = workdir
    self.rows = rows
    self.meta = dict(meta)
    self.last = last_rows(rows)

  def value(self, setting: str, key: str) -> float | None:
    v = self.last.get(setting, {}).get(key)
    return None if v is None else float(v)

  def settings(self, prefix: str) -> list[str]:
    return [s for s in self.last if s.startswith(prefix)]


def read_rows(path: str) -> list[dict]:
  rows = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{n}: not a JSON line ({e.msg})") from None
      missing = [k for k in ROW_KEYS if k not in row]
      if missing:
        raise ValueError(f"{path}:{n}: row lacks {missing}")
      rows.append(row)
  return rows


def last_rows(rows: Iterable[dict]) -> dict[str, dict]:
  """{setting: the row of its largest step}; a repeated step keeps the later line."""
  out: dict[str, dict] = {}
  for row in rows:
    old = out.get(row["setting"])
    if old is None or row["step"] >= old["step"]:
      out[row["setting"]] = row
  return out


def find_runs(root: str) -> list[Run]:
  """Every workdir under `root` (or `root` itself) with an eval_metrics.jsonl."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"--root: no folder {root}")
  runs = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                         and d not in ("checkpoints", "tensorboard"))
    if EVAL_FILE not in filenames:
      if ablate_status.RUN_FILE in filenames:
        dirnames[:] = []   # a sweep run still training: its stage_<s> folders are not runs
      continue
    dirnames[:] = []       # a run's own subfolders (method A's stage_<s>) are part of it
    rel = os.path.relpath(dirpath, root)
    name = os.path.basename(os.path.abspath(root)) if rel == "." else rel
    try:
      meta = ablate_status.read_status(dirpath)
    except ablate_sweep.SweepError:
      meta = {}
    runs.append(Run(name, dirpath, read_rows(os.path.join(dirpath, EVAL_FILE)), meta))
  runs.sort(key=lambda r: (r.meta.get("sweep_index", math.inf), r.name))
  return runs


def seed_groups(runs: Sequence[Run]) -> list[tuple[str, list[Run]]]:
  """[(label, runs)]: runs named NAME_s<seed> joined under "NAME (N seeds)" (in the
  order of their first member); a run without another seed stays under its name."""
  groups: dict[str, list[Run]] = {}
  for run in runs:
    match = re.fullmatch(r"(.+)_s\d+", run.name)
    groups.setdefault(match.group(1) if match else run.name, []).append(run)
  return [(members[0].name if len(members) == 1 else f"{name} ({len(members)} seeds)",
           members) for name, members in groups.items()]


# --- TensorBoard scalars -------------------------------------------------------------


def read_tb_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} from the event files in `logdir` (later files win a step)."""
  from tensorboardX.proto import event_pb2   # tensorboardX is a dependency; no TF needed
  values: dict[str, dict[int, float]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos + 12 <= len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      start, pos = pos + 12, pos + 12 + length + 4   # length, crc, payload, crc
      if pos > len(data):
        break                                        # a record still being written
      event = event_pb2.Event()
      event.ParseFromString(data[start:start + length])
      for v in event.summary.value:
        if v.WhichOneof("value") == "simple_value":
          values.setdefault(v.tag, {})[int(event.step)] = float(v.simple_value)
  return {tag: sorted(points.items()) for tag, points in values.items()}


def train_scalar_rows(runs: Sequence[Run]) -> list[dict]:
  out = []
  for run in runs:
    scalars = read_tb_scalars(os.path.join(run.workdir, "tensorboard"))
    for tag, points in sorted(scalars.items()):
      if not tag.startswith("eval/"):
        out += [{"run": run.name, "tag": tag, "step": s, "value": v} for s, v in points]
  return out
