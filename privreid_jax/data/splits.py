"""Opens the configured dataset as train / query / gallery sources for the pipeline.

`config.data.source` picks image folders (parsed by `datasets.py`) or a
prepared tfds ArrayRecord dataset (`tfds_market.py`). Synthetic pedestrians are
generated on first use.

With `config.data.val_fraction > 0`, a seeded fraction of the training
identities is held out as a validation split (`hold_out_validation`): training
keeps the other identities (relabelled 0..n-1), and the held-out ones form a
val query / val gallery pair for model selection that never touches the test
split (method A's progressive stages check their upgrade rule on it).
On synthetic data, `config.data.val_people_seed >= 0` instead draws the
validation split as new people from that seed, with the test split's protocol
(`fresh_people_validation`): as hard as the test split, and all training
identities train.

`config.data.sources` (several training datasets), `config.data.combineall`
and `open_eval_splits` (another dataset's test split, for cross-dataset
evaluation) are described in `multi_source.py`; `config.data.split_index`
picks the split of the datasets with random splits (`small_datasets.py`).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from privreid_jax.data import multi_source
from privreid_jax.data.records import DatasetError
from privreid_jax.data.split_types import Split, Splits, Subset  # noqa: F401  (re-exported)

REAL_FOLDERS = {"market1501": "Market-1501-v15.09.15", "dukemtmcreid": "DukeMTMC-reID",
                "msmt17": "MSMT17_V1", "cuhk03": "cuhk03-np"}


def _take(split: Split, indices: np.ndarray, pids: np.ndarray | None = None) -> Split:
  return Split(Subset(split.source, indices),
               split.pids[indices] if pids is None else pids,
               split.camids[indices])


def hold_out_validation(train: Split, fraction: float, seed: int
                        ) -> tuple[Split, Split, Split]:
  """Splits the training identities into (train, val_query, val_gallery).

  round(fraction * #ids) identities (at least one), drawn with `seed`, are
  held out; the remaining training identities are relabelled 0..n-1 in their
  original order. Of the held-out images, one per (identity, camera), drawn
  with the same seed, is a val query and the rest the val gallery, so every
  query whose identity appears under another camera has a match; an identity
  with one image per camera keeps its last camera's image in the gallery.
  """
  where = f"config.data.val_fraction={fraction}"
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"{where}: expected a fraction in (0, 1), or 0 for no validation")
  ids = np.unique(train.pids)
  n_val = max(1, int(round(fraction * len(ids))))
  if n_val >= len(ids):
    raise ValueError(f"{where}: holds out {n_val} of the {len(ids)} training "
                     "identities, leaving none to train on")
  rng = np.random.default_rng([int(seed), len(ids)])
  val_ids = np.sort(rng.choice(ids, n_val, replace=False))
  is_val = np.isin(train.pids, val_ids)
  keep = np.flatnonzero(~is_val)
  _, relabelled = np.unique(train.pids[keep], return_inverse=True)
  new_train = _take(train, keep, relabelled.astype(np.int32))
  held = np.flatnonzero(is_val)
  query = []
  for pid in val_ids:
    mine = held[train.pids[held] == pid]
    picked = []
    for cam in np.unique(train.camids[held]):
      group = mine[train.camids[mine] == cam]
      if len(group):
        picked.append(int(rng.choice(group)))
    # One image per camera (VIPeR, GRID, PRID, i-LIDS): every image would be a
    # query with none left to find, so the last one stays in the gallery.
    if len(picked) == len(mine) and len(picked) > 1:
      picked.pop()
    query += picked
  query = np.sort(np.asarray(query, np.int64))
  gallery = np.setdiff1d(held, query)
  return new_train, _take(train, query), _take(train, gallery)


def synthetic_root(data_cfg, test_seed: int | None = None) -> str:
  """The synthetic dataset's folder, generated if absent; `test_seed` overrides
  data.synthetic.test_seed (the folder is then data.root + "-people<seed>")."""
  from privreid_jax.data import synthetic
  params = dict(data_cfg.synthetic)
  root = data_cfg.root
  if test_seed is not None:
    params["test_seed"] = int(test_seed)
    root = root and f"{root.rstrip(os.sep)}-people{int(test_seed)}"
  root = root or synthetic.default_root(**params)
  return synthetic.ensure_dataset(root, **params)


def fresh_people_validation(data_cfg, seed: int) -> tuple[Split, Split]:
  """(val_query, val_gallery): the query and gallery of the synthetic dataset
  whose test people are drawn from `seed`, with its distractors and junk.

  The same world and training people as the configured dataset, new people to
  find: groups of look-alikes whole, as in the test split (identities held out
  of training by `hold_out_validation` rarely bring their group along, so that
  split is easier than the test split). Its folder is generated once, beside
  the dataset's.
  """
  seed = int(seed)
  if seed == int(data_cfg.synthetic.get("test_seed", -1)):
    raise ValueError(f"config.data.val_people_seed={seed} is data.synthetic.test_seed: "
                     "validation would be the test split")
  from privreid_jax.data import catalog
  ds = catalog.load("synthetic", synthetic_root(data_cfg, test_seed=seed))
  return _from_records(ds.query), _from_records(ds.gallery)


def _from_records(records) -> Split:
  return Split(tuple(records), np.array([r.pid for r in records], np.int32),
               np.array([r.camid for r in records], np.int32))


def open_splits(data_cfg) -> Splits:
  """The configured dataset's splits, with a validation split if val_fraction > 0
  (held-out training identities) or val_people_seed >= 0 (new synthetic people).

  With `data.sources`, the training split joins those datasets' (multi_source.py).
  """
  if data_cfg.get("sources", ()):
    splits = multi_source.open_multi_source(data_cfg)
  else:
    splits = _open_test_splits(data_cfg)
    if data_cfg.get("combineall", False):
      splits = multi_source.combine_all(splits, data_cfg.name)
  people_seed = int(data_cfg.get("val_people_seed", -1))
  if people_seed >= 0:
    if data_cfg.name != "synthetic" or data_cfg.get("sources", ()):
      raise ValueError(f"config.data.val_people_seed={people_seed}: synthetic data only "
                       f"(data.name is {data_cfg.name!r}; use data.val_fraction)")
    val_query, val_gallery = fresh_people_validation(data_cfg, people_seed)
    return dataclasses.replace(splits, val_query=val_query, val_gallery=val_gallery)
  fraction = float(data_cfg.get("val_fraction", 0.0))
  if fraction == 0.0:
    return splits
  train, val_query, val_gallery = hold_out_validation(
      splits.train, fraction, int(data_cfg.get("val_seed", 0)))
  return dataclasses.replace(splits, train=train, val_query=val_query,
                             val_gallery=val_gallery)


def open_eval_splits(data_cfg, name: str) -> Splits:
  """Dataset `name`'s splits for cross-dataset evaluation (use `.query`, `.gallery`).

  See `multi_source.open_eval_splits`: found in its usual folder under
  data.root (or beside the training dataset's folder); data.name itself without
  data.sources is the training dataset's own test split.
  """
  if name == data_cfg.name and not data_cfg.get("sources", ()):
    return _open_test_splits(data_cfg)
  return multi_source.open_eval_splits(data_cfg, name)


def _open_test_splits(data_cfg) -> Splits:
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
    from privreid_jax.data import datasets
    from privreid_jax.data import tfds_market
    if name not in datasets.KNOWN_DATASETS:
      raise DatasetError(f"config.data.source='tfds' prepares "
                         f"{', '.join(datasets.KNOWN_DATASETS)}; read {name} with "
                         "config.data.source='folder'")
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
  from privreid_jax.data import catalog
  ds = catalog.load(name, root, cuhk03_subset=data_cfg.cuhk03_subset,
                    split_index=int(data_cfg.get("split_index", 0)))
  return Splits(ds.name, ds.root, _from_records(ds.train), _from_records(ds.query),
                _from_records(ds.gallery))
