"""Where metrics go: eval_metrics.jsonl, TensorBoard (tensorboardX), the console.

clu's metric_writers import TensorFlow, so TensorBoard event files are written
with tensorboardX. Only process 0 writes.

eval_metrics.jsonl holds one row per (step, setting): evaluating a step again
(a resume that redoes training lost in a crash, or a failed evaluation rerun)
replaces that step's row in place instead of adding a second one.
`evaluated_steps.json` lists the steps whose evaluation round completed, so a
resume can tell a round cut short (re-run it) from one that finished.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

EVAL_FILE = "eval_metrics.jsonl"
ROUNDS_FILE = "evaluated_steps.json"
EVAL_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP")
_NOT_IN_TAGS = re.compile(r"[^-/\w.]")


def tensorboard_tag(setting: str) -> str:
  """An evaluation setting as a TensorBoard tag: "->" as "_to_", and every other
  character a tag may not hold (":" of "3rd:P->O") as "_", which is what
  tensorboardX would do itself, logging a warning per scalar."""
  return _NOT_IN_TAGS.sub("_", setting.replace("->", "_to_"))


class MetricWriter:

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.workdir = workdir
    self.active = jax.process_index() == 0
    if self.active:
      _repair(workdir)
    rows = read_eval_rows(workdir)
    self._keys = {(r["step"], r["setting"]) for r in rows}
    if self.active and not rows and evaluated_steps(workdir) is None:
      # Started now, so no round has completed: a round cut short before its first
      # `round_done` (a run's only, final evaluation) is then known to be incomplete.
      _write_json(os.path.join(workdir, ROUNDS_FILE), [])
    self._tb = None
    if self.active and tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def scalars(self, step: int, values: Mapping[str, Any]) -> None:
    if not self.active:
      return
    values = {k: float(v) for k, v in values.items()}
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(k, v, step)
    logging.info("step %d: %s", step,
                 ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items())))

  def images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """images: {name: uint8 or [0,1] float HxWx3 grid}."""
    if self.active and self._tb is not None:
      for k, v in images.items():
        self._tb.add_image(k, np.asarray(v), step, dataformats="HWC")

  def eval_row(self, step: int, epoch: int, setting: str,
               metrics: Mapping[str, Any]) -> dict:
    """Appends one JSON line for an evaluation setting; returns the row."""
    row = {"step": int(step), "epoch": int(epoch), "setting": setting}
    row.update({k: float(v) for k, v in metrics.items()})
    if self.active:
      key = (row["step"], setting)
      if key in self._keys:      # evaluated again: replace the old row in place
        rows = [row if (r["step"], r["setting"]) == key else r
                for r in read_eval_rows(self.workdir)]
        _write_rows(os.path.join(self.workdir, EVAL_FILE), rows)
      else:
        with open(os.path.join(self.workdir, EVAL_FILE), "a") as f:
          f.write(json.dumps(row) + "\n")
        self._keys.add(key)
      if self._tb is not None:   # only finite values: eps_image=inf labels a row
        tag = tensorboard_tag(setting)
        for k, v in metrics.items():
          if math.isfinite(float(v)):
            self._tb.add_scalar(f"eval/{tag}/{k}", float(v), step)
    return row

  def round_done(self, step: int) -> None:
    """Records that the evaluation round of `step` completed."""
    if self.active:
      steps = sorted(set(evaluated_steps(self.workdir) or []) | {int(step)})
      _write_json(os.path.join(self.workdir, ROUNDS_FILE), steps)

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_eval_rows(workdir: str) -> list[dict]:
  """The rows of WORKDIR/eval_metrics.jsonl; a last line cut short by a crash
  mid-write is left out."""
  path = os.path.join(workdir, EVAL_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [line for line in f.read().split("\n") if line.strip()]
  rows = []
  for i, line in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except ValueError:
      if i != len(lines) - 1:
        raise ValueError(f"{path}: line {i + 1} is not JSON") from None
  return rows


def _repair(workdir: str) -> None:
  """Drops a partial last line (a crash mid-append) so appends start a new line."""
  path = os.path.join(workdir, EVAL_FILE)
  if not os.path.exists(path) or not os.path.getsize(path):
    return
  with open(path, "rb") as f:
    f.seek(-1, os.SEEK_END)
    complete = f.read(1) == b"\n"
  if not complete:
    _write_rows(path, read_eval_rows(workdir))


def evaluated_steps(workdir: str) -> list[int] | None:
  """Steps whose evaluation round completed (None: a workdir from before the record,
  whose rows are taken as complete rounds)."""
  path = os.path.join(workdir, ROUNDS_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return [int(s) for s in json.load(f)]
  except (OSError, ValueError, TypeError):
    return None


def _write_json(path: str, value: Any) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(value, f)
  os.replace(path + ".tmp", path)


def _write_rows(path: str, rows) -> None:
  with open(path + ".tmp", "w") as f:
    f.write("".join(json.dumps(r) + "\n" for r in rows))
  os.replace(path + ".tmp", path)


def merge_eval_rows(workdir: str, run_workdirs) -> None:
  """Writes WORKDIR/eval_metrics.jsonl as the rows of `run_workdirs`, in order."""
  lines = [json.dumps(r) for w in run_workdirs for r in read_eval_rows(w)]
  path = os.path.join(workdir, EVAL_FILE)
  with open(path + ".tmp", "w") as f:
    f.write("".join(line + "\n" for line in lines))
  os.replace(path + ".tmp", path)
