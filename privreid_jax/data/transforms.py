"""Per-image transforms of the Re-ID input pipeline (numpy + PIL, no JAX).

Training follows torchreid / BoT: resize (PIL bilinear) -> horizontal flip ->
zero-pad then random crop back -> normalise -> random erasing (filled with the
per-channel mean, i.e. 0 after normalisation). Evaluation is resize + normalise.

The random choices of one sample are drawn first into a `Geometry` and then
applied, so a paired target (method A's supervision M) can get exactly the same
flip, crop offset and erased rectangle as its image. Every function is pure: the
randomness comes from the numpy Generator passed in.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from privreid_jax.data.records import DatasetError


@dataclasses.dataclass(frozen=True)
class TransformConfig:
  """The `data` config fields the transforms read (validated)."""
  height: int = 256
  width: int = 128
  mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
  std: tuple[float, float, float] = (0.229, 0.224, 0.225)
  flip_prob: float = 0.5
  pad: int = 10
  erasing_prob: float = 0.5
  erasing_area: tuple[float, float] = (0.02, 0.4)
  erasing_aspect: float = 0.3

  def __post_init__(self):
    def bad(key, why):
      return ValueError(f"data.{key}={getattr(self, key)!r}: {why}")
    if int(self.height) < 1 or int(self.width) < 1:
      raise bad("height" if int(self.height) < 1 else "width", "must be >= 1")
    if len(self.mean) != 3:
      raise bad("mean", "needs 3 values (R, G, B)")
    if len(self.std) != 3 or min(self.std) <= 0:
      raise bad("std", "needs 3 positive values (R, G, B)")
    if not 0.0 <= self.flip_prob <= 1.0:
      raise bad("flip_prob", "must be in [0, 1]")
    if int(self.pad) < 0:
      raise bad("pad", "must be >= 0")
    if not 0.0 <= self.erasing_prob <= 1.0:
      raise bad("erasing_prob", "must be in [0, 1]")
    lo_hi = tuple(self.erasing_area)
    if len(lo_hi) != 2 or not 0.0 < lo_hi[0] <= lo_hi[1] <= 1.0:
      raise bad("erasing_area", "must be (low, high) with 0 < low <= high <= 1")
    if not 0.0 < self.erasing_aspect <= 1.0:
      raise bad("erasing_aspect", "must be in (0, 1] (aspect drawn from "
                "[a, 1/a])")

  @classmethod
  def from_config(cls, data_cfg: Any) -> TransformConfig:
    """Builds it from the `data` ConfigDict (or any object with those fields)."""
    return cls(height=int(data_cfg.height), width=int(data_cfg.width),
               mean=tuple(float(v) for v in data_cfg.mean),
               std=tuple(float(v) for v in data_cfg.std),
               flip_prob=float(data_cfg.flip_prob), pad=int(data_cfg.pad),
               erasing_prob=float(data_cfg.erasing_prob),
               erasing_area=tuple(float(v) for v in data_cfg.erasing_area),
               erasing_aspect=float(data_cfg.erasing_aspect))


@dataclasses.dataclass(frozen=True)
class Geometry:
  """The random choices for one training sample.

  `top`/`left` index the crop window in the padded image (0..2*pad);
  `erase` is (top, left, height, width) of the erased rectangle or None.
  """
  flip: bool
  top: int
  left: int
  erase: tuple[int, int, int, int] | None


def decode_image(data: Any, name: str = "image") -> np.ndarray:
  """Encoded bytes, a file path or an HxW(x3|4) uint8 array -> uint8 HxWx3 RGB.

  `name` (a path or a source index) is named in the DatasetError raised for
  a missing or undecodable image.
  """
  try:
    if isinstance(data, (bytes, bytearray, memoryview)):
      img = Image.open(io.BytesIO(bytes(data)))
    elif isinstance(data, str):
      img = Image.open(data)
    elif isinstance(data, np.ndarray):
      if data.dtype != np.uint8 or data.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 HxW or HxWxC array, got "
                         f"{data.dtype} {data.shape}")
      if data.ndim == 3 and data.shape[-1] == 3:
        return data                # already RGB pixels (e.g. a pre-resized source)
      img = Image.fromarray(data[..., 0] if data.ndim == 3 and
                            data.shape[-1] == 1 else data)
    else:
      raise ValueError(f"expected encoded bytes, a path or a uint8 array, got "
                       f"{type(data).__name__}")
    return np.asarray(img.convert("RGB"))
  except FileNotFoundError:
    raise DatasetError(f"image file not found: {name}") from None
  except UnidentifiedImageError:   # its text holds a path or a BytesIO repr
    raise DatasetError(f"cannot decode image {name}: not an image format PIL "
                       "knows (empty, or another kind of file)") from None
  except (OSError, ValueError) as e:
    raise DatasetError(f"cannot decode image {name}: {e}") from None


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 HxWx3 -> uint8 height x width x 3, PIL bilinear (torchvision Resize)."""
  if image.shape[:2] == (height, width):
    return image
  return np.asarray(Image.fromarray(image).resize((width, height),
                                                  Image.BILINEAR))


def to_unit(image: np.ndarray) -> np.ndarray:
  """uint8 -> float32 in [0, 1]."""
  return image.astype(np.float32) * np.float32(1.0 / 255.0)


@functools.lru_cache(maxsize=8)
def _norm_arrays(shape: tuple[int, ...], mean: tuple[float, ...],
                 std: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
  # Full-size constants: numpy is ~10x faster on same-shape contiguous
  # operands than when broadcasting along a last axis of length 3.
  m = np.ascontiguousarray(np.broadcast_to(np.asarray(mean, np.float32), shape))
  inv = np.float32(1.0) / np.asarray(std, np.float32)
  inv = np.ascontiguousarray(np.broadcast_to(inv, shape))
  m.flags.writeable = inv.flags.writeable = False
  return m, inv


def normalise(image: np.ndarray, cfg: TransformConfig) -> np.ndarray:
  """(x - mean) / std per channel -> a new float32 array, [..., H, W, 3].

  uint8 input is first scaled to [0, 1] (exactly as `to_unit`).
  """
  mean, inv_std = _norm_arrays(image.shape[-3:], tuple(cfg.mean),
                               tuple(cfg.std))
  if image.dtype == np.uint8:
    out = to_unit(image)
    np.subtract(out, mean, out=out)
  else:
    out = np.subtract(image, mean, dtype=np.float32)
  return np.multiply(out, inv_std, out=out)


def sample_geometry(rng: np.random.Generator, cfg: TransformConfig) -> Geometry:
  """Draws flip, crop offset and erasing rectangle (torchreid semantics)."""
  h, w = cfg.height, cfg.width
  flip = bool(rng.random() < cfg.flip_prob)
  top = int(rng.integers(0, 2 * cfg.pad + 1))
  left = int(rng.integers(0, 2 * cfg.pad + 1))
  erase = None
  if rng.random() < cfg.erasing_prob:
    # torchreid RandomErasing: up to 100 attempts at a rectangle that fits.
    lo, hi = cfg.erasing_area
    for _ in range(100):
      area = rng.uniform(lo, hi) * h * w
      aspect = rng.uniform(cfg.erasing_aspect, 1.0 / cfg.erasing_aspect)
      eh = int(round(math.sqrt(area * aspect)))
      ew = int(round(math.sqrt(area / aspect)))
      if ew < w and eh < h:
        erase = (int(rng.integers(0, h - eh + 1)),
                 int(rng.integers(0, w - ew + 1)), eh, ew)
        break
  return Geometry(flip=flip, top=top, left=left, erase=erase)


def flip_and_crop(image: np.ndarray, geom: Geometry, pad: int) -> np.ndarray:
  """Flip, zero-pad by `pad` and crop back at (top, left); any dtype, HxWxC."""
  h, w = image.shape[:2]
  x = image[:, ::-1] if geom.flip else image
  # Padding then cropping at (top, left) shifts the image by (top - pad,
  # left - pad) and fills what is uncovered with zeros.
  dy, dx = geom.top - pad, geom.left - pad
  if dy or dx:
    shifted = np.zeros(image.shape, image.dtype)
    shifted[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = (
        x[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)])
    return shifted
  return np.ascontiguousarray(x)


def erase(image: np.ndarray, geom: Geometry) -> np.ndarray:
  """Zeroes the erased rectangle of a normalised image in place (0 = the mean)."""
  if geom.erase is not None:
    et, el, eh, ew = geom.erase
    image[et:et + eh, el:el + ew] = 0.0
  return image


def apply_geometry(image: np.ndarray, geom: Geometry,
                   cfg: TransformConfig) -> np.ndarray:
  """flip -> zero-pad -> crop -> normalise -> erase.

  `image` is the resized uint8 image or a float [0,1] one; the result is the
  normalised float32 image.
  """
  if image.shape != (cfg.height, cfg.width, 3):
    raise ValueError(f"expected a {cfg.height}x{cfg.width}x3 image, got "
                     f"{image.shape}")
  return erase(normalise(flip_and_crop(image, geom, cfg.pad), cfg), geom)


def augment(image: np.ndarray, rng: np.random.Generator, cfg: TransformConfig,
            target_fn=None, target_image: np.ndarray | None = None):
  """The per-sample, unnormalised part of `train_transform`.

  Returns `(image, target, geometry)`: the resized, flipped and cropped uint8
  image; the target treated alike (float [0,1] from `target_fn`, uint8 from
  `target_image`) or None; and the geometry, whose erasing is still to apply
  after normalisation (see `train_transform`).
  """
  x = resize(image, cfg.height, cfg.width)
  t = None
  per_read = getattr(target_fn, "per_read", False)
  if target_fn is not None and not per_read:
    t = np.asarray(target_fn(to_unit(x)), np.float32)
  elif target_image is not None:
    t = resize(target_image, cfg.height, cfg.width)
  geom = sample_geometry(rng, cfg)
  if per_read:      # drawn after the geometry, so other targets' draws are unchanged
    t = np.asarray(target_fn(to_unit(x), rng), np.float32)
  if target_fn is not None and t.shape != x.shape:
    raise ValueError(f"target function returned shape {t.shape}, expected {x.shape}")
  return (flip_and_crop(x, geom, cfg.pad),
          None if t is None else flip_and_crop(t, geom, cfg.pad), geom)


def train_transform(image: np.ndarray, rng: np.random.Generator,
                    cfg: TransformConfig, target_fn=None,
                    target_image: np.ndarray | None = None):
  """One training sample: uint8 image (any size) -> normalised float32 HxWx3.

  Returns `(image, target)`; `target` is None unless `target_fn` (applied to
  the resized float [0,1] image, before augmentation) or `target_image` (a
  uint8 image, resized like the image) is given, in which case it gets the
  same geometry and normalisation as the image.
  """
  x, t, geom = augment(image, rng, cfg, target_fn, target_image)
  x = erase(normalise(x, cfg), geom)
  return x, (None if t is None else erase(normalise(t, cfg), geom))


def eval_transform(image: np.ndarray, cfg: TransformConfig) -> np.ndarray:
  """Resize + normalise, no augmentation."""
  return normalise(resize(image, cfg.height, cfg.width), cfg)
