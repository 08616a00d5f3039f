"""The training state: one pytree for any number of named networks.

Optimizers (optax transformations) are static and live in the method object;
only their states are here, so the whole state shards, donates and checkpoints
as one tree.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array                     # int32 scalar: optimizer steps taken
  params: Mapping[str, Any]           # {network name: params}
  batch_stats: Mapping[str, Any]      # {network name: BN running stats} ({} if none)
  opt_state: Mapping[str, Any]        # {network name: optax state}
  rng: jax.Array                      # base key; step keys are fold_in(rng, step)

  def step_rng(self) -> jax.Array:
    return jax.random.fold_in(self.rng, self.step)


def create(params: Mapping[str, Any], batch_stats: Mapping[str, Any],
           txs: Mapping[str, optax.GradientTransformation], rng: jax.Array
           ) -> TrainState:
  missing = sorted(set(params) - set(txs))
  if missing:
    raise ValueError(f"no optimizer for networks {missing}")
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=dict(params),
      batch_stats=dict(batch_stats),
      opt_state={k: txs[k].init(v) for k, v in params.items()}, rng=rng)


def apply_updates(state: TrainState, txs: Mapping[str, optax.GradientTransformation],
                  grads: Mapping[str, Any], names=None) -> TrainState:
  """Updates the named networks (default: all with grads) with their own optimizers."""
  names = list(grads) if names is None else list(names)
  params, opt_state = dict(state.params), dict(state.opt_state)
  for name in names:
    updates, opt_state[name] = txs[name].update(grads[name], opt_state[name],
                                                params[name])
    params[name] = optax.apply_updates(params[name], updates)
  return state.replace(params=params, opt_state=opt_state)


def all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
