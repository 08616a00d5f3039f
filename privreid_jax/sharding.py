"""Data-parallel sharding with jax.sharding: one Mesh over every device.

State is replicated (`P()`), batches are split on the 'data' axis. The same
code runs on one CPU, 8 simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8) and a multi-host pod
slice, where each process feeds only its slice of the global batch.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA = "data"


def make_mesh() -> Mesh:
  return jax.make_mesh((jax.device_count(),), (DATA,),
                       axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def check_batch_size(global_batch: int, what: str = "data.batch_size") -> None:
  n = jax.device_count()
  if global_batch % n:
    raise ValueError(
        f"{what}={global_batch} must be divisible by the number of devices ({n}); "
        f"pick a multiple of {n}")


def global_batch(mesh: Mesh, local: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
  """Assembles each process's slice into global arrays split over 'data'."""
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def to_host(tree: Any) -> Any:
  """Fetches (possibly multi-host sharded) arrays as numpy on every process."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.device_get(tree)
