"""Method B's Adv-ID module: identity adversaries.

docs/method_b.md, stage 1. The adversary learns to recognise the training identity
from what the model leaks, and the encoder/decoder are trained to defeat it,
either with alternating steps (adversary minimises its cross-entropy, encoder and
decoder then maximise it or push it towards uniform) or in one step through
`privreid_jax.losses.grad_reverse` placed between the decoder and the adversary.

- `ImageIdentityClassifier`: a small CNN on an image, typically the De-ID
  decoder's reconstruction: `num_stages` x [Conv 3x3 stride 2 -> BN -> ReLU]
  with widths width * 2^i, global average pool, Dense -> logits.
- `FeatureIdentityClassifier`: an MLP on a feature vector (a feature map
  [B, h, w, C] is global-average-pooled first): Dense -> BN -> ReLU -> Dense.

Both take `(x, train)` and return float32 logits [B, num_classes].
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from privreid_jax.models import conv

BN_MOMENTUM = 0.9  # flax convention (PyTorch momentum 0.1)
BN_EPS = 1e-5


def _batch_norm(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                      epsilon=BN_EPS, dtype=dtype, param_dtype=jnp.float32, name=name)


class ImageIdentityClassifier(nn.Module):
  """Image [B, H, W, C] -> identity logits [B, num_classes] (float32).

  Attributes:
    num_classes: number of training identities.
    width: channels of the first stage (doubled at every stage).
    num_stages: stride-2 conv stages; each side must be >= 2^num_stages pixels.
    dtype: compute dtype (params stay float32).
    conv_impl: lowering of the convolutions, see `models/conv.py`.
  """
  num_classes: int
  width: int = 32
  num_stages: int = 4
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"ImageIdentityClassifier: expected images [B, H, W, C], got "
                       f"shape {x.shape}")
    if self.num_classes < 1 or self.num_stages < 1:
      raise ValueError(f"ImageIdentityClassifier: num_classes={self.num_classes} and "
                       f"num_stages={self.num_stages} must be >= 1")
    if min(x.shape[1:3]) < 2**self.num_stages:
      raise ValueError(f"ImageIdentityClassifier: input {x.shape[1]}x{x.shape[2]} is "
                       f"too small for num_stages={self.num_stages}")
    x = x.astype(self.dtype)
    for i in range(self.num_stages):
      x = conv.Conv(self.width * 2**i, 3, strides=2, padding=1, dtype=self.dtype,
                    impl=self.conv_impl, name=f"conv{i}")(x)
      x = nn.relu(_batch_norm(train, self.dtype, f"conv{i}_bn")(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                 name="classifier")(x)
    return x.astype(jnp.float32)


class FeatureIdentityClassifier(nn.Module):
  """Feature [B, C] (or map [B, h, w, C], pooled) -> identity logits [B, num_classes].

  Attributes:
    num_classes: number of training identities.
    hidden: width of the hidden layer.
    dtype: compute dtype (params stay float32).
  """
  num_classes: int
  hidden: int = 512
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if x.ndim == 4:
      x = jnp.mean(x, axis=(1, 2))
    if x.ndim != 2:
      raise ValueError(f"FeatureIdentityClassifier: expected a feature [B, C] or a map "
                       f"[B, h, w, C], got shape {x.shape}")
    if self.num_classes < 1 or self.hidden < 1:
      raise ValueError(f"FeatureIdentityClassifier: num_classes={self.num_classes} and "
                       f"hidden={self.hidden} must be >= 1")
    x = x.astype(self.dtype)
    x = nn.Dense(self.hidden, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                 name="hidden")(x)
    x = nn.relu(_batch_norm(train, self.dtype, "hidden_bn")(x))
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                 name="classifier")(x)
    return x.astype(jnp.float32)
