"""Batches of method A's parity harness (experiments/parity_anon.py): 8-bit images
for both sides, with the reference's own mosaic as the target M."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
import types

import numpy as np

from experiments.parity_batches import Batch, patterns


@dataclasses.dataclass(frozen=True)
class AnonBatch(Batch):
  targets: np.ndarray = None   # [B, H, W, 3] float32, normalised M

  def targets_nchw(self) -> np.ndarray:
    return np.ascontiguousarray(self.targets.transpose(0, 3, 1, 2))


def make_images8(steps: int, batch: int, num_instances: int, num_classes: int,
                 height: int, width: int, seed: int = 0):
  """[(uint8 images [B, H, W, 3], pids)] per step: parity_batches.patterns rounded to 8 bits."""
  return [(np.round(img * 255.0).astype(np.uint8), pids)
          for img, pids in patterns(steps, batch, num_instances, num_classes, height, width,
                                    seed)]


def load_reference_mosaic(ref_dir: str):
  """The reference's `do_mosaic(PIL image, neighbor)` (in place), loaded from its
  file alone (its package imports torchvision; a stub stands in if it is missing:
  do_mosaic itself uses only PIL)."""
  path = os.path.join(os.path.abspath(ref_dir), "data", "datasets", "dataset_loader.py")
  stubs = {}
  try:
    import torchvision.transforms.functional  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except Exception:  # pylint: disable=broad-except
    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    fn = types.ModuleType("torchvision.transforms.functional")
    fn.InterpolationMode = types.SimpleNamespace(BILINEAR="bilinear")
    tv.transforms, tr.functional = tr, fn
    stubs = {"torchvision": tv, "torchvision.transforms": tr,
             "torchvision.transforms.functional": fn}
  saved = {k: sys.modules.get(k) for k in stubs}
  sys.modules.update(stubs)
  try:
    spec = importlib.util.spec_from_file_location("parity_anon_ref_dataset_loader", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k, None)
      else:
        sys.modules[k] = v
  return module.do_mosaic


def make_anon_batches(images8, *, mean, std, block: int, ref_mosaic=None,
                      log=print) -> list[AnonBatch]:
  """Normalised O and M for both sides. M is `ref_mosaic` (the reference's) when
  given, else ours; ours is compared with it either way."""
  from privreid_jax.ops import desensitize  # pylint: disable=import-outside-toplevel
  ours_fn = desensitize.make_target_fn("mosaic", 0, block=int(block), fill="top_left")
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  worst = 0.0
  out = []
  for img8, pids in images8:
    ours = np.stack([ours_fn(im.astype(np.float32) / 255.0) for im in img8])
    if ref_mosaic is not None:
      from PIL import Image  # pylint: disable=import-outside-toplevel
      ref = []
      for im in img8:
        pil = Image.fromarray(im)
        ref_mosaic(pil, block)
        ref.append(np.asarray(pil, np.float32) / 255.0)
      m = np.stack(ref)
      worst = max(worst, float(np.max(np.abs(m - ours))) * 255.0)
    else:
      m = ours
    o = (img8.astype(np.float64) / 255.0 - mean) / std
    mm = (m.astype(np.float64) - mean) / std
    out.append(AnonBatch(images=o.astype(np.float32), pids=pids,
                         targets=mm.astype(np.float32)))
  if ref_mosaic is not None:
    log(f"mosaic targets (block {block}): ours vs the reference's do_mosaic, max |diff| "
        f"{worst:.3g} / 255 levels; both sides get the reference's")
  else:
    log(f"mosaic targets (block {block}): ours (the reference's do_mosaic not loadable)")
  return out
