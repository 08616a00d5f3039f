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
attack rows are the 1-stage row. `:tiny` runs three rows on the `tiny` variant (2 steps each) as a smoke test of the whole chain.

Reported runs under the results protocol (`_protocol.py`): every row trains on
the same 80% of the training identities and reads the fresh test split once,
at the end (the linkage and inversion attackers on the test people included).
The headline rows (HEADLINE: baseline, and twostage, whose clean rows are the
1-stage model and whose dp / attack rows are the 2-stage one at every
epsilon) run with every seed of `_protocol.SEEDS`, after seed 0 of all rows;
runs are named NAME_s<seed> (`experiments.report` shows mean ± std).

`:people` (or `:people,tiny`) runs the same rows under the new-people protocol
(`_protocol.report(people=True)`: every training identity trains, the
validation rows on new people), as method A's `anon_synthetic.py:people`; give
it its own `--root`. The method B table of docs/results_synthetic.md is this one's (kept in
experiments/results/dual_people_table).
"""

from experiments.sweeps import _protocol

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
HEADLINE = ("baseline", "twostage")


def get_sweep(arg=None):
  names = _protocol.sweep_args(arg, ("people", "tiny"), "dual_synthetic.py")
  tiny, people = "tiny" in names, "people" in names
  runs = []
  for seed in (0,) if tiny else _protocol.SEEDS:
    for name, variant in ROWS:
      if (tiny and name not in TINY_ROWS) or (seed and name not in HEADLINE):
        continue
      variants = ",".join(filter(None, (variant, "tiny" if tiny else "")))
      config = "configs/dual_synthetic.py" + (f":{variants}" if variants else "")
      overrides = _protocol.report({"seed": seed, "evals.feature_attack.enabled": True,
                                    "evals.inversion.enabled": True}, people=people)
      runs.append({"name": f"{name}_s{seed}", "config": config, "overrides": overrides})
  return runs
