"""Parsers for the Re-ID datasets on disk: folders of images -> `ReidDataset` records.

  ds = load_dataset("market1501", "/data/Market-1501-v15.09.15")
  print(ds.summary())

Layouts (docs/evaluation.md; rules follow torchreid's parsers):

* Market-1501, DukeMTMC-reID, synthetic pedestrians and each CUHK03-NP subset:
  `bounding_box_train/`, `query/`, `bounding_box_test/`, file names like
  `0002_c1s1_000451_03.jpg` matched by `([-\\d]+)_c(\\d)` -> (pid, camera).
  pid -1 (junk) is dropped, pid 0 (distractors) kept.
* MSMT17 (V1 `train/`+`test/`, V2 `mask_train_v2/`+`mask_test_v2/`):
  `list_{train,val,query,gallery}.txt` with lines `pid/pid_cam_....jpg pid`;
  the camera is the third `_` field (two digits, 1-15). Train = train + val.

Cameras become 0-based, train pids are relabelled 0..N-1 (sorted by original
pid), query and gallery keep the original pids. Images are listed, never opened;
hidden files (names starting with '.': `._*`, `.DS_Store`) are ignored.
Anything missing or malformed raises a one-line `DatasetError`.

The small datasets with random splits (VIPeR, GRID, PRID 2011, CUHK01, i-LIDS)
are parsed by `small_datasets.py`; `catalog.load` reads any dataset by name.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Sequence

from privreid_jax.data.records import SMALL_DATASETS
from privreid_jax.data.records import DatasetError
from privreid_jax.data.records import Record
from privreid_jax.data.records import ReidDataset
from privreid_jax.data.records import relabel

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
CUHK03_SUBSETS = ("labeled", "detected")

# torchreid's pattern; searched in the file name only (not the directories).
_MARKET_NAME = re.compile(r"([-\d]+)_c(\d)")
# (split, folder) of the Market-1501 layout.
_MARKET_SPLITS = (("train", "bounding_box_train"), ("query", "query"),
                  ("gallery", "bounding_box_test"))
_MSMT_LISTS = ("list_train.txt", "list_val.txt", "list_query.txt",
               "list_gallery.txt")
_MSMT_DIRS = {"train": ("train", "mask_train_v2"),
              "test": ("test", "mask_test_v2")}
_MSMT_FOLDERS = ("MSMT17_V1", "MSMT17_V2", "msmt17/MSMT17_V1",
                 "msmt17/MSMT17_V2", "MSMT17", "msmt17")
_MSMT_NUM_CAMS = 15


@dataclasses.dataclass(frozen=True)
class _MarketLayout:
  """How one dataset in the Market-1501 layout is found and checked."""
  title: str                       # for error messages
  folders: tuple[str, ...]         # usual dataset folder names under a parent
  num_cams: int                    # valid cameras are c1..c<num_cams>
  max_pid: int | None = None       # torchreid's upper bound, if it has one


_MARKET_LAYOUTS = {
    "market1501": _MarketLayout(
        "Market-1501", ("Market-1501-v15.09.15", "Market-1501", "market1501",
                        "market1501/Market-1501-v15.09.15"),
        num_cams=6, max_pid=1501),
    "dukemtmcreid": _MarketLayout(
        "DukeMTMC-reID", ("DukeMTMC-reID", "dukemtmc-reid", "dukemtmcreid",
                          "dukemtmc-reid/DukeMTMC-reID"),
        num_cams=8),
    # The synthetic generator writes the Market layout with up to 9 cameras.
    "synthetic": _MarketLayout("synthetic", ("synthetic",), num_cams=9),
    # CUHK03-NP: c1/c2; the single-digit regex bounds the rest.
    "cuhk03": _MarketLayout(
        "CUHK03-NP", ("cuhk03-np", "CUHK03-NP", "cuhk03_np", "cuhk03"),
        num_cams=9),
}

KNOWN_DATASETS = ("market1501", "dukemtmcreid", "msmt17", "cuhk03", "synthetic")


def _check_known(name: str) -> None:
  if name not in KNOWN_DATASETS:
    if name in SMALL_DATASETS:
      raise DatasetError(f"dataset {name!r} is not one of load_dataset's "
                         f"{', '.join(KNOWN_DATASETS)}: load it with "
                         "catalog.load or small_datasets.load_small_dataset")
    raise DatasetError(f"unknown dataset name {name!r}; known: "
                       f"{', '.join(KNOWN_DATASETS)}")


def load_dataset(name: str, root: str, *,
                 cuhk03_subset: str = "labeled") -> ReidDataset:
  """Parses the dataset `name` found at `root` (the dataset folder or its parent)."""
  _check_known(name)
  if not root:
    raise DatasetError(f"no root folder given for dataset {name!r} "
                       "(set --config.data.root)")
  root = os.path.abspath(os.path.expanduser(root))
  if not os.path.isdir(root):
    raise DatasetError(f"dataset root {root} does not exist or is not a folder")
  if name == "msmt17":
    return _load_msmt17(root)
  layout = _MARKET_LAYOUTS[name]
  if name == "cuhk03":
    if cuhk03_subset not in CUHK03_SUBSETS:
      raise DatasetError(f"cuhk03_subset {cuhk03_subset!r} is not one of "
                         f"{', '.join(CUHK03_SUBSETS)}")
    # <root>/<subset>/..., <root>/cuhk03-np/<subset>/..., or root = the subset.
    folders = tuple([cuhk03_subset] + [f"{f}/{cuhk03_subset}"
                                       for f in layout.folders])
    layout = dataclasses.replace(layout, title=f"CUHK03-NP {cuhk03_subset}",
                                 folders=folders)
    accept_root = os.path.basename(root) == cuhk03_subset
  else:
    accept_root = True
  return _load_market_layout(name, root, layout, accept_root)


def parse_market_name(filename: str) -> tuple[int, int]:
  """(pid, 1-based camera) of a Market-style file name; DatasetError if none."""
  match = _MARKET_NAME.search(os.path.basename(filename))
  if match is None:
    raise DatasetError(f"file name {filename} does not match "
                       f"'<pid>_c<camera>...' ({_MARKET_NAME.pattern})")
  try:
    return int(match.group(1)), int(match.group(2))
  except ValueError:
    raise DatasetError(f"file name {filename} has a malformed pid "
                       f"{match.group(1)!r}") from None


def list_images(folder: str) -> list[str]:
  """Sorted names of the image files directly in `folder`.

  Other files and hidden ones (names starting with '.', such as macOS's
  `._0001_c1s1_000151_01.jpg` and `.DS_Store`) are ignored.
  """
  return sorted(e.name for e in os.scandir(folder)
                if not e.name.startswith(".") and e.is_file()
                and e.name.lower().endswith(IMAGE_EXTENSIONS))


def usual_location(name: str, parent: str, *,
                   cuhk03_subset: str = "labeled") -> str | None:
  """The folder of dataset `name` under `parent` in one of its usual folders.

  Only parent/<usual folder> is looked at (Market-1501-v15.09.15/, MSMT17_V1/,
  cuhk03-np/<subset>/, ...), not `parent` itself; None if absent.
  """
  _check_known(name)
  if name == "msmt17":
    return find_base(parent, ["list_train.txt"], _MSMT_FOLDERS, accept_root=False)
  layout = _MARKET_LAYOUTS[name]
  folders = layout.folders
  if name == "cuhk03":
    folders = tuple(f"{f}/{cuhk03_subset}" for f in folders)
  return find_base(parent, [d for _, d in _MARKET_SPLITS], folders,
                   accept_root=False)


def find_base(root: str, markers: Sequence[str], folders: Sequence[str],
              accept_root: bool = True) -> str | None:
  """root if it holds one of `markers`, else the first root/<folder> that does."""
  candidates = ([root] if accept_root else []) + [
      os.path.join(root, f) for f in folders]
  for base in candidates:
    if any(os.path.exists(os.path.join(base, m)) for m in markers):
      return base
  return None


def _load_market_layout(name: str, root: str, layout: _MarketLayout,
                        accept_root: bool) -> ReidDataset:
  split_dirs = [d for _, d in _MARKET_SPLITS]
  where = f"{layout.title} layout: {'/, '.join(split_dirs)}/ in the dataset folder"
  base = find_base(root, split_dirs, layout.folders, accept_root)
  if base is None:
    expected = os.path.join(root, layout.folders[0], split_dirs[0])
    raise DatasetError(f"missing split folder {expected} ({where}; also looked "
                       f"in {root} and under {', '.join(layout.folders)})")
  splits = {}
  for split, folder in _MARKET_SPLITS:
    path = os.path.join(base, folder)
    if not os.path.isdir(path):
      raise DatasetError(f"missing split folder {path} ({where})")
    splits[split] = _parse_market_folder(path, layout)
  return ReidDataset(name=name, root=base, train=relabel(splits["train"]),
                     query=splits["query"], gallery=splits["gallery"])


def _parse_market_folder(folder: str, layout: _MarketLayout) -> tuple[Record, ...]:
  names = list_images(folder)
  if not names:
    raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
  records = []
  for fname in names:
    path = os.path.join(folder, fname)
    pid, cam = parse_market_name(path)
    if pid == -1:
      continue  # junk
    if pid < 0 or (layout.max_pid is not None and pid > layout.max_pid):
      limit = "" if layout.max_pid is None else f"..{layout.max_pid}"
      raise DatasetError(f"file {path}: pid {pid} outside {layout.title}'s "
                         f"range -1, 0{limit}")
    if not 1 <= cam <= layout.num_cams:
      raise DatasetError(f"file {path}: camera c{cam} outside {layout.title}'s "
                         f"c1..c{layout.num_cams}")
    records.append(Record(path=path, pid=pid, camid=cam - 1))
  if not records:
    raise DatasetError(f"no usable images in {folder} (all have pid -1)")
  return tuple(records)


def _load_msmt17(root: str) -> ReidDataset:
  base = find_base(root, ["list_train.txt"], _MSMT_FOLDERS)
  if base is None:
    raise DatasetError(
        f"missing {os.path.join(root, 'MSMT17_V1', 'list_train.txt')} (MSMT17 "
        f"layout: {', '.join(_MSMT_LISTS)} with train/ and test/ (V1) or "
        f"mask_train_v2/ and mask_test_v2/ (V2), in {root} or under "
        f"{', '.join(_MSMT_FOLDERS)})")
  dirs = {}
  for kind, options in _MSMT_DIRS.items():
    found = [os.path.join(base, d) for d in options
             if os.path.isdir(os.path.join(base, d))]
    if not found:
      raise DatasetError(
          f"missing image folder {os.path.join(base, options[0])} (MSMT17 "
          f"layout: {options[0]}/ for V1 or {options[1]}/ for V2)")
    dirs[kind] = found[0]
  train, val, query, gallery = (
      _parse_msmt_list(os.path.join(base, list_name),
                       dirs["train" if i < 2 else "test"],
                       allow_empty=list_name == "list_val.txt")
      for i, list_name in enumerate(_MSMT_LISTS))
  return ReidDataset(name="msmt17", root=base, train=relabel(train + val),
                     query=query, gallery=gallery)


def _parse_msmt_list(list_path: str, image_dir: str,
                     allow_empty: bool) -> tuple[Record, ...]:
  if not os.path.isfile(list_path):
    raise DatasetError(f"missing list file {list_path} (MSMT17 layout: "
                       f"{', '.join(_MSMT_LISTS)})")
  records = []
  with open(list_path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f"{list_path}:{lineno}"
      parts = line.split()
      if len(parts) != 2:
        raise DatasetError(f"{where}: expected '<pid>/<file>.jpg <pid>', "
                           f"got {line.strip()!r}")
      rel, pid_str = parts
      fields = os.path.basename(rel).split("_")
      try:
        pid = int(pid_str)
        cam = int(fields[2])
      except (ValueError, IndexError):
        raise DatasetError(f"{where}: cannot read pid and camera from "
                           f"{line.strip()!r} (expected "
                           "'<pid>/<pid>_<n>_<cam>_....jpg <pid>')") from None
      if pid < 0:
        raise DatasetError(f"{where}: negative pid {pid} for {rel}")
      if not 1 <= cam <= _MSMT_NUM_CAMS:
        raise DatasetError(f"{where}: camera {cam} of {rel} outside MSMT17's "
                           f"1..{_MSMT_NUM_CAMS}")
      records.append(Record(path=os.path.join(image_dir, rel), pid=pid,
                            camid=cam - 1))
  if not records and not allow_empty:
    raise DatasetError(f"no images listed in {list_path}")
  return tuple(records)
