"""Re-ID ranking: the public entry points of the evaluation protocol in one place.

- `evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)`: Market-1501
  CMC / mAP / mINP from a [Q, G] distance matrix, torchreid's
  `eval_market1501` (`metrics.py`; docs/evaluation.md);
- `evaluate_cuhk03(...)`: torchreid's `eval_cuhk03`, single-shot CMC with an
  explicit seed (`metrics.py`);
- `pairwise_distance(a, b, metric)` and `evaluate_features(qf, gf, ...)`:
  distances on the JAX device one query chunk at a time, ranked on the host
  (`distances.py`);
- `rerank(q_g, q_q, g_g)`: k-reciprocal re-ranking (`rerank.py`).
"""

from privreid_jax.evaluation.distances import METRICS
from privreid_jax.evaluation.distances import evaluate_features
from privreid_jax.evaluation.distances import pairwise_distance
from privreid_jax.evaluation.metrics import evaluate_cuhk03
from privreid_jax.evaluation.metrics import evaluate_rank
from privreid_jax.evaluation.rerank import rerank

__all__ = ["METRICS", "evaluate_cuhk03", "evaluate_features", "evaluate_rank",
           "pairwise_distance", "rerank"]
