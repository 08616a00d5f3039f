"""Conventional desensitization: mosaic, Gaussian blur, Gaussian noise (docs/method_a.md).

These give method A its initial supervision M for the anonymizer G. Everything works
on float images in [0, 1] pixel space (before mean/std normalisation):

* JAX, batched, jittable: `mosaic`, `gaussian_blur`, `gaussian_noise` and the
  dispatcher `desensitize` take images [B, H, W, C]. Size arguments (`block`,
  `fill`, `sigma`, `kernel_size`, `pad_mode`) must be static Python values; under
  `jax.jit` bind them with `functools.partial` or `static_argnames`.
* NumPy, one image at a time, for the host-side data pipeline (no JAX needed, so
  it runs in grain worker processes): `make_target_fn(method, seed, **params)`
  returns `f(image HxWxC float32, key=0) -> image`. Both paths share the same
  linear operators and agree to float32 rounding.

Choices, compared with the reference code (PIL on 8-bit images):

* mosaic: `fill="top_left"` paints each block with its top-left pixel, as the
  reference; `fill="mean"` uses the block mean. Blocks start at the top-left
  corner; partial blocks at the bottom/right border are filled from their own
  pixels only.
* blur: a true Gaussian, truncated at radius ceil(3 * sigma) (kernel 73 taps for
  sigma 12), separable, with edge-replicated borders by default (`pad_mode`
  "edge" | "reflect" | "symmetric"), so a constant image stays constant. PIL's
  GaussianBlur(radius=sigma) approximates the same Gaussian by three box blurs
  and also replicates edges. `dm_pix.gaussian_blur` was not used: its "SAME"
  padding is zeros, which darkens the borders of a 24-px-sigma blur. Each 1-D pass
  is a product with a small dense (n, n) matrix, which also runs fast on CPU.
* noise: i.i.d. N(0, std^2) per pixel and channel, added then clipped to [0, 1].
  The reference draws fresh noise on every read and quantises to uint8; here
  the result stays float. On the host path the noise is a pure function of
  `(seed, key)`: pass the record index as `key` for fixed targets, or
  `(epoch, index)` for fresh noise each epoch.

Scale: the paper's parameters (24-px blocks, sigma 12) are for 256x128 images.
Configs for smaller images call `scale_params(method, params, height)`, which
scales block size and sigma by height / 256 (128x64: block 12, sigma 6; 32x16:
block 3, sigma 1.5); the noise std is per pixel and does not scale.
"""

from __future__ import annotations

import functools
import math
import zlib
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ("mosaic", "blur", "noise", "none")
FILLS = ("top_left", "mean")
PAD_MODES = ("edge", "reflect", "symmetric")
PAPER_HEIGHT = 256
# Paper-scale defaults (256x128 images) of every method's parameters.
DEFAULTS: dict[str, dict[str, Any]] = {
    "mosaic": {"block": 24, "fill": "top_left"},
    "blur": {"sigma": 12.0, "kernel_size": None, "pad_mode": "edge"},
    "noise": {"std": 0.5},
    "none": {},
}

_HIGHEST = jax.lax.Precision.HIGHEST


# --- parameter handling -------------------------------------------------------


def _check_method(method: str) -> None:
  if method not in METHODS:
    raise ValueError(f"desensitize: unknown method {method!r} (expected one of {METHODS})")


def resolve_params(method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Returns the method's defaults updated by `params`; unknown keys are an error."""
  _check_method(method)
  params = dict(params or {})
  unknown = sorted(set(params) - set(DEFAULTS[method]))
  if unknown:
    raise ValueError(f"desensitize: method {method!r} takes {sorted(DEFAULTS[method])}, "
                     f"got unknown parameter(s) {unknown}")
  return {**DEFAULTS[method], **params}


def config_params(method: str, section, height: int) -> dict[str, Any]:
  """`method`'s parameters at an image height from a config section holding the
  paper-scale mosaic_block, mosaic_fill, blur_sigma and noise_std (config.anon,
  config.dual)."""
  paper = {"mosaic": {"block": int(section.mosaic_block), "fill": section.mosaic_fill},
           "blur": {"sigma": float(section.blur_sigma)},
           "noise": {"std": float(section.noise_std)}}[method]
  return scale_params(method, paper, int(height))


def scale_params(method: str, params: Mapping[str, Any] | None, height: int,
                 reference_height: int = PAPER_HEIGHT) -> dict[str, Any]:
  """Scales paper-scale parameters to images of `height` rows.

  Args:
    method: "mosaic" | "blur" | "noise" | "none".
    params: parameters at the reference scale (missing ones take `DEFAULTS`).
    height: image height the parameters are for.
    reference_height: height the given parameters were chosen for (256).

  Returns:
    All of the method's parameters: `block` rounded (at least 1), `sigma` and an
    explicit `kernel_size` (kept odd) scaled by height / reference_height; the
    others unchanged.
  """
  if height < 1 or reference_height < 1:
    raise ValueError(f"scale_params: height {height} and reference_height "
                     f"{reference_height} must be positive")
  out = resolve_params(method, params)
  ratio = height / reference_height
  if method == "mosaic":
    out["block"] = max(1, int(round(out["block"] * ratio)))
  elif method == "blur":
    out["sigma"] = float(out["sigma"]) * ratio
    if out["kernel_size"] is not None:
      radius = max(0, int(round((out["kernel_size"] - 1) / 2 * ratio)))
      out["kernel_size"] = 2 * radius + 1
  return out


def _check_block(block: Any) -> int:
  if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
    raise ValueError(f"mosaic: block must be a positive int, got {block!r}")
  return int(block)


def _check_fill(fill: str) -> None:
  if fill not in FILLS:
    raise ValueError(f"mosaic: unknown fill {fill!r} (expected one of {FILLS})")


def _blur_radius(sigma: float, kernel_size: int | None) -> int:
  if not float(sigma) > 0.0:
    raise ValueError(f"gaussian_blur: sigma must be > 0, got {sigma!r}")
  if kernel_size is None:
    return int(math.ceil(3.0 * float(sigma)))
  if (isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer))
      or kernel_size < 1 or kernel_size % 2 == 0):
    raise ValueError(f"gaussian_blur: kernel_size must be a positive odd int or None, "
                     f"got {kernel_size!r}")
  return (int(kernel_size) - 1) // 2


# --- the linear operators (NumPy, cached per size) ------------------------------


@functools.lru_cache(maxsize=64)
def _block_starts(n: int, block: int) -> np.ndarray:
  """Index of the first pixel of the block each of n pixels belongs to."""
  return (np.arange(n) // block) * block


@functools.lru_cache(maxsize=64)
def _block_mean_matrix(n: int, block: int) -> np.ndarray:
  """(n, n) matrix averaging each pixel's block (partial border blocks included)."""
  ids = np.arange(n) // block
  same = (ids[:, None] == ids[None, :]).astype(np.float64)
  return (same / same.sum(axis=1, keepdims=True)).astype(np.float32)


def _fold_indices(idx: np.ndarray, n: int, pad_mode: str) -> np.ndarray:
  """Maps out-of-range indices back into [0, n) as numpy.pad's modes do."""
  if pad_mode == "edge" or n == 1:
    return np.clip(idx, 0, n - 1)
  if pad_mode == "reflect":  # ... 2 1 | 0 1 2 ... (edge not repeated)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)
  if pad_mode == "symmetric":  # ... 1 0 | 0 1 2 ... (edge repeated)
    period = 2 * n
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - 1 - idx, idx)
  raise ValueError(f"gaussian_blur: unknown pad_mode {pad_mode!r} (expected one of {PAD_MODES})")


@functools.lru_cache(maxsize=64)
def _blur_matrix(n: int, sigma: float, radius: int, pad_mode: str) -> np.ndarray:
  """(n, n) matrix of a 1-D Gaussian blur with the border folded in."""
  taps = np.arange(-radius, radius + 1)
  weights = np.exp(-0.5 * (taps / sigma) ** 2)
  weights /= weights.sum()
  rows = np.repeat(np.arange(n), taps.size)
  cols = _fold_indices(np.arange(n)[:, None] + taps[None, :], n, pad_mode).ravel()
  mat = np.zeros((n, n), np.float64)
  np.add.at(mat, (rows, cols), np.tile(weights, n))
  return mat.astype(np.float32)


def _separable_jax(images: jax.Array, rows: np.ndarray, cols: np.ndarray) -> jax.Array:
  """rows @ image @ cols.T per image and channel, in float32."""
  x = jnp.einsum("ij,bjwc->biwc", jnp.asarray(rows), images, precision=_HIGHEST)
  return jnp.einsum("kw,bhwc->bhkc", jnp.asarray(cols), x, precision=_HIGHEST)


def _separable_np(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
  x = np.einsum("ij,jwc->iwc", rows, image, optimize=True)
  return np.einsum("kw,hwc->hkc", cols, x, optimize=True).astype(np.float32)


# --- JAX, batched ----------------------------------------------------------------


def _as_batch(images: Any, fn: str) -> jax.Array:
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"{fn}: expected images [B, H, W, C], got shape {images.shape}")
  return images.astype(jnp.float32)


def mosaic(images: jax.Array, block: int = 24, fill: str = "top_left") -> jax.Array:
  """Pixelates [B, H, W, C] images into `block` x `block` squares.

  Args:
    images: float images in [0, 1].
    block: block side in pixels (static).
    fill: "top_left" (each block takes its top-left pixel, as the reference
      code) or "mean" (the block's mean colour).

  Returns:
    float32 images of the same shape.
  """
  block = _check_block(block)
  _check_fill(fill)
  x = _as_batch(images, "mosaic")
  _, h, w, _ = x.shape
  if fill == "top_left":
    x = jnp.take(x, jnp.asarray(_block_starts(h, block)), axis=1)
    return jnp.take(x, jnp.asarray(_block_starts(w, block)), axis=2)
  return _separable_jax(x, _block_mean_matrix(h, block), _block_mean_matrix(w, block))


def gaussian_blur(images: jax.Array, sigma: float = 12.0, kernel_size: int | None = None,
                  pad_mode: str = "edge") -> jax.Array:
  """Separable Gaussian blur of [B, H, W, C] images.

  Args:
    images: float images in [0, 1].
    sigma: standard deviation in pixels (static).
    kernel_size: odd number of taps; None takes 2 * ceil(3 * sigma) + 1.
    pad_mode: border handling, "edge" (default, as PIL), "reflect" or "symmetric"
      (numpy.pad's meanings). Never zeros, so a constant image stays constant.

  Returns:
    float32 images of the same shape.
  """
  radius = _blur_radius(sigma, kernel_size)
  x = _as_batch(images, "gaussian_blur")
  _, h, w, _ = x.shape
  return _separable_jax(x, _blur_matrix(h, float(sigma), radius, pad_mode),
                        _blur_matrix(w, float(sigma), radius, pad_mode))


def gaussian_noise(images: jax.Array, rng: jax.Array, std: float = 0.5) -> jax.Array:
  """Adds i.i.d. N(0, std^2) noise per pixel and channel, then clips to [0, 1]."""
  x = _as_batch(images, "gaussian_noise")
  noise = jax.random.normal(rng, x.shape, jnp.float32)
  return jnp.clip(x + std * noise, 0.0, 1.0)


def desensitize(images: jax.Array, method: str, rng: jax.Array | None = None,
                **params: Any) -> jax.Array:
  """Applies `method` ("mosaic" | "blur" | "noise" | "none") to [B, H, W, C] images.

  `params` are the method's keyword arguments (see `DEFAULTS`); unknown ones are
  an error. "noise" needs `rng`. "none" returns the images as float32.
  """
  params = resolve_params(method, params)
  if method == "mosaic":
    return mosaic(images, **params)
  if method == "blur":
    return gaussian_blur(images, **params)
  if method == "noise":
    if rng is None:
      raise ValueError("desensitize: method 'noise' needs an rng key")
    return gaussian_noise(images, rng, **params)
  return _as_batch(images, "desensitize")


def content_keys(images: jax.Array, rng: jax.Array) -> jax.Array:
  """One key per image of [B, H, W, C] images in [0, 1], from its 8-bit content:
  the same image gets the same key wherever it sits in whichever batch."""
  q = jnp.round(jnp.clip(images, 0.0, 1.0) * 255.0).astype(jnp.uint32)
  q = q.reshape(q.shape[0], -1)
  weights = jnp.arange(q.shape[1], dtype=jnp.uint32) * jnp.uint32(0x9E3779B1) + 1
  h = jnp.sum(q * weights, axis=1, dtype=jnp.uint32)      # wraps modulo 2^32
  h = (h ^ (h >> 15)) * jnp.uint32(0x85EBCA6B)
  return jax.vmap(lambda x: jax.random.fold_in(rng, x))(h)


def desensitize_per_image(images: jax.Array, method: str, rng: jax.Array | None = None,
                          **params: Any) -> jax.Array:
  """`desensitize`, with every image's noise drawn from its own content key
  (`content_keys`): two images never share a noise field because they share a
  batch position, and an image's noise does not depend on its batch."""
  if method != "noise":
    return desensitize(images, method, rng, **params)
  if rng is None:
    raise ValueError("desensitize_per_image: method 'noise' needs an rng key")
  images = _as_batch(images, "desensitize_per_image")
  keys = content_keys(images, rng)
  return jax.vmap(lambda x, k: desensitize(x[None], method, k, **params)[0])(images, keys)


# --- NumPy, one image, for the host-side pipeline --------------------------------


def _noise_key(seed: int, key: int | Sequence[int]) -> list[int]:
  parts = [seed] + ([key] if np.ndim(key) == 0 else list(key))
  if any(int(p) != p or p < 0 for p in parts):
    raise ValueError(f"make_target_fn: seed and key must be non-negative ints, "
                     f"got seed={seed!r} key={key!r}")
  return [int(p) for p in parts]


def make_target_fn(method: str, seed: int = 0,
                   **params: Any) -> Callable[..., np.ndarray]:
  """Returns a NumPy desensitizer for single images, for the data pipeline.

  Args:
    method: "mosaic" | "blur" | "noise" | "none".
    seed: noise seed (only "noise" uses it).
    **params: the method's parameters (see `DEFAULTS`), at the image's scale.

  Returns:
    `f(image, key=0) -> image`: image is HxWxC float in [0, 1]; the result is
    float32 of the same shape. For "noise" the draw depends only on
    `(seed, key)`, where key is a non-negative int or a sequence of them (e.g.
    the record index, or `(epoch, index)` for fresh noise every epoch).
  """
  params = resolve_params(method, params)
  if method == "mosaic":
    block = _check_block(params["block"])
    _check_fill(params["fill"])
  elif method == "blur":
    radius = _blur_radius(params["sigma"], params["kernel_size"])
    if params["pad_mode"] not in PAD_MODES:
      raise ValueError(f"gaussian_blur: unknown pad_mode {params['pad_mode']!r} "
                       f"(expected one of {PAD_MODES})")
  _noise_key(seed, 0)

  def target(image: np.ndarray, key: int | Sequence[int] = 0) -> np.ndarray:
    image = np.asarray(image, np.float32)
    if image.ndim != 3:
      raise ValueError(f"desensitize ({method}): expected one image [H, W, C], "
                       f"got shape {image.shape}")
    h, w, _ = image.shape
    if method == "mosaic":
      if params["fill"] == "top_left":
        return image[_block_starts(h, block)][:, _block_starts(w, block)]
      return _separable_np(image, _block_mean_matrix(h, block), _block_mean_matrix(w, block))
    if method == "blur":
      sigma, mode = float(params["sigma"]), params["pad_mode"]
      return _separable_np(image, _blur_matrix(h, sigma, radius, mode),
                           _blur_matrix(w, sigma, radius, mode))
    if method == "noise":
      gen = np.random.default_rng(_noise_key(seed, key))
      noise = gen.standard_normal(image.shape, dtype=np.float32)
      return np.clip(image + np.float32(params["std"]) * noise, 0.0, 1.0)
    return image.copy()

  return target


class TargetFunction:
  """Picklable f(image01 HxWx3[, rng]) -> desensitized image01 for the pipeline's paired mode.

  Built lazily in each grain worker. `method="none"` returns the image itself.

  Noise: with `fresh=False` it is keyed by a CRC32 of the image's bytes, so
  every image gets its own noise, the same every epoch and in every worker;
  with `fresh=True` (the reference code's behaviour: new noise on every read)
  the pipeline passes the sample's seeded generator (`per_read`), so a resumed
  run still draws the same noise. `quantize=True` rounds the target to 8-bit
  levels, as the reference code's targets are uint8 images.
  """

  def __init__(self, method: str, params: Mapping[str, Any], seed: int,
               fresh: bool = False, quantize: bool = False):
    self.method, self.params, self.seed = method, dict(params), int(seed)
    self.fresh, self.quantize = bool(fresh), bool(quantize)
    self._fn = None

  @property
  def per_read(self) -> bool:
    """True when the target needs the sample's generator (fresh noise)."""
    return self.fresh and self.method == "noise"

  def __getstate__(self):
    return {**self.__dict__, "_fn": None}

  def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None
               ) -> np.ndarray:
    if self._fn is None:
      self._fn = make_target_fn(self.method, self.seed, **self.params)
    image = np.ascontiguousarray(image, np.float32)
    if self.method != "noise":
      key = 0
    elif self.per_read:
      if rng is None:
        raise ValueError("TargetFunction(fresh=True): noise needs the sample's generator")
      key = int(rng.integers(0, 2**31 - 1))
    else:
      key = zlib.crc32(image.tobytes())
    out = self._fn(image, key)
    if self.quantize:
      out = np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.float32) / 255.0
    return out
