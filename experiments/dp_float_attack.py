"""The floating-point attack on the gallery release (Mironov, CCS 2012).

  python -m experiments.dp_float_attack [--dim=2048] [--trials=3] [--epsilons=1,10,100,1000]

`privacy/dp.release_gallery` adds jax's float32 Gaussian noise, sqrt(2) erfinv(u)
with u one of 2^23 float32 uniforms, to an L2-normalised feature f. So, given f,
each released coordinate y_j can take only 2^23 values. An attacker who holds a
candidate image's exact float32 feature (the model is not covered by the
guarantee) and sigma (stored with the release) can test every coordinate: is
there a u with fl32(f_j + sigma * z(u)) == y_j? The true image passes every
coordinate; another image passes a coordinate only by chance. This script
releases random D-dimensional features with `dp.release_gallery` (os.urandom
keys) and prints, per epsilon and trial, how many of the D coordinates fit the
true feature, an unrelated one and a near-duplicate (f + 0.01 noise, cosine
~0.99). Under (epsilon, delta)-DP a wrong candidate would have to look as likely
as the true one up to e^epsilon; here it is ruled out outright. It also prints a
lower bound on the realised delta that the noise's bounded support alone
implies (`impossible_mass`).

The test mirrors jax 0.10's float32 `normal` (uniform on [nextafter(-1, 0), 1),
then sqrt(2) erf_inv): `check_sampler` verifies that mirror bit for bit against
`jax.random.normal` before anything is measured, so a jax that samples
differently stops the script instead of measuring the wrong thing.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from privreid_jax.privacy import dp

_WINDOW = 16    # u indices searched on each side of the nearest z (float rounding)


def all_uniforms() -> np.ndarray:
  """The 2^23 float32 values jax's float32 `normal` feeds to erf_inv, in order."""
  lo = np.nextafter(np.float32(-1), np.float32(0))
  mant = np.arange(2 ** 23, dtype=np.uint32) | np.float32(1).view(np.uint32)
  unit = mant.view(np.float32) - np.float32(1)                  # [0, 1), 2^-23 apart
  return np.maximum(lo, unit * np.float32(2) + lo).astype(np.float32)


@jax.jit
def _normal_of(u: jax.Array) -> jax.Array:
  return np.float32(np.sqrt(2)) * jax.lax.erf_inv(u)


def check_sampler(u: np.ndarray, z: np.ndarray) -> None:
  """Raises if `z = normal_of(u)` does not hold jax.random.normal's draws."""
  draws = np.asarray(jax.random.normal(jax.random.key(3), (4096,), jnp.float32))
  k = np.clip(np.searchsorted(z, draws), 0, z.size - 1)
  if not np.all(z[k] == draws):
    raise RuntimeError("jax.random.normal is not sqrt(2) erf_inv(u) on the 2^23 float32 "
                       "uniforms this script assumes; its attack would be meaningless")


def fits(candidate: np.ndarray, released: np.ndarray, sigma: np.float32,
         u: np.ndarray, z: np.ndarray) -> np.ndarray:
  """[D] bool: could coordinate j of `released` come from `candidate` [D]?"""
  normed = np.asarray(dp.l2_normalize(candidate[None]))[0]
  near = np.searchsorted(z, (released - normed) / sigma)
  found = np.zeros(released.shape, bool)
  for off in range(-_WINDOW, _WINDOW + 1):
    idx = np.clip(near + off, 0, u.size - 1)
    # The release's own jitted kernel with the noise's u given: the same float ops.
    y = np.asarray(_release_with_u(candidate[None], jnp.asarray(u[idx][None]), sigma))[0]
    found |= y == released
  return found


@jax.jit
def _release_with_u(features, u, sigma):
  return dp.l2_normalize(features) + sigma * _normal_of(u)


def impossible_mass(z: np.ndarray, sigma: float, sensitivity: float = 2.0) -> float:
  """A lower bound on the realised delta at any epsilon, from the noise's bounded
  support alone: features e1 and -e1 (sensitivity 2, all in one coordinate); the
  release of e1 lands where -e1's cannot reach with probability
  P(z > max(z) - sensitivity / sigma), and on that set the privacy loss is
  infinite, so delta >= that probability. `z` is every draw, each 2^-23 likely."""
  return float(np.mean(z > z.max() - sensitivity / float(sigma)))


def run(dim: int, epsilons, trials: int, delta: float = 1e-5, seed: int = 0) -> list[dict]:
  u = all_uniforms()
  z = np.asarray(_normal_of(jnp.asarray(u)))
  check_sampler(u, z)
  rng = np.random.default_rng(seed)
  rows = []
  for eps in epsilons:
    sigma = dp.sigma_float32(dp.gaussian_sigma(eps, delta))
    for trial in range(trials):
      true = rng.normal(size=dim).astype(np.float32)
      other = rng.normal(size=dim).astype(np.float32)
      near = (true + 0.01 * rng.normal(size=dim)).astype(np.float32)
      released = np.asarray(dp.release_gallery(true[None], None, epsilon=eps,
                                               delta=delta))[0]
      rows.append({"epsilon": eps, "trial": trial, "dim": dim, "sigma": float(sigma),
                   "delta_at_least": impossible_mass(z, sigma),
                   "true": int(fits(true, released, sigma, u, z).sum()),
                   "unrelated": int(fits(other, released, sigma, u, z).sum()),
                   "near_duplicate": int(fits(near, released, sigma, u, z).sum())})
  return rows


def main(argv=None) -> None:
  from absl import flags
  from privreid_jax import api
  fv = flags.FlagValues()
  flags.DEFINE_integer("dim", 2048, "Feature dimension.", flag_values=fv)
  flags.DEFINE_integer("trials", 3, "Releases per epsilon.", flag_values=fv)
  flags.DEFINE_list("epsilons", ["1", "10", "100", "1000"], "Per-image epsilons.",
                    flag_values=fv)
  flags.DEFINE_float("delta", 1e-5, "Per-image delta.", flag_values=fv)
  api.parse_flags(fv, list(sys.argv if argv is None else argv), __doc__)
  rows = run(fv.dim, [float(e) for e in fv.epsilons], fv.trials, fv.delta)
  print(f"coordinates (of {fv.dim}) a released row fits, per candidate feature, and the "
        f"realised delta's lower bound from the bounded noise (stated delta {fv.delta:g}):")
  print("| epsilon | sigma | delta >= | trial | true image | unrelated image | near-duplicate |")
  print("|---:|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    print(f"| {r['epsilon']:g} | {r['sigma']:.4g} | {r['delta_at_least']:.2g} | {r['trial']} | "
          f"{r['true']} | {r['unrelated']} | {r['near_duplicate']} |")


if __name__ == "__main__":
  main()
