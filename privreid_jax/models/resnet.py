"""ResNet-18/34/50 backbones (torchvision layout, v1.5) returning the final feature map.

Input: NHWC float images. Output: the layer4 map [B, H/32, W/32, C] (or H/16, W/16
with `last_stride=1`, the Re-ID default: 2048 x 16 x 8 at 256 x 128 for ResNet-50).

Parameter tree <-> torchvision state dict (see `pretrained.py`):

    conv1/kernel [7,7,3,w]             conv1.weight [w,3,7,7]   (HWIO <-> OIHW)
    bn1/{scale,bias}                   bn1.{weight,bias}
    batch_stats bn1/{mean,var}         bn1.{running_mean,running_var}
    layer{s}_{b}/conv{k}, bn{k}        layer{s}.{b}.conv{k}, bn{k}   (k = 1..2 or 1..3)
    layer{s}_{b}/downsample_0          layer{s}.{b}.downsample.0     (1x1 conv)
    layer{s}_{b}/downsample_1          layer{s}.{b}.downsample.1     (BN)

i.e. a module name maps by replacing "_" with ".". Optional AGW non-local blocks are
named `nl{s}_{b}` (applied after block b of layer s) and have no torchvision
counterpart.

BatchNorm follows torch: momentum 0.1 (flax 0.9), eps 1e-5. Init follows torchvision:
kaiming normal (fan_out, ReLU) convs, BN scale 1 / bias 0, and optionally zero-init of
each residual branch's last BN scale (`zero_init_residual`, off by default).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from privreid_jax.models import conv as conv_lib
from privreid_jax.models import non_local

# depth -> (block type, blocks per stage)
DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}
# AGW's `non_layers`: non-local blocks after the last n blocks of each stage.
AGW_NON_LOCAL_LAYERS = (0, 2, 3, 0)

KAIMING_FAN_OUT = non_local.KAIMING_FAN_OUT


def non_local_indices(blocks: int, n: int) -> tuple[int, ...]:
  """Indices of the last `n` of `blocks` blocks (all of them when n >= blocks)."""
  return tuple(range(max(blocks - n, 0), blocks))


class _Layers(nn.Module):
  """Shared conv/BN factory for the blocks."""
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  def conv(self, features: int, kernel: int, stride: int, name: str) -> conv_lib.Conv:
    return conv_lib.Conv(features, kernel, strides=stride, padding=kernel // 2,
                         use_bias=False, dtype=self.dtype, kernel_init=KAIMING_FAN_OUT,
                         impl=self.conv_impl, name=name)

  def bn(self, train: bool, name: str, zero: bool = False) -> nn.BatchNorm:
    scale_init = (nn.initializers.zeros_init() if zero else nn.initializers.ones_init())
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=self.dtype, scale_init=scale_init, name=name)


class BasicBlock(_Layers):
  """Two 3x3 convs (ResNet-18/34)."""
  planes: int = 64
  stride: int = 1
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = self.conv(self.planes, 3, self.stride, "conv1")(x)
    y = nn.relu(self.bn(train, "bn1")(y))
    y = self.conv(self.planes, 3, 1, "conv2")(y)
    y = self.bn(train, "bn2", zero=self.zero_init_residual)(y)
    if self.stride != 1 or x.shape[-1] != self.planes:
      x = self.conv(self.planes, 1, self.stride, "downsample_0")(x)
      x = self.bn(train, "downsample_1")(x)
    return nn.relu(x + y)


class Bottleneck(_Layers):
  """1x1 -> 3x3 (strided, torchvision v1.5) -> 1x1 x4 (ResNet-50)."""
  planes: int = 64
  stride: int = 1
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out = self.planes * 4
    y = self.conv(self.planes, 1, 1, "conv1")(x)
    y = nn.relu(self.bn(train, "bn1")(y))
    y = self.conv(self.planes, 3, self.stride, "conv2")(y)
    y = nn.relu(self.bn(train, "bn2")(y))
    y = self.conv(out, 1, 1, "conv3")(y)
    y = self.bn(train, "bn3", zero=self.zero_init_residual)(y)
    if self.stride != 1 or x.shape[-1] != out:
      x = self.conv(out, 1, self.stride, "downsample_0")(x)
      x = self.bn(train, "downsample_1")(x)
    return nn.relu(x + y)


class ResNet(_Layers):
  """torchvision ResNet without avgpool/fc; returns the layer4 feature map.

  Attributes:
    depth: 18 | 34 | 50.
    width: stem width (64 = torchvision); stage widths are width * (1, 2, 4, 8).
    last_stride: stride of layer4 (1 keeps a 16 x 8 map at 256 x 128).
    non_local_layers: per stage, how many trailing blocks get a non-local block
      after them (AGW: (0, 2, 3, 0)); None or all zeros disables them.
    non_local_inter_channels: the non-local blocks' embedding width; 0: half the
      block's channels (the non-local paper), 1: AGW's released code.
    zero_init_residual: zero-init the last BN scale of each residual branch.
    stem_relu: torchvision's ReLU after the stem BN (False: BoT's ResNet).
    dtype: compute dtype (params stay float32).
    conv_impl: "auto" | "xla" | "matmul" | "matmul_flat" (see conv.py).
  """
  depth: int = 50
  width: int = 64
  last_stride: int = 1
  non_local_layers: Sequence[int] | None = None
  non_local_inter_channels: int = 0
  zero_init_residual: bool = False
  stem_relu: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.depth not in DEPTHS:
      raise ValueError(f"ResNet depth={self.depth}: expected one of {sorted(DEPTHS)}")
    if self.last_stride not in (1, 2):
      raise ValueError(f"last_stride={self.last_stride}: expected 1 or 2")
    kind, stages = DEPTHS[self.depth]
    block_cls = BasicBlock if kind == "basic" else Bottleneck
    nl = tuple(self.non_local_layers or (0, 0, 0, 0))
    if len(nl) != 4:
      raise ValueError(f"non_local_layers={nl!r}: expected 4 counts, one per stage")

    x = x.astype(self.dtype)
    x = conv_lib.Conv(self.width, 7, strides=2, padding=3, use_bias=False,
                      dtype=self.dtype, kernel_init=KAIMING_FAN_OUT,
                      impl=self.conv_impl, name="conv1")(x)
    x = self.bn(train, "bn1")(x)
    if self.stem_relu:
      x = nn.relu(x)
    x = conv_lib.max_pool(x, 3, 2, 1, impl=self.conv_impl)
    for s, blocks in enumerate(stages):
      planes = self.width * 2 ** s
      first_stride = 1 if s == 0 else (self.last_stride if s == 3 else 2)
      nl_after = non_local_indices(blocks, nl[s])
      for b in range(blocks):
        x = block_cls(planes=planes, stride=first_stride if b == 0 else 1,
                      zero_init_residual=self.zero_init_residual, dtype=self.dtype,
                      conv_impl=self.conv_impl, name=f"layer{s + 1}_{b}")(x, train)
        if b in nl_after:
          x = non_local.NonLocal(inter_channels=self.non_local_inter_channels or None,
                                 dtype=self.dtype, conv_impl=self.conv_impl,
                                 name=f"nl{s + 1}_{b}")(x, train)
    return x
