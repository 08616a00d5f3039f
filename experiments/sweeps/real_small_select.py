"""The baseline on real pedestrians: width, augmentation and lr chosen on validation identities.

  python -m experiments.ablate --sweep experiments/sweeps/real_small_select.py \
      --root /tmp/real_select --set data.root=PARENT
  python -m experiments.report --root /tmp/real_select

Runs of `configs/real_small.py:val` on whichever of VIPeR, GRID, PRID 2011, CUHK01
and i-LIDS are under PARENT: 20% of the combined training identities held out as
validation (`val/O->O`, every EVERY epochs), the datasets' test splits never read
(`_protocol.SELECT_REAL`). The grid, fixed before the runs, starts from the config's
guess (width 32, random erasing on, lr 7e-4, 40 epochs) and moves one thing at a
time: no random erasing, a wider backbone, a larger lr. The rule: the highest val
Rank-1 at the last epoch (mAP breaks ties within one query); the val curve every
EVERY epochs says whether more epochs would help. The winner goes into
configs/real_small.py and the reported sweep.

`:tiny` runs the same grid on the `tiny` variant (a few steps) as a smoke test.
"""

from experiments.sweeps import _protocol

CONFIG = "configs/real_small.py"
EVERY = 5
GRID = {
    "w32": {},
    "w32_noerase": {"data.erasing_prob": 0.0},
    "w48": {"model.width": 48},
    "w32_lr1p4em3": {"optim.lr": 1.4e-3},
}


def get_sweep(arg=None):
  if arg not in (None, "tiny"):
    raise ValueError(f"real_small_select.py: unknown argument {arg!r} (expected 'tiny')")
  config = f"{CONFIG}:val,tiny" if arg == "tiny" else f"{CONFIG}:val"
  return [{"name": name, "config": config, "overrides": _protocol.select_real({"eval.every_epochs": EVERY, **extra})}
          for name, extra in GRID.items()]
