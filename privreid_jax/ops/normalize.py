"""The pipeline's image normalisation and its inverse: normalised <-> [0, 1] pixels.

The data pipeline feeds networks `(x01 - mean) / std`; PSNR/SSIM, image grids,
target generation and models trained with another normalisation need the
pixels back. numpy arrays stay numpy (host code); anything else (jax arrays,
tracers) goes through jax.numpy.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def to_unit(x, mean, std):
  """Normalised images -> [0, 1] pixels (clipped)."""
  if isinstance(x, np.ndarray):
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return np.clip(x * s + m, 0.0, 1.0).astype(np.float32)
  return jnp.clip(x * jnp.asarray(std, jnp.float32) + jnp.asarray(mean, jnp.float32),
                  0.0, 1.0)


def from_unit(x, mean, std):
  """[0, 1] pixels -> normalised images."""
  if isinstance(x, np.ndarray):
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return ((x - m) / s).astype(np.float32)
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def renormalize(x, mean, std, new_mean, new_std):
  """Images normalised with (mean, std) -> normalised with (new_mean, new_std)."""
  return from_unit(to_unit(x, mean, std), new_mean, new_std)
