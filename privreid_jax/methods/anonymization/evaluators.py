"""Method A's image-quality evaluator: PSNR / SSIM of M, P and R against O.

M is the handcrafted desensitization (config.anon.desensitize), P = G(O) the
anonymized image and R = G_R(P) the recovered one (in Base mode P is M and
there is no R). Images are compared in [0, 1] pixels; the row is
`image_quality` with psnr_M, psnr_P, psnr_R, ssim_M, ... and an O | M | P | R
grid goes to TensorBoard.

`measure(..., metrics=)` computes the numbers two ways: "per_image" (PSNR and
valid-window SSIM of each image, averaged: the evaluator's rows) or
"reference" (as the reference code's upgrade rule: PSNR = 10 log10(1 / MSE
averaged over the set), SSIM with zero-padded windows averaged per image).
"""

from __future__ import annotations

import jax
import numpy as np

from privreid_jax import errors
from privreid_jax.data import pipeline
from privreid_jax.data.splits import Subset
from privreid_jax.ops import image_metrics, normalize

GRID_IMAGES = 8
METRICS = ("per_image", "reference")


class ImageQuality:
  """PSNR / SSIM of a method-A state's images (used by the evaluator and the stage check)."""

  def __init__(self, method, data_cfg):
    self.method, self.data_cfg = method, data_cfg
    self.target = method.handcrafted_target()
    self.names = ("M", "P") if method.mode == "base" else ("M", "P", "R")
    self._fn = jax.jit(self._batch)

  def _batch(self, state, images):
    """[0, 1] O, P and R of a normalised batch (R = P in base mode)."""
    m = self.method
    p = m.anonymize(state, images)
    r = p if m.mode == "base" else m.recover(state, p)
    return tuple(normalize.to_unit(x, m.mean, m.std) for x in (images, p, r))

  def measure(self, state, source, max_images: int, metrics: str = "per_image"):
    """({metric: value over the first `max_images` of `source` (0: all)},
    [0,1] examples)."""
    if metrics not in METRICS:
      raise ValueError(f"image quality metrics={metrics!r}: expected {' | '.join(METRICS)}")
    reference = metrics == "reference"
    sums: dict[str, float] = {}
    count = 0
    examples = None
    n = len(source) if int(max_images) <= 0 else min(int(max_images), len(source))
    subset = Subset(source, range(n))
    for batch in pipeline.eval_loader(subset, self.data_cfg):
      o01, p01, r01 = (np.asarray(x) for x in self._fn(state, batch["image"]))
      keep = batch["mask"]
      o01, p01, r01 = o01[keep], p01[keep], r01[keep]
      m01 = np.stack([self.target(x) for x in o01])
      images = {"M": m01, "P": p01, "R": r01}
      for name in self.names:
        if reference:       # accumulate the MSE; PSNR of the set at the end
          sums[f"psnr_{name}"] = sums.get(f"psnr_{name}", 0.0) + float(
              np.sum(np.mean(np.square(images[name] - o01), axis=(1, 2, 3))))
        else:
          sums[f"psnr_{name}"] = sums.get(f"psnr_{name}", 0.0) + float(
              np.sum(image_metrics.psnr(images[name], o01)))
        sums[f"ssim_{name}"] = sums.get(f"ssim_{name}", 0.0) + float(
            np.sum(image_metrics.ssim(images[name], o01,
                                      padding="same_zero" if reference else "valid")))
      count += len(o01)
      if examples is None:
        examples = {"O": o01[:GRID_IMAGES], **{k: v[:GRID_IMAGES] for k, v in images.items()}}
    out = {k: v / max(count, 1) for k, v in sums.items()}
    if reference:
      out.update({k: float(10.0 * np.log10(1.0 / v)) for k, v in out.items()
                  if k.startswith("psnr_")})
    return out, examples


class ImageQualityEvaluator:
  """Row `image_quality` on the first `images` query images (config.evals.image_quality);
  with `split="val"`, row `val/image_quality` on the validation gallery (the held-out
  training identities), so a choice made on PSNR / SSIM never reads the test split."""

  def __init__(self, quality: ImageQuality, ctx, images: int, split: str = "test"):
    if split not in ("test", "val"):
      raise errors.ConfigError(f"config.evals.image_quality.split={split!r}: expected "
                               "test | val")
    if split == "val" and ctx.splits.val_gallery is None:
      raise errors.ConfigError("config.evals.image_quality.split='val' needs a validation "
                               "split: set config.data.val_fraction > 0 (e.g. 0.2), or "
                               "config.data.val_people_seed >= 0 on synthetic data")
    self.quality, self.ctx, self.images = quality, ctx, int(images)
    self.source = (ctx.splits.val_gallery if split == "val" else ctx.splits.query).source
    self.row = "val/image_quality" if split == "val" else "image_quality"

  def run(self, state, step: int):
    rows, examples = self.quality.measure(state, self.source, self.images)
    if examples is not None:
      names = ("O",) + self.quality.names
      grid = np.concatenate([np.concatenate(list(examples[n]), axis=1) for n in names], 0)
      self.ctx.writer.images(int(step), {"anonymization/O_M_P_R": grid})
    return {self.row: rows}
