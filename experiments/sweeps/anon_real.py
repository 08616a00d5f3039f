"""Method A (reversible anonymization) on real pedestrians: the paper's rows, CPU-sized.

  python -m experiments.ablate --sweep experiments/sweeps/anon_real.py \
      --root /tmp/anon_real --set data.root=PARENT
  python -m experiments.report --root /tmp/anon_real

PARENT holds any of VIPeR, GRID, PRID 2011, CUHK01 and i-LIDS (configs/real_small.py);
the rows are configs/anon_real_small.py's: the joined training splits, CUHK01's test
split the run's own ("O->O", "P->O", the outsiders, the image quality), the others
as per-dataset rows. Reported runs under `_protocol.REPORT_REAL`: every run trains
on the same 80% of the joined training identities and reads the test splits once,
at the end. The lr and the noise L1 weight are the ones chosen on synthetic
validation identities (anon_synthetic_select.py); no choice looks at a real test
split.

Per seed, `third_party_s<seed>` (the baseline on raw images only at the rows' image
size, data and Re-ID model: the outsider, "3rd:*", fine-tuned by each learned row
with its released G, "3rd-ft:*"), then Base, w/o upgrade and full for mosaic and
blur (anon_synthetic.py's ROWS). The outsider trains with real_small.py's recipe as
chosen on validation identities (no erasing, the soft-margin triplet since
real_small_select.py's second round), not C's BoT triplet: the attacker gets the best
raw-image model we know how to train. Seed 0's seven runs come first (a complete table),
then seeds 1 and 2. `:tiny` runs seed 0 on the `tiny` variants as a smoke test.
"""

from experiments.sweeps import _protocol
from experiments.sweeps import anon_synthetic
from privreid_jax.data import records

CONFIG = "configs/anon_real_small.py"
DESENSITIZE = ("mosaic", "blur")
# configs/real_small.py brought to configs/anon_real_small.py's image size, Re-ID model,
# schedule and data (CUHK01 first, its test split the run's own; the others as targets):
# tests/experiments/test_sweep_files.py checks they agree.
REAL_ORDER = ("cuhk01",) + tuple(n for n in records.SMALL_DATASETS if n != "cuhk01")
THIRD_PARTY_DATA = {"data.sources": REAL_ORDER, "evals.reid.enabled": True,
                    "evals.targets.datasets": REAL_ORDER[1:]}
THIRD_PARTY_SIZE = {**{k: v for k, v in anon_synthetic.THIRD_PARTY_OVERRIDES.items()
                       if not k.startswith("data.synthetic.")}}


def get_sweep(arg=None):
  if arg not in (None, "tiny"):
    raise ValueError(f"anon_real.py: unknown argument {arg!r} (expected 'tiny')")
  tiny = arg == "tiny"
  runs = []
  for seed in (0,) if tiny else _protocol.SEEDS:
    tp = anon_synthetic.third_party_name(seed)
    third = {**THIRD_PARTY_DATA, **({} if tiny else THIRD_PARTY_SIZE), "seed": seed}
    runs.append({"name": tp, "config": "configs/real_small.py" + (":tiny" if tiny else ""),
                 "overrides": _protocol.report_real(third)})
    runs += anon_synthetic.seed_rows(CONFIG, seed, DESENSITIZE, tp, tiny=tiny,
                                     protocol=_protocol.report_real)
  return runs
