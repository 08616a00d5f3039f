"""Method B (dual-stage) on Market-1501 at paper scale: the paper's ablation rows.

  python -m experiments.ablate --sweep experiments/sweeps/dual_market.py \
      --root /runs/dual_market --set data.root=/data/Market-1501-v15.09.15
  python -m experiments.report --root /runs/dual_market

Eight runs of `configs/dual_market.py` (BoT ResNet-50, 256x128, 120 epochs),
the rows of experiments/sweeps/dual_synthetic.py: baseline (Re-ID encoder
only); + clean decoder; + De-ID decoder with a blur / pixelation / noise
target; + Adv-ID on the pooled feature; 1-stage (encoder + pixelation decoder
+ Adv-ID); 2-stage (1-stage with the DP gallery at several epsilons). Every
row runs the feature-classifier and inversion attackers. Ordered most
informative first (baseline, pixelation, 2-stage), so `--shard` or a sweep cut
short still gives the main comparison. The dataset root comes from
`--set data.root=...`.
"""

ROWS = (
    ("baseline", "baseline"),
    ("mosaic", "mosaic"),
    ("twostage", ""),
    ("onestage", "onestage"),
    ("clean", "clean"),
    ("blur", "blur"),
    ("noise", "noise"),
    ("advid", "advid"),
)
ATTACKS = {"evals.feature_attack.enabled": True, "evals.inversion.enabled": True}
CONFIG = "configs/dual_market.py"


def get_sweep(arg=None):
  if arg is not None:
    raise ValueError(f"dual_market.py: takes no argument (got {arg!r})")
  return [{"name": name, "config": f"{CONFIG}:{variant}" if variant else CONFIG,
           "overrides": dict(ATTACKS)} for name, variant in ROWS]
