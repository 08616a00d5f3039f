"""Method A's supervision M: the handcrafted desensitization, or a stage's stored targets.

M is computed by the data pipeline after the resize and before augmentation,
so it shares O's flip, crop and erasing (the pipeline's paired mode).
"""

from __future__ import annotations

from typing import Any

from privreid_jax.data import target_records
from privreid_jax.ops import desensitize

# Picklable target function for the pipeline's paired mode (noise keyed by content).
Desensitizer = desensitize.TargetFunction


def desensitize_params(config) -> tuple[str, dict[str, Any]]:
  """(op, parameters at the image's scale) of config.anon.desensitize."""
  a = config.anon
  op = a.desensitize
  if op not in ("mosaic", "blur", "noise"):
    raise ValueError(f"config.anon.desensitize={op!r}: expected mosaic | blur | noise")
  return op, desensitize.config_params(op, a, config.data.height)


def handcrafted(config, fresh: bool | None = None) -> Desensitizer:
  """The handcrafted M of config.anon.desensitize as a [0, 1] image function
  (fresh noise per read as config.anon.fresh_noise unless `fresh` is given)."""
  a = config.anon
  op, params = desensitize_params(config)
  return Desensitizer(op, params, config.seed,
                      fresh=bool(a.fresh_noise) if fresh is None else fresh,
                      quantize=bool(a.quantize_targets))


def train_targets(config, targets_dir: str = "") -> Desensitizer | target_records.TargetSource:
  """The pipeline's paired-mode target M: the handcrafted desensitization of O,
  or, for a progressive stage (`targets_dir`), the stored targets G_teacher(O)
  aligned with the training source."""
  if targets_dir:
    return target_records.open_targets(targets_dir, int(config.data.height),
                                       int(config.data.width))
  return handcrafted(config)
