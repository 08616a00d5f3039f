"""Optimizers and the BoT learning-rate schedule (docs/baseline.md)."""

from __future__ import annotations

import bisect
from typing import Sequence

import jax.numpy as jnp
import optax


def warmup_multistep(base_lr: float, steps_per_epoch: int, *, warmup_epochs: int,
                     warmup_factor: float, milestones: Sequence[int],
                     gamma: float, epoch_offset: int = 0) -> optax.Schedule:
  """BoT's WarmupMultiStepLR, stepped once per epoch.

  At 0-based epoch e, with k = e + epoch_offset: lr = base * w(k) * gamma **
  #(milestones <= k), where w(k) = warmup_factor * (1 - k / warmup_epochs) +
  k / warmup_epochs for k < warmup_epochs, else 1. BoT's training loop steps
  its scheduler once when it is built and again at each epoch start, so epoch e
  trains at k = e + 1: `config.optim.epoch_offset = 1` reproduces it (measured
  against reid-strong-baseline by experiments/parity.py).
  """
  milestones = tuple(sorted(int(m) for m in milestones))
  if steps_per_epoch <= 0:
    raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")

  def schedule(step):
    epoch = jnp.asarray(step) // steps_per_epoch + int(epoch_offset)
    alpha = epoch / max(warmup_epochs, 1)
    warm = jnp.where(epoch < warmup_epochs,
                     warmup_factor * (1 - alpha) + alpha, 1.0)
    decays = sum((epoch >= m).astype(jnp.float32) for m in milestones) \
        if milestones else 0.0
    return base_lr * warm * gamma ** decays
  return schedule


def lr_at_epoch(base_lr, epoch, *, warmup_epochs, warmup_factor, milestones,
                gamma, epoch_offset: int = 0) -> float:
  """Host-side reference of the same schedule (used in logs and tests)."""
  epoch = epoch + int(epoch_offset)
  if epoch < warmup_epochs:
    alpha = epoch / warmup_epochs
    factor = warmup_factor * (1 - alpha) + alpha
  else:
    factor = 1.0
  return base_lr * factor * gamma ** bisect.bisect_right(sorted(milestones), epoch)


def adam(schedule: optax.Schedule, *, b1: float, b2: float,
         weight_decay: float) -> optax.GradientTransformation:
  """torch.optim.Adam with coupled weight decay (wd * param added to the grad)."""
  return optax.chain(
      optax.add_decayed_weights(weight_decay) if weight_decay else optax.identity(),
      optax.scale_by_adam(b1=b1, b2=b2, eps=1e-8),
      optax.scale_by_learning_rate(schedule),
  )


def schedule_from_config(optim_cfg, steps_per_epoch: int,
                         lr: float | None = None) -> optax.Schedule:
  """The config's warm-up / multi-step schedule (base lr `lr`, default optim.lr)."""
  return warmup_multistep(
      optim_cfg.lr if lr is None else lr, steps_per_epoch,
      warmup_epochs=optim_cfg.warmup_epochs, warmup_factor=optim_cfg.warmup_factor,
      milestones=optim_cfg.milestones, gamma=optim_cfg.gamma,
      epoch_offset=int(optim_cfg.get("epoch_offset", 0)))


def from_config(optim_cfg, steps_per_epoch: int, *, lr: float | None = None,
                b1: float | None = None, b2: float | None = None
                ) -> optax.GradientTransformation:
  """The config's Adam + warmup/multistep schedule; per-network overrides allowed."""
  return adam(schedule_from_config(optim_cfg, steps_per_epoch, lr), b1=optim_cfg.b1 if b1 is None else b1,
              b2=optim_cfg.b2 if b2 is None else b2,
              weight_decay=optim_cfg.weight_decay)
