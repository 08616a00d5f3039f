"""Plain record types shared by every dataset parser and the input pipeline."""

from __future__ import annotations

import dataclasses
from typing import Sequence


# The small public datasets (small_datasets.py), named here so that every reader
# can point to their loader without importing it.
SMALL_DATASETS = ("viper", "grid", "prid2011", "cuhk01", "ilids")


class DatasetError(ValueError):
  """A dataset folder or file is missing, empty or malformed (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Record:
  """One image: where it is, whose it is (pid) and which camera took it (0-based)."""
  path: str
  pid: int
  camid: int


@dataclasses.dataclass(frozen=True)
class ReidDataset:
  """The three splits of a Re-ID dataset.

  `train` pids are relabelled 0..N-1 (sorted by original pid); `query` and
  `gallery` keep the original pids (0 = distractor in the gallery, -1 dropped).
  """
  name: str
  root: str
  train: tuple[Record, ...]
  query: tuple[Record, ...]
  gallery: tuple[Record, ...]

  @property
  def num_train_pids(self) -> int:
    return len({r.pid for r in self.train})

  @property
  def num_train_cams(self) -> int:
    return len({r.camid for r in self.train})

  def summary(self) -> str:
    lines = [f"{self.name} at {self.root}",
             f"  {'subset':<8} {'# ids':>6} {'# images':>9} {'# cameras':>10}"]
    for split, recs in (("train", self.train), ("query", self.query),
                        ("gallery", self.gallery)):
      lines.append(f"  {split:<8} {len({r.pid for r in recs}):>6} "
                   f"{len(recs):>9} {len({r.camid for r in recs}):>10}")
    return "\n".join(lines)


def relabel(records: Sequence[Record]) -> tuple[Record, ...]:
  """Maps pids to 0..N-1 in sorted order of the original pid."""
  mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
  return tuple(dataclasses.replace(r, pid=mapping[r.pid]) for r in records)
