"""AGW's weighted triplet in float32, ours against the reference code's, both against float64.

  JAX_PLATFORMS=cpu python experiments/parity_triplet.py --reference_dir=/path/to/privacy-reid

Random batches shaped like the parity runs' (two identities x four images, 2048-d
non-negative features) at several feature norms and within-identity spreads; per
setting the median and largest relative error of the loss from the reference's own
float64 value, for the reference's `WeightedRegularizedTriplet` in float32 and ours
(`losses.weighted_regularized_triplet`, whose distances come from
`losses.self_pairwise_euclidean`), and the mean self-distance each float32 side's
distance matrix carries (float64: the clamp's 1e-6). Torch is needed.
"""

from __future__ import annotations

import os
import sys

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:      # run as a script: python experiments/parity_triplet.py
  sys.path.insert(0, _REPO)

SETTINGS = ((1, 0.3), (8, 0.3), (8, 0.05), (80, 0.05), (80, 0.01))   # (norm, spread)


def main(argv=None) -> int:
  from absl import flags  # pylint: disable=import-outside-toplevel
  from privreid_jax import cli  # pylint: disable=import-outside-toplevel
  fv = flags.FlagValues()
  flags.DEFINE_string("reference_dir", None, "Local checkout of whuzjw/privacy-reid.",
                      flag_values=fv)
  flags.DEFINE_integer("batches", 40, "Random batches per setting.", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the batches.", flag_values=fv)
  flags.mark_flag_as_required("reference_dir", flag_values=fv)
  argv = list(sys.argv[1:] if argv is None else argv)
  cli.parse_tool_flags(fv, ["python experiments/parity_triplet.py", *argv], __doc__)
  source = os.path.join(fv.reference_dir, "modeling", "layer", "triplet_loss.py")
  if not os.path.isfile(source):
    print(f"error: --reference_dir={fv.reference_dir}: no {source} (expected a checkout of "
          "whuzjw/privacy-reid)", file=sys.stderr)
    return 2
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from privreid_jax import losses  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, fv.reference_dir)
  from modeling.layer import triplet_loss  # pylint: disable=import-outside-toplevel,import-error
  wrt = triplet_loss.WeightedRegularizedTriplet()
  labels = np.repeat(np.arange(2), 4)
  t_labels = torch.from_numpy(labels)
  rng = np.random.default_rng(fv.seed)
  print("the loss's relative error from float64 (median / max over the batches), and the mean "
        "self-distance (float64: 1e-6)")
  print(f"{'norm':>5} {'spread':>6} {'loss64':>8} | {'ours':>17} | {'reference':>17} | "
        f"{'self ours':>9} {'self ref':>9}")
  for norm, spread in SETTINGS:
    err_o, err_r, self_o, self_r = [], [], [], []
    for _ in range(fv.batches):
      centre = rng.normal(size=(2, 2048)) * norm / np.sqrt(2048)
      f = np.abs(centre[labels] + rng.normal(size=(8, 2048)) * spread * norm / np.sqrt(2048))
      f32 = f.astype(np.float32)
      l64 = float(wrt(torch.from_numpy(f), t_labels)[0])
      l_ref = float(wrt(torch.from_numpy(f32), t_labels)[0])
      l_ours = float(losses.weighted_regularized_triplet(jnp.asarray(f32), jnp.asarray(labels))[0])
      err_o.append(abs(l_ours - l64) / abs(l64))
      err_r.append(abs(l_ref - l64) / abs(l64))
      self_o.append(float(np.mean(np.diag(np.asarray(
          losses.self_pairwise_euclidean(jnp.asarray(f32)))))))
      t32 = torch.from_numpy(f32)
      self_r.append(float(torch.diag(triplet_loss.euclidean_dist(t32, t32)).mean()))
    print(f"{norm:>5} {spread:>6} {l64:8.3g} | {np.median(err_o):7.1e} / {max(err_o):7.1e} | "
          f"{np.median(err_r):7.1e} / {max(err_r):7.1e} | {np.mean(self_o):9.1e} "
          f"{np.mean(self_r):9.1e}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
