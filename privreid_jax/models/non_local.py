"""The AGW non-local block (embedded dot-product, no softmax), starting as the identity.

    z = x + BN(W(y)),  y_i = (1/N) sum_j <theta(x_i), phi(x_j)> g(x_j)

with theta, phi, g 1x1 convolutions (with bias) from C to C/reduc_ratio channels, W a
1x1 convolution back to C followed by a BatchNorm whose scale and bias start at zero,
so the block is the identity at initialisation and a pretrained backbone is unchanged.

AGW's released code (and privacy-reid's copy of it) computes `inter_channels =
reduc_ratio // reduc_ratio`, i.e. 1 channel, an apparent typo that its reported
numbers nevertheless come with. `inter_channels=None` gives the non-local paper's
`C // reduc_ratio`; the configs follow AGW's code (`config.model.
non_local_inter_channels = 1` in `config_base.make_agw`, 0 for the paper's width).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from privreid_jax.models import conv as conv_lib

# torchvision's conv init (kaiming normal, fan_out, ReLU gain).
KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class NonLocal(nn.Module):
  """AGW `Non_local`. Submodules: theta, phi, g, W_0 (conv), W_1 (BN)."""
  reduc_ratio: int = 2
  inter_channels: int | None = None
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    n, h, w, c = x.shape
    inter = self.inter_channels or max(c // self.reduc_ratio, 1)

    def proj(name: str, features: int, inp: jax.Array) -> jax.Array:
      return conv_lib.Conv(features, 1, use_bias=True, dtype=self.dtype,
                           kernel_init=KAIMING_FAN_OUT, impl=self.conv_impl,
                           name=name)(inp)

    theta = proj("theta", inter, x).reshape(n, h * w, inter)
    phi = proj("phi", inter, x).reshape(n, h * w, inter)
    g = proj("g", inter, x).reshape(n, h * w, inter)
    f = jnp.einsum("bic,bjc->bij", theta, phi) / (h * w)
    y = jnp.einsum("bij,bjc->bic", f, g).reshape(n, h, w, inter)
    y = proj("W_0", c, y)
    y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, scale_init=nn.initializers.zeros_init(),
                     name="W_1")(y)
    return x + y
