"""Every dataset the library reads from image folders, by name.

  ds = catalog.load("viper", "/data", split_index=3)
  base = catalog.usual_location("market1501", "/data")   # or None

`load` dispatches to `datasets.load_dataset` (Market-1501, DukeMTMC-reID,
MSMT17, CUHK03-NP, synthetic: one fixed split, `split_index` ignored) and to
`small_datasets.load_small_dataset` (VIPeR, GRID, PRID 2011, CUHK01, i-LIDS:
10 splits). `usual_location` finds a dataset in its usual folder under a
parent (multi-source training, cross-dataset evaluation), and `is_junk` gives
the identities torchreid's combineall leaves out of training.
"""

from __future__ import annotations

import os

import numpy as np

from privreid_jax.data import datasets
from privreid_jax.data import small_datasets
from privreid_jax.data.records import DatasetError
from privreid_jax.data.records import ReidDataset

ALL_DATASETS = datasets.KNOWN_DATASETS + small_datasets.SMALL_DATASETS

# Where each dataset usually sits under a parent folder (for messages; the
# loaders accept a few more spellings).
USUAL_FOLDERS = {
    "market1501": "Market-1501-v15.09.15", "dukemtmcreid": "DukeMTMC-reID",
    "msmt17": "MSMT17_V1", "cuhk03": "cuhk03-np/<subset>", "synthetic": "synthetic",
    "viper": "viper/VIPeR", "grid": "grid/underground_reid",
    "prid2011": "prid2011/prid_2011/single_shot", "cuhk01": "cuhk01/campus",
    "ilids": "ilids/i-LIDS_Pedestrian/Persons",
}


def check_name(name: str, where: str = "dataset name") -> None:
  if name not in ALL_DATASETS:
    raise DatasetError(f"unknown {where} {name!r}; known: {', '.join(ALL_DATASETS)}")


def load(name: str, root: str, *, cuhk03_subset: str = "labeled",
         split_index: int = 0) -> ReidDataset:
  """Dataset `name` at `root` (its folder or a parent), split `split_index` if it has splits."""
  check_name(name)
  if name in small_datasets.SMALL_DATASETS:
    return small_datasets.load_small_dataset(name, root, split_index=split_index)
  return datasets.load_dataset(name, root, cuhk03_subset=cuhk03_subset)


def usual_location(name: str, parent: str, *,
                   cuhk03_subset: str = "labeled") -> str | None:
  """The folder of dataset `name` in its usual place under `parent`, or None."""
  check_name(name)
  if not parent or not os.path.isdir(parent):
    return None
  if name in small_datasets.SMALL_DATASETS:
    return small_datasets.usual_location(name, parent)
  return datasets.usual_location(name, parent, cuhk03_subset=cuhk03_subset)


def expected_folder(name: str, cuhk03_subset: str = "labeled") -> str:
  return USUAL_FOLDERS[name].replace("<subset>", cuhk03_subset)


def is_junk(name: str, pids: np.ndarray) -> np.ndarray:
  """Which test pids torchreid's combineall leaves out (its `_junk_pids`).

  Market-1501 and synthetic: 0 (distractors) and -1; GRID: 0 (distractors);
  PRID 2011: 201-749 (the cam_b-only distractors); none for the others.
  """
  pids = np.asarray(pids)
  if name in ("market1501", "synthetic", "grid"):
    return pids <= 0
  if name == "prid2011":
    return pids > small_datasets.PRID_PAIRED_IDS
  return np.zeros(pids.shape, bool)
