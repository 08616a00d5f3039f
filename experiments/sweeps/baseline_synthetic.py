"""The strong baseline on synthetic pedestrians: triplet variants, pooling, center loss, seeds.

  python -m experiments.ablate --root /tmp/bot_sweep \
      --sweep experiments/sweeps/baseline_synthetic.py
  python -m experiments.ablate --root /tmp/smoke \
      --sweep experiments/sweeps/baseline_synthetic.py:tiny
  python -m experiments.report --root /tmp/bot_sweep

Twelve runs of `configs/synthetic.py` (14 epochs, ~9 min each on a 2-core CPU): BoT
(batch-hard triplet, average pooling), soft-margin and weighted-regularised
(AGW) triplets, no triplet (ID loss only), GeM pooling and the center loss,
each with seeds 0 and 1. `:tiny` runs the same grid on the `tiny` variant
(2 steps each) as a smoke test of the whole sweep machinery.
"""

VARIANTS = {
    "bot": {},
    "soft_margin": {"loss.triplet": "soft_margin"},
    "wrt": {"loss.triplet": "weighted"},
    "id_only": {"loss.triplet": "none"},
    "gem": {"model.pooling": "gem"},
    "center": {"loss.center_weight": 5e-4},
}
SEEDS = (0, 1)


def get_sweep(arg=None):
  if arg not in (None, "tiny"):
    raise ValueError(f"baseline_synthetic.py: unknown argument {arg!r} (expected 'tiny')")
  config = "configs/synthetic.py:tiny" if arg == "tiny" else "configs/synthetic.py"
  runs = []
  for seed in SEEDS:
    for name, overrides in VARIANTS.items():
      runs.append({"name": f"{name}_s{seed}", "config": config,
                   "overrides": {**overrides, "seed": seed}})
  return runs
