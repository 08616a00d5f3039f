"""Method B (dual-stage) ablation on synthetic pedestrians: the paper's rows.

  python -m experiments.ablate --sweep experiments/sweeps/dual_synthetic.py \
      --root /work/runs/dual_sweep
  python -m experiments.ablate --sweep experiments/sweeps/dual_synthetic.py:tiny \
      --root /tmp/dual_smoke
  python -m experiments.report --root /work/runs/dual_sweep

Rows (configs/dual_synthetic.py variants): baseline (Re-ID encoder only);
+ clean decoder; + De-ID decoder with a blur / mosaic ("pixelation") / noise target;
+ Adv-ID (on the pooled feature); 1-stage (encoder + mosaic decoder +
Adv-ID); 2-stage (1-stage with the DP gallery at several epsilons, the
config's default). Every row runs the ID probe, the feature-classifier and the
inversion attackers and saves query features for the t-SNE figure
(`python -m experiments.figures_dual --root ...`). Ordered by what is most
informative first (baseline, mosaic, 2-stage), so `--shard` or a sweep cut
short still gives the main comparison; onestage comes last because it trains
exactly as twostage (same config and seed, the DP rows aside), whose O->O and
attack rows are the 1-stage row. `:tiny` runs three rows on the `tiny`
variant (2 steps each) as a smoke test of the whole chain.
"""

ROWS = (
    ("baseline", "baseline"),
    ("mosaic", "mosaic"),
    ("twostage", ""),
    ("clean", "clean"),
    ("advid", "advid"),
    ("blur", "blur"),
    ("noise", "noise"),
    ("onestage", "onestage"),   # trains exactly as twostage; only its DP rows differ
)
TINY_ROWS = ("baseline", "mosaic", "twostage")


def get_sweep(arg=None):
  if arg not in (None, "tiny"):
    raise ValueError(f"dual_synthetic.py: unknown argument {arg!r} (expected 'tiny')")
  runs = []
  for name, variant in ROWS:
    if arg == "tiny" and name not in TINY_ROWS:
      continue
    variants = ",".join(filter(None, (variant, arg)))
    config = "configs/dual_synthetic.py" + (f":{variants}" if variants else "")
    overrides = {"evals.feature_attack.enabled": True, "evals.inversion.enabled": True}
    runs.append({"name": name, "config": config, "overrides": overrides})
  return runs
