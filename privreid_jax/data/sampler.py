"""The P x K identity sampler: torchreid's RandomIdentitySampler, made a pure
function of (seed, epoch) so any global batch can be rebuilt on its own."""

from __future__ import annotations

import bisect
import collections
from collections.abc import Sequence
import threading

import numpy as np

# SeedSequence tag of the sampler's random stream (pipeline's augmentation
# stream uses 1), so the two streams never overlap for one seed.
STREAM = 0


class PKSampler:
  """torchreid's RandomIdentitySampler as a pure function of (seed, epoch).

  Per epoch: each identity's indices are shuffled (drawn with replacement up to
  K when it has fewer than K) and cut into groups of K, the incomplete rest
  dropped; then P = batch_size / K identities are picked at random among those
  with groups left, one group each, until fewer than P identities remain. The
  number of batches may differ slightly between epochs; `locate` maps a global
  batch number onto (epoch, row) of the concatenated epochs.
  """

  def __init__(self, pids: Sequence[int], batch_size: int, num_instances: int,
               seed: int):
    pids = np.asarray(pids)
    if pids.ndim != 1 or not len(pids):
      raise ValueError("PKSampler needs a non-empty 1-D sequence of pids")
    self.batch_size = int(batch_size)
    self.num_instances = int(num_instances)
    self.pids_per_batch = self.batch_size // self.num_instances
    self.seed = int(seed)
    order = np.argsort(pids, kind="stable")
    _, starts = np.unique(pids[order], return_index=True)
    self._members = np.split(order, starts[1:])
    self.num_pids = len(self._members)
    if self.num_pids < self.pids_per_batch:
      raise ValueError(
          f"data.batch_size={self.batch_size} with data.num_instances="
          f"{self.num_instances} needs {self.pids_per_batch} identities per "
          f"batch, but the training source has only {self.num_pids}")
    self._starts = [0]   # first global batch of each epoch computed so far
    self._cache = collections.OrderedDict()
    self._lock = threading.Lock()

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_cache"] = collections.OrderedDict()
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def _plan(self, epoch: int) -> np.ndarray:
    k, p = self.num_instances, self.pids_per_batch
    rng = np.random.default_rng([self.seed, STREAM, epoch])
    groups = []
    for idxs in self._members:
      if len(idxs) < k:
        chosen = rng.choice(idxs, size=k, replace=True)
      else:
        chosen = rng.permutation(idxs)
      n = len(chosen) // k
      groups.append(chosen[:n * k].reshape(n, k))
    taken = [0] * len(groups)
    available = list(range(len(groups)))
    batches = []
    while len(available) >= p:
      picked = [available[i] for i in rng.choice(len(available), p,
                                                 replace=False)]
      batches.append(np.concatenate([groups[g][taken[g]] for g in picked]))
      for g in picked:
        taken[g] += 1
        if taken[g] == len(groups[g]):
          available.remove(g)
    return np.stack(batches).astype(np.int64)

  def epoch(self, epoch: int) -> np.ndarray:
    """Source indices of every batch of sampler epoch `epoch`, [n, batch_size]."""
    with self._lock:
      plan = self._cache.get(epoch)
      if plan is None:
        plan = self._plan(epoch)
        self._cache[epoch] = plan
        if len(self._cache) > 2:
          self._cache.popitem(last=False)
      else:
        self._cache.move_to_end(epoch)
      return plan

  def locate(self, batch: int) -> tuple[int, int]:
    """Global batch number -> (sampler epoch, row in that epoch)."""
    if batch < 0:
      raise IndexError(f"batch number must be >= 0, got {batch}")
    while self._starts[-1] <= batch:
      last = len(self._starts) - 1
      self._starts.append(self._starts[-1] + len(self.epoch(last)))
    epoch = bisect.bisect_right(self._starts, batch) - 1
    return epoch, batch - self._starts[epoch]

  def batch(self, batch: int) -> np.ndarray:
    """Source indices of global batch `batch`, [batch_size]."""
    epoch, row = self.locate(batch)
    return self.epoch(epoch)[row]
