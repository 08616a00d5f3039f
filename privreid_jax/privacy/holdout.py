"""A fixed, hashed fraction of a split's images kept out of a classifier's training.

Method B's ID probe never trains on these training images and is scored on
them; the attackers use the same split. The same integer hash runs in numpy
(host) and jax.numpy (inside a jitted step), so both sides agree exactly.
"""

from __future__ import annotations

import numpy as np


def heldout_mask(index, fraction: float, seed: int, xp=np):
  """True for the images (by source index) held out of training."""
  x = xp.asarray(index).astype(xp.uint32)
  x = x * xp.uint32(0x9E3779B1) + xp.uint32((int(seed) * 0x632BE5AB + 1) & 0xFFFFFFFF)
  x = x ^ (x >> 16)
  x = x * xp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  return (x >> 8) < xp.uint32(int(fraction * (1 << 24)))


def heldout_indices(num: int, fraction: float, seed: int, max_images: int = 0) -> np.ndarray:
  """Indices of the held-out images among `num`, the first `max_images` (0: all)."""
  idx = np.arange(num)
  idx = idx[heldout_mask(idx, fraction, seed)]
  return idx[:max_images] if max_images > 0 else idx
