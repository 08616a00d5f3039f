"""Runs two baseline train steps on a fixed batch and saves loss and parameters.

Used by test_sharding.py in subprocesses with different simulated device counts
(XLA_FLAGS=--xla_force_host_platform_device_count=N must be set before jax loads).
Usage: python tests/sharded_step_main.py OUT.npz
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import synthetic as synthetic_config  # noqa: E402
from privreid_jax import sharding  # noqa: E402
from privreid_jax.methods import baseline  # noqa: E402


def main(out: str) -> None:
  config = synthetic_config.get_config("tiny")
  config.data.batch_size = 16
  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(16, 32, 16, 3)).astype(np.float32),
           "pid": np.repeat(np.arange(4, dtype=np.int32), 4)}
  method = baseline.Method(config, num_classes=4, steps_per_epoch=1)
  mesh = sharding.make_mesh()
  repl = sharding.replicated(mesh)
  state = jax.jit(method.init, out_shardings=repl)(jax.random.PRNGKey(0), batch)
  step = jax.jit(method.train_step, in_shardings=(repl, sharding.data_sharded(mesh)),
                 out_shardings=(repl, repl), donate_argnums=0)
  losses = []
  for _ in range(2):
    state, metrics = step(state, sharding.global_batch(mesh, batch))
    losses.append(float(metrics["loss"]))
  leaves = jax.tree.leaves(jax.device_get((state.params, state.batch_stats)))
  np.savez(out, devices=jax.device_count(), losses=np.array(losses),
           params=np.concatenate([np.ravel(x) for x in leaves]))


if __name__ == "__main__":
  main(sys.argv[1])
