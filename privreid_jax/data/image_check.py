"""Checks at startup that every image a run will evaluate on decodes.

A truncated, garbage or empty file in `query/` or `bounding_box_test/` used to
fail only at the first evaluation, after the training before it. `check_splits`
decodes each image file of the given splits once, with the pipeline's own
decoder, in a thread pool (PIL releases the GIL while decoding), and raises a
one-line `DatasetError` naming the first bad file and how many are bad.

Files that decoded are remembered in a small JSON cache keyed by (path, size,
mtime), so a rerun (a resume) only stats them. Items that are not image files
(a prepared tfds dataset's encoded records) are not checked here.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
from typing import Any, Iterable, Sequence

from absl import logging

from privreid_jax.data import transforms
from privreid_jax.data.records import DatasetError, Record

CACHE_VERSION = 1


def _paths(source: Sequence[Any]) -> list[str]:
  """The image file paths of a source whose items are Records; [] for other
  sources (a tfds source's records were encoded when it was prepared)."""
  if not len(source) or not isinstance(source[0], Record):
    return []
  return [source[i].path for i in range(len(source))]


def _key(path: str) -> list[int] | None:
  try:
    st = os.stat(path)
  except OSError:
    return None
  return [st.st_size, st.st_mtime_ns]


def _load_cache(path: str | None) -> dict[str, list[int]]:
  if not path or not os.path.isfile(path):
    return {}
  try:
    with open(path) as f:
      data = json.load(f)
    if data.get("version") == CACHE_VERSION:
      return dict(data["ok"])
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    pass
  return {}


def _save_cache(path: str | None, ok: dict[str, list[int]]) -> None:
  if not path:
    return
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      json.dump({"version": CACHE_VERSION, "ok": ok}, f)
    os.replace(tmp, path)
  except OSError as e:            # a cache only: never fail a run for it
    logging.warning("could not write the image check cache %s: %s", path, e)


def _decode(path: str) -> str | None:
  """None if the file decodes, else why not."""
  try:
    image = transforms.decode_image(path, name=path)
  except DatasetError as e:
    return str(e)
  if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1:
    return f"cannot decode image {path}: empty image {image.shape}"
  return None


def check_files(paths: Iterable[str], cache_file: str | None = None,
                what: str = "images", workers: int | None = None) -> int:
  """Decodes every file of `paths` not already in the cache; returns how many were
  decoded now. One-line DatasetError for missing or undecodable files."""
  paths = sorted(set(paths))
  cache = _load_cache(cache_file)
  todo, ok = [], {}
  for p in paths:
    key = _key(p)
    if key is None:
      raise DatasetError(f"{what}: image file not found: {p}")
    if cache.get(p) == key:
      ok[p] = key
    else:
      todo.append((p, key))
  t0 = time.time()
  bad = []
  if todo:
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      for (p, key), why in zip(todo, pool.map(_decode, [p for p, _ in todo])):
        if why is None:
          ok[p] = key
        else:
          bad.append(why)
    logging.info("checked %d %s in %.1fs (%d cached)", len(todo), what,
                 time.time() - t0, len(paths) - len(todo))
  if todo or len(ok) != len(cache):
    _save_cache(cache_file, {**cache, **ok})
  if bad:
    more = f" (and {len(bad) - 1} more bad file(s))" if len(bad) > 1 else ""
    raise DatasetError(f"{what}: {bad[0]}{more}; fix or remove the file(s) before training")
  return len(todo)


def check_splits(splits, names: Sequence[str] = ("query", "gallery", "val_query",
                                                   "val_gallery"),
                 cache_file: str | None = None) -> int:
  """Decodes every image file of the named splits of a `Splits` (those present)."""
  paths, found = [], []
  for name in names:
    split = getattr(splits, name, None)
    if split is not None:
      paths += _paths(split.source)
      found.append(name)
  return check_files(paths, cache_file, what=" and ".join(found) + " images")
