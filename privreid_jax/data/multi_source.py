"""Training on several datasets at once, torchreid's combineall, and cross-dataset test splits.

* `config.data.sources = ("market1501", "viper", ...)` (empty: train on
  `data.name` alone, as before). The training splits of these datasets, each
  found in its usual folder under `data.root` (`catalog.USUAL_FOLDERS`:
  root/Market-1501-v15.09.15, root/viper/VIPeR, root/cuhk01/campus, ...), are
  joined in the order given into one training split. A source that is not
  there is skipped with a logged warning; none found is an error, and a source
  that is there but broken raises its parser's error. Identities stay apart:
  a source's training pids (0..n-1) are offset by the number of identities of
  the sources before it, and its cameras by 1 + the largest camera id before
  it (torchreid offsets by the number of cameras, which can collide when a
  source's training cameras are not 0..k-1). Random-split datasets use
  `data.split_index`. The query and gallery are the test split of `data.name`,
  opened with `open_eval_splits` (it may be one of the sources or not; an
  empty `data.name` takes the first source found).
  Folder sources only (`data.source = "folder"`).
* `config.data.combineall = True` (torchreid's combineall): a dataset's query
  and gallery images join its training split, their identities numbered after
  the training ones in sorted order of the original pid, except the
  identities torchreid leaves out (`catalog.is_junk`: Market-1501's and
  GRID's distractors 0 and -1, PRID 2011's cam_b-only pids 201-749). With
  sources it applies to each source before they are joined; without, to
  `data.name`, whose test split then stays the reported query/gallery (no
  longer held out, as in torchreid).
* `open_eval_splits(config.data, name)`: the splits of dataset `name` for
  cross-dataset evaluation (its `.query` and `.gallery`), found in its usual
  folder under `data.root` (or, without sources, beside the training dataset's
  folder); `name == data.name` without sources opens exactly the training
  dataset.

Records are rewritten (or, for tfds items, wrapped) so that every item's pid
and camid agree with the split's `pids` and `camids` arrays.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np

from privreid_jax.data import catalog
from privreid_jax.data import split_types as splits_lib
from privreid_jax.data.records import DatasetError
from privreid_jax.data.records import Record
from privreid_jax.data.records import ReidDataset


class Relabelled:
  """Items `indices` of a source with their pid and camid replaced (random access)."""

  def __init__(self, source: Sequence[Any], indices: np.ndarray, pids: np.ndarray,
               camids: np.ndarray):
    self.source, self.indices = source, np.asarray(indices, np.int64)
    self.pids, self.camids = np.asarray(pids), np.asarray(camids)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int):
    item = self.source[int(self.indices[i])]
    pid, camid = int(self.pids[i]), int(self.camids[i])
    if isinstance(item, Record):
      return dataclasses.replace(item, pid=pid, camid=camid)
    if isinstance(item, Mapping):
      return {**item, "pid": pid, "camid": camid}
    return item


class Concat:
  """Several sources one after the other (random access)."""

  def __init__(self, sources: Sequence[Sequence[Any]]):
    self.sources = list(sources)
    self.starts = np.cumsum([0] + [len(s) for s in self.sources])

  def __len__(self) -> int:
    return int(self.starts[-1])

  def __getitem__(self, i: int):
    i = int(i)
    if not 0 <= i < len(self):
      raise IndexError(f"index {i} out of range for {len(self)} items")
    k = int(np.searchsorted(self.starts, i, side="right")) - 1
    return self.sources[k][i - int(self.starts[k])]


def _is_records(source: Sequence[Any]) -> bool:
  return isinstance(source, (tuple, list)) and all(isinstance(r, Record) for r in source)


def select(split: splits_lib.Split, indices, pids, camids) -> splits_lib.Split:
  """Items `indices` of `split` labelled (pids, camids), items agreeing with the arrays."""
  indices = np.asarray(indices, np.int64)
  pids, camids = np.asarray(pids, np.int32), np.asarray(camids, np.int32)
  if _is_records(split.source):
    items = tuple(dataclasses.replace(split.source[i], pid=int(p), camid=int(c))
                  for i, p, c in zip(indices, pids, camids))
  else:
    items = Relabelled(split.source, indices, pids, camids)
  return splits_lib.Split(items, pids, camids)


def concat(parts: Sequence[splits_lib.Split]) -> splits_lib.Split:
  """The splits one after the other (labels unchanged)."""
  if all(_is_records(p.source) for p in parts):
    items = tuple(r for p in parts for r in p.source)
  else:
    items = Concat([p.source for p in parts])
  return splits_lib.Split(items, np.concatenate([p.pids for p in parts]).astype(np.int32),
                          np.concatenate([p.camids for p in parts]).astype(np.int32))


def from_dataset(ds: ReidDataset) -> splits_lib.Splits:
  def split(records):
    return splits_lib.Split(tuple(records), np.array([r.pid for r in records], np.int32),
                            np.array([r.camid for r in records], np.int32))
  return splits_lib.Splits(ds.name, ds.root, split(ds.train), split(ds.query),
                           split(ds.gallery))


def combine_all(splits: splits_lib.Splits, name: str) -> splits_lib.Splits:
  """`splits` with the test identities (but `name`'s junk ones) added to training."""
  train, query, gallery = splits.train, splits.query, splits.gallery
  offset = int(train.pids.max()) + 1 if len(train) else 0
  keep = [np.flatnonzero(~catalog.is_junk(name, s.pids)) for s in (query, gallery)]
  test_ids = np.unique(np.concatenate([query.pids[keep[0]], gallery.pids[keep[1]]]))
  added = [select(s, k, offset + np.searchsorted(test_ids, s.pids[k]), s.camids[k])
           for s, k in zip((query, gallery), keep)]
  return dataclasses.replace(splits, train=concat([train] + added))


def _sources(data_cfg) -> tuple[str, ...]:
  names = data_cfg.get("sources", ()) or ()
  if isinstance(names, str):
    names = (names,)
  names = tuple(names)
  for name in names:
    catalog.check_name(name, "name in config.data.sources")
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise DatasetError(f"config.data.sources lists {dup[0]} twice")
  return names


def _load_at(data_cfg, name: str, parent: str) -> ReidDataset | None:
  subset = data_cfg.get("cuhk03_subset", "labeled")
  base = catalog.usual_location(name, parent, cuhk03_subset=subset)
  if base is None:
    return None
  return catalog.load(name, base, cuhk03_subset=subset,
                      split_index=int(data_cfg.get("split_index", 0)))


def _where(parent: str, name: str, data_cfg) -> str:
  return os.path.join(parent, catalog.expected_folder(
      name, data_cfg.get("cuhk03_subset", "labeled")))


def open_multi_source(data_cfg) -> splits_lib.Splits:
  """The joined training splits of `data.sources` with `data.name`'s test split."""
  names = _sources(data_cfg)
  if data_cfg.source != "folder":
    raise DatasetError(f"config.data.sources needs config.data.source='folder' "
                       f"(got {data_cfg.source!r})")
  if not data_cfg.root:
    raise DatasetError("config.data.root is required with config.data.sources: the "
                       "folder holding each dataset in its usual folder, e.g. "
                       f"{', '.join(catalog.expected_folder(n) for n in names)}")
  root = os.path.abspath(os.path.expanduser(data_cfg.root))
  if not os.path.isdir(root):
    raise DatasetError(f"config.data.root {root} does not exist or is not a folder")
  combineall = bool(data_cfg.get("combineall", False))
  loaded: dict[str, ReidDataset] = {}
  parts = []
  pid_offset = cam_offset = 0
  for name in names:
    ds = _load_at(data_cfg, name, root)
    if ds is None:
      logging.warning("config.data.sources: %s not found at %s: skipped", name,
                      _where(root, name, data_cfg))
      continue
    loaded[name] = ds
    s = from_dataset(ds)
    if combineall:
      s = combine_all(s, name)
    t = s.train
    parts.append(select(t, np.arange(len(t)), t.pids + pid_offset, t.camids + cam_offset))
    logging.info("config.data.sources: %s at %s: %d identities (pids %d..%d), %d images, "
                 "cameras %d..%d", name, ds.root, len(np.unique(t.pids)), pid_offset,
                 pid_offset + int(t.pids.max()), len(t), cam_offset,
                 cam_offset + int(t.camids.max()))
    pid_offset += int(t.pids.max()) + 1
    cam_offset += int(t.camids.max()) + 1
  if not parts:
    raise DatasetError(f"none of config.data.sources ({', '.join(names)}) found under "
                       f"{root} (expected {_where(root, names[0], data_cfg)}, ...)")
  target = data_cfg.name or next(iter(loaded))   # "": the first source found
  if not data_cfg.name:
    logging.info("config.data.name is empty: %s's test split is the run's query/gallery",
                 target)
  if target in loaded:
    test = from_dataset(loaded[target])
    if combineall:
      logging.warning("config.data.combineall: %s's test identities are in training and "
                      "it is also the test dataset (data.name)", target)
  else:
    test = open_eval_splits(data_cfg, target)
  return splits_lib.Splits("+".join(loaded), root, concat(parts), test.query,
                           test.gallery)


def open_eval_splits(data_cfg, name: str) -> splits_lib.Splits:
  """Dataset `name`'s splits for cross-dataset evaluation: use `.query` and `.gallery`.

  (`splits.open_eval_splits` opens `name == data.name` without sources itself:
  the training dataset's own splits.) `name` is looked for in its usual folder under `data.root` (without sources, also
  beside data.root, the training dataset's folder), read from image folders
  with `data.split_index`; synthetic data not found there is generated in its
  default cache folder.
  """
  catalog.check_name(name, "evaluation dataset")
  sources = _sources(data_cfg)
  root = data_cfg.root
  parents = []
  if root:
    root = os.path.abspath(os.path.expanduser(root))
    parents = [root] if sources else [root, os.path.dirname(root)]
  for parent in parents:
    ds = _load_at(data_cfg, name, parent)
    if ds is not None:
      return from_dataset(ds)
  if name == "synthetic":
    from privreid_jax.data import synthetic
    params = dict(data_cfg.synthetic)
    base = synthetic.ensure_dataset(synthetic.default_root(**params), **params)
    return from_dataset(catalog.load(name, base))
  if not parents:
    raise DatasetError(f"evaluation dataset {name}: config.data.root is empty; set it to "
                       f"the folder holding {catalog.expected_folder(name)}")
  raise DatasetError(f"evaluation dataset {name} not found: expected "
                     f"{' or '.join(_where(p, name, data_cfg) for p in parents)}")
