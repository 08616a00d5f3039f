"""The parity harness's batches: the same P x K images and labels for both sides
(experiments/parity.py), deterministic in their arguments, augmentation off."""

from __future__ import annotations

import dataclasses

import numpy as np

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Batch:
  images: np.ndarray   # [B, H, W, 3] float32, normalised (JAX layout)
  pids: np.ndarray     # [B] int32, P identities x K consecutive images

  def nchw(self) -> np.ndarray:
    """The same images in PyTorch's layout [B, 3, H, W] (a contiguous copy)."""
    return np.ascontiguousarray(self.images.transpose(0, 3, 1, 2))


def patterns(steps: int, batch: int, num_instances: int, num_classes: int,
             height: int, width: int, seed: int = 0):
  """Per step (images in [0, 1] [B, H, W, 3] float64, pids [B] int32), deterministic in
  the arguments: P = batch / K distinct identities (as BoT's RandomIdentitySampler: K
  consecutive images per identity), whose images share a smooth random pattern (a coarse
  colour grid upsampled by nearest neighbour) plus per-image noise."""
  if batch % num_instances or batch // num_instances < 2:
    raise ValueError(f"batch={batch} must be P x K with K={num_instances} and P >= 2 "
                     "(the batch-hard triplet needs a negative)")
  p = batch // num_instances
  if p > num_classes:
    raise ValueError(f"batch={batch} needs P={p} identities, num_classes={num_classes}")
  rng = np.random.default_rng(seed)
  cell = 16 if height % 16 == 0 and width % 16 == 0 else 1
  gh, gw = height // cell, width // cell
  for _ in range(steps):
    ids = rng.choice(num_classes, size=p, replace=False)
    pids = np.repeat(ids, num_instances).astype(np.int32)
    base = rng.uniform(0.0, 1.0, size=(p, gh, gw, 3))
    base = base.repeat(cell, axis=1).repeat(cell, axis=2)
    base = np.repeat(base, num_instances, axis=0)
    yield np.clip(base + rng.normal(0.0, 0.1, size=base.shape), 0.0, 1.0), pids


def make_batches(steps: int, batch: int, num_instances: int, num_classes: int,
                 height: int, width: int, seed: int = 0) -> list[Batch]:
  """`steps` P x K batches of `patterns`, augmentation off, normalised with the ImageNet
  mean/std as both pipelines do."""
  mean, std = np.asarray(IMAGE_MEAN), np.asarray(IMAGE_STD)
  return [Batch(images=((img - mean) / std).astype(np.float32), pids=pids)
          for img, pids in patterns(steps, batch, num_instances, num_classes, height, width,
                                    seed)]
