"""Re-ID head pieces: global pooling (average or GeM) and the BNNeck (BoT / AGW).

All of it runs in float32 whatever the backbone's compute dtype: the pooled
feature feeds the metric losses and the retrieval feature.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

POOLINGS = ("avg", "gem")


def avg_pool(x: jax.Array) -> jax.Array:
  """Global average over H, W: [B, H, W, C] -> [B, C] (float32)."""
  return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


class GeM(nn.Module):
  """Generalized-mean pooling with a learnable exponent p (AGW `GeneralizedMeanPoolingP`).

  out = mean(clamp(x, eps) ** p) ** (1 / p); p has shape [1], initialised to `p_init`.
  """
  p_init: float = 3.0
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    p = self.param("p", nn.initializers.constant(self.p_init), (1,), jnp.float32)
    x = jnp.maximum(x.astype(jnp.float32), self.eps)
    return jnp.mean(x ** p, axis=(1, 2)) ** (1.0 / p)


def bnneck(train: bool, name: str = "bnneck") -> nn.BatchNorm:
  """BoT's BNNeck: BatchNorm1d with its bias frozen at zero (no bias parameter).

  torch momentum 0.1 (flax 0.9), eps 1e-5, scale init 1, computed in float32.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      use_bias=False, dtype=jnp.float32, name=name)


def classifier(num_classes: int, name: str = "classifier") -> nn.Dense:
  """The ID classifier after the BNNeck: bias-free, kernel init N(0, 0.001), float32."""
  return nn.Dense(num_classes, use_bias=False, dtype=jnp.float32,
                  kernel_init=nn.initializers.normal(stddev=0.001), name=name)
