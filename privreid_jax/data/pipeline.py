"""The grain input pipeline: P x K training batches and padded evaluation batches.

A *source* is a random-access sequence (len + getitem) whose items are either a
`Record` (the image file at `path` is read) or a dict with `image` (encoded
bytes or a uint8 HxWx3 array), `pid` and `camid`, as a tfds ArrayRecord source
returns them.

Training (`train_loader`) is an infinite stream of global batches numbered
0, 1, 2, ...: sampler epoch after sampler epoch of torchreid's
`RandomIdentitySampler`, all randomness derived from `seed` alone, so

* global batch `b` is the same whatever the number of workers or processes:
  process `p` of `n` yields rows [p*L, (p+1)*L) of it, L = batch_size / n;
* the sample at position `j` of global batch `b` is augmented with a Generator
  seeded by (seed, b * batch_size + j);
* the iterator state is just the number of the next global batch.

Each grain element is one (local) batch, so grain's worker processes
(`mp_prefetch`, data.num_workers > 0) each build whole batches, in order. The
workers decode, resize, flip and crop into uint8 (a quarter of the bytes to move
between processes); then the main process normalises and erases
(`finish="host"`), or the batch stays uint8 with its erasing rectangles for the
devices to finish inside the training step (`finish="device"`,
`device_finish.py`; what the trainer uses).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import functools
import math
import os
import sys
import threading
import time
from typing import Any
import weakref

import grain
import numpy as np

from privreid_jax.data import transforms
from privreid_jax.data.records import DatasetError, Record
from privreid_jax.data.sampler import PKSampler

# SeedSequence tag of the augmentation stream (the sampler uses sampler.STREAM).
_AUGMENT_STREAM = 1
# Batches each worker (or the in-process thread) keeps ready.
_BUFFER = 2

Batch = dict[str, np.ndarray]


def _exit_with_parent(parent_pid: int, worker_index: int, worker_count: int) -> None:
  """grain worker init: the worker ends itself once its parent is gone.

  A trainer ended by kill -9 (or any death that skips its `finally`) cannot stop
  its workers; they would block forever on a full buffer. A daemon thread in
  each worker polls the parent PID and exits the worker when it changes.
  """
  del worker_index, worker_count

  def watch():
    while True:
      time.sleep(0.5)
      if os.getppid() != parent_pid:
        os._exit(0)
  threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


_TRACKER_WARNING = "ignore:resource_tracker:UserWarning"

# Live iterators that own worker processes, so `close_workers` can stop them all.
_LIVE: weakref.WeakSet = weakref.WeakSet()


def _track(it):
  try:
    _LIVE.add(it)
  except TypeError:      # not weak-referenceable: closed by its owner only
    pass
  return it


def close_workers() -> None:
  """Stops the worker processes of every iterator still open (the trainer calls
  it however a run ends, so no worker outlives it; an eval loop cut short by an
  exception otherwise keeps its workers until garbage collection)."""
  for it in list(_LIVE):
    try:
      it.close()
    except Exception:  # pylint: disable=broad-except
      pass
  _LIVE.clear()


def _prefetch(ds: grain.IterDataset, num_workers: int) -> grain.IterDataset:
  """grain worker processes; they read absl flags, unparsed outside absl.app.run
  (notebooks, tests, library use), so mark them parsed with their defaults.
  Each worker exits when this process is gone (`_exit_with_parent`)."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  # Python < 3.13 registers shared memory with the resource tracker both where it
  # is created (a worker) and where it is attached (here), but unregisters it once
  # (gh-82300): at exit the tracker then warns of "leaked" segments that were in
  # fact unlinked. The tracker inherits this process's warning options.
  if _TRACKER_WARNING not in sys.warnoptions:
    sys.warnoptions.append(_TRACKER_WARNING)
  return ds.mp_prefetch(grain.MultiprocessingOptions(
      num_workers=num_workers, per_worker_buffer_size=_BUFFER),
      worker_init_fn=functools.partial(_exit_with_parent, os.getpid()))


def read_item(source: Sequence[Any], index: int,
               image_only: bool = False) -> tuple[np.ndarray, int, int]:
  """Source item -> (uint8 HxWx3 image, pid, camid)."""
  item = source[index]
  if isinstance(item, Record):
    image = transforms.decode_image(item.path, name=item.path)
    return image, item.pid, item.camid
  if isinstance(item, Mapping):
    keys = ("image",) if image_only else ("image", "pid", "camid")
    for key in keys:
      if key not in item:
        raise DatasetError(f"source item {index} has no {key!r} key "
                           f"(keys: {sorted(item)})")
    name = f"source item {index}"
    if item.get("filename"):       # a prepared tfds dataset's file name
      name += f" ({item['filename']})"
    image = transforms.decode_image(item["image"], name=name)
    if image_only:
      return image, -1, -1
    return image, int(item["pid"]), int(item["camid"])
  raise DatasetError(f"source item {index} is a {type(item).__name__}; expected "
                     "a Record or a dict with 'image', 'pid', 'camid'")


def _check_process(process_index: int, process_count: int) -> None:
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in "
                     f"[0, process_count={process_count})")


def _split(size: int, key: str, process_count: int) -> int:
  if size < 1 or size % process_count:
    raise ValueError(f"data.{key}={size} must be a positive multiple of the "
                     f"process count {process_count}")
  return size // process_count


def sample_rng(seed: int, position: int) -> np.random.Generator:
  """The Generator augmenting the sample at `position` of the global stream.

  `position` = global batch number * batch_size + row in the global batch.
  """
  return np.random.default_rng([seed, _AUGMENT_STREAM, position])


class _TrainBatchFn:
  """Global batch number -> this process's slice of it, augmented but not yet
  normalised (runs in the workers; uint8 images keep the transfer small)."""

  def __init__(self, source, sampler: PKSampler, pids: np.ndarray,
               cfg: transforms.TransformConfig, seed: int, row0: int,
               rows: int, target_fn, target_source):
    self.source, self.sampler, self.pids, self.cfg = source, sampler, pids, cfg
    self.seed, self.row0, self.rows = seed, row0, rows
    self.target_fn, self.target_source = target_fn, target_source

  def __call__(self, b: int) -> Batch:
    b = int(b)
    indices = self.sampler.batch(b)[self.row0:self.row0 + self.rows]
    h, w = self.cfg.height, self.cfg.width
    out = {"image": np.empty((self.rows, h, w, 3), np.uint8),
           "pid": self.pids[indices].astype(np.int32),
           "camid": np.empty((self.rows,), np.int32),
           "index": indices.astype(np.int32),
           "erase": np.full((self.rows, 4), -1, np.int32)}
    if self.target_fn is not None:
      out["target"] = np.empty((self.rows, h, w, 3), np.float32)
    elif self.target_source is not None:
      out["target"] = np.empty((self.rows, h, w, 3), np.uint8)
    for j, idx in enumerate(indices):
      idx = int(idx)
      image, _, out["camid"][j] = read_item(self.source, idx)
      target_image = None
      if self.target_source is not None:
        target_image, _, _ = read_item(self.target_source, idx, image_only=True)
      rng = sample_rng(self.seed, b * self.sampler.batch_size + self.row0 + j)
      out["image"][j], t, geom = transforms.augment(
          image, rng, self.cfg, self.target_fn, target_image)
      if t is not None:
        out["target"][j] = t
      if geom.erase is not None:
        out["erase"][j] = geom.erase
    return out


def _finish(raw: Batch, cfg: transforms.TransformConfig) -> Batch:
  """Normalises and erases a worker batch (in the main process) -> new arrays."""
  batch = {k: np.array(raw[k]) for k in ("pid", "camid", "index")}
  rects = [None if r[0] < 0 else tuple(int(v) for v in r) for r in raw["erase"]]
  for key in ("image", "target"):
    if key in raw:
      x = transforms.normalise(raw[key], cfg)
      for j, rect in enumerate(rects):
        if rect is not None:
          transforms.erase(x[j], transforms.Geometry(False, 0, 0, rect))
      batch[key] = x
  return batch


class TrainLoader(grain.DatasetIterator):
  """Infinite iterator of training batches with a resumable, tiny state.

  State: {"next_batch": number of the next global batch, "seed": seed}; it
  does not depend on the worker or process count. Being a grain
  `DatasetIterator`, it also works with grain's orbax checkpoint handler.
  """

  def __init__(self, fn: _TrainBatchFn, num_workers: int, finish: str = "host"):
    super().__init__()
    self._fn = fn
    self._num_workers = num_workers
    self._finish_on_host = finish == "host"
    self._next_batch = 0
    self._it = None

  @property
  def steps_per_epoch(self) -> int:
    """Batches in sampler epoch 0 (later epochs may differ by a few)."""
    return len(self._fn.sampler.epoch(0))

  @property
  def sampler(self) -> PKSampler:
    return self._fn.sampler

  @property
  def local_batch_size(self) -> int:
    return self._fn.rows

  def _build(self):
    ds = grain.MapDataset.range(self._next_batch, sys.maxsize).map(self._fn)
    ids = ds.to_iter_dataset(grain.ReadOptions(num_threads=1,
                                               prefetch_buffer_size=1))
    if self._num_workers:
      return _track(iter(_prefetch(ids, self._num_workers)))
    return iter(ids)

  def __next__(self) -> Batch:
    self._assert_not_closed()
    if self._it is None:
      self._it = self._build()
    raw = next(self._it)
    if self._finish_on_host:
      batch = _finish(raw, self._fn.cfg)
    else:   # copied out of the workers' shared memory, still uint8
      batch = {k: np.array(v) for k, v in raw.items()}
    self._next_batch += 1
    return batch

  def get_state(self) -> dict[str, int]:
    return {"next_batch": self._next_batch, "seed": self._fn.seed}

  def set_state(self, state: dict[str, Any]) -> None:
    if not isinstance(state, Mapping) or "next_batch" not in state:
      raise ValueError(f"train loader state needs a 'next_batch' key, got "
                       f"{state!r}")
    if "seed" in state and int(state["seed"]) != self._fn.seed:
      raise ValueError(f"train loader state was taken with seed "
                       f"{state['seed']}, this loader has seed {self._fn.seed}")
    if int(state["next_batch"]) < 0:
      raise ValueError(f"train loader state next_batch must be >= 0, got "
                       f"{state['next_batch']}")
    if self._it is not None:
      self._it.close()
      self._it = None
    self._next_batch = int(state["next_batch"])

  def start_prefetch(self) -> None:
    if self._it is None:
      self._it = self._build()
    self._it.start_prefetch()

  def close(self) -> None:
    if self._it is not None:
      self._it.close()
      self._it = None
    super().close()

  def __enter__(self) -> TrainLoader:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def train_loader(source: Sequence[Any], pids: Sequence[int], data_cfg: Any, *,
                 seed: int, process_index: int = 0, process_count: int = 1,
                 targets: Callable[[np.ndarray], np.ndarray] | Sequence[Any]
                 | None = None, finish: str = "host") -> TrainLoader:
  """The P x K training stream of this process.

  Args:
    source: the training source (Records or dicts, see the module docstring).
    pids: the training label of every source item (e.g. relabelled 0..N-1);
      the sampler groups by it and batches carry it as `pid`.
    data_cfg: the `data` config section.
    seed: non-negative seed of the sampler and of the augmentation.
    process_index, process_count: this process's slice of each global batch.
    targets: paired mode. A picklable callable `f(image01) -> image01` (float32
      HxWx3 in [0,1]) applied after the resize and before augmentation, or a
      second source aligned by index with `source`. The target gets the
      image's geometry and normalisation; batches then carry `target`.
    finish: "host" normalises and erases here; "device" leaves `image` (and
      `target`) as built, uint8 (float32 [0, 1] for a computed target), with
      `erase` int32 [L, 4], for `device_finish.finish` on the devices.

  Returns:
    A `TrainLoader` yielding dicts: `image` float32 [L,H,W,3], `pid`, `camid`,
    `index` (source index) int32 [L], and `target` in paired mode.
  """
  if finish not in ("host", "device"):
    raise ValueError(f"finish={finish!r}: expected 'host' or 'device'")
  cfg = transforms.TransformConfig.from_config(data_cfg)
  _check_process(process_index, process_count)
  batch_size, k = int(data_cfg.batch_size), int(data_cfg.num_instances)
  if k < 1 or batch_size < 1 or batch_size % k:
    raise ValueError(f"data.batch_size={batch_size} must be a positive multiple "
                     f"of data.num_instances={k}")
  rows = _split(batch_size, "batch_size", process_count)
  workers = int(data_cfg.num_workers)
  if workers < 0:
    raise ValueError(f"data.num_workers={workers} must be >= 0")
  if int(seed) < 0:
    raise ValueError(f"seed={seed} must be >= 0")
  pids = np.asarray(pids)
  if pids.shape != (len(source),):
    raise ValueError(f"pids has {pids.size} entries but the source has "
                     f"{len(source)} items")
  target_fn = target_source = None
  if callable(targets):
    target_fn = targets
  elif targets is not None:
    if len(targets) != len(source):
      raise ValueError(f"targets source has {len(targets)} items but the "
                       f"source has {len(source)}")
    target_source = targets
  sampler = PKSampler(pids, batch_size, k, int(seed))
  fn = _TrainBatchFn(source, sampler, pids, cfg, int(seed),
                     process_index * rows, rows, target_fn, target_source)
  return TrainLoader(fn, workers, finish)


class _EvalBatchFn:
  """Eval batch number -> this process's rows of it, resized uint8 images."""

  def __init__(self, source, cfg: transforms.TransformConfig, global_size: int,
               row0: int, rows: int):
    self.source, self.cfg = source, cfg
    self.global_size, self.row0, self.rows = global_size, row0, rows

  def __call__(self, g: int) -> Batch:
    h, w = self.cfg.height, self.cfg.width
    out = {"image": np.zeros((self.rows, h, w, 3), np.uint8),
           "pid": np.zeros((self.rows,), np.int32),
           "camid": np.zeros((self.rows,), np.int32),
           "index": np.zeros((self.rows,), np.int32),
           "mask": np.zeros((self.rows,), bool)}
    first = int(g) * self.global_size + self.row0
    for j, idx in enumerate(range(first, min(first + self.rows,
                                             len(self.source)))):
      image, pid, camid = read_item(self.source, idx)
      out["image"][j] = transforms.resize(image, h, w)
      out["pid"][j], out["camid"][j], out["index"][j] = pid, camid, idx
      out["mask"][j] = True
    return out


class EvalLoader:
  """Fixed-size evaluation batches in source order, re-iterable.

  Global batch g covers source items [g*E, (g+1)*E), E = eval_batch_size;
  process p of n takes the contiguous rows [p*E/n, (p+1)*E/n) of it, so every
  process runs the same `num_eval_batches` steps and `index` (with `mask`)
  tells the caller where each row belongs. Padding rows are all zeros with
  `mask` False.
  """

  def __init__(self, fn: _EvalBatchFn, num_batches: int, num_workers: int):
    self._fn = fn
    self.num_eval_batches = num_batches
    self._num_workers = min(num_workers, num_batches)

  @property
  def local_batch_size(self) -> int:
    return self._fn.rows

  def __len__(self) -> int:
    return self.num_eval_batches

  def __iter__(self):
    ds = grain.MapDataset.range(self.num_eval_batches).map(self._fn)
    ids = ds.to_iter_dataset(grain.ReadOptions(num_threads=1,
                                               prefetch_buffer_size=1))
    if self._num_workers > 0:
      ids = _prefetch(ids, self._num_workers)
    it = _track(iter(ids)) if self._num_workers > 0 else iter(ids)
    try:
      for raw in it:
        batch = {k: np.array(v) for k, v in raw.items() if k != "image"}
        batch["image"] = transforms.normalise(raw["image"], self._fn.cfg)
        batch["image"][~batch["mask"]] = 0.0
        yield batch
    finally:
      it.close()


def eval_loader(source: Sequence[Any], data_cfg: Any, *, process_index: int = 0,
                process_count: int = 1) -> EvalLoader:
  """Deterministic, unaugmented, mask-padded batches of `source` (see EvalLoader)."""
  cfg = transforms.TransformConfig.from_config(data_cfg)
  _check_process(process_index, process_count)
  size = int(data_cfg.eval_batch_size)
  rows = _split(size, "eval_batch_size", process_count)
  if not len(source):
    raise ValueError("eval_loader: the source is empty")
  fn = _EvalBatchFn(source, cfg, size, process_index * rows, rows)
  return EvalLoader(fn, math.ceil(len(source) / size), eval_workers(data_cfg))


def eval_workers(data_cfg: Any) -> int:
  """data.eval_num_workers, with -1 (and a config saved without it) meaning
  data.num_workers."""
  workers = int(data_cfg.get("eval_num_workers", -1))
  if workers < -1:
    raise ValueError(f"data.eval_num_workers={workers} must be >= -1 "
                     "(-1: data.num_workers)")
  return max(0, int(data_cfg.num_workers)) if workers == -1 else workers
