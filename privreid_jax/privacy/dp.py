"""Stage 2 of method B: gallery features released through the Gaussian mechanism.

docs/method_b.md. Each gallery feature is L2-normalised, then released as
`f + N(0, sigma^2 I)`. Under replace-one adjacency (one gallery image swapped for
any other image) two normalised features differ by at most 2 in L2 norm, so the
L2 sensitivity of one release is 2. Sigma comes from the analytic Gaussian
mechanism of Balle & Wang (ICML 2018) as implemented by `dp_accounting`; nothing
here calibrates noise by hand.

What the numbers mean:
- The per-image (epsilon, delta) bounds what anyone holding one released
  feature can learn about which image produced it, relative to any other image.
- A person with k gallery images is released k times: the per-identity
  guarantee is the k-fold composition (`composed_epsilon`). For small per-image
  epsilon (strong privacy) it grows roughly like sqrt(k) * epsilon; for large
  epsilon it approaches k * epsilon (epsilon 100, k 20 compose to about 1317,
  against 2000 for k * epsilon and 447 for sqrt(k) * epsilon). The release rows
  report it for the identity with the most gallery images (`gallery_k`): people
  with more images get a weaker guarantee than the median.
- Queries stay clean, the trained model and all metadata (pids, cameras) are not
  covered. Retrieval on 2048-d features only survives small sigma, that is large
  per-image epsilon (tens to hundreds), where the formal guarantee is weak:
  `describe_guarantee` writes this down for a given setting.
- The noise key must be unpredictable (`os_key`): noise drawn from a known seed
  can be subtracted.
- The (epsilon, delta) above is the ideal, real-valued Gaussian mechanism's. This
  implementation does not meet it: the noise is jax's float32 Gaussian,
  sqrt(2) erfinv(u) of one of 2^23 uniform values, so (a) it never leaves
  [-5.42, 5.22] sigma, and where two features differ by more than that in a
  coordinate their releases cannot both occur (for e1 against -e1 the realised
  delta is at least 6.4e-4 at epsilon 10 and ~1 from epsilon 100 up, against
  the stated 1e-5); (b) each released value is one of 2^23
  float32 numbers given the clean feature, so an attacker holding a candidate
  image's exact float32 feature and sigma can check whether a released row
  could have come from it (the floating-point attack of Mironov, CCS 2012): in
  a check on 2048-d features the true image fitted all 2048 coordinates and a
  wrong one 10-14% of them, at every epsilon from 1 to 1000
  (experiments/dp_float_attack.py measures both). Treat the
  release as a measurement of the privacy/utility trade-off of the ideal
  mechanism, not as a deployed guarantee. A release meant to be published goes
  through `dp_exact` (OpenDP's exact discrete-Gaussian sampler on a grid), as
  `python -m privreid_jax.extract --epsilon` does.
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Optional

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant
import jax
import jax.numpy as jnp
import numpy as np

# Replace-one adjacency on L2-normalised features: ||f - f'|| <= 2.
DEFAULT_SENSITIVITY = 2.0
# Default accountant resolution; coarsened for tiny noise multipliers (see below).
_PLD_INTERVAL = 1e-4
# Upper bound on the number of privacy-loss grid points the PLD may use (memory/time).
_PLD_MAX_POINTS = 50_000


def _check_epsilon(epsilon: float) -> float:
  epsilon = float(epsilon)
  if not epsilon > 0 or math.isnan(epsilon):
    raise ValueError(f"epsilon must be > 0, got epsilon={epsilon}")
  return epsilon


def _check_delta(delta: float) -> float:
  delta = float(delta)
  if not 0.0 < delta < 1.0:
    raise ValueError(f"delta must be in (0, 1), got delta={delta}")
  return delta


def _check_positive(name: str, value: float) -> float:
  value = float(value)
  if not value > 0 or math.isnan(value) or math.isinf(value):
    raise ValueError(f"{name} must be a finite number > 0, got {name}={value}")
  return value


def gaussian_sigma(epsilon: float, delta: float,
                   sensitivity: float = DEFAULT_SENSITIVITY) -> float:
  """Noise std of the analytic Gaussian mechanism that is (epsilon, delta)-DP.

  `dp_accounting.get_sigma_gaussian` gives the smallest noise multiplier (std per
  unit of L2 sensitivity) meeting (epsilon, delta) exactly (Balle & Wang 2018,
  Thm. 8); the std is that multiplier times `sensitivity`.

  Args:
    epsilon: per-release epsilon, > 0 (math.inf is refused: it means no noise).
    delta: per-release delta, in (0, 1).
    sensitivity: L2 sensitivity of one release (2 for replace-one on unit vectors).

  Returns:
    The noise standard deviation sigma.
  """
  epsilon = _check_epsilon(epsilon)
  if math.isinf(epsilon):
    raise ValueError("epsilon=inf means no privacy; release clean features instead")
  delta = _check_delta(delta)
  sensitivity = _check_positive("sensitivity", sensitivity)
  return float(dp_accounting.get_sigma_gaussian(epsilon, delta)) * sensitivity


def composed_epsilon(sigma: float, sensitivity: float, delta: float, k: int) -> float:
  """Epsilon at `delta` of k releases of one identity, each with noise std `sigma`.

  Accountant: dp_accounting's PLD (privacy loss distribution) accountant. For
  Gaussian mechanisms its composition is tight up to a pessimistic
  discretisation error (it is an upper bound), whereas the RDP accountant is
  loose by several percent at these epsilons. The event is
  `GaussianDpEvent(noise_multiplier=sigma / sensitivity)` composed k times.

  The relation passed to the accountant is ADD_OR_REMOVE_ONE on purpose: for a
  Gaussian event dp_accounting reads it as "neighbouring outputs differ by one
  unit of sensitivity", which is exactly our setting since `sensitivity` already
  is the replace-one L2 sensitivity (2). dp_accounting's REPLACE_ONE would double
  that distance a second time.

  The grid step of the PLD is 1e-4 for moderate noise and grows like 1/sigma for
  very small noise multipliers (large epsilon) so the grid stays below ~5e4
  points (well under a second per call). Against the exact k-fold value (k
  Gaussian releases = one with noise multiplier sigma / (sensitivity sqrt(k)),
  Dong, Roth & Su 2019) the result is within 1e-7 relative for composed epsilons
  up to a few hundred and within 0.1% beyond, always from above (a valid, slightly
  pessimistic bound).

  Args:
    sigma: noise std of each release, > 0.
    sensitivity: L2 sensitivity of each release, > 0.
    delta: target delta of the composed guarantee, in (0, 1).
    k: number of releases (gallery images of the identity), >= 1.

  Returns:
    The composed epsilon.
  """
  sigma = _check_positive("sigma", sigma)
  sensitivity = _check_positive("sensitivity", sensitivity)
  delta = _check_delta(delta)
  if isinstance(k, bool) or int(k) != k or k < 1:
    raise ValueError(f"k must be an integer >= 1, got k={k}")
  k = int(k)
  multiplier = sigma / sensitivity
  # The composed PLD spans roughly +-10 sqrt(k) / multiplier of privacy loss.
  span = 20.0 * math.sqrt(k) / multiplier
  interval = max(_PLD_INTERVAL, span / _PLD_MAX_POINTS)
  accountant = pld_privacy_accountant.PLDAccountant(
      dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
      value_discretization_interval=interval)
  accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier=multiplier), k)
  return float(accountant.get_epsilon(delta))


def os_key(seed: Optional[int] = None) -> jax.Array:
  """A PRNG key for DP noise: from `os.urandom` (default) or from `seed` (tests only).

  The random bytes are never logged or returned anywhere else; a run that must be
  private must not pass `seed`.
  """
  if seed is not None:
    return jax.random.key(int(seed))
  template = jax.random.key_data(jax.random.key(0))
  words = np.frombuffer(os.urandom(4 * template.size), dtype=np.uint32)
  return jax.random.wrap_key_data(jnp.asarray(words.reshape(template.shape)))


def l2_normalize(features: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Rows scaled to unit L2 norm (all-zero rows stay zero, norm <= 1 either way)."""
  features = jnp.asarray(features, jnp.float32)
  norm = jnp.linalg.norm(features, axis=-1, keepdims=True)
  return features / jnp.maximum(norm, eps)


@jax.jit
def add_gaussian_noise(features: jax.Array, key: jax.Array, sigma: jax.Array
                       ) -> jax.Array:
  """Pure, jittable core of the release: L2-normalise rows, add N(0, sigma^2 I)
  (float32 noise: see the module doc for what that does to the guarantee)."""
  normed = l2_normalize(features)
  return normed + sigma * jax.random.normal(key, normed.shape, jnp.float32)


def release_gallery(features: jax.Array, key: Optional[jax.Array], *, epsilon: float,
                    delta: float, sensitivity: float = DEFAULT_SENSITIVITY
                    ) -> jax.Array:
  """Gallery features [N, D] released with per-image (epsilon, delta)-DP.

  Each row is L2-normalised, then gets independent N(0, sigma^2 I) noise with
  sigma = `gaussian_sigma(epsilon, delta, sensitivity)`. The result is NOT
  re-normalised: match by cosine similarity against clean queries (or
  re-normalise first, which is post-processing and keeps the guarantee).

  Args:
    features: [N, D] gallery features (any scale; normalised here).
    key: a jax PRNG key; None draws a fresh `os_key()`. Pass an explicit key only
      in tests or when the caller already made one with `os_key()`.
    epsilon, delta, sensitivity: the per-image guarantee (see `gaussian_sigma`).

  Returns:
    float32 [N, D] noised features.
  """
  features = jnp.asarray(features)
  if features.ndim != 2:
    raise ValueError(f"release_gallery: expected features of shape [N, D], got "
                     f"{features.shape}")
  sigma = gaussian_sigma(epsilon, delta, sensitivity)
  if key is None:
    key = os_key()
  return add_gaussian_noise(features, key, jnp.asarray(sigma_float32(sigma)))


def sigma_float32(sigma: float) -> np.float32:
  """`sigma` as a float32 that is not smaller (a cast may round down, and less
  noise than calibrated means a larger delta)."""
  s = np.float32(sigma)
  return s if float(s) >= sigma else np.nextafter(s, np.float32(np.inf))


def gallery_k(pids) -> tuple[int, float]:
  """(largest, median) number of gallery images per real identity (pid > 0).

  pid 0 (distractors) and negative pids (junk) are not people whose images a
  per-identity guarantee is about, and are left out.
  """
  pids = np.asarray(pids)
  _, counts = np.unique(pids[pids > 0], return_counts=True)
  if not len(counts):
    return 1, 1.0
  return int(counts.max()), float(np.median(counts))


def per_image_line(epsilon: float, delta: float,
                   sensitivity: float = DEFAULT_SENSITIVITY) -> str:
  """The per-image line of a gallery release's statement (both mechanisms)."""
  return (f"Per image: ({epsilon:g}, {delta:g})-DP for replacing one gallery image by "
          f"any other, i.e. one released L2-normalised feature (L2 sensitivity "
          f"{sensitivity:g}).")


def scope_lines(epsilon: float) -> list[str]:
  """What epsilon means and what a gallery release does not cover (both mechanisms)."""
  return [
      f"Epsilon {epsilon:g} lets any outcome be up to e^epsilon = "
      f"{math.exp(min(epsilon, 700.0)):.3g} times likelier under one image than under "
      "another (except with probability delta); above a few units this is a weak "
      "guarantee.",
      "Not covered: query features (released clean), the trained model and its training "
      "identities, and metadata such as names, pids, camera ids or how many images a "
      "person has; releasing the same images again composes like k above.",
  ]


def describe_guarantee(epsilon: float, delta: float,
                       sensitivity: float = DEFAULT_SENSITIVITY,
                       k_values: Iterable[int] = (1, 5, 10, 20)) -> str:
  """A short, honest statement of what this gallery release protects."""
  sigma = gaussian_sigma(epsilon, delta, sensitivity)
  ks = sorted({int(k) for k in k_values})
  per_id = ", ".join(
      f"k={k}: epsilon={composed_epsilon(sigma, sensitivity, delta, k):.3g}" for k in ks)
  lines = [
      f"Gallery release: Gaussian mechanism, sigma={sigma:.4g} per coordinate "
      f"(analytic calibration, dp-accounting).",
      per_image_line(epsilon, delta, sensitivity),
      f"Per identity with k gallery images (k-fold composition, PLD accountant, same "
      f"delta): {per_id}.",
      *scope_lines(epsilon),
      "Caveat: these figures are the ideal Gaussian mechanism's. The noise here is "
      "float32 (bounded, on a finite set of values), so an attacker who holds a "
      "candidate image's exact feature can test whether a released row came from it: "
      "the release does not meet this (epsilon, delta) as implemented "
      "(privreid_jax/privacy/dp.py, docs/method_b.md); privacy/dp_exact.py does.",
      "Useful retrieval on high-dimensional features needs small sigma, i.e. large "
      "per-image epsilon; report the epsilon next to every accuracy number.",
  ]
  return "\n".join(lines)
