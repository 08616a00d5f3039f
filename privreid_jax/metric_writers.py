"""Where metrics go: eval_metrics.jsonl, TensorBoard (tensorboardX), the console.

clu's metric_writers import TensorFlow, so TensorBoard event files are written
with tensorboardX. Only process 0 writes.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

EVAL_FILE = "eval_metrics.jsonl"
EVAL_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP")


class MetricWriter:

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.workdir = workdir
    self.active = jax.process_index() == 0
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
      with open(os.path.join(self.workdir, EVAL_FILE), "a") as f:
        f.write(json.dumps(row) + "\n")
      if self._tb is not None:
        tag = setting.replace("->", "_to_")   # TensorBoard tags allow no '>'
        for k, v in metrics.items():
          self._tb.add_scalar(f"eval/{tag}/{k}", float(v), step)
    return row

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_eval_rows(workdir: str) -> list[dict]:
  path = os.path.join(workdir, EVAL_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def merge_eval_rows(workdir: str, run_workdirs) -> None:
  """Writes WORKDIR/eval_metrics.jsonl as the rows of `run_workdirs`, in order."""
  lines = [json.dumps(r) for w in run_workdirs for r in read_eval_rows(w)]
  path = os.path.join(workdir, EVAL_FILE)
  with open(path + ".tmp", "w") as f:
    f.write("".join(line + "\n" for line in lines))
  os.replace(path + ".tmp", path)
