"""The Re-ID evaluator: features of a split's images under each setting, ranked.

A method names its settings as {name: (query kind, gallery kind)}, e.g.
"O->P": ("raw", "anon"); features of each (split, kind) are computed once per
evaluation round, with a jitted, data-sharded embed function that compiles
once per shape (the eval loader pads the last batch and masks it). With
`cache=True` the features stay until `clear()`, so every evaluator of one
round (ranking, DP release, attacks) shares them.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from privreid_jax import sharding
from privreid_jax.evaluation import ranking
from privreid_jax.data import pipeline


def summarize(result: Mapping[str, Any]) -> dict[str, float]:
  cmc = np.asarray(result["cmc"])
  pick = lambda k: float(cmc[min(k, len(cmc)) - 1])
  return {"rank1": pick(1), "rank5": pick(5), "rank10": pick(10),
          "mAP": float(result["mAP"]), "mINP": float(result["mINP"])}


class ReidEvaluator:

  def __init__(self, method, splits, data_cfg, eval_cfg, mesh, cache: bool = False):
    self.method = method
    self.cache = cache
    self._cache: dict[tuple[str, str], np.ndarray] = {}
    self.splits = splits
    self.data_cfg = data_cfg
    self.eval_cfg = eval_cfg
    self.mesh = mesh
    sharding.check_batch_size(data_cfg.eval_batch_size, "data.eval_batch_size")
    self._embed = jax.jit(method.embed, static_argnums=2,
                          in_shardings=(sharding.replicated(mesh),
                                        sharding.data_sharded(mesh)),
                          out_shardings=sharding.data_sharded(mesh))

  def clear(self) -> None:
    """Forgets the cached features (the state changed)."""
    self._cache.clear()

  def features(self, state, split: str, kind: str) -> np.ndarray:
    """[N, D] features of a split's images seen as `kind`, in source order."""
    if self.cache and (split, kind) in self._cache:
      return self._cache[(split, kind)]
    out = self._compute(state, split, kind)
    if self.cache:
      self._cache[(split, kind)] = out
    return out

  def _compute(self, state, split: str, kind: str) -> np.ndarray:
    data = getattr(self.splits, split)
    feats, idx, masks = [], [], []
    for batch in pipeline.eval_loader(data.source, self.data_cfg,
                                      process_index=jax.process_index(),
                                      process_count=jax.process_count()):
      g = sharding.global_batch(self.mesh, {"image": batch["image"],
                                            "index": batch["index"],
                                            "mask": batch["mask"]})
      feats.append(self._embed(state, g["image"], kind))
      idx.append(g["index"])
      masks.append(g["mask"])
    feats, idx, masks = sharding.to_host((feats, idx, masks))
    feats, idx, masks = (np.concatenate(x) for x in (feats, idx, masks))
    out = np.zeros((len(data), feats.shape[-1]), np.float32)
    out[idx[masks]] = feats[masks]
    if np.sort(idx[masks]).tolist() != list(range(len(data))):
      raise RuntimeError(f"eval loader did not cover the {split} split exactly once")
    return out

  def run(self, state, settings: Mapping[str, tuple[str, str]] | None = None
          ) -> dict[str, dict[str, float]]:
    settings = self.method.eval_settings if settings is None else settings
    cache: dict[tuple[str, str], np.ndarray] = {}

    def get(split, kind):
      if (split, kind) not in cache:
        cache[(split, kind)] = self.features(state, split, kind)
      return cache[(split, kind)]

    q, g = self.splits.query, self.splits.gallery
    results = {}
    for name, (q_kind, g_kind) in settings.items():
      r = ranking.evaluate_features(
          get("query", q_kind), get("gallery", g_kind), q.pids, g.pids, q.camids,
          g.camids, metric=self.eval_cfg.distance, rerank=self.eval_cfg.rerank,
          max_rank=self.eval_cfg.max_rank)
      results[name] = summarize(r)
    return results
