"""Method B (dual-stage) on real pedestrians: baseline, 1-stage and 2-stage, CPU-sized.

  python -m experiments.ablate --sweep experiments/sweeps/dual_real.py \
      --root /tmp/dual_real --set data.root=PARENT
  python -m experiments.report --root /tmp/dual_real

PARENT holds any of VIPeR, GRID, PRID 2011, CUHK01 and i-LIDS (configs/real_small.py);
the rows are configs/dual_real_small.py's: the joined training splits, CUHK01's test
split the run's own and the released gallery the attacks target (ID probe, feature
classifier, inversion, linkage per epsilon), the others as per-dataset rows.
Reported runs under `_protocol.REPORT_REAL` (the same 80% of the joined training
identities in every run, the test splits read once at the end). The rows are
dual_synthetic.py's headline: `baseline` and `twostage` (whose clean rows are the
1-stage model and whose DP rows the 2-stage one at each epsilon), every seed of
`_protocol.SEEDS`, seed 0 first. `:tiny` runs seed 0 on the `tiny` variant.
"""

from experiments.sweeps import _protocol
from experiments.sweeps import dual_synthetic

CONFIG = "configs/dual_real_small.py"


def get_sweep(arg=None):
  if arg not in (None, "tiny"):
    raise ValueError(f"dual_real.py: unknown argument {arg!r} (expected 'tiny')")
  runs = []
  for seed in (0,) if arg == "tiny" else _protocol.SEEDS:
    for name, variant in dual_synthetic.ROWS:
      if name in dual_synthetic.HEADLINE:
        variants = ",".join(filter(None, (variant, arg)))
        runs.append({"name": f"{name}_s{seed}",
                     "config": CONFIG + (f":{variants}" if variants else ""),
                     "overrides": _protocol.report_real(
                         {"seed": seed, "evals.feature_attack.enabled": True,
                          "evals.inversion.enabled": True})})
  return runs
