"""k-reciprocal re-ranking (Zhong et al., CVPR 2017).

`rerank` has the semantics of the widely used reference `re_ranking` code,
vectorised with sparse matrices; it needs the dense (Q+G)^2 distance matrix
(1.5 GB for Market-1501).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from privreid_jax.evaluation import metrics


def _reciprocal_sets(rank: np.ndarray, k: int) -> np.ndarray:
  """[n, k+1] neighbours j of i among i's top k+1 that have i in their top k+1; -1 pads."""
  fwd = rank[:, :k + 1]
  out = np.full(fwd.shape, -1, fwd.dtype)
  step = max(1, metrics.CHUNK_ELEMENTS // max(fwd.shape[1] ** 2, 1))
  for s in range(0, fwd.shape[0], step):
    f = fwd[s:s + step]
    back = fwd[f]                                              # [c, k+1, k+1]
    me = np.arange(s, s + f.shape[0])[:, None, None]
    out[s:s + step] = np.where((back == me).any(-1), f, -1)
  return out


def _expanded_pairs(recip: np.ndarray, recip_half: np.ndarray):
  """(row, col) pairs of each row's k-reciprocal set grown by the 2/3 rule."""
  len_half = (recip_half >= 0).sum(1)
  rows_out, cols_out = [], []
  width = recip.shape[1] * recip_half.shape[1] * recip.shape[1]
  step = max(1, metrics.CHUNK_ELEMENTS // max(width, 1))
  for s in range(0, recip.shape[0], step):
    r = recip[s:s + step]                                      # [c, k+1]
    ids = np.arange(s, s + r.shape[0])
    cand = np.maximum(r, 0)
    cand_sets = recip_half[cand]                               # [c, k+1, h+1]
    inside = ((cand_sets[..., None] == r[:, None, None, :]) &
              (cand_sets[..., None] >= 0)).any(-1).sum(-1)     # |R_h(c) & R(i)|
    take = (r >= 0) & (inside > 2.0 / 3.0 * len_half[cand])
    grow = take[..., None] & (cand_sets >= 0)
    rows_out += [np.broadcast_to(ids[:, None], r.shape)[r >= 0],
                 np.broadcast_to(ids[:, None, None], cand_sets.shape)[grow]]
    cols_out += [r[r >= 0], cand_sets[grow]]
  rows = np.concatenate(rows_out).astype(np.int64)
  cols = np.concatenate(cols_out).astype(np.int64)
  n = recip.shape[0]
  key = np.unique(rows * n + cols)
  return key // n, key % n


def rerank(q_g_dist, q_q_dist, g_g_dist, k1: int = 20, k2: int = 6,
           lambda_value: float = 0.3) -> np.ndarray:
  """k-reciprocal re-ranked [Q, G] float32 distance.

  Semantics of the reference `re_ranking` code: the (Q+G)^2 matrix of the given
  distances is squared and normalised by its column max (then transposed),
  k-reciprocal sets use the top k1+1 neighbours, grown by the sets of the
  top round(k1/2)+1 neighbours of each member that overlap it by more than
  2/3, weighted by exp(-distance); k2 > 1 averages each row over its k2
  nearest rows (local query expansion); the result is
  (1 - lambda) * Jaccard + lambda * normalised original distance.
  """
  q_g = metrics.as_matrix("q_g_dist", q_g_dist)
  q_q = metrics.as_matrix("q_q_dist", q_q_dist)
  g_g = metrics.as_matrix("g_g_dist", g_g_dist)
  n_q, n_g = q_g.shape
  if q_q.shape != (n_q, n_q):
    raise ValueError(f"q_q_dist must be [{n_q}, {n_q}] (queries of q_g_dist), "
                     f"got {q_q.shape}")
  if g_g.shape != (n_g, n_g):
    raise ValueError(f"g_g_dist must be [{n_g}, {n_g}] (gallery of q_g_dist), "
                     f"got {g_g.shape}")
  if n_q == 0 or n_g == 0:
    raise ValueError(f"q_g_dist must be non-empty, got shape {q_g.shape}")
  k1 = metrics.check_positive_int("k1", k1)
  k2 = metrics.check_positive_int("k2", k2)
  if not 0.0 <= lambda_value <= 1.0:
    raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value!r}")
  for name, m in (("q_g_dist", q_g), ("q_q_dist", q_q), ("g_g_dist", g_g)):
    metrics.check_finite_order(name, m)

  n = n_q + n_g
  # dist = (D**2 / colmax(D**2)).T with D = [[qq, qg], [qg.T, gg]], built
  # transposed in place: D.T = [[qq.T, qg], [qg.T, gg.T]], then row maxima.
  dist = np.empty((n, n), np.float32)
  dist[:n_q, :n_q] = q_q.T
  dist[:n_q, n_q:] = q_g
  dist[n_q:, :n_q] = q_g.T
  dist[n_q:, n_q:] = g_g.T
  np.square(dist, out=dist)
  row_max = dist.max(axis=1, keepdims=True)
  row_max[row_max == 0] = 1.0
  dist /= row_max

  rank = metrics.topk_rows(dist, max(k1 + 1, k2)).astype(np.int32)
  recip = _reciprocal_sets(rank, k1)
  recip_half = _reciprocal_sets(rank, int(np.around(k1 / 2.0)))
  rows, cols = _expanded_pairs(recip, recip_half)
  weight = np.exp(-dist[rows, cols])
  weight = weight / np.bincount(rows, weights=weight, minlength=n)[rows]
  v = sparse.csr_matrix((weight.astype(np.float32), (rows, cols)), shape=(n, n))
  if k2 != 1:
    near = rank[:, :k2]
    qe = sparse.csr_matrix(
        (np.full(near.size, 1.0 / near.shape[1], np.float32),
         (np.repeat(np.arange(n), near.shape[1]), near.ravel())), shape=(n, n))
    v = (qe @ v).tocsr()
  v.eliminate_zeros()

  # Jaccard: sum_l min(V[i, l], V[j, l]) over the non-zeros of query row i.
  v_q = v[:n_q]
  v_g = v[n_q:].tocsc()
  indptr, g_rows, g_vals = v_g.indptr, v_g.indices, v_g.data
  out = np.empty((n_q, n_g), np.float32)
  step = max(1, (metrics.CHUNK_ELEMENTS // 2) // n_g)
  for s in range(0, n_q, step):
    block = v_q[s:s + step].tocoo()
    count = indptr[block.col + 1] - indptr[block.col]
    first = np.repeat(indptr[block.col] - (np.cumsum(count) - count), count)
    pos = first + np.arange(count.sum())
    contrib = np.minimum(np.repeat(block.data, count), g_vals[pos])
    c = min(step, n_q - s)
    shared = np.bincount(np.repeat(block.row, count).astype(np.int64) * n_g + g_rows[pos],
                         weights=contrib, minlength=c * n_g).reshape(c, n_g)
    jaccard = 1.0 - shared / (2.0 - shared)
    out[s:s + c] = (jaccard * (1.0 - lambda_value) +
                    dist[s:s + c, n_q:] * lambda_value)
  return out
