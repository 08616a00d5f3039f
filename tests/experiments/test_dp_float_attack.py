"""experiments/dp_float_attack.py: the measurement behind dp.py's caveat.

The release's float32 noise lets an attacker holding a candidate's exact feature
rule candidates out. This asserts the flaw the docs state; a release that fixes
it (a discrete Gaussian on a grid) makes the wrong candidates fit too, and this
test and the caveat in dp.py, extract.py and docs/method_b.md change together.
"""

import numpy as np

from experiments import dp_float_attack


def test_the_mirror_of_jax_normal_is_checked_bit_for_bit():
  u = dp_float_attack.all_uniforms()
  assert u.size == 2 ** 23 and np.all(np.diff(u) > 0) and -1 < u[0] and u[-1] < 1
  z = np.asarray(dp_float_attack._normal_of(u))
  dp_float_attack.check_sampler(u, z)                     # passes on the pinned jax
  try:
    dp_float_attack.check_sampler(u, z + np.float32(1e-3))
  except RuntimeError as e:
    assert "erf_inv" in str(e)
  else:
    raise AssertionError("a wrong mirror was not caught")


def test_a_released_row_fits_only_its_own_feature():
  rows = dp_float_attack.run(dim=64, epsilons=[1.0, 100.0], trials=1)
  assert [r["epsilon"] for r in rows] == [1.0, 100.0]
  for r in rows:
    assert r["true"] == 64, r
    assert r["unrelated"] < 40 and r["near_duplicate"] < 40, r


def test_the_bounded_noise_alone_breaks_delta_at_large_epsilon():
  z = np.sort(np.asarray(dp_float_attack._normal_of(dp_float_attack.all_uniforms())))
  assert -5.43 < z[0] < -5.41 and 5.21 < z[-1] < 5.23      # the support dp.py states
  from privreid_jax.privacy import dp
  small = dp_float_attack.impossible_mass(z, dp.gaussian_sigma(1.0, 1e-5))
  mid = dp_float_attack.impossible_mass(z, dp.gaussian_sigma(10.0, 1e-5))
  large = dp_float_attack.impossible_mass(z, dp.gaussian_sigma(200.0, 1e-5))
  assert small < 1e-5 < mid < 1e-2 and large == 1.0
  assert dp_float_attack.impossible_mass(z, 1e9) == 0.0
