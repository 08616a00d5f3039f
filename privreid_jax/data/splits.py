"""Opens the configured dataset as train / query / gallery sources for the pipeline.

`config.data.source` picks image folders (parsed by `datasets.py`) or a
prepared tfds ArrayRecord dataset (`tfds_market.py`). Synthetic pedestrians are
generated on first use.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from privreid_jax.data.records import DatasetError

REAL_FOLDERS = {"market1501": "Market-1501-v15.09.15", "dukemtmcreid": "DukeMTMC-reID",
                "msmt17": "MSMT17_V1", "cuhk03": "cuhk03-np"}


@dataclasses.dataclass(frozen=True)
class Split:
  source: Sequence[Any]     # Records or dicts with encoded images
  pids: np.ndarray
  camids: np.ndarray

  def __len__(self) -> int:
    return len(self.pids)


@dataclasses.dataclass(frozen=True)
class Splits:
  name: str
  root: str
  train: Split
  query: Split
  gallery: Split

  @property
  def num_train_pids(self) -> int:
    return int(self.train.pids.max()) + 1

  def summary(self) -> str:
    lines = [f"{self.name} at {self.root}",
             f"  {'subset':<8} {'# ids':>6} {'# images':>9} {'# cameras':>10}"]
    for name in ("train", "query", "gallery"):
      s = getattr(self, name)
      lines.append(f"  {name:<8} {len(np.unique(s.pids)):>6} {len(s):>9} "
                   f"{len(np.unique(s.camids)):>10}")
    return "\n".join(lines)


def synthetic_root(data_cfg) -> str:
  from privreid_jax.data import synthetic
  params = dict(data_cfg.synthetic)
  root = data_cfg.root or synthetic.default_root(**params)
  return synthetic.ensure_dataset(root, **params)


def _from_records(records) -> Split:
  return Split(tuple(records), np.array([r.pid for r in records], np.int32),
               np.array([r.camid for r in records], np.int32))


def open_splits(data_cfg) -> Splits:
  name = data_cfg.name
  if name == "synthetic":
    root = synthetic_root(data_cfg)
  else:
    root = data_cfg.root
    if not root:
      raise DatasetError(
          f"config.data.root is required for {name}: pass "
          f"--config.data.root=/path/to/{REAL_FOLDERS.get(name, name)}")
  if data_cfg.source == "tfds":
    from privreid_jax.data import tfds_market
    tfds_dir = data_cfg.tfds_dir
    if not tfds_dir or not os.path.isdir(tfds_dir):
      raise DatasetError(f"config.data.tfds_dir={tfds_dir!r} is not a folder: prepare it with "
                         f"python -m privreid_jax.data.tfds_market --name {name} "
                         f"--root {root or 'DIR'} --data_dir DIR")
    splits = {}
    for split in ("train", "query", "gallery"):
      src = tfds_market.data_source(tfds_dir, name, split,
                                    cuhk03_subset=data_cfg.cuhk03_subset)
      items = [src[i] for i in range(len(src))]
      splits[split] = Split(src, np.array([it["pid"] for it in items], np.int32),
                            np.array([it["camid"] for it in items], np.int32))
    return Splits(name, tfds_dir, **splits)
  if data_cfg.source != "folder":
    raise DatasetError(f"config.data.source={data_cfg.source!r}: expected folder | tfds")
  from privreid_jax.data import datasets
  ds = datasets.load_dataset(name, root, cuhk03_subset=data_cfg.cuhk03_subset)
  return Splits(ds.name, ds.root, _from_records(ds.train), _from_records(ds.query),
                _from_records(ds.gallery))
