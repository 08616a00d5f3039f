"""Method A (reversible anonymization) on synthetic pedestrians: the paper's ablation table.

  python -m experiments.ablate --sweep experiments/sweeps/anon_synthetic.py --root /tmp/anon_sweep
  python -m experiments.ablate --sweep experiments/sweeps/anon_synthetic.py:tiny --root /tmp/smoke
  python -m experiments.report --root /tmp/anon_sweep

Reported runs under the results protocol (`_protocol.py`): every run trains on
the same 80% of the training identities and reads the fresh test split once,
at the end. The learning rate and the noise supervision's L1 weight are the
ones chosen on validation identities by `anon_synthetic_select.py` (LR,
NOISE_L1 below); the other sizes are configs/anon_synthetic.py's.

Per seed, first `third_party_s<seed>`: the baseline Re-ID model trained on raw
images only (`configs/synthetic.py` at method A's image size and data), the
outsider every row reports ("3rd:P->O" etc.), also fine-tuned by each learned
row with the released G ("3rd-ft:*", `adaptive_outsider.py`). Then, for each
desensitization used as the initial supervision, the paper's three rows:

  base  "Base": the Re-ID model alone, trained on raw plus desensitized images
        (variant `base,<d>`); its anonymized images are the desensitized ones;
  wo    "w/o upgrade": the learned G, G_R, D1, D2 and C, supervised by the
        fixed desensitization throughout (variant `<d>`);
  full  the full method: the same plus the progressive supervision upgrade
        (variant FULL_VARIANT, `<d>,stages`, method A's staged driver).

Seed 0 runs mosaic, blur and noise (a complete table first), then "w/o
upgrade" with noise at the selection grid's other L1 weights (the PSNR against
Rank-1 trade-off curve); seeds 1 and 2
repeat mosaic and blur, the headline rows (`experiments.report` shows mean ±
std over runs named NAME_s<seed>). With `--shard`, a machine needs the
`third_party_s<seed>` folders its rows point to. `:tiny` runs seed 0's grid on
the `tiny` variants as a smoke test.

`:people` runs the same table under the new-people protocol
(`_protocol.report(people=True)`: every training identity trains, the
validation rows and the full rows' stage checks run on new people) with the
choices made on new people (`anon_synthetic_select.py`: CHOSEN_LR_PEOPLE, and
CHOSEN_MIN_RANK1_PEOPLE once chosen); give it its own `--root`. The method A
table of docs/results_synthetic.md was run without it (held-out identities, 80% training).
"""

import functools

from experiments.sweeps import _protocol
from experiments.sweeps import anon_synthetic_select as select

DESENSITIZE = ("mosaic", "blur", "noise")
HEADLINE = ("mosaic", "blur")          # with every seed of _protocol.SEEDS
# Variant templates per row; {d} is the desensitization.
ROWS = (
    ("base", "base,{d}"),
    ("wo", "{d}"),
    ("full", "{d},stages"),   # FULL_VARIANT: the progressive stages
)
FULL_VARIANT = dict(ROWS)["full"]
CONFIG = "configs/anon_synthetic.py"
THIRD_PARTY = "third_party"
LR = select.CHOSEN_LR or 7e-4            # chosen on validation (anon_synthetic_select.py)
NOISE_L1 = select.CHOSEN_NOISE_L1 or 100.0
# configs/synthetic.py brought to configs/anon_synthetic.py's data, image size and
# Re-ID model (tests/experiments/test_sweep_files.py checks they agree).
THIRD_PARTY_OVERRIDES = {
    "data.synthetic.num_ids": 200, "data.height": 64, "data.width": 32, "data.pad": 3,
    "model.width": 16, "optim.epochs": 32, "optim.warmup_epochs": 2,
    "optim.milestones": (24,), "checkpoint.every_epochs": 8,
    "optim.lr": 7e-4,   # configs/synthetic.py's when the table was run
}


def third_party_name(seed: int) -> str:
  return f"{THIRD_PARTY}_s{seed}"


def seed_rows(config: str, seed: int, desensitize, third_party: str, extra=None, *,
              tiny: bool = False, protocol=_protocol.report) -> list[dict]:
  """The paper's three rows (ROWS) for each of `desensitize` at `seed`, `config`'s
  variants, the outsider in {root}/`third_party` (also used by anon_real.py)."""
  runs = []
  for d in desensitize:
    over = {"seed": seed, "optim.lr": LR, "evals.outsider.workdir": "{root}/" + third_party,
            **(extra or {})}
    if d == "noise":
      over.update({"anon.weights.l1_anon": NOISE_L1, "anon.weights.l1_rec": NOISE_L1})
    for row, template in ROWS:
      variant = template.format(d=d) + (",tiny" if tiny else "")
      runs.append({"name": f"{row}_{d}_s{seed}", "config": f"{config}:{variant}",
                   "overrides": protocol(over)})
  return runs


def people_overrides() -> dict:
  """What `:people` adds to every learned row: the choices made on new people."""
  out = {"optim.lr": select.CHOSEN_LR_PEOPLE}
  if select.CHOSEN_MIN_RANK1_PEOPLE is not None:
    out["anon.stages.min_rank1"] = select.CHOSEN_MIN_RANK1_PEOPLE
  return out


def get_sweep(arg=None):
  names = _protocol.sweep_args(arg, ("people", "tiny"), "anon_synthetic.py")
  tiny, people = "tiny" in names, "people" in names
  report = functools.partial(_protocol.report, people=people)
  extra = people_overrides() if people else None
  runs = []
  for seed in (0,) if tiny else _protocol.SEEDS:
    tp = third_party_name(seed)
    runs.append({"name": tp, "config": "configs/synthetic.py" + (":tiny" if tiny else ""),
                 "overrides": report(
                     {**({} if tiny else THIRD_PARTY_OVERRIDES), "seed": seed})})
    runs += seed_rows(CONFIG, seed, DESENSITIZE if seed == 0 else HEADLINE, tp, extra,
                      tiny=tiny, protocol=report)
    if seed == 0:
      # The noise trade-off curve: "w/o upgrade" at the other L1 weights of the
      # selection grid (PSNR(O,P) against the authorized and the outsiders' Rank-1).
      for w in select.L1_WEIGHTS:
        if w != NOISE_L1:
          runs.append({"name": f"wo_noise_l1w{w:g}_s0",
                       "config": f"{CONFIG}:noise" + (",tiny" if tiny else ""),
                       "overrides": report(
                           {"seed": 0, "optim.lr": LR, "evals.outsider.workdir": "{root}/" + tp,
                            "anon.weights.l1_anon": w, "anon.weights.l1_rec": w,
                            **(extra or {})})})
  return runs
