"""The BoT/AGW strong baseline: Re-ID model C trained on raw images."""

from __future__ import annotations

import jax

from privreid_jax import train_state
from privreid_jax.methods import base
from privreid_jax.methods.reid_learner import ReidLearner


class Method(base.Method):
  eval_settings = {"O->O": ("raw", "raw")}

  def __init__(self, config, *, num_classes: int, steps_per_epoch: int, options=None):
    del options
    self.reid = ReidLearner(config, num_classes, steps_per_epoch)
    self.txs = self.reid.txs

  def init(self, rng, batch):
    params, stats = self.reid.init(rng, batch["image"])
    return train_state.create(params, stats, self.txs, rng)

  def train_step(self, state, batch):
    def loss_fn(params):
      return self.reid.loss(params, state.batch_stats, batch["image"], batch["pid"])

    (loss, (stats, metrics)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    state = train_state.apply_updates(state, self.txs, grads)
    metrics.update(loss=loss, lr=self.reid.schedule(state.step))
    return state.replace(step=state.step + 1,
                         batch_stats={**state.batch_stats, **stats}), metrics

  def embed(self, state, images, kind):
    if kind != "raw":
      raise ValueError(f"baseline has no image kind {kind!r}")
    return self.reid.features(state.params, state.batch_stats, images)
