"""pix2pix U-Net generator: method A's anonymizer G and recovery network G_R (docs/method_a.md).

The layout is pix2pix's `UnetGenerator` with BatchNorm ("unet_128" = 7 downs):

  down i (i = 0..n-1): [LeakyReLU 0.2 unless i == 0] -> Conv 4x4 stride 2 (no bias)
                       -> [BatchNorm unless i == 0 or i == n-1]
  up i (i = n-1..0):   ReLU -> ConvTranspose 4x4 stride 2 (bias only for i == 0)
                       -> BatchNorm (i > 0) [-> Dropout 0.5] -> concat [skip_i, up]
                       or, for i == 0, Tanh.

Down widths are ngf * min(2^i, 8) (64, 128, 256, 512, 512, 512, 512 for unet_128);
up i maps back to the width of down i-1 (out_channels for i = 0). Skips are
concatenated skip-first as `torch.cat([x, model(x)], 1)`. Dropout sits in the
blocks 4 <= i <= n-2 (pix2pix's num_downs - 5 "intermediate" blocks). The
innermost down conv has no BatchNorm (its up conv has one, as in pix2pix).
Fewer than pix2pix's minimum of 5 downs is allowed for small images: the same
width rule is cut short (`num_downs_for` picks the depth).

Init as pix2pix `init_weights('normal', 0.02)`: conv kernels N(0, 0.02), biases
0, BatchNorm scale N(1, 0.02) and bias 0. BatchNorm uses PyTorch's momentum 0.1
(flax momentum 0.9) and eps 1e-5.

PyTorch weight layout: a Conv2d weight (out, in, kh, kw) is the flax kernel
`w.transpose(2, 3, 1, 0)`; a ConvTranspose2d weight (in, out, kh, kw) is also
`w.transpose(2, 3, 1, 0)`: the up convs are `conv.ConvTranspose`, whose params
are those of `nn.ConvTranspose(transpose_kernel=True)` with padding k - 1 - p = 2,
reproducing ConvTranspose2d(k=4, s=2, p=1) exactly (output exactly twice the
input). Convolutions are `models/conv.py`'s, so `conv_impl` picks XLA's
convolutions or matrix products (much faster on CPU) without changing the params.

Input: images normalised as the pipeline does; output: float32 in (-1, 1).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from privreid_jax.models import conv

LEAKY_SLOPE = 0.2
INIT_STD = 0.02
BN_MOMENTUM = 0.9  # flax convention; PyTorch's momentum 0.1
BN_EPS = 1e-5

conv_init = nn.initializers.normal(INIT_STD)


def bn_scale_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
  """pix2pix BatchNorm weight init: N(1, 0.02)."""
  return 1.0 + INIT_STD * jax.random.normal(key, shape, dtype)


def batch_norm(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  """BatchNorm2d as PyTorch's defaults, with pix2pix's init."""
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                      scale_init=bn_scale_init, dtype=dtype, param_dtype=jnp.float32,
                      name=name)


def down_conv(features: int, use_bias: bool, dtype: Any, name: str, stride: int = 2,
              impl: str = "auto") -> conv.Conv:
  """Conv2d(k=4, stride, p=1) with pix2pix init; `impl` as `conv.Conv`."""
  return conv.Conv(features, 4, strides=stride, padding=1, use_bias=use_bias,
                   kernel_init=conv_init, dtype=dtype, param_dtype=jnp.float32, impl=impl,
                   name=name)


def up_conv(features: int, use_bias: bool, dtype: Any, name: str,
            impl: str = "auto") -> conv.ConvTranspose:
  """ConvTranspose2d(k=4, s=2, p=1): same output size (2x) and weights as PyTorch."""
  return conv.ConvTranspose(features, 4, strides=2, padding=1, use_bias=use_bias,
                            kernel_init=conv_init, dtype=dtype, param_dtype=jnp.float32,
                            impl=impl, name=name)


def unet_widths(num_downs: int, ngf: int = 64) -> tuple[int, ...]:
  """Output width of each down conv: ngf * min(2^i, 8)."""
  return tuple(ngf * min(2**i, 8) for i in range(num_downs))


def num_downs_for(height: int, width: int, max_downs: int | None = None) -> int:
  """Deepest U-Net whose downsamplings halve both sides exactly down to >= 1 pixel.

  256x128 -> 7 (pix2pix unet_128), 128x64 -> 6, 32x16 -> 4. `max_downs` caps it.
  """
  if height < 2 or width < 2:
    raise ValueError(f"num_downs_for: image {height}x{width} is too small for a U-Net")
  n = 0
  while height % 2**(n + 1) == 0 and width % 2**(n + 1) == 0:
    if max_downs is not None and n >= max_downs:
      break
    n += 1
  if n < 1:
    raise ValueError(f"num_downs_for: image {height}x{width} has an odd side; "
                     "the U-Net needs both sides divisible by 2")
  return n


class UNetGenerator(nn.Module):
  """pix2pix U-Net: [B, H, W, C_in] -> [B, H, W, out_channels] in (-1, 1)."""

  num_downs: int = 7
  ngf: int = 64
  out_channels: int = 3
  use_dropout: bool = False
  dtype: Any = jnp.float32
  conv_impl: str = "auto"  # "auto" | "xla" | "matmul" | "matmul_flat", see models/conv.py

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Runs the generator. Dropout (if enabled and `train`) needs a "dropout" rng."""
    n = self.num_downs
    if n < 1:
      raise ValueError(f"UNetGenerator: num_downs must be >= 1, got {n}")
    if x.ndim != 4:
      raise ValueError(f"UNetGenerator: expected input [B, H, W, C], got shape {x.shape}")
    height, width = x.shape[1], x.shape[2]
    if height % 2**n or width % 2**n:
      raise ValueError(f"UNetGenerator: input {height}x{width} is not divisible by "
                       f"2^num_downs = {2**n}; pick num_downs with num_downs_for(h, w)")
    widths = unet_widths(n, self.ngf)

    h = x.astype(self.dtype)
    skips = []  # skips[i] is the input of block i (skips[0], the image, is not used)
    for i in range(n):
      skips.append(h)
      if i > 0:
        h = nn.leaky_relu(h, LEAKY_SLOPE)
      h = down_conv(widths[i], False, self.dtype, name=f"down{i}", impl=self.conv_impl)(h)
      if 0 < i < n - 1:
        h = batch_norm(train, self.dtype, name=f"down{i}_bn")(h)

    for i in range(n - 1, 0, -1):
      h = nn.relu(h)
      h = up_conv(widths[i - 1], False, self.dtype, name=f"up{i}", impl=self.conv_impl)(h)
      h = batch_norm(train, self.dtype, name=f"up{i}_bn")(h)
      if self.use_dropout and 4 <= i <= n - 2:
        h = nn.Dropout(0.5, deterministic=not train)(h)
      h = jnp.concatenate([skips[i], h], axis=-1)
    h = up_conv(self.out_channels, True, self.dtype, name="up0",
                impl=self.conv_impl)(nn.relu(h))
    return jnp.tanh(h.astype(jnp.float32))
