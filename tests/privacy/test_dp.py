"""Tests for the DP gallery release (privreid_jax/privacy/dp.py)."""

import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from privreid_jax.privacy import dp


def _analytic_delta(epsilon: float, sigma: float, sensitivity: float) -> float:
  """Balle & Wang (2018) Thm. 8, written out independently of dp-accounting."""
  a = sensitivity / (2 * sigma)
  b = epsilon * sigma / sensitivity
  # Phi(a - b) - e^eps Phi(-a - b), the second term in log space.
  return stats.norm.cdf(a - b) - math.exp(epsilon + stats.norm.logcdf(-a - b))


@pytest.mark.parametrize("epsilon,delta,sensitivity", [
    (0.5, 1e-5, 2.0), (1.0, 1e-5, 2.0), (4.0, 1e-6, 2.0), (8.0, 1e-3, 1.0),
    (2.0, 1e-5, 0.5)])
def test_sigma_matches_dp_accounting_and_achieves_delta(epsilon, delta, sensitivity):
  sigma = dp.gaussian_sigma(epsilon, delta, sensitivity)
  expected = dp_accounting.get_sigma_gaussian(epsilon, delta) * sensitivity
  assert sigma == pytest.approx(expected, rel=1e-12)
  assert _analytic_delta(epsilon, sigma, sensitivity) == pytest.approx(delta, rel=1e-6)
  # Calibration is tight: 1% less noise breaks the guarantee.
  assert _analytic_delta(epsilon, 0.99 * sigma, sensitivity) > delta * 1.01


def test_sigma_decreases_with_epsilon_and_scales_with_sensitivity():
  eps_grid = [0.25, 1.0, 4.0, 16.0, 64.0, 256.0]
  sigmas = [dp.gaussian_sigma(e, 1e-5) for e in eps_grid]
  assert all(a > b for a, b in zip(sigmas, sigmas[1:]))
  assert dp.gaussian_sigma(3.0, 1e-5, 4.0) == pytest.approx(
      2 * dp.gaussian_sigma(3.0, 1e-5, 2.0), rel=1e-9)


@pytest.mark.parametrize("kwargs,word", [
    (dict(epsilon=0.0, delta=1e-5), "epsilon"),
    (dict(epsilon=-1.0, delta=1e-5), "epsilon"),
    (dict(epsilon=float("nan"), delta=1e-5), "epsilon"),
    (dict(epsilon=float("inf"), delta=1e-5), "epsilon"),
    (dict(epsilon=1.0, delta=0.0), "delta"),
    (dict(epsilon=1.0, delta=1.0), "delta"),
    (dict(epsilon=1.0, delta=1e-5, sensitivity=0.0), "sensitivity"),
])
def test_sigma_rejects_bad_arguments(kwargs, word):
  with pytest.raises(ValueError, match=word):
    dp.gaussian_sigma(**kwargs)


def test_composed_epsilon_single_release_and_growth():
  delta = 1e-5
  for epsilon in (1.0, 10.0, 100.0):
    sigma = dp.gaussian_sigma(epsilon, delta)
    assert dp.composed_epsilon(sigma, 2.0, delta, 1) == pytest.approx(epsilon, rel=1e-3)
    composed = [dp.composed_epsilon(sigma, 2.0, delta, k) for k in (1, 2, 5, 10)]
    assert all(a < b for a, b in zip(composed, composed[1:]))
    # Never better than one release, never worse than naive linear composition.
    assert composed[-1] <= 10 * epsilon


@pytest.mark.parametrize("epsilon,k", [(1.0, 4), (5.0, 10), (50.0, 3)])
def test_composed_epsilon_matches_gaussian_composition_identity(epsilon, k):
  # k Gaussian releases with multiplier m are exactly one with m / sqrt(k)
  # (Gaussian differential privacy, Dong, Roth & Su 2019); check the accountant
  # agrees and is not below it (it must be a valid upper bound).
  delta = 1e-5
  sigma = dp.gaussian_sigma(epsilon, delta)
  exact = dp_accounting.get_epsilon_gaussian(sigma / 2.0 / math.sqrt(k), delta)
  got = dp.composed_epsilon(sigma, 2.0, delta, k)
  assert got == pytest.approx(exact, rel=1e-3)
  assert got >= exact * (1 - 1e-9)


def test_composed_epsilon_rejects_bad_arguments():
  with pytest.raises(ValueError, match="k must"):
    dp.composed_epsilon(1.0, 2.0, 1e-5, 0)
  with pytest.raises(ValueError, match="k must"):
    dp.composed_epsilon(1.0, 2.0, 1e-5, 2.5)
  with pytest.raises(ValueError, match="sigma"):
    dp.composed_epsilon(0.0, 2.0, 1e-5, 1)
  with pytest.raises(ValueError, match="delta"):
    dp.composed_epsilon(1.0, 2.0, 2.0, 1)


def test_release_gallery_noise_statistics():
  n, d = 400, 128
  feats = jax.random.normal(jax.random.key(1), (n, d)) * 7.0  # not normalised
  epsilon, delta = 20.0, 1e-5
  sigma = dp.gaussian_sigma(epsilon, delta)
  out = dp.release_gallery(feats, dp.os_key(3), epsilon=epsilon, delta=delta)
  assert out.shape == (n, d) and out.dtype == jnp.float32
  normed = feats / jnp.linalg.norm(feats, axis=1, keepdims=True)
  noise = np.asarray(out - normed)
  # 51,200 samples: the empirical std is within ~1% of sigma, the mean near 0.
  assert noise.std() == pytest.approx(sigma, rel=0.02)
  assert abs(noise.mean()) < 4 * sigma / math.sqrt(noise.size)
  # Same key: same release; another key: another release.
  again = dp.release_gallery(feats, dp.os_key(3), epsilon=epsilon, delta=delta)
  other = dp.release_gallery(feats, dp.os_key(4), epsilon=epsilon, delta=delta)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(again))
  assert not np.allclose(np.asarray(out), np.asarray(other))


def test_release_gallery_rejects_bad_shape_and_draws_fresh_key():
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    dp.release_gallery(jnp.ones((2, 3, 4)), None, epsilon=1.0, delta=1e-5)
  feats = jnp.eye(4, 16)
  a = dp.release_gallery(feats, None, epsilon=1.0, delta=1e-5)
  b = dp.release_gallery(feats, None, epsilon=1.0, delta=1e-5)
  assert not np.allclose(np.asarray(a), np.asarray(b))


def test_os_key_differs_between_calls_and_seed_path_is_deterministic():
  k1, k2 = dp.os_key(), dp.os_key()
  assert not np.array_equal(jax.random.key_data(k1), jax.random.key_data(k2))
  assert jax.random.normal(k1, ()) != jax.random.normal(k2, ())
  np.testing.assert_array_equal(jax.random.key_data(dp.os_key(7)),
                                jax.random.key_data(jax.random.key(7)))


def _rank1(query, qpid, gallery, gpid):
  g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
  return float(np.mean(gpid[np.argmax(query @ g.T, axis=1)] == qpid))


def test_rank1_falls_monotonically_as_epsilon_falls():
  rng = np.random.default_rng(0)
  num_ids, dim = 100, 64
  centres = rng.normal(size=(num_ids, dim))
  centres /= np.linalg.norm(centres, axis=1, keepdims=True)

  def draw(per_id):
    x = np.repeat(centres, per_id, 0) + 0.08 * rng.normal(size=(num_ids * per_id, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(np.arange(num_ids),
                                                                    per_id)

  query, qpid = draw(1)
  gallery, gpid = draw(2)
  clean = _rank1(query, qpid, gallery, gpid)
  assert clean == 1.0
  ranks = []
  for epsilon in (1000.0, 100.0, 30.0, 10.0, 3.0):
    draws = [_rank1(query, qpid, np.asarray(dp.release_gallery(
        gallery, dp.os_key(seed), epsilon=epsilon, delta=1e-5)), gpid)
             for seed in range(5)]
    ranks.append(np.mean(draws))
  assert all(a > b for a, b in zip(ranks, ranks[1:])), ranks
  assert ranks[0] > 0.95 and ranks[-1] < 0.1, ranks


def test_sigma_float32_never_rounds_down():
  rng = np.random.default_rng(0)
  sigmas = rng.uniform(0.01, 10.0, 2000)
  casts = sigmas.astype(np.float32).astype(np.float64)
  assert (casts < sigmas).sum() > 500            # a plain cast rounds down about half the time
  got = np.array([float(dp.sigma_float32(s)) for s in sigmas])
  assert np.all(got >= sigmas)
  assert np.all(got <= np.nextafter(casts.astype(np.float32), np.float32(np.inf)))
  assert all(dp.sigma_float32(s).dtype == np.float32 for s in sigmas[:3])


def test_describe_guarantee_says_the_float_release_does_not_meet_it():
  text = dp.describe_guarantee(100.0, 1e-5, k_values=(1,))
  assert "does not meet this (epsilon, delta) as implemented" in text
  assert "names, pids" in text and "composes" in text


def test_describe_guarantee_states_scope_and_numbers():
  text = dp.describe_guarantee(8.0, 1e-5, 2.0, k_values=(1, 10))
  sigma = dp.gaussian_sigma(8.0, 1e-5)
  eps10 = dp.composed_epsilon(sigma, 2.0, 1e-5, 10)
  assert f"{sigma:.4g}" in text
  assert "k=1: epsilon=8," in text
  assert f"k=10: epsilon={eps10:.3g}" in text
  assert "replacing one gallery image" in text
  assert "large" in text and "query" in text
  with pytest.raises(ValueError, match="delta"):
    dp.describe_guarantee(8.0, 0.0)


def test_composition_regimes_are_documented_as_measured():
  """Small epsilon composes like sqrt(k) epsilon, large epsilon approaches k epsilon;
  the module says so (it once claimed sqrt(k) growth for large epsilon)."""
  delta, k = 1e-5, 20
  big = dp.composed_epsilon(dp.gaussian_sigma(100.0, delta), dp.DEFAULT_SENSITIVITY, delta, k)
  assert big == pytest.approx(1317, rel=0.01)
  assert big > 2.5 * math.sqrt(k) * 100.0 and big < k * 100.0
  small = dp.composed_epsilon(dp.gaussian_sigma(0.5, delta), dp.DEFAULT_SENSITIVITY, delta, k)
  assert small < 2.0 * math.sqrt(k) * 0.5
  doc = " ".join(dp.__doc__.split())
  assert "sqrt(k) * epsilon for large epsilon" not in doc
  assert "for large epsilon it approaches k * epsilon" in doc


def test_gallery_k_counts_real_identities_only_and_reports_the_largest():
  """The guarantee is stated for the person with the most gallery images; distractors
  (pid 0) and junk (pid -1) are nobody (the median over all pids once hid both)."""
  pids = np.array([1] * 9 + [2, 2, 3, 3, 4, 4] + [0] * 50 + [-1] * 5)
  assert dp.gallery_k(pids) == (9, 2.0)
  _, counts = np.unique(pids, return_counts=True)
  assert int(np.median(counts)) != 9          # what the old rows reported
  assert dp.gallery_k(np.array([0, 0, -1])) == (1, 1.0)
