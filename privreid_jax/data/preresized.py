"""The training images stored once at the network's input size (`data.preresize`).

Per training image a worker reads a JPEG, decodes it and resizes it to
data.height x data.width before the flip and crop; the resize and the decode
are most of its time (`experiments/bench_input.py --stages`). With
`data.preresize=True` the trainer first writes every training image, decoded
and resized exactly as the pipeline does it, as raw uint8 pixels into
WORKDIR/preresized_train/ (an ArrayRecord file, `target_records` with
`encoding="raw"`; 98 KB per image at 256x128) and trains from there: no decoding,
no resizing, the same batches bit for bit. A folder cut short by a crash has no
meta.json and is written again; a complete one is reused on resume.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from privreid_jax.data import pipeline, target_records, transforms
from privreid_jax.data.records import DatasetError

DIRNAME = "preresized_train"


class PreresizedSource:
  """Item i = {"image": uint8 HxWx3 (pre-resized), "pid", "camid"} of the source
  it was written from; the labels are kept in meta.json (picklable, so grain's
  workers can read it)."""

  def __init__(self, directory: str):
    self.images = target_records.TargetSource(directory)
    self.pids = np.asarray(self.images.meta["pids"])
    self.camids = np.asarray(self.images.meta["camids"])

  def __len__(self) -> int:
    return len(self.pids)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    return {"image": self.images[index]["image"], "pid": int(self.pids[index]),
            "camid": int(self.camids[index])}

  def __repr__(self) -> str:
    return f"PreresizedSource({self.images.directory}, {len(self)} images)"


def open_or_write(directory: str, source: Sequence[Any], height: int,
                  width: int) -> PreresizedSource:
  """The pre-resized copy of `source` in `directory`, written first if missing."""
  if target_records.is_complete(directory):
    meta = target_records.read_meta(directory)
    if (meta.get("encoding") == "raw" and "pids" in meta
        and meta["num_images"] == len(source)
        and (meta["height"], meta["width"]) == (height, width)):
      return PreresizedSource(directory)
  pids, camids = [], []

  def images():
    for i in range(len(source)):
      image, pid, camid = pipeline.read_item(source, i)   # decoded as training does
      pids.append(pid)
      camids.append(camid)
      yield transforms.resize(image, height, width)

  # write() reads the meta after the images (its docstring), so the labels are all in.
  target_records.write(directory, images(), {"kind": "pre-resized training images",
                                             "pids": pids, "camids": camids},
                       encoding="raw")
  return PreresizedSource(directory)


def train_source(workdir: str, source: Sequence[Any], data_cfg: Any,
                 process_count: int = 1) -> Sequence[Any]:
  """`source`, or its pre-resized copy under `workdir` when data.preresize is on."""
  if not data_cfg.preresize:
    return source
  if process_count > 1:
    raise DatasetError("data.preresize=True needs a single process (each host would "
                       "write WORKDIR/preresized_train); turn it off for multi-host runs")
  return open_or_write(os.path.join(workdir, DIRNAME), source, int(data_cfg.height),
                       int(data_cfg.width))
