"""The baseline on real pedestrians, reported: configs/real_small.py at the choices made on
validation identities (real_small_select.py's CHOSEN row; its CHOSEN_TRIPLET is in the
config), three seeds.

  python -m experiments.ablate --sweep experiments/sweeps/real_small.py \
      --root /tmp/real_small --set data.root=PARENT
  python -m experiments.report --root /tmp/real_small

Every run trains on the same 80% of the joined training identities as the
selection (`_protocol.REPORT_REAL`) and reads each dataset's test split once, at
the end: rows "viper/O->O", "grid/O->O", ... (`experiments.report`'s per-dataset
table, mean ± std over the seeds). `:tiny` runs one seed on the `tiny` variant.
"""

from experiments.sweeps import _protocol
from experiments.sweeps import real_small_select as select


def get_sweep(arg=None):
  if arg not in (None, "tiny"):
    raise ValueError(f"real_small.py: unknown argument {arg!r} (expected 'tiny')")
  if select.CHOSEN is None:
    raise ValueError("real_small.py: real_small_select.py has no CHOSEN row yet: run the "
                     "selection sweep first")
  config = select.CONFIG + (":tiny" if arg == "tiny" else "")
  chosen = select.GRID[select.CHOSEN]
  return [{"name": f"{select.CHOSEN}_s{seed}", "config": config,
           "overrides": _protocol.report_real({**chosen, "seed": seed})}
          for seed in ((0,) if arg == "tiny" else _protocol.SEEDS)]
