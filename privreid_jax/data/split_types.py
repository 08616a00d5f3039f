"""The split containers the pipeline reads: `Split` (one subset), `Splits` (a dataset)."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np


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
  val_query: Split | None = None      # held-out training identities (val_fraction > 0)
                                      # or new synthetic people (val_people_seed >= 0)
  val_gallery: Split | None = None

  @property
  def num_train_pids(self) -> int:
    return int(self.train.pids.max()) + 1

  def summary(self) -> str:
    lines = [f"{self.name} at {self.root}",
             f"  {'subset':<11} {'# ids':>6} {'# images':>9} {'# cameras':>10}"]
    names = ("train", "query", "gallery")
    if self.val_query is not None:
      names += ("val_query", "val_gallery")
    for name in names:
      s = getattr(self, name)
      lines.append(f"  {name:<11} {len(np.unique(s.pids)):>6} {len(s):>9} "
                   f"{len(np.unique(s.camids)):>10}")
    return "\n".join(lines)

  def validation(self) -> Splits:
    """These splits with the val query / gallery in place of the test ones."""
    if self.val_query is None:
      raise ValueError("no validation split: set config.data.val_fraction > 0, or "
                       "config.data.val_people_seed >= 0 on synthetic data")
    return dataclasses.replace(self, query=self.val_query, gallery=self.val_gallery)


class Subset:
  """Items `indices` of a source, re-indexed 0..n-1 (any random-access source)."""

  def __init__(self, source: Sequence[Any], indices: Sequence[int]):
    self.source, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int):
    return self.source[int(self.indices[i])]
