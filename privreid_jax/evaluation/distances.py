"""Distances between features on the JAX device, and evaluation from features.

`pairwise_distance` is torchreid's squared Euclidean (clamped at 0) or cosine
distance, jit-able. `evaluate_features` computes distances with a jitted
`jax.numpy` matmul one query chunk at a time (the next chunk is dispatched
while the current one is ranked by `metrics.py`), so an MSMT17-sized
evaluation never holds the 3.8 GB distance matrix. The product and the
distance epilogue are separate jitted computations: fused, XLA's CPU backend
runs the product ~1.8x slower. With `rerank=True` it builds the dense matrices
that `rerank.py` needs.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from privreid_jax.evaluation import metrics
from privreid_jax.evaluation import rerank as reranking

METRICS = ("euclidean", "cosine")
_NORM_EPS = 1e-12   # as torch.nn.functional.normalize


def _check_metric(metric: str) -> str:
  if metric not in METRICS:
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
  return metric


def _l2_normalize(x: jax.Array) -> jax.Array:
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.maximum(norm, _NORM_EPS)


def pairwise_distance(a, b, metric: str = "euclidean") -> jax.Array:
  """[M, D] x [N, D] -> [M, N] float32 distances (jit-able).

  "euclidean" is the squared Euclidean distance clamped at 0 (torchreid's
  `euclidean_squared_distance`); "cosine" is 1 - cosine similarity. On
  L2-normalised features the two give the same order (euclidean = 2 * cosine).
  """
  _check_metric(metric)
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"pairwise_distance needs [M, D] and [N, D] features, "
                     f"got shapes {a.shape} and {b.shape}")
  hi = jax.lax.Precision.HIGHEST
  if metric == "cosine":
    return 1.0 - jnp.matmul(_l2_normalize(a), _l2_normalize(b).T, precision=hi)
  sq = jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :]
  return jnp.maximum(sq - 2.0 * jnp.matmul(a, b.T, precision=hi), 0.0)


_pairwise_jit = jax.jit(pairwise_distance, static_argnames="metric")
_normalize_jit = jax.jit(_l2_normalize)


# `pairwise_distance` in two computations: XLA's CPU backend fuses the distance
# epilogue into the matrix product and then runs ~1.8x slower than the product
# alone (and than NumPy's BLAS). The split gives bit-identical distances.
@jax.jit
def _sq_norms(x: jax.Array) -> jax.Array:
  return jnp.sum(x * x, axis=1)


@functools.partial(jax.jit, static_argnames="metric")
def _product(a: jax.Array, g: jax.Array, metric: str) -> jax.Array:
  """a @ g.T (a normalised for "cosine"; g is then the normalised gallery)."""
  if metric == "cosine":
    a = _l2_normalize(a)
  return jnp.matmul(a, g.T, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames="metric")
def _finish(product: jax.Array, a: jax.Array, g_sq: jax.Array | None,
            metric: str) -> jax.Array:
  if metric == "cosine":
    return 1.0 - product
  return jnp.maximum(jnp.sum(a * a, axis=1)[:, None] + g_sq[None, :] - 2.0 * product, 0.0)


def _chunked_distances(qf: np.ndarray, gf: jax.Array, metric: str, chunk: int):
  """Yields (start, [n, G] numpy distances) per query chunk, one chunk ahead.

  The distances equal `pairwise_distance(qf[rows], gf, metric)` bit for bit.
  """
  n_q = qf.shape[0]
  gf = jnp.asarray(gf, jnp.float32)
  if metric == "cosine":
    gf, g_sq = _normalize_jit(gf), None
  else:
    g_sq = _sq_norms(gf)

  def dispatch(s):
    block = qf[s:s + chunk]
    if block.shape[0] < chunk:   # pad: one compiled shape for every chunk
      block = np.concatenate([block, np.zeros((chunk - block.shape[0], qf.shape[1]),
                                              qf.dtype)])
    block = jnp.asarray(block, jnp.float32)
    return _finish(_product(block, gf, metric=metric), block, g_sq, metric=metric)

  starts = list(range(0, n_q, chunk))
  pending = dispatch(starts[0])
  for i, s in enumerate(starts):
    nxt = dispatch(starts[i + 1]) if i + 1 < len(starts) else None
    yield s, np.asarray(pending)[:min(chunk, n_q - s)]
    pending = nxt


def _full_distance(a: np.ndarray, b: jax.Array, metric: str, chunk: int) -> np.ndarray:
  out = np.empty((a.shape[0], b.shape[0]), np.float32)
  for s, d in _chunked_distances(a, b, metric, chunk):
    out[s:s + d.shape[0]] = d
  return out


def _as_features(name: str, x) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if x.ndim != 2:
    raise ValueError(f"{name} must be [N, D] features, got shape {x.shape}")
  # min / max propagate NaN and show +-inf, without a [N, D] temporary.
  if x.size and not (np.isfinite(np.min(x)) and np.isfinite(np.max(x))):
    raise ValueError(f"{name} contains NaN or infinite values")
  return x


def evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, *,
                      metric: str = "euclidean", normalize: bool = True,
                      max_rank: int = 50, chunk_size: int = 256,
                      rerank: bool = False, k1: int = 20, k2: int = 6,
                      lambda_value: float = 0.3) -> dict[str, Any]:
  """Market-1501 metrics from [Q, D] query and [G, D] gallery features.

  Distances ("euclidean" = squared, or "cosine") are computed on the default
  JAX device `chunk_size` queries at a time and ranked on the host, so memory
  is O(chunk_size * G) beyond the features. Results equal `evaluate_rank` on
  the full matrix. With `rerank=True` the dense query/gallery matrices are
  built for k-reciprocal re-ranking (memory O((Q + G)^2)).
  """
  metric = _check_metric(metric)
  qf = _as_features("qf", qf)
  gf = _as_features("gf", gf)
  if qf.shape[1] != gf.shape[1]:
    raise ValueError(f"qf and gf feature dims differ: {qf.shape[1]} vs {gf.shape[1]}")
  if qf.shape[0] == 0 or gf.shape[0] == 0:
    raise ValueError(f"qf and gf must be non-empty, got {qf.shape[0]} queries and "
                     f"{gf.shape[0]} gallery items")
  q_pids, g_pids, q_camids, g_camids = metrics.check_ids(
      "qf/gf", (qf.shape[0], gf.shape[0]), q_pids, g_pids, q_camids, g_camids)
  max_rank = min(metrics.check_positive_int("max_rank", max_rank), gf.shape[0])
  chunk = min(metrics.check_positive_int("chunk_size", chunk_size), qf.shape[0])
  if normalize:
    qf = np.asarray(_normalize_jit(jnp.asarray(qf)))
    g_dev = _normalize_jit(jnp.asarray(gf))
  else:
    g_dev = jnp.asarray(gf)

  if rerank:
    q_g = _full_distance(qf, g_dev, metric, chunk)
    q_q = _full_distance(qf, jnp.asarray(qf), metric, chunk)
    g_g = _full_distance(np.asarray(g_dev), g_dev, metric, chunk)
    new = reranking.rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lambda_value)
    return metrics.evaluate_rank(new, q_pids, g_pids, q_camids, g_camids, max_rank)

  acc = metrics.Accumulator(g_pids, g_camids, max_rank)
  for s, d in _chunked_distances(qf, g_dev, metric, chunk):
    acc.add(d, q_pids[s:s + d.shape[0]], q_camids[s:s + d.shape[0]], name="distances")
  return acc.result()
