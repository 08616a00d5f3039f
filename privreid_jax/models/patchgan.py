"""PatchGAN discriminator on image pairs: method A's D1 and D2 (docs/method_a.md).

pix2pix's `NLayerDiscriminator` with BatchNorm, on the channel concatenation of
two images (a first, as `torch.cat([a, b], 1)`):

  Conv 4x4 s2 (ndf, bias) -> LeakyReLU 0.2
  n_layers - 1 x [Conv 4x4 s2 (ndf * min(2^k, 8), no bias) -> BN -> LeakyReLU 0.2]
  Conv 4x4 s1 (ndf * min(2^n_layers, 8), no bias) -> BN -> LeakyReLU 0.2
  Conv 4x4 s1 (1, bias)  -> logits

All convs pad 1, so a side of s pixels gives s >> n_layers, minus 2 for the two
stride-1 convs (256x128, n_layers=3 -> a 30x14 logit map, 70x70 receptive field).
Init, BatchNorm settings, the PyTorch weight layout and `conv_impl` (the
convolutions' lowering, see `models/conv.py`) are those of `unet.py`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from privreid_jax.models import unet


def patchgan_output_shape(height: int, width: int, n_layers: int = 3) -> tuple[int, int]:
  """Spatial size of the logit map for a height x width input."""
  return (height >> n_layers) - 2, (width >> n_layers) - 2


class PatchDiscriminator(nn.Module):
  """PatchGAN: (a, b) [B, H, W, Ca], [B, H, W, Cb] -> logits [B, H', W', 1] (float32)."""

  ndf: int = 64
  n_layers: int = 3
  dtype: Any = jnp.float32
  conv_impl: str = "auto"  # "auto" | "xla" | "matmul" | "matmul_flat", see models/conv.py

  @nn.compact
  def __call__(self, a: jax.Array, b: jax.Array, train: bool) -> jax.Array:
    if self.n_layers < 1:
      raise ValueError(f"PatchDiscriminator: n_layers must be >= 1, got {self.n_layers}")
    if a.ndim != 4 or a.shape[:3] != b.shape[:3]:
      raise ValueError(f"PatchDiscriminator: expected two [B, H, W, C] inputs of the same "
                       f"batch and size, got {a.shape} and {b.shape}")
    out_h, out_w = patchgan_output_shape(a.shape[1], a.shape[2], self.n_layers)
    if out_h < 1 or out_w < 1:
      raise ValueError(f"PatchDiscriminator: input {a.shape[1]}x{a.shape[2]} is too small "
                       f"for n_layers={self.n_layers} (logit map {out_h}x{out_w}); "
                       "use fewer layers")
    h = jnp.concatenate([a, b], axis=-1).astype(self.dtype)
    impl = self.conv_impl
    h = unet.down_conv(self.ndf, True, self.dtype, name="conv0", impl=impl)(h)
    h = nn.leaky_relu(h, unet.LEAKY_SLOPE)
    for k in range(1, self.n_layers + 1):
      stride = 2 if k < self.n_layers else 1
      h = unet.down_conv(self.ndf * min(2**k, 8), False, self.dtype, name=f"conv{k}",
                         stride=stride, impl=impl)(h)
      h = unet.batch_norm(train, self.dtype, name=f"conv{k}_bn")(h)
      h = nn.leaky_relu(h, unet.LEAKY_SLOPE)
    h = unet.down_conv(1, True, self.dtype, name=f"conv{self.n_layers + 1}", stride=1,
                       impl=impl)(h)
    return h.astype(jnp.float32)
