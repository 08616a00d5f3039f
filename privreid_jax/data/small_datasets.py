"""Parsers for small public Re-ID datasets in torchreid's folder layouts, with their test protocols.

  ds = load_small_dataset("viper", "/data", split_index=0)
  print(ds.summary())

`root` is the folder holding torchreid's dataset folder (`/data` with
`/data/viper/VIPeR/cam_a`), that dataset folder (`/data/viper`), or the folder
holding the image folders (`/data/viper/VIPeR`). The protocols are torchreid's
(`torchreid/data/datasets/image/*.py`); `split_index` (0..9) picks one of the
10 train/test splits. torchreid draws its random splits unseeded on first use
(and saves them to a splits.json); here they are drawn with numpy from
(dataset name, split_index), so each split is reproducible, different for each
split_index, and never the same as any torchreid splits.json.

* VIPeR (`viper/VIPeR/cam_a/`, `cam_b/`, files `NNN_<angle>.bmp`): 632 people,
  one image per camera. pid = NNN + 1 (pid 0 means a distractor elsewhere),
  camera 0 = cam_a, 1 = cam_b. 316 (n // 2) identities train on both images;
  the other 316 are tested with the cam_a images as query and the cam_b ones as
  gallery (torchreid's even split_ids; its odd ones swap the cameras).
* GRID (`grid/underground_reid/probe/`, `gallery/` with files
  `PPPP_C_<frame>_<box>.jpeg`, and `features_and_partitions.mat`): 250 people
  with one probe and one gallery image, 775 gallery distractors with pid 0;
  camera = C - 1 (C in 1..8). The training identities are fold `split_index`
  of the .mat's 10 folds (`trainIdxAll{k}.personIdx`, the third field, which
  torchreid reads): 125 identities train on their probe and gallery images;
  query = the probe images of the other 125, gallery = their gallery images
  and the 775 distractors (900 images). The .mat is read with scipy (a jax
  dependency), only its `trainIdxAll` variable.
* PRID 2011, single shot (`prid2011/prid_2011/single_shot/cam_a/`, `cam_b/`,
  files `person_PPPP.png`): 385 people in cam_a, 749 in cam_b; pids 1-200 are
  the same people in both. 100 of those 200 train on both images; query = the
  cam_a images of the other 100, gallery = their cam_b images and every cam_b
  image with pid > 200 as a distractor (pids 201-749 kept, 649 images), as in
  torchreid. cam_a's pids 201-385 are not used. Cameras: cam_a 0, cam_b 1.
* CUHK01 (`cuhk01/campus/PPPPNNN.png`): 971 people, 4 images each; images
  001/002 are camera 0, 003/004 camera 1; pid = PPPP. 485 (n // 2) identities
  train on all their images; query = the camera-0 images of the other 486
  (972 images), gallery = their camera-1 images (972); torchreid's even
  split_ids (its odd ones swap the cameras).
* QMUL i-LIDS (`ilids/i-LIDS_Pedestrian/Persons/PPPPNNN.jpg`): 119 people,
  476 images; pid = PPPP, camera = NNN - 1 (the image number: torchreid's
  stand-in for the unrecorded cameras). 59 identities (torchreid's
  int(0.5 * 119)) train on all their images; for each of the other 60, two of
  its images drawn at random are its query and its gallery image.

As for the large datasets (`datasets.py`): train pids are relabelled 0..N-1
in sorted order of the original pid, query and gallery keep the original pids,
cameras are 0-based, hidden files (names starting with '.') and non-image
files are ignored, images are listed and never opened, and anything missing
or malformed raises a one-line `DatasetError` naming the expected path.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zlib
from typing import Callable

import numpy as np

from privreid_jax.data import datasets
from privreid_jax.data import records
from privreid_jax.data.records import DatasetError
from privreid_jax.data.records import Record
from privreid_jax.data.records import ReidDataset
from privreid_jax.data.records import relabel

SMALL_DATASETS = records.SMALL_DATASETS
NUM_SPLITS = 10
PRID_PAIRED_IDS = 200   # PRID 2011: pids 1..200 are the people seen by both cameras
GRID_NUM_CAMS = 8
GRID_MAT = "features_and_partitions.mat"

_Records = list[Record]


@dataclasses.dataclass(frozen=True)
class _Layout:
  title: str
  path: str                # torchreid's dataset folder / ... / folder holding `parts`
  parts: tuple[str, ...]   # image folders (and files) the dataset needs
  pattern: str             # file names in the image folders (full match)
  form: str                # the same, for messages

  @property
  def where(self) -> str:
    return (f"{self.title} layout: " + ", ".join(
        f"{self.path}/{p}" + ("" if "." in p else "/") for p in self.parts)
        + f" with images named {self.form}")

  def candidates(self) -> tuple[str, ...]:
    """Paths from a root to the folder holding `parts`, longest first."""
    comps = self.path.split("/")
    return tuple("/".join(comps[i:]) for i in range(len(comps)))


_LAYOUTS = {
    "viper": _Layout("VIPeR", "viper/VIPeR", ("cam_a", "cam_b"),
                     r"(\d+)_\d+\.\w+", "NNN_<angle>.bmp"),
    "grid": _Layout("GRID", "grid/underground_reid", ("probe", "gallery", GRID_MAT),
                    r"(\d{4})_(\d+)_.*\.\w+", "PPPP_C_....jpeg"),
    "prid2011": _Layout("PRID 2011 single-shot", "prid2011/prid_2011/single_shot",
                        ("cam_a", "cam_b"), r"person_(\d{4})\.\w+",
                        "person_PPPP.png"),
    "cuhk01": _Layout("CUHK01", "cuhk01", ("campus",), r"(\d{4})(\d{3})\.\w+",
                      "PPPPNNN.png"),
    "ilids": _Layout("i-LIDS", "ilids/i-LIDS_Pedestrian", ("Persons",),
                     r"(\d{4})(\d{3})\.\w+", "PPPPNNN.jpg"),
}


def usual_location(name: str, parent: str) -> str | None:
  """The folder holding dataset `name`'s image folders under `parent`, if any.

  Looks in parent/<torchreid's dataset folder>/... and the shorter paths
  (parent/VIPeR/ for VIPeR), not in `parent` itself. None if nothing of the
  layout is there.
  """
  layout = _LAYOUTS[name]
  return datasets.find_base(parent, layout.parts, layout.candidates(),
                            accept_root=False)


def load_small_dataset(name: str, root: str, *, split_index: int = 0) -> ReidDataset:
  """Parses dataset `name` at `root` and splits it with split `split_index` (0..9)."""
  if name not in SMALL_DATASETS:
    raise DatasetError(f"unknown small dataset name {name!r}; known: "
                       f"{', '.join(SMALL_DATASETS)}")
  if not root:
    raise DatasetError(f"no root folder given for dataset {name!r} "
                       "(set --config.data.root)")
  if isinstance(split_index, bool) or not isinstance(split_index, (int, np.integer)) \
      or not 0 <= split_index < NUM_SPLITS:
    raise DatasetError(f"split_index {split_index!r} for {name}: expected an integer "
                       f"0..{NUM_SPLITS - 1} (config.data.split_index)")
  root = os.path.abspath(os.path.expanduser(root))
  if not os.path.isdir(root):
    raise DatasetError(f"dataset root {root} does not exist or is not a folder")
  layout = _LAYOUTS[name]
  base = datasets.find_base(root, layout.parts, layout.candidates())
  if base is None:
    expected = os.path.join(root, layout.path, layout.parts[0])
    raise DatasetError(f"missing {expected} ({layout.where}; also looked in "
                       f"{root} and under {', '.join(layout.candidates()[1:])})")
  for part in layout.parts:
    path = os.path.join(base, part)
    ok = os.path.isfile(path) if "." in part else os.path.isdir(path)
    if not ok:
      raise DatasetError(f"missing {path} ({layout.where})")
  train, query, gallery = _PROTOCOLS[name](base, layout, int(split_index))
  return ReidDataset(name=name, root=base, train=relabel(train),
                     query=tuple(query), gallery=tuple(gallery))


# --- parsing helpers ---------------------------------------------------------

def _parse(folder: str, layout: _Layout) -> list[tuple[str, tuple[int, ...]]]:
  """(path, numbers in the name) of every image in `folder`, sorted by name."""
  names = datasets.list_images(folder)
  if not names:
    raise DatasetError(f"no images ({', '.join(datasets.IMAGE_EXTENSIONS)}) "
                       f"in {folder}")
  out = []
  for fname in names:
    path = os.path.join(folder, fname)
    match = re.fullmatch(layout.pattern, fname)
    if match is None:
      raise DatasetError(f"file {path} does not match {layout.title}'s "
                         f"{layout.form}")
    out.append((path, tuple(int(g) for g in match.groups())))
  return out


def _one_per_person(folder: str, layout: _Layout) -> dict[int, str]:
  """{number: path} for a folder holding one image per person."""
  found: dict[int, str] = {}
  for path, (num, *_) in _parse(folder, layout):
    if num in found:
      raise DatasetError(f"file {path}: a second image of person {num} in "
                         f"{folder} (first: {os.path.basename(found[num])}; "
                         f"{layout.title} has one per camera)")
    found[num] = path
  return found


def _rng(name: str, split_index: int) -> np.random.Generator:
  return np.random.default_rng([zlib.crc32(name.encode()), split_index])


def _train_ids(rng: np.random.Generator, ids: list[int], title: str,
               base: str) -> set[int]:
  """n // 2 of `ids` drawn at random (at least one identity left to test)."""
  if len(ids) < 2:
    raise DatasetError(f"{title} at {base} has {len(ids)} usable identities; "
                       "a train/test split needs at least 2")
  return set(rng.choice(np.asarray(ids), len(ids) // 2, replace=False).tolist())


def _missing_pair(layout: _Layout, folders: tuple[str, str], base: str,
                  a: dict[int, str], b: dict[int, str], ids) -> None:
  for num in sorted(ids):
    if (num in a) != (num in b):
      have, lack = (0, 1) if num in a else (1, 0)
      path = (a if num in a else b)[num]
      raise DatasetError(
          f"file {path}: person {num} has no image in "
          f"{os.path.join(base, folders[lack])} ({layout.title} pairs each "
          f"{folders[have]} image with one in {folders[lack]})")


# --- protocols -----------------------------------------------------------------

def _viper(base: str, layout: _Layout, split_index: int):
  a = _one_per_person(os.path.join(base, "cam_a"), layout)
  b = _one_per_person(os.path.join(base, "cam_b"), layout)
  _missing_pair(layout, ("cam_a", "cam_b"), base, a, b, set(a) | set(b))
  ids = sorted(a)
  train_ids = _train_ids(_rng("viper", split_index), ids, layout.title, base)
  train, query, gallery = [], [], []
  for num in ids:
    ra, rb = Record(a[num], num + 1, 0), Record(b[num], num + 1, 1)
    if num in train_ids:
      train += [ra, rb]
    else:
      query.append(ra)
      gallery.append(rb)
  return train, query, gallery


def _grid(base: str, layout: _Layout, split_index: int):
  folders = {}
  for folder in ("probe", "gallery"):
    records = []
    for path, (pid, cam) in _parse(os.path.join(base, folder), layout):
      if not 1 <= cam <= GRID_NUM_CAMS:
        raise DatasetError(f"file {path}: camera {cam} outside GRID's "
                           f"1..{GRID_NUM_CAMS}")
      if pid == 0 and folder == "probe":
        raise DatasetError(f"file {path}: pid 0000 (a distractor) in probe/; "
                           "GRID's distractors are gallery images")
      records.append(Record(path, pid, cam - 1))
    folders[folder] = records
  probe, gallery_all = folders["probe"], folders["gallery"]
  mat = os.path.join(base, GRID_MAT)
  folds = read_grid_folds(mat)
  if split_index >= len(folds):
    raise DatasetError(f"split_index {split_index}: {mat} has {len(folds)} "
                       f"folds (0..{len(folds) - 1})")
  train_ids = set(folds[split_index])
  probe_ids = {r.pid for r in probe}
  unknown = sorted(train_ids - probe_ids)
  if unknown:
    raise DatasetError(f"{mat}: fold {split_index} trains on person {unknown[0]}, "
                       f"who has no image in {os.path.join(base, 'probe')}")
  if not probe_ids - train_ids:
    raise DatasetError(f"{mat}: fold {split_index} trains on every probe "
                       "identity, leaving none to test")
  train = [r for r in probe + gallery_all if r.pid in train_ids]
  query = [r for r in probe if r.pid not in train_ids]
  gallery = [r for r in gallery_all if r.pid not in train_ids]
  return train, query, gallery


def read_grid_folds(path: str) -> list[list[int]]:
  """The training identities of each fold in GRID's features_and_partitions.mat.

  `trainIdxAll` is a 1x10 cell of structs; the identities are the struct's
  `personIdx` field (its third field, the one torchreid reads).
  """
  try:
    from scipy import io as sio  # a dependency of jax
  except ImportError:  # pragma: no cover - jax requires scipy
    raise DatasetError(f"reading {path} needs scipy (pip install scipy)") from None
  try:
    mat = sio.loadmat(path, variable_names=["trainIdxAll"])
  except Exception as e:  # scipy raises several types for unreadable files
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise DatasetError(f"cannot read {path} as a MATLAB v5 file ({first})") from None
  if "trainIdxAll" not in mat:
    raise DatasetError(f"{path} has no trainIdxAll variable (GRID's partitions)")
  folds = []
  for k, cell in enumerate(np.asarray(mat["trainIdxAll"]).ravel()):
    entry = cell
    while (isinstance(entry, np.ndarray) and entry.dtype == object
           and entry.size == 1):
      entry = entry.ravel()[0]
    names = getattr(getattr(entry, "dtype", None), "names", None)
    if not names or (len(names) < 3 and "personIdx" not in names):
      raise DatasetError(f"{path}: trainIdxAll{{{k + 1}}} is not a struct with "
                         "a personIdx field")
    field = "personIdx" if "personIdx" in names else names[2]
    values = np.asarray(np.asarray(entry).ravel()[0][field], dtype=float).ravel()
    if (values.size == 0 or np.any(values != np.round(values))
        or len(set(values.tolist())) != values.size or values.min() < 1):
      raise DatasetError(f"{path}: trainIdxAll{{{k + 1}}}.{field} is not a list "
                         "of distinct person numbers >= 1")
    folds.append(sorted(int(v) for v in values))
  if not folds:
    raise DatasetError(f"{path}: trainIdxAll is empty")
  return folds


def _prid(base: str, layout: _Layout, split_index: int):
  a = _one_per_person(os.path.join(base, "cam_a"), layout)
  b = _one_per_person(os.path.join(base, "cam_b"), layout)
  if 0 in a or 0 in b:
    path = a.get(0) or b.get(0)
    raise DatasetError(f"file {path}: PRID 2011 pids start at person_0001")
  paired = {num for num in set(a) | set(b) if num <= PRID_PAIRED_IDS}
  _missing_pair(layout, ("cam_a", "cam_b"), base, a, b, paired)
  ids = sorted(paired)
  train_ids = _train_ids(_rng("prid2011", split_index), ids, layout.title, base)
  train, query, gallery = [], [], []
  for num in ids:
    ra, rb = Record(a[num], num, 0), Record(b[num], num, 1)
    if num in train_ids:
      train += [ra, rb]
    else:
      query.append(ra)
      gallery.append(rb)
  gallery += [Record(b[num], num, 1) for num in sorted(b) if num > PRID_PAIRED_IDS]
  return train, query, gallery


def _cuhk01(base: str, layout: _Layout, split_index: int):
  records = []
  for path, (pid, num) in _parse(os.path.join(base, "campus"), layout):
    if not 1 <= num <= 4:
      raise DatasetError(f"file {path}: image number {num:03d} outside "
                         "CUHK01's 001..004")
    records.append(Record(path, pid, (num - 1) // 2))
  cams: dict[int, set[int]] = {}
  for r in records:
    cams.setdefault(r.pid, set()).add(r.camid)
  for r in records:
    if len(cams[r.pid]) < 2:
      raise DatasetError(f"file {r.path}: person {r.pid:04d} has images of one "
                         "camera only (CUHK01: 001/002 and 003/004)")
  ids = sorted(cams)
  train_ids = _train_ids(_rng("cuhk01", split_index), ids, layout.title, base)
  train = [r for r in records if r.pid in train_ids]
  query = [r for r in records if r.pid not in train_ids and r.camid == 0]
  gallery = [r for r in records if r.pid not in train_ids and r.camid == 1]
  return train, query, gallery


def _ilids(base: str, layout: _Layout, split_index: int):
  by_pid: dict[int, list[Record]] = {}
  for path, (pid, num) in _parse(os.path.join(base, "Persons"), layout):
    if num < 1:
      raise DatasetError(f"file {path}: image number 000 (i-LIDS numbers "
                         "start at 001)")
    by_pid.setdefault(pid, []).append(Record(path, pid, num - 1))
  for pid, images in by_pid.items():
    if len(images) < 2:
      raise DatasetError(f"file {images[0].path}: person {pid:04d} has one image; "
                         "i-LIDS tests each person with two")
  rng = _rng("ilids", split_index)
  ids = sorted(by_pid)
  train_ids = _train_ids(rng, ids, layout.title, base)
  train, query, gallery = [], [], []
  for pid in ids:
    images = by_pid[pid]
    if pid in train_ids:
      train += images
      continue
    q, g = rng.choice(len(images), 2, replace=False)
    query.append(images[q])
    gallery.append(images[g])
  return train, query, gallery


_PROTOCOLS: dict[str, Callable[[str, _Layout, int], tuple[_Records, _Records, _Records]]] = {
    "viper": _viper, "grid": _grid, "prid2011": _prid, "cuhk01": _cuhk01,
    "ilids": _ilids,
}
