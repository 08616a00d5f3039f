"""The Re-ID network C: ResNet backbone, global pooling, BNNeck and ID classifier.

    (logits, out) = ReidModel(...).apply(variables, images, train=...)

`out` (big_vision-style extras, all float32 except the map):
  feat_pre     pooled feature before the BNNeck [B, C]; triplet / center losses.
  feat         post-BN feature [B, C]; retrieval (the evaluator L2-normalises it).
  feature_map  backbone output [B, h, w, C] in the compute dtype.
`logits` is [B, num_classes] float32, or None when num_classes == 0 (feature extractor).

Variables: `params` {backbone, pool (GeM only), bnneck, classifier} and the mutable
collection `batch_stats` {backbone, bnneck}. `backbone` follows the torchvision
layout documented in resnet.py.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from privreid_jax.models import conv as conv_lib
from privreid_jax.models import reid_head
from privreid_jax.models import resnet

BACKBONES = {"resnet18": 18, "resnet34": 34, "resnet50": 50}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class ReidModel(nn.Module):
  """BoT / AGW strong baseline (docs/baseline.md)."""
  num_classes: int
  backbone: str = "resnet50"
  width: int = 64
  last_stride: int = 1
  pooling: str = "avg"
  gem_p: float = 3.0
  non_local: bool = False
  non_local_inter_channels: int = 0
  stem_relu: bool = True
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool):
    if self.backbone not in BACKBONES:
      raise ValueError(f"model.backbone={self.backbone!r}: expected one of "
                       f"{' | '.join(BACKBONES)}")
    if self.pooling not in reid_head.POOLINGS:
      raise ValueError(f"model.pooling={self.pooling!r}: expected one of "
                       f"{' | '.join(reid_head.POOLINGS)}")
    fmap = resnet.ResNet(
        depth=BACKBONES[self.backbone], width=self.width,
        last_stride=self.last_stride,
        non_local_layers=resnet.AGW_NON_LOCAL_LAYERS if self.non_local else None,
        non_local_inter_channels=self.non_local_inter_channels, stem_relu=self.stem_relu, dtype=self.dtype, conv_impl=self.conv_impl, name="backbone")(x, train)
    if self.pooling == "gem":
      feat_pre = reid_head.GeM(p_init=self.gem_p, name="pool")(fmap)
    else:
      feat_pre = reid_head.avg_pool(fmap)
    feat = reid_head.bnneck(train)(feat_pre)
    logits = reid_head.classifier(self.num_classes)(feat) if self.num_classes else None
    return logits, {"feat_pre": feat_pre, "feat": feat, "feature_map": fmap}


def parse_dtype(name: str) -> Any:
  """"float32" | "bfloat16" | "float16" -> jnp dtype."""
  if name not in DTYPES:
    raise ValueError(f"model.dtype={name!r}: expected one of {' | '.join(DTYPES)}")
  return DTYPES[name]


def build_reid_model(model_cfg, num_classes: int) -> ReidModel:
  """ReidModel from the `config.model` ConfigDict (see config_base.py)."""
  conv_lib.resolve_impl(model_cfg.conv_impl)  # validates the name early
  if model_cfg.backbone not in BACKBONES:
    raise ValueError(f"model.backbone={model_cfg.backbone!r}: expected one of "
                     f"{' | '.join(BACKBONES)}")
  if model_cfg.pooling not in reid_head.POOLINGS:
    raise ValueError(f"model.pooling={model_cfg.pooling!r}: expected one of "
                     f"{' | '.join(reid_head.POOLINGS)}")
  if model_cfg.last_stride not in (1, 2):
    raise ValueError(f"model.last_stride={model_cfg.last_stride!r}: expected 1 or 2")
  if int(model_cfg.width) < 1:
    raise ValueError(f"model.width={model_cfg.width!r}: expected a positive int")
  if num_classes < 0:
    raise ValueError(f"num_classes={num_classes}: expected >= 0")
  return ReidModel(
      num_classes=int(num_classes), backbone=model_cfg.backbone,
      width=int(model_cfg.width), last_stride=int(model_cfg.last_stride),
      pooling=model_cfg.pooling, gem_p=float(model_cfg.gem_p),
      non_local=bool(model_cfg.non_local),
      non_local_inter_channels=int(model_cfg.get("non_local_inter_channels", 0)),
      stem_relu=bool(model_cfg.get("stem_relu", True)),
      dtype=parse_dtype(model_cfg.dtype),
      conv_impl=model_cfg.conv_impl)
