"""Our side of method A's parity harness (experiments/parity_anon.py):
privreid_jax.methods.anonymization.Method stepped with jax.jit(train_step), its
snapshots in the reference's names, our optimizers on the reference's gradients."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from experiments.parity_anon_batches import AnonBatch
from experiments.parity_anon_layout import AnonLayout, anon_to_named, named_to_anon
from experiments.parity_jax import JaxSide, replay_update
from experiments.parity_layout import find_adam_state, is_bn_stat
from experiments.parity_verdict import Snapshot


def _fake_first_method(base_cls):
  """Method A whose D loss runs the fake pair before the real one (the reference's
  order of D's BN-statistics updates); the loss value is the same."""
  from privreid_jax import losses  # pylint: disable=import-outside-toplevel

  class FakeFirst(base_cls):
    def _d_loss(self, params, stats, name, cond, real, fake):
      logits_fake, st = self._discriminate(params, stats, name, cond, fake)
      logits_real, st = self._discriminate(params, {name: st}, name, cond, real)
      loss = self.d_loss_scale * (losses.gan_bce(logits_real, True)
                                  + losses.gan_bce(logits_fake, False))
      return loss, st
  return FakeFirst


class AnonJaxSide(JaxSide):
  """privreid_jax.methods.anonymization.Method stepped with jax.jit(train_step)."""

  def __init__(self, config, *, num_classes: int, steps_per_epoch: int,
               layout: AnonLayout, fake_first: bool = False):
    from privreid_jax.methods import anonymization  # pylint: disable=import-outside-toplevel
    cls = _fake_first_method(anonymization.Method) if fake_first else anonymization.Method
    super().__init__(config, num_classes=num_classes, steps_per_epoch=steps_per_epoch,
                     layout=layout, method=cls)

  @staticmethod
  def _batch(batch: AnonBatch):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    return {"image": jnp.asarray(batch.images), "target": jnp.asarray(batch.targets),
            "pid": jnp.asarray(batch.pids)}

  def init_from(self, named, batch: AnonBatch, seed: int = 0):
    state = self.method.init(self.jax.random.PRNGKey(seed), self._batch(batch))
    params, stats = named_to_anon(named, state.params, state.batch_stats, self.layout,
                                  reid_name=self.name)
    self.state = state.replace(params=params, batch_stats=stats)

  def step(self, batch: AnonBatch) -> dict[str, float]:
    self.state, metrics = self._step(self.state, self._batch(batch))
    return {k: float(v) for k, v in self.jax.device_get(metrics).items()}

  def snapshot(self) -> Snapshot:
    st = self.jax.device_get(self.state)
    return _anon_snapshot(st.params, st.batch_stats, st.opt_state, self.layout, self.name)

  def make_replay(self) -> "AnonReplay":
    return AnonReplay(self)


def _anon_snapshot(params, stats, opt_state, layout: AnonLayout, name: str
                   ) -> Snapshot:
  named = anon_to_named(params, stats or None, layout, reid_name=name) if stats else \
      anon_to_named(params, None, layout, reid_name=name)
  bn = {k: v for k, v in named.items() if is_bn_stat(k)}
  prm = {k: v for k, v in named.items() if not is_bn_stat(k)}
  adams = {k: find_adam_state(opt_state[k]) for k in params
           if k != f"{name}_centers"}
  mu = {k: a.mu for k, a in adams.items()}
  nu = {k: a.nu for k, a in adams.items()}
  adam_m = anon_to_named(mu, None, layout, reid_name=name, with_frozen_bias=False)
  adam_v = anon_to_named(nu, None, layout, reid_name=name, with_frozen_bias=False)
  counts = {int(a.count) for a in adams.values()}
  return Snapshot(prm, bn, adam_m, adam_v, counts.pop() if len(counts) == 1 else None)


class AnonReplay:
  """Our optimizers (every network's) on the reference's gradients (parity_jax.OptimizerReplay)."""

  def __init__(self, ours: AnonJaxSide):
    import jax  # pylint: disable=import-outside-toplevel
    self.jax, self.layout, self.name = jax, ours.layout, ours.name
    self.txs = ours.method.txs
    self.params = dict(ours.state.params)
    self.stats_template = ours.state.batch_stats
    self.opt_state = {k: self.txs[k].init(v) for k, v in self.params.items()}
    self._update = replay_update(self.txs)

  def step(self, grads: Mapping[str, np.ndarray], buffers: Mapping[str, np.ndarray]):
    tree, _ = named_to_anon({**grads, **buffers}, self.params, self.stats_template,
                            self.layout, reid_name=self.name)
    self.params, self.opt_state = self._update(self.params, self.opt_state, tree)

  def snapshot(self) -> Snapshot:
    params, opt_state = self.jax.device_get((self.params, self.opt_state))
    return _anon_snapshot(params, {}, opt_state, self.layout, self.name)
