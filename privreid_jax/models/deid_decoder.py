"""Method B's De-ID decoder: an image reconstructed from the Re-ID encoder's feature.

docs/method_b.md, stage 1. The decoder maps the encoder's feature map [B, h, w, C]
(2048 x 16 x 8 for a 256 x 128 input with last stride 1) back to an image
[B, H, W, out_channels] whose L1 target is the de-identified input (pixelated,
blurred, noised, or the clean image for the "clean decoder" ablation). Its loss
flows into the encoder, so the feature keeps only what the de-identified image
shows.

Layout:

  map input:    Conv 1x1 -> widths[0], BN, ReLU                     (at h x w)
  vector input: Dense -> vector_map_hw x widths[0], BN, ReLU        ([B, C] input)
  n stages:     upsample x2 -> Conv 3x3 (no bias) -> BN -> ReLU
  head:         Conv 3x3 -> out_channels (bias), linear (or tanh)

The number of stages n is log2(H / h) and must equal log2(W / w) (a clear error
otherwise). Stage widths are the last n entries of `widths`, padded on the left
with widths[0] when n > len(widths): the stages nearest the output always have
the narrowest widths, whatever the input resolution.

Upsampling is nearest-neighbour followed by a 3x3 convolution by default rather
than a stride-2 transposed convolution: a 4x4/2 transposed conv overlaps its
kernels unevenly and prints checkerboard artefacts into reconstructions (Odena et
al., Distill 2016), which the L1 loss then has to fight, and the resize + conv
form reuses the project's CPU-fast `Conv`. `upsample="transpose"` (4x4 stride-2
transposed conv, XLA lowering) is kept for comparison: it does 4/9 of the
multiply-adds of resize + 3x3 conv, yet on the 2-core CPU a forward + backward pass
(batch 4, 16x8x2048 -> 256x128) took ~20 s against 2-3.4 s for the default.

The output lives in the pipeline's normalised image space (mean/std-normalised),
so it is linear by default; `tanh=True` bounds it to (-1, 1) for targets in that
range. Outputs are float32 whatever the compute dtype.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from privreid_jax.models import conv

BN_MOMENTUM = 0.9  # flax convention (PyTorch momentum 0.1)
BN_EPS = 1e-5
UPSAMPLE_MODES = ("nearest", "transpose")


def _log2_exact(ratio: int) -> int | None:
  if ratio < 1 or ratio & (ratio - 1):
    return None
  return ratio.bit_length() - 1


def num_stages(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
  """Number of x2 upsampling stages from `in_hw` to `out_hw`, with a one-line error."""
  (h, w), (oh, ow) = in_hw, out_hw
  if h < 1 or w < 1 or oh % h or ow % w:
    raise ValueError(f"DeIDDecoder: output {oh}x{ow} is not an integer multiple of the "
                     f"feature map {h}x{w}")
  sh, sw = _log2_exact(oh // h), _log2_exact(ow // w)
  if sh is None or sw is None or sh != sw:
    raise ValueError(f"DeIDDecoder: output {oh}x{ow} / feature map {h}x{w} must be the "
                     f"same power of two on both sides, got ratios {oh // h} and {ow // w}")
  return sh


def stage_widths(widths: Sequence[int], n: int) -> tuple[int, ...]:
  """The last n widths, left-padded with widths[0] when more stages are needed."""
  widths = tuple(int(c) for c in widths)
  if not widths or min(widths) < 1:
    raise ValueError(f"DeIDDecoder: widths must be a non-empty sequence of positive ints, "
                     f"got {widths}")
  if n <= len(widths):
    return widths[len(widths) - n:]
  return (widths[0],) * (n - len(widths)) + widths


def upsample_nearest(x: jax.Array) -> jax.Array:
  """[B, h, w, C] -> [B, 2h, 2w, C] by pixel repetition (a broadcast, no gather)."""
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
  return x.reshape(b, 2 * h, 2 * w, c)


class DeIDDecoder(nn.Module):
  """Feature map [B, h, w, C] (or vector [B, C]) -> image [B, H, W, out_channels].

  Attributes:
    out_height, out_width: size of the reconstructed image.
    widths: channel widths of the upsampling stages, widest first.
    out_channels: image channels (3).
    tanh: squash the output with tanh (default: linear output).
    upsample: "nearest" (resize + 3x3 conv) or "transpose" (4x4 stride-2 conv).
    vector_map_hw: for a [B, C] input, the size of the map the Dense projects to;
      out_height / h and out_width / w must be the same power of two.
    dtype: compute dtype (params stay float32).
    conv_impl: lowering of the convolutions, see `models/conv.py`.
  """
  out_height: int
  out_width: int
  widths: Sequence[int] = (256, 128, 64, 32)
  out_channels: int = 3
  tanh: bool = False
  upsample: str = "nearest"
  vector_map_hw: tuple[int, int] = (4, 2)
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  def _bn(self, train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                        epsilon=BN_EPS, dtype=self.dtype, param_dtype=jnp.float32,
                        name=name)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.upsample not in UPSAMPLE_MODES:
      raise ValueError(f"DeIDDecoder: upsample={self.upsample!r}, expected one of "
                       f"{' | '.join(UPSAMPLE_MODES)}")
    if x.ndim not in (2, 4):
      raise ValueError(f"DeIDDecoder: expected a feature map [B, h, w, C] or a vector "
                       f"[B, C], got shape {x.shape}")
    x = x.astype(self.dtype)
    out_hw = (self.out_height, self.out_width)
    if x.ndim == 2:
      h0, w0 = self.vector_map_hw
      n = num_stages((h0, w0), out_hw)
      first = stage_widths(self.widths, max(n, 1))[0]
      x = nn.Dense(h0 * w0 * first, use_bias=False, dtype=self.dtype,
                   param_dtype=jnp.float32, name="project")(x)
      x = x.reshape(x.shape[0], h0, w0, first)
    else:
      n = num_stages(x.shape[1:3], out_hw)
      first = stage_widths(self.widths, max(n, 1))[0]
      x = conv.Conv(first, 1, dtype=self.dtype, impl=self.conv_impl, name="project")(x)
    x = nn.relu(self._bn(train, "project_bn")(x))

    for i, width in enumerate(stage_widths(self.widths, n)):
      if self.upsample == "nearest":
        x = upsample_nearest(x)
        x = conv.Conv(width, 3, padding=1, dtype=self.dtype, impl=self.conv_impl,
                      name=f"up{i}")(x)
      else:
        x = nn.ConvTranspose(width, (4, 4), strides=(2, 2), padding="SAME",
                             use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                             name=f"up{i}")(x)
      x = nn.relu(self._bn(train, f"up{i}_bn")(x))

    x = conv.Conv(self.out_channels, 3, padding=1, use_bias=True, dtype=self.dtype,
                  impl=self.conv_impl, name="head")(x)
    x = x.astype(jnp.float32)
    return jnp.tanh(x) if self.tanh else x
