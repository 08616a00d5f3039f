"""The last step of a training batch, normalise + erase, as a JAX function.

`pipeline.train_loader(..., finish="device")` yields what the workers built:
`image` (and a paired `target`) as uint8 (float32 [0, 1] for a computed target),
and `erase` int32 [L, 4] (top, left, height, width of each sample's erased
rectangle, -1 for none). The trainer moves that to the devices and applies
`finish` at the start of its jitted step, so the host's main process does no per-pixel
work: on the host it caps what one process can feed (`experiments/bench_input.py
--stages`), and uint8 is a quarter of the float32 bytes to transfer.

The result equals `transforms.normalise` then `transforms.erase` on the host bit
for bit (tests/data/test_pipeline.py), so moving the work changes no number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from privreid_jax.data import transforms

RAW_KEYS = ("image", "target")


def normalise(x: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """`transforms.normalise` in JAX, equal to it bit for bit.

  uint8 pixels go through a [256, 3] table computed by `transforms.normalise`
  itself: written as arithmetic, XLA:CPU fuses the scaling to [0, 1] and the
  subtraction into one FMA and rounds once where numpy rounds twice (1-ulp
  differences in about half the pixels). Float input (a computed target in [0, 1])
  has no such product and is (x - mean) / std as on the host.
  """
  if x.dtype == jnp.uint8:
    cfg = transforms.TransformConfig(mean=tuple(mean), std=tuple(std))
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2)
    table = transforms.normalise(levels[None], cfg).reshape(256 * 3)
    index = x.astype(jnp.int32) * 3 + jnp.arange(3, dtype=jnp.int32)
    return jnp.take(jnp.asarray(table), index, mode="clip")
  inv_std = np.float32(1.0) / np.asarray(std, np.float32)
  return (x.astype(jnp.float32) - np.asarray(mean, np.float32)) * inv_std


def erase_mask(rects: jax.Array, height: int, width: int) -> jax.Array:
  """bool [L, H, W, 1]: inside each row's rectangle (top, left, h, w); -1 = none."""
  top, left, h, w = (rects[:, i, None, None, None] for i in range(4))
  rows = jnp.arange(height)[None, :, None, None]
  cols = jnp.arange(width)[None, None, :, None]
  return ((top >= 0) & (rows >= top) & (rows < top + h)
          & (cols >= left) & (cols < left + w))


def finish(batch: Mapping[str, jax.Array], mean: Sequence[float],
           std: Sequence[float]) -> dict[str, jax.Array]:
  """A raw batch (with `erase`) -> the batch `train_loader(finish="host")` yields."""
  if "erase" not in batch:
    return dict(batch)              # already finished (a host-finished batch)
  out = {k: v for k, v in batch.items() if k != "erase"}
  mask = None
  for key in RAW_KEYS:
    if key in out:
      x = normalise(out[key], mean, std)
      if mask is None:
        mask = erase_mask(batch["erase"], x.shape[1], x.shape[2])
      out[key] = jnp.where(mask, jnp.float32(0.0), x)
  return out


def finisher(cfg: transforms.TransformConfig):
  """`finish` with the config's mean and std bound (for a step function)."""
  mean, std = tuple(cfg.mean), tuple(cfg.std)
  return lambda batch: finish(batch, mean, std)
