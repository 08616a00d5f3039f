"""The attackers' training loop: one optimizer loop for every attack network.

`fit` trains `loss_fn(params, stats, *batch) -> (loss, new_stats)` with an
optax transformation, either full batch (one jitted `lax.scan` over the steps)
or on minibatches drawn on the host from a seeded numpy generator.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


def fit(loss_fn: Callable[..., tuple[jax.Array, Any]], params, stats,
        inputs: Sequence[np.ndarray], *, steps: int, tx: optax.GradientTransformation,
        batch_size: int | None = None, seed: int = 0):
  """Returns (params, stats, per-step losses as a numpy array).

  Args:
    loss_fn: (params, stats, *batch) -> (scalar loss, new stats).
    inputs: arrays with the same first dimension, sliced into batches.
    steps: optimizer steps.
    tx: the optimizer.
    batch_size: None trains on all of `inputs` at every step; else minibatches
      drawn with replacement only when there are fewer items than batch_size.
    seed: the minibatch sampler's seed.
  """

  def step(p, s, o, *batch):
    (loss, s), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, *batch)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), s, o, loss

  if batch_size is None:
    @jax.jit
    def run(p, s, *batch):
      def body(carry, _):
        p, s, o = carry
        p, s, o, loss = step(p, s, o, *batch)
        return (p, s, o), loss
      (p, s, _), history = jax.lax.scan(body, (p, s, tx.init(p)), None, length=steps)
      return p, s, history

    params, stats, history = run(params, stats, *(jnp.asarray(a) for a in inputs))
    return params, stats, np.asarray(history)

  jstep = jax.jit(step)
  rng = np.random.default_rng(seed)
  n = len(inputs[0])
  opt, history = tx.init(params), []
  for _ in range(steps):
    idx = rng.choice(n, size=min(batch_size, n), replace=n < batch_size)
    params, stats, opt, loss = jstep(params, stats, opt,
                                     *(jnp.asarray(a[idx]) for a in inputs))
    history.append(float(loss))
  return params, stats, np.asarray(history)
