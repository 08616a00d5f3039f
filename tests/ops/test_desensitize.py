"""Tests for privreid_jax.ops.desensitize."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from privreid_jax.ops import desensitize as ds


def _images(seed=0, shape=(2, 10, 7, 3)):
  return np.random.default_rng(seed).uniform(0.0, 1.0, shape).astype(np.float32)


def _mosaic_loops(image, block, fill):
  """Independent reference: paint each block, as the PIL loop of the reference code."""
  out = np.empty_like(image)
  h, w, _ = image.shape
  for i in range(0, h, block):
    for j in range(0, w, block):
      patch = image[i:i + block, j:j + block]
      out[i:i + block, j:j + block] = image[i, j] if fill == "top_left" else patch.mean((0, 1))
  return out


@pytest.mark.parametrize("fill", ["top_left", "mean"])
@pytest.mark.parametrize("block", [1, 3, 4, 24])
def test_mosaic_matches_block_loop_with_partial_blocks(fill, block):
  images = _images()  # 10x7: partial blocks at the bottom and right for 3 and 4
  out = np.asarray(ds.mosaic(images, block=block, fill=fill))
  for k in range(images.shape[0]):
    np.testing.assert_allclose(out[k], _mosaic_loops(images[k], block, fill), atol=1e-6)


def test_mosaic_is_constant_within_blocks_and_changes_the_image():
  images = _images(1, (1, 12, 8, 3))
  out = np.asarray(ds.mosaic(images, block=4))
  blocks = out.reshape(1, 3, 4, 2, 4, 3)
  assert np.all(blocks == blocks[:, :, :1, :, :1, :])
  np.testing.assert_array_equal(out[0, 4:8, 0:4], np.broadcast_to(images[0, 4, 0], (4, 4, 3)))
  assert np.abs(out - images).max() > 0.1


@pytest.mark.parametrize("method,params", [
    ("mosaic", {"block": 3, "fill": "top_left"}), ("mosaic", {"block": 3, "fill": "mean"}),
    ("blur", {"sigma": 2.0}), ("blur", {"sigma": 12.0, "pad_mode": "reflect"}),
    ("blur", {"sigma": 5.0, "pad_mode": "symmetric"})])
def test_constant_image_stays_constant(method, params):
  images = np.full((2, 9, 6, 3), 0.3, np.float32)
  images[1] = 0.8
  out = np.asarray(ds.desensitize(images, method, **params))
  np.testing.assert_allclose(out, images, atol=1e-5)


@pytest.mark.parametrize("pad_mode,scipy_mode", [("edge", "nearest"), ("reflect", "mirror"),
                                                 ("symmetric", "reflect")])
def test_blur_matches_scipy_gaussian_filter(pad_mode, scipy_mode):
  images = _images(2, (2, 16, 12, 3))
  sigma = 1.5  # kernel 2 * ceil(4.5) + 1 = 11 taps, scipy's int(3 * 1.5 + 0.5) = 5 radius
  out = np.asarray(ds.gaussian_blur(images, sigma=sigma, pad_mode=pad_mode))
  ref = ndimage.gaussian_filter(images.astype(np.float64), sigma=(0, sigma, sigma, 0),
                                mode=scipy_mode, truncate=3.0)
  np.testing.assert_allclose(out, ref, atol=2e-6)


def test_blur_kernel_size_truncates_the_gaussian():
  images = _images(3, (1, 20, 20, 1))
  out = np.asarray(ds.gaussian_blur(images, sigma=4.0, kernel_size=5))
  ref = ndimage.gaussian_filter(images.astype(np.float64), sigma=(0, 4.0, 4.0, 0),
                                mode="nearest", radius=(0, 2, 2, 0))
  np.testing.assert_allclose(out, ref, atol=2e-6)


def test_blur_kills_high_frequencies_and_keeps_the_mean():
  h, w = 32, 16
  checker = ((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2).astype(np.float32)
  images = np.repeat(checker[None, :, :, None], 3, axis=-1)
  out = np.asarray(ds.gaussian_blur(images, sigma=1.5, pad_mode="reflect"))
  assert images.var() > 1e4 * out.var()
  assert abs(out.mean() - images.mean()) < 1e-3
  out = np.asarray(ds.gaussian_blur(images, sigma=1.5))  # edge: borders see stripes
  assert images.var() > 1e4 * out[:, 5:-5, 5:-5].var()
  smooth = 0.5 + 0.3 * np.sin(2 * np.pi * np.arange(h) / h)[None, :, None, None]
  smooth = np.broadcast_to(smooth, (1, h, w, 3)).astype(np.float32)
  out = np.asarray(ds.gaussian_blur(smooth, sigma=1.5, pad_mode="reflect"))
  assert abs(out.mean() - smooth.mean()) < 5e-3
  assert out.std() > 0.8 * smooth.std()  # low frequencies pass


def test_noise_statistics_and_clipping():
  grey = np.full((4, 32, 32, 3), 0.5, np.float32)
  out = np.asarray(ds.gaussian_noise(grey, jax.random.key(0), std=0.1))
  added = out - grey  # clipping at |z| > 5 sigma: practically never
  assert abs(added.mean()) < 0.003
  assert abs(added.std() - 0.1) < 0.003
  out = np.asarray(ds.desensitize(grey, "noise", rng=jax.random.key(1)))  # std 0.5
  assert out.min() == 0.0 and out.max() == 1.0
  # P(0.5 + 0.5 z >= 1) = P(z >= 1) = 0.1587 for each end.
  assert abs((out == 1.0).mean() - 0.1587) < 0.01
  assert abs((out == 0.0).mean() - 0.1587) < 0.01


def test_noise_depends_on_rng_only():
  images = _images(4)
  a = ds.gaussian_noise(images, jax.random.key(5), std=0.2)
  b = ds.gaussian_noise(images, jax.random.key(5), std=0.2)
  c = ds.gaussian_noise(images, jax.random.key(6), std=0.2)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 0.1


@pytest.mark.parametrize("method,params", [("mosaic", {"block": 4, "fill": "mean"}),
                                           ("mosaic", {"block": 5}), ("blur", {"sigma": 2.0}),
                                           ("none", {})])
def test_jit_and_batch_match_per_image_calls(method, params):
  images = _images(5, (3, 12, 10, 3))
  jitted = jax.jit(functools.partial(ds.desensitize, method=method, **params))
  out = np.asarray(jitted(jnp.asarray(images)))
  for k in range(3):
    single = np.asarray(ds.desensitize(images[k:k + 1], method, **params))
    np.testing.assert_allclose(out[k:k + 1], single, atol=1e-6)
  assert out.dtype == np.float32 and out.shape == images.shape


def test_jit_noise_with_traced_std():
  images = jnp.full((1, 8, 8, 3), 0.5)
  fn = jax.jit(lambda x, rng, std: ds.gaussian_noise(x, rng, std))
  small = np.asarray(fn(images, jax.random.key(0), 0.01))
  large = np.asarray(fn(images, jax.random.key(0), 0.2))
  assert np.abs(small - 0.5).max() < 0.06 < np.abs(large - 0.5).max()


@pytest.mark.parametrize("method,params", [("mosaic", {"block": 3}),
                                           ("mosaic", {"block": 4, "fill": "mean"}),
                                           ("blur", {"sigma": 1.5}),
                                           ("blur", {"sigma": 3.0, "pad_mode": "reflect"}),
                                           ("none", {})])
def test_numpy_target_fn_matches_jax(method, params):
  images = _images(6, (2, 14, 9, 3))
  fn = ds.make_target_fn(method, **params)
  want = np.asarray(ds.desensitize(images, method, **params))
  for k in range(2):
    got = fn(images[k])
    assert got.dtype == np.float32 and got.shape == images[k].shape
    np.testing.assert_allclose(got, want[k], atol=1e-5)


def test_numpy_noise_is_deterministic_given_seed_and_key():
  image = np.full((64, 32, 3), 0.5, np.float32)
  fn = ds.make_target_fn("noise", seed=3, std=0.1)
  a, b = fn(image, key=7), fn(image, key=7)
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - fn(image, key=8)).max() > 0.1
  assert np.abs(a - fn(image, key=(1, 7))).max() > 0.1
  assert np.abs(a - ds.make_target_fn("noise", seed=4, std=0.1)(image, key=7)).max() > 0.1
  assert abs((a - image).std() - 0.1) < 0.01
  clipped = ds.make_target_fn("noise", seed=3)(image, key=0)  # std 0.5
  assert clipped.min() == 0.0 and clipped.max() == 1.0


def test_scale_params_follows_image_height():
  assert ds.scale_params("mosaic", {}, 256) == {"block": 24, "fill": "top_left"}
  assert ds.scale_params("mosaic", {"fill": "mean"}, 128) == {"block": 12, "fill": "mean"}
  assert ds.scale_params("mosaic", None, 32)["block"] == 3
  assert ds.scale_params("mosaic", {"block": 24}, 4)["block"] == 1
  assert ds.scale_params("blur", {}, 128)["sigma"] == pytest.approx(6.0)
  assert ds.scale_params("blur", {}, 32)["sigma"] == pytest.approx(1.5)
  assert ds.scale_params("blur", {"kernel_size": 73}, 128)["kernel_size"] == 37
  assert ds.scale_params("noise", {"std": 0.5}, 32) == {"std": 0.5}


@pytest.mark.parametrize("call,match", [
    (lambda x: ds.desensitize(x, "pixelate"), "unknown method 'pixelate'"),
    (lambda x: ds.desensitize(x, "mosaic", sigma=2.0), "unknown parameter.*sigma"),
    (lambda x: ds.desensitize(x, "noise"), "needs an rng"),
    (lambda x: ds.mosaic(x, block=0), "block must be a positive int"),
    (lambda x: ds.mosaic(x, fill="median"), "unknown fill 'median'"),
    (lambda x: ds.gaussian_blur(x, sigma=0.0), "sigma must be > 0"),
    (lambda x: ds.gaussian_blur(x, sigma=1.0, kernel_size=4), "kernel_size must be"),
    (lambda x: ds.gaussian_blur(x, sigma=1.0, pad_mode="zeros"), "unknown pad_mode 'zeros'"),
    (lambda x: ds.mosaic(x[0], block=2), r"expected images \[B, H, W, C\]"),
    (lambda x: ds.make_target_fn("blur", sigma=1.0)(x), r"expected one image \[H, W, C\]"),
    (lambda x: ds.make_target_fn("noise", seed=-1), "non-negative"),
    (lambda x: ds.scale_params("blur", {"block": 3}, 128), "unknown parameter.*block"),
])
def test_bad_input_is_a_clear_error(call, match):
  with pytest.raises(ValueError, match=match):
    call(_images())


def test_target_function_fresh_noise_uses_the_sample_generator_and_quantizes():
  image = np.full((16, 8, 3), 0.5, np.float32)
  fresh = ds.TargetFunction("noise", {"std": 0.1}, seed=0, fresh=True, quantize=True)
  assert fresh.per_read
  a = fresh(image, np.random.default_rng(1))
  np.testing.assert_array_equal(a, fresh(image, np.random.default_rng(1)))
  assert np.abs(a - fresh(image, np.random.default_rng(2))).max() > 0.05
  np.testing.assert_allclose(a * 255, np.round(a * 255), atol=1e-4)
  fixed = ds.TargetFunction("noise", {"std": 0.1}, seed=0)
  assert not fixed.per_read
  np.testing.assert_array_equal(fixed(image), fixed(image.copy()))
  # mosaic and blur need no generator even when `fresh` is set.
  assert not ds.TargetFunction("mosaic", {"block": 2}, seed=0, fresh=True).per_read
