"""Our side of the parity harness (experiments/parity.py): a method from
privreid_jax stepped with jax.jit(method.train_step), its snapshots in a
reference's names, and our optimizers replayed on a reference's gradients."""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Mapping

import numpy as np

from experiments.parity_batches import Batch
from experiments.parity_layout import (Layout, find_adam_state, is_bn_stat, jax_to_named,
                                       named_to_jax)
from experiments.parity_verdict import Snapshot

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(path: str, arg: str | None = None):
  """get_config(arg) of a config file under configs/."""
  full = path if os.path.isabs(path) else os.path.join(_REPO, path)
  spec = importlib.util.spec_from_file_location(
      "parity_config_" + os.path.splitext(os.path.basename(full))[0], full)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


class JaxSide:
  """Our method on the given batches; snapshots in the reference's layout."""

  def __init__(self, config, *, num_classes: int, steps_per_epoch: int,
               layout: Layout, method: str | type = "baseline"):
    """`method`: a method's name under privreid_jax.methods, or its Method class."""
    import jax  # pylint: disable=import-outside-toplevel
    self.jax = jax
    cls = (importlib.import_module(f"privreid_jax.methods.{method}").Method
           if isinstance(method, str) else method)
    self.method = cls(config, num_classes=num_classes, steps_per_epoch=steps_per_epoch)
    self.layout = layout
    self.name = self.method.reid.name
    self.center_name = f"{self.name}_centers"
    self.state = None
    self._step = jax.jit(self.method.train_step)

  @staticmethod
  def _batch(batch: Batch):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    return {"image": jnp.asarray(batch.images), "pid": jnp.asarray(batch.pids)}

  def init_from(self, named: Mapping[str, np.ndarray], batch: Batch, seed: int = 0):
    """Initialises our state, then overwrites every weight with the reference's."""
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    state = self.method.init(self.jax.random.PRNGKey(seed), self._batch(batch))
    params, stats = named_to_jax(named, state.params[self.name],
                                 state.batch_stats[self.name], self.layout)
    new_params = {**state.params, self.name: params}
    if self.center_name in state.params:
      centers = named[self.layout.centers]
      if tuple(centers.shape) != tuple(state.params[self.center_name].shape):
        raise ValueError(f"centers: reference {centers.shape} vs ours "
                         f"{state.params[self.center_name].shape}")
      new_params[self.center_name] = jnp.asarray(centers, jnp.float32)
    self.state = state.replace(params=new_params,
                               batch_stats={**state.batch_stats, self.name: stats})

  def step(self, batch: Batch) -> dict[str, float]:
    self.state, metrics = self._step(self.state, self._batch(batch))
    return {k: float(v) for k, v in self.jax.device_get(metrics).items()}

  def snapshot(self) -> Snapshot:
    st = self.jax.device_get(self.state)
    return _flax_snapshot(st.params, st.batch_stats.get(self.name, {}), st.opt_state,
                          self.name, self.center_name, self.layout)


def _flax_snapshot(params, stats, opt_state, name: str, center_name: str,
                   layout: Layout) -> Snapshot:
  named = jax_to_named(params[name], stats, layout)
  bn = {k: v for k, v in named.items() if is_bn_stat(k)}
  params_named = {k: v for k, v in named.items() if not is_bn_stat(k)}
  if center_name in params:
    params_named[layout.centers] = np.asarray(params[center_name], np.float32)
  adam = find_adam_state(opt_state[name])
  adam_m = jax_to_named(adam.mu, None, layout, with_frozen_bias=False)
  adam_v = jax_to_named(adam.nu, None, layout, with_frozen_bias=False)
  return Snapshot(params_named, bn, adam_m, adam_v, int(adam.count))


def replay_update(txs):
  """jit((params, opt_state, grads) -> (params, opt_state)): each network's optax
  transformation applied to the gradients given for it (a replay of the reference's)."""
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel

  def update(params, opt_state, grads):
    params, opt_state = dict(params), dict(opt_state)
    for k, g in grads.items():
      upd, opt_state[k] = txs[k].update(g, opt_state[k], params[k])
      params[k] = optax.apply_updates(params[k], upd)
    return params, opt_state
  return jax.jit(update)


class OptimizerReplay:
  """Our optimizers fed the REFERENCE's gradients, from the reference's weights.

  The full-step comparison cannot resolve the optimizer to better than the
  (ill-conditioned) gradients allow. Here our optax transformations (Adam with
  coupled weight decay and the warm-up/multi-step schedule; the centers' scaled
  SGD) consume the gradients the reference computed in its own step, so their
  results must match the reference's optimizer state and weights to float32
  rounding: a well-conditioned check of every optimizer formula.
  """

  def __init__(self, ours: JaxSide):
    import jax  # pylint: disable=import-outside-toplevel
    self.jax, self.layout = jax, ours.layout
    self.name, self.center_name = ours.name, ours.center_name
    self.txs = ours.method.txs
    self.params = dict(ours.state.params)
    self.stats_template = ours.state.batch_stats[self.name]
    self.opt_state = {k: self.txs[k].init(v) for k, v in self.params.items()}
    self._update = replay_update(self.txs)

  def step(self, grads: Mapping[str, np.ndarray], buffers: Mapping[str, np.ndarray]):
    """`grads`: the reference's parameter gradients by name (centers unscaled);
    `buffers`: its BN buffers (only so the backbone keys are complete)."""
    g, _ = named_to_jax({**grads, **buffers}, self.params[self.name],
                        self.stats_template, self.layout)
    tree = {self.name: g}
    if self.center_name in self.params:
      tree[self.center_name] = np.asarray(grads[self.layout.centers], np.float32)
    self.params, self.opt_state = self._update(self.params, self.opt_state, tree)

  def snapshot(self) -> Snapshot:
    params, opt_state = self.jax.device_get((self.params, self.opt_state))
    return _flax_snapshot(params, {}, opt_state, self.name, self.center_name, self.layout)
