"""Market-1501 CMC / mAP / mINP and CUHK03's single-shot CMC from a distance matrix.

`evaluate_rank` is torchreid's / fast-reid's `eval_market1501` (docs/evaluation.md):
for each query the gallery is ranked by distance (stable sort), gallery items
with the query's pid AND camera are dropped, queries with no match left are
skipped; CMC(k), AP (mean precision at each match) and INP (#matches / rank of
the last match) are averaged over the valid queries.

The per-query loop of the reference is replaced by whole-chunk NumPy work that
never sorts a full row. CMC, AP and INP only need the rank of each match, so
for a block of queries:

* the same-pid gallery items of each query come from the gallery grouped by
  pid, and the distance of its last good (non-junk) match is the threshold;
* only the entries at or below their row's threshold (`np.flatnonzero`, one
  pass) can precede a match; they are sorted as unique int64 keys
  `(row, order-preserving float bits, column)`, which is the stable
  row-wise order, and each same-pid item's position in its row is a
  `np.searchsorted` into them;
* a match's rank in the junk-free list is its position minus the junk entries
  before it, so AP / INP / CMC need no per-row Python work.

The work beyond one pass over the distances is proportional to the depth of
each query's last match (mINP), not to the gallery size; `evaluate_cuhk03`,
which needs whole rankings, still sorts every row (with the same keys).
`evaluate_cuhk03` is torchreid's `eval_cuhk03` (single-shot CMC: one random
gallery image per identity, averaged over repeats) with an explicit seed.

NumPy only. The input checks, `topk_rows` and `Accumulator` are shared with
`distances.py` and `rerank.py`; the public entry points are re-exported by
`ranking.py`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Rows per internal chunk are chosen so a chunk holds about this many distances
# (the sort keys of a chunk take 8 bytes each).
CHUNK_ELEMENTS = 1 << 23
# evaluate_rank / evaluate_features rank a chunk in row blocks of about this many
# distances, so the candidates of a block (<= 20 bytes each) stay small.
_BLOCK_ELEMENTS = 1 << 21
# Above this fraction of candidates a block keys all its distances (no compaction).
_DENSE_FRACTION = 0.25

# ----------------------------------------------------------------------------
# Input checks.
# ----------------------------------------------------------------------------
def as_matrix(name: str, x: Any) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{name} must be a 2-D matrix, got shape {x.shape}")
  if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
    raise ValueError(f"{name} must hold numbers, got dtype {x.dtype}")
  return x


def as_ids(name: str, x: Any, n: int, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 1 or x.shape[0] != n:
    raise ValueError(f"{name} must be a 1-D array of {n} entries (one per {what}), "
                     f"got shape {x.shape}")
  if x.size and not np.issubdtype(x.dtype, np.integer):
    if not np.all(np.mod(x, 1) == 0):
      raise ValueError(f"{name} must hold integer ids, got dtype {x.dtype}")
  return x.astype(np.int64)


def check_ids(distmat_name: str, shape: tuple[int, int], q_pids, g_pids,
               q_camids, g_camids) -> tuple[np.ndarray, ...]:
  n_q, n_g = shape
  what_q = f"query row of {distmat_name}"
  what_g = f"gallery column of {distmat_name}"
  return (as_ids("q_pids", q_pids, n_q, what_q), as_ids("g_pids", g_pids, n_g, what_g),
          as_ids("q_camids", q_camids, n_q, what_q),
          as_ids("g_camids", g_camids, n_g, what_g))


def check_positive_int(name: str, value: Any) -> int:
  if isinstance(value, bool) or int(value) != value or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")
  return int(value)


# ----------------------------------------------------------------------------
# Stable row-wise sorting via unique integer keys.
# ----------------------------------------------------------------------------
def _sort_keys(d: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
  """Unique int64 keys whose order is the stable order of each row of float32 d.

  key = ordered(d) * 2**shift + column, where ordered() maps float32 bits to
  integers in value order (negative floats get their magnitude bits flipped,
  -0.0 joins +0.0). `out` ([>= rows, G] int64) is reused when given: fresh
  large arrays cost page faults on every chunk.
  """
  n = d.shape[1]
  shift = max(1, (n - 1).bit_length())
  keys = np.empty(d.shape, np.int64) if out is None else out[:d.shape[0]]
  bits = np.ascontiguousarray(d).view(np.int32)
  np.copyto(keys, bits)
  if bits.size and bits.min() < 0:
    negative = keys < 0
    np.bitwise_xor(keys, 0x7FFFFFFF, out=keys, where=negative)
    keys[keys == -1] = 0                          # -0.0 ties with +0.0
  keys <<= shift
  keys |= np.arange(n, dtype=np.int64)
  return keys, shift


def _fast_path(d: np.ndarray) -> bool:
  return d.dtype == np.float32 and d.shape[1] <= (1 << 31)


def argsort_rows(d: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
  """np.argsort(d, axis=1, kind="stable") as int64, ~10x faster for float32."""
  if not _fast_path(d):
    return np.argsort(d.astype(np.float64, copy=False), axis=1, kind="stable")
  keys, shift = _sort_keys(d, out)
  keys.sort(axis=1)
  keys &= (1 << shift) - 1
  return keys


def topk_rows(d: np.ndarray, k: int) -> np.ndarray:
  """The first k columns of the stable row-wise argsort of d, chunked."""
  n_rows, n = d.shape
  k = min(k, n)
  out = np.empty((n_rows, k), np.int64)
  step = max(1, CHUNK_ELEMENTS // max(n, 1))
  for s in range(0, n_rows, step):
    block = d[s:s + step]
    if not _fast_path(block):
      out[s:s + step] = np.argsort(block, axis=1, kind="stable")[:, :k]
      continue
    keys, shift = _sort_keys(block)
    if k < n:
      keys = np.partition(keys, k - 1, axis=1)[:, :k]
    keys.sort(axis=1)
    out[s:s + step] = keys & ((1 << shift) - 1)
  return out


def check_finite_order(name: str, d: np.ndarray) -> None:
  if np.issubdtype(d.dtype, np.floating) and d.size and np.isnan(np.min(d)):
    raise ValueError(f"{name} contains NaN distances")


# ----------------------------------------------------------------------------
# Per-query statistics of ranked rows.
# ----------------------------------------------------------------------------
def _match_stats(order: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray,
                 g_pids: np.ndarray, g_camids: np.ndarray,
                 buf: np.ndarray | None = None):
  """Per query: #matches, rank of the first / last match, AP (0 when no match).

  `order` is [chunk, G], each row the gallery sorted by distance. Ranks are
  1-based positions in the list without same-pid same-camera items. `buf`
  ([>= chunk, G], g_pids' dtype) is scratch space.
  """
  c = order.shape[0]
  buf = np.empty(order.shape, g_pids.dtype) if buf is None else buf[:c]
  np.take(g_pids, order, out=buf)
  rows, cols = np.nonzero(buf == q_pids[:, None])                # row-major
  junk = g_camids[order[rows, cols]] == q_camids[rows]
  return _stats_from_positions(rows, cols, junk, c)


def _stats_from_positions(rows: np.ndarray, cols: np.ndarray, junk: np.ndarray, c: int):
  """`_match_stats` from the same-pid entries of the ranked rows.

  rows / cols: query row and 0-based position in the stable order of that
  row's ranking, sorted by (row, position); junk: same camera as the query.
  Same-pid entries after a row's last good match may be left out.
  """
  row_start = np.searchsorted(rows, np.arange(c))
  junk_prefix = np.concatenate(([0], np.cumsum(junk)))
  junk_before = junk_prefix[:-1] - junk_prefix[row_start[rows]]
  good = ~junk
  good_rows = rows[good]
  rank = (cols - junk_before)[good] + 1
  num_good = np.bincount(good_rows, minlength=c)
  good_start = np.concatenate(([0], np.cumsum(num_good)[:-1]))
  hits = np.arange(good_rows.size) - good_start[good_rows] + 1
  ap = np.bincount(good_rows, weights=hits / rank, minlength=c).astype(np.float64)
  valid = num_good > 0
  first = np.zeros(c, np.int64)
  last = np.zeros(c, np.int64)
  first[valid] = rank[good_start[valid]]
  last[valid] = rank[good_start[valid] + num_good[valid] - 1]
  ap[valid] /= num_good[valid]
  return num_good, first, last, ap


def _ordered_bits(v: np.ndarray) -> np.ndarray:
  """int64 in [0, 2**32) in the value order of float32 v (-0.0 ties with +0.0)."""
  k = v.view(np.int32).astype(np.int64)
  np.bitwise_xor(k, 0x7FFFFFFF, out=k, where=k < 0)
  k[k == -1] = 0
  k += 1 << 31
  return k


def _packed_keys(v: np.ndarray, rows: np.ndarray, cols, col_bits: int) -> np.ndarray:
  """Unique int64 keys (row, ordered float32 bits, column) in lexicographic order."""
  keys = _ordered_bits(v)
  keys <<= col_bits
  keys |= cols
  keys |= rows << (32 + col_bits)
  return keys


def match_positions(d: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                     junk: np.ndarray):
  """Positions of same-pid items in the stable row-wise order of d, no full sort.

  d: [c, G] float32 or float64 distances; rows / cols / junk: the same-pid
  items of each row (rows ascending). Returns (rows, positions, junk) of the
  items up to each row's last good (non-junk) item, sorted by (row, position),
  for `_stats_from_positions`. A position is the number of gallery items with
  a smaller distance, or an equal one and a smaller column (np.argsort(kind=
  "stable")); only the row's candidates, the items whose distance is at most
  that of the row's last good item, can be counted, so only they are sorted.
  """
  c, n = d.shape
  d = np.ascontiguousarray(d)
  v = d[rows, cols]
  thresh = np.full(c, np.nan, d.dtype)              # NaN: no good item, no candidate
  good_rows = rows[~junk]
  if good_rows.size:
    starts = np.flatnonzero(np.concatenate(([True], good_rows[1:] != good_rows[:-1])))
    thresh[good_rows[starts]] = np.maximum.reduceat(v[~junk], starts)
  keep = v <= thresh[rows]
  rows, cols, v, junk = rows[keep], cols[keep], v[keep], junk[keep]
  candidate = d <= thresh[:, None]
  col_bits = max(1, (n - 1).bit_length())
  if d.dtype == np.float32 and (c - 1).bit_length() + 32 + col_bits <= 63:
    if np.count_nonzero(candidate) > _DENSE_FRACTION * d.size:
      # Most items are candidates (matches deep in the ranking): key them all.
      keys = _packed_keys(d, np.arange(c, dtype=np.int64)[:, None], np.arange(n),
                          col_bits).reshape(-1)
    else:
      flat = np.flatnonzero(candidate)
      cand_rows = flat // n
      keys = _packed_keys(d.reshape(-1)[flat], cand_rows, flat - cand_rows * n, col_bits)
    keys.sort()
    pos = np.searchsorted(keys, _packed_keys(v, rows, cols, col_bits))
    pos -= np.searchsorted(keys, np.arange(c, dtype=np.int64) << (32 + col_bits))[rows]
  else:                                             # float64 (or a huge block)
    flat = np.flatnonzero(candidate)                # row-major: sorted by (row, col)
    cand_rows = flat // n
    order = np.lexsort((flat - cand_rows * n, d.reshape(-1)[flat], cand_rows))
    at = np.empty_like(order)
    at[order] = np.arange(order.size)
    pos = at[np.searchsorted(flat, rows * n + cols)]
    pos -= np.searchsorted(cand_rows, np.arange(c))[rows]
  by_rank = np.argsort(rows * n + pos)
  return rows[by_rank], pos[by_rank], junk[by_rank]


class Accumulator:
  """Collects per-query statistics chunk by chunk and averages valid queries."""

  def __init__(self, g_pids: np.ndarray, g_camids: np.ndarray, max_rank: int):
    self.g_pids = g_pids
    self.g_camids = g_camids
    self.max_rank = max_rank
    self.cmc_hist = np.zeros(max_rank + 1, np.int64)
    self.aps: list[np.ndarray] = []
    self.inps: list[np.ndarray] = []
    self.num_queries = 0
    self._keys: np.ndarray | None = None    # scratch reused across chunks
    self._pids: np.ndarray | None = None
    self._by_pid = np.argsort(g_pids, kind="stable")   # gallery grouped by pid
    self._pid_sorted = g_pids[self._by_pid]

  def sort(self, dist: np.ndarray, name: str = "distmat") -> np.ndarray:
    """Stable argsort of a chunk's rows (into the reused scratch buffer)."""
    check_finite_order(name, dist)
    if self._keys is None or self._keys.shape[0] < dist.shape[0]:
      self._keys = np.empty(dist.shape, np.int64)
      self._pids = np.empty(dist.shape, self.g_pids.dtype)
    return argsort_rows(dist, self._keys)

  def same_pid_items(self, q_pids: np.ndarray, q_camids: np.ndarray):
    """(rows, cols, junk) of the gallery items with each query's pid, rows ascending."""
    lo = np.searchsorted(self._pid_sorted, q_pids, "left")
    count = np.searchsorted(self._pid_sorted, q_pids, "right") - lo
    rows = np.repeat(np.arange(q_pids.size), count)
    cols = self._by_pid[np.arange(rows.size) - np.repeat(np.cumsum(count) - count - lo,
                                                         count)]
    return rows, cols, self.g_camids[cols] == q_camids[rows]

  def add(self, dist: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray,
          name: str = "distmat") -> None:
    """Ranks a [chunk, G] block of distances without sorting whole rows."""
    check_finite_order(name, dist)
    if dist.dtype != np.float32:
      dist = dist.astype(np.float64)       # the order np.argsort gives on float64
    step = max(1, _BLOCK_ELEMENTS // max(dist.shape[1], 1))
    for s in range(0, dist.shape[0], step):
      qp, qc = q_pids[s:s + step], q_camids[s:s + step]
      rows, pos, junk = match_positions(dist[s:s + step], *self.same_pid_items(qp, qc))
      self._add_stats(_stats_from_positions(rows, pos, junk, qp.size))

  def add_sorted(self, order, q_pids, q_camids) -> np.ndarray:
    """Adds a chunk given its stable row-wise argsort; returns the valid queries."""
    return self._add_stats(_match_stats(order, q_pids, q_camids, self.g_pids,
                                        self.g_camids, self._pids))

  def _add_stats(self, stats) -> np.ndarray:
    num_good, first, last, ap = stats
    valid = num_good > 0
    self.num_queries += num_good.size
    self.cmc_hist += np.bincount(np.minimum(first[valid], self.max_rank + 1) - 1,
                                 minlength=self.max_rank + 1)
    self.aps.append(ap[valid])
    self.inps.append(num_good[valid] / last[valid])
    return valid

  def result(self, cmc: np.ndarray | None = None) -> dict[str, Any]:
    aps = np.concatenate(self.aps) if self.aps else np.zeros(0)
    num_valid = int(aps.size)
    if num_valid == 0:
      raise ValueError(
          f"no valid query: none of the {self.num_queries} queries has a gallery item "
          "with its pid from another camera (check q_pids/g_pids and the camids)")
    if cmc is None:
      cmc = np.cumsum(self.cmc_hist[:self.max_rank]) / num_valid
    return {"cmc": cmc, "mAP": float(np.mean(aps)),
            "mINP": float(np.mean(np.concatenate(self.inps))),
            "num_valid_queries": num_valid}


# ----------------------------------------------------------------------------
# Market-1501 protocol.
# ----------------------------------------------------------------------------
def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids,
                  max_rank: int = 50) -> dict[str, Any]:
  """torchreid's `eval_market1501` on a [Q, G] distance matrix.

  Returns {"cmc": float64 [min(max_rank, G)] fractions, "mAP", "mINP": float
  fractions, "num_valid_queries": int}. Raises ValueError on mismatched shapes,
  NaN distances or when no query has a valid match.
  """
  distmat = as_matrix("distmat", distmat)
  q_pids, g_pids, q_camids, g_camids = check_ids("distmat", distmat.shape, q_pids,
                                                  g_pids, q_camids, g_camids)
  max_rank = min(check_positive_int("max_rank", max_rank), distmat.shape[1])
  if distmat.shape[1] == 0:
    raise ValueError("distmat has an empty gallery (0 columns)")
  acc = Accumulator(g_pids, g_camids, max_rank)
  step = max(1, CHUNK_ELEMENTS // distmat.shape[1])
  for s in range(0, distmat.shape[0], step):
    acc.add(distmat[s:s + step], q_pids[s:s + step], q_camids[s:s + step])
  return acc.result()


# ----------------------------------------------------------------------------
# CUHK03 classic single-shot metric.
# ----------------------------------------------------------------------------
def evaluate_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                    num_repeats: int = 10, seed: int = 0) -> dict[str, Any]:
  """torchreid's `eval_cuhk03`: single-shot CMC averaged over random galleries.

  For each valid query and each repeat one gallery image per identity is drawn
  uniformly (same-pid same-camera images excluded) and the rank of the drawn
  match among the drawn images gives the CMC; AP / INP use the full gallery
  as in `evaluate_rank`. Draws come from `np.random.default_rng([seed, query
  index])`, so results are reproducible and independent of chunking.
  """
  distmat = as_matrix("distmat", distmat)
  q_pids, g_pids, q_camids, g_camids = check_ids("distmat", distmat.shape, q_pids,
                                                  g_pids, q_camids, g_camids)
  n_q, n_g = distmat.shape
  if n_g == 0:
    raise ValueError("distmat has an empty gallery (0 columns)")
  max_rank = min(check_positive_int("max_rank", max_rank), n_g)
  repeats = check_positive_int("num_repeats", num_repeats)
  if isinstance(seed, bool) or int(seed) != seed or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")

  ids, group = np.unique(g_pids, return_inverse=True)
  members = np.argsort(group, kind="stable")        # gallery indices by identity
  counts = np.bincount(group, minlength=ids.size)
  starts = np.cumsum(counts) - counts
  acc = Accumulator(g_pids, g_camids, max_rank)
  ranks_axis = np.arange(1, max_rank + 1)
  cmcs: list[np.ndarray] = []
  step = max(1, CHUNK_ELEMENTS // n_g)
  for s in range(0, n_q, step):
    order = acc.sort(distmat[s:s + step])
    valid = acc.add_sorted(order, q_pids[s:s + step], q_camids[s:s + step])
    pos = np.empty_like(order)
    np.put_along_axis(pos, order, np.broadcast_to(np.arange(n_g), order.shape), axis=1)
    for r in np.flatnonzero(valid):
      q = s + r
      rng = np.random.default_rng([int(seed), q])
      draw = (rng.random((repeats, ids.size)) * counts).astype(np.int64)
      chosen = members[starts + np.minimum(draw, counts - 1)]          # [R, P]
      gq = np.searchsorted(ids, q_pids[q])
      own = members[starts[gq]:starts[gq] + counts[gq]]
      own = own[g_camids[own] != q_camids[q]]
      pick = np.minimum((rng.random(repeats) * own.size).astype(np.int64), own.size - 1)
      chosen[:, gq] = own[pick]
      p = pos[r][chosen]
      rank = (p <= p[:, gq:gq + 1]).sum(1)                             # 1-based
      cmcs.append((rank[None, :] <= ranks_axis[:, None]).mean(1))
  cmc = np.mean(cmcs, axis=0) if cmcs else None
  return acc.result(cmc)
