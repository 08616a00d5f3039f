"""Tests for privreid_jax.ops.image_metrics against an independent NumPy SSIM/PSNR."""

import jax
import numpy as np
import pytest
from scipy import signal

from privreid_jax.ops import image_metrics as im


def _window():
  x = np.arange(11) - 5.0
  g = np.exp(-x**2 / (2 * 1.5**2))
  g /= g.sum()
  return np.outer(g, g)


def _ssim_ref(a, b, max_val=1.0, mode="valid"):
  """Wang et al. 2004 in float64, one [H, W, C] pair, channels averaged."""
  c1, c2 = (0.01 * max_val)**2, (0.03 * max_val)**2
  win = _window()
  values = []
  for c in range(a.shape[-1]):
    x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)
    f = lambda z: signal.convolve2d(z, win, mode=mode)
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    values.append(smap)
  return float(np.mean(values))


def _pairs(seed=0, shape=(3, 24, 20, 3)):
  rng = np.random.default_rng(seed)
  a = rng.uniform(0, 1, shape)
  a = 0.5 * a + 0.5 * np.cumsum(a, axis=1) / np.arange(1, shape[1] + 1)[:, None, None]
  b = np.clip(a + rng.normal(0, 0.1, shape), 0, 1)
  b[1] = a[1][::-1]  # structurally different
  b[2] = 0.7 * a[2] + 0.1  # contrast and luminance change
  return a.astype(np.float32), b.astype(np.float32)


@pytest.mark.parametrize("mode,padding", [("valid", "valid"), ("same", "same_zero")])
def test_ssim_matches_numpy_reference(mode, padding):
  a, b = _pairs()
  got = np.asarray(im.ssim(a, b, padding=padding))
  assert got.shape == (3,)
  want = [_ssim_ref(a[k], b[k], mode=mode) for k in range(3)]
  np.testing.assert_allclose(got, want, atol=2e-5)
  assert len(set(np.round(want, 3))) == 3  # the three pairs really differ


def test_ssim_respects_max_val():
  a, b = _pairs(1)
  got = np.asarray(im.ssim(255.0 * a, 255.0 * b, max_val=255.0))
  np.testing.assert_allclose(got, np.asarray(im.ssim(a, b)), atol=2e-5)
  assert abs(float(im.ssim(a[0], b[0], max_val=255.0)) - _ssim_ref(a[0], b[0], 255.0)) < 2e-5


def test_identical_images_give_ssim_one_and_psnr_inf():
  a, _ = _pairs(2)
  np.testing.assert_allclose(np.asarray(im.ssim(a, a)), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(im.ssim(a, a, padding="same_zero")), 1.0, atol=1e-5)
  assert np.all(np.isposinf(np.asarray(im.psnr(a, a))))


def test_psnr_of_known_error():
  a = np.full((2, 16, 16, 3), 0.5, np.float32)
  signs = np.where(np.random.default_rng(3).uniform(size=a.shape) < 0.5, -1.0, 1.0)
  b = a + np.float32(0.1) * signs * np.array([1.0, 0.01], np.float32)[:, None, None, None]
  got = np.asarray(im.psnr(a, b))  # MSE 1e-2 and 1e-6 -> 20 dB and 60 dB
  np.testing.assert_allclose(got, [20.0, 60.0], atol=1e-3)
  np.testing.assert_allclose(np.asarray(im.psnr(255 * a, 255 * b, max_val=255.0)), got,
                             atol=1e-3)
  assert np.asarray(im.psnr(a[0], b[0])).shape == ()


def test_psnr_of_gaussian_noise_matches_its_variance():
  rng = np.random.default_rng(4)
  a = rng.uniform(0.3, 0.7, (1, 64, 64, 3)).astype(np.float32)
  b = a + rng.normal(0, 0.05, a.shape).astype(np.float32)
  assert float(im.psnr(a, b)[0]) == pytest.approx(10 * np.log10(1 / 0.05**2), abs=0.1)


def test_metrics_jit():
  a, b = _pairs(5)
  fn = jax.jit(lambda x, y: (im.psnr(x, y), im.ssim(x, y)))
  p, s = fn(a, b)
  np.testing.assert_allclose(np.asarray(p), np.asarray(im.psnr(a, b)), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(s), np.asarray(im.ssim(a, b)), atol=1e-6)


@pytest.mark.parametrize("call,match", [
    (lambda: im.psnr(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 9, 3))), "differ in shape"),
    (lambda: im.ssim(np.zeros((8, 8)), np.zeros((8, 8))), r"expected images \[B, H, W, C\]"),
    (lambda: im.ssim(np.zeros((1, 10, 16, 3)), np.zeros((1, 10, 16, 3))), "smaller than"),
    (lambda: im.ssim(np.zeros((1, 16, 16, 3)), np.zeros((1, 16, 16, 3)), padding="same"),
     "unknown padding 'same'"),
])
def test_bad_input_is_a_clear_error(call, match):
  with pytest.raises(ValueError, match=match):
    call()
