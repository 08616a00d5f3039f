"""privacy/dp_exact.py: the gallery release through OpenDP's Gaussian mechanism."""

import numpy as np
import pytest

from privreid_jax.privacy import dp, dp_exact


@pytest.mark.parametrize("epsilon", [1.0, 10.0, 100.0])
def test_scale_is_the_smallest_that_meets_epsilon(epsilon):
  scale = dp_exact.scale_for(epsilon, 1e-5, 64)
  assert dp_exact.epsilon_of(scale, 1e-5, 1, 64) <= epsilon * (1 + 1e-9)
  assert dp_exact.epsilon_of(scale * 0.99, 1e-5, 1, 64) > epsilon
  # zCDP's conversion is looser than the analytic Gaussian's: a little more noise
  assert 1.0 < scale / dp.gaussian_sigma(epsilon, 1e-5) < 1.1


def test_composition_is_k_times_rho():
  scale = dp_exact.scale_for(10.0, 1e-5, 64)
  rho = float(dp_exact._measurement(64, scale).map(2.0))
  assert rho == pytest.approx((2.0 / scale) ** 2 / 2, rel=1e-6)   # + the grid's rounding
  eps = [dp_exact.epsilon_of(scale, 1e-5, k, 64) for k in (1, 2, 5)]
  assert eps[0] < eps[1] < eps[2] < 5 * eps[0]
  # k releases at scale s are one release at scale s / sqrt(k)
  assert eps[2] == pytest.approx(dp_exact.epsilon_of(scale / np.sqrt(5), 1e-5, 1, 64),
                                 rel=1e-4)


def test_release_normalises_and_adds_noise_on_the_grid():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 64)) * 7.0
  x[3] = 0.0
  released, scale = dp_exact.release(x, 10.0, 1e-5)
  assert released.shape == x.shape and scale == dp_exact.scale_for(10.0, 1e-5, 64)
  unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  noise = released - unit
  assert abs(noise.std() / scale - 1) < 0.1 and abs(noise.mean()) < 4 * scale / 50
  # Every output is a multiple of the grid 2^K whatever the input: the set of
  # possible outputs does not depend on the feature (unlike float32 noise, which
  # experiments/dp_float_attack.py exploits).
  steps = released * 2.0 ** -dp_exact.GRID_K
  assert np.all(steps == np.round(steps))
  again, _ = dp_exact.release(x, 10.0, 1e-5)
  assert not np.allclose(again, released)


def test_bad_input_is_one_line():
  with pytest.raises(ValueError, match=r"finite features of shape \[N, D\]"):
    dp_exact.release(np.ones(5), 1.0, 1e-5)
  with pytest.raises(ValueError, match="finite"):
    dp_exact.release(np.full((2, 3), np.nan), 1.0, 1e-5)
  with pytest.raises(ValueError, match="epsilon must be > 0"):
    dp_exact.scale_for(0.0, 1e-5)
  with pytest.raises(ValueError, match="OpenDP cannot calibrate the noise for epsilon=1e\\+06"):
    dp_exact.scale_for(1e6, 1e-5)
