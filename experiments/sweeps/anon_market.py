"""Method A (reversible anonymization) on Market-1501 at paper scale: the ablation table.

  python -m experiments.ablate --sweep experiments/sweeps/anon_market.py \
      --root /runs/anon_market --set data.root=/data/Market-1501-v15.09.15
  python -m experiments.ablate --sweep experiments/sweeps/anon_market.py --root ... \
      --set data.root=... --set data.source=tfds --set data.tfds_dir=/data/tfds --shard 0/3
  python -m experiments.report --root /runs/anon_market

First `third_party`: the BoT baseline of `configs/market.py` (raw images only),
the outsider whose matching of anonymized images every row reports
("3rd:P->O" etc.). Then nine runs of `configs/anon_market.py` (256x128, ResNet-50 with the AGW
options as the paper's C, unet_128, 120 epochs each): for mosaic, blur and
noise as the initial supervision, the paper's rows Base (`base,<d>,agw`),
w/o upgrade (`<d>,agw`) and full (FULL_VARIANT, `<d>,stages,agw`: the
progressive supervision upgrade). The dataset is not part of the sweep: pass
its root with `--set data.root=...` (and `data.source` / `data.tfds_dir` for
the prepared ArrayRecord copy). `:mosaic` keeps only the mosaic group.
"""

DESENSITIZE = ("mosaic", "blur", "noise")
ROWS = (
    ("base", "base,{d},agw"),
    ("wo", "{d},agw"),
    ("full", "{d},stages,agw"),   # FULL_VARIANT: the progressive stages
)
FULL_VARIANT = dict(ROWS)["full"]
CONFIG = "configs/anon_market.py"
THIRD_PARTY = "third_party"


def get_sweep(arg=None):
  if arg not in (None, *DESENSITIZE):
    raise ValueError(f"anon_market.py: unknown argument {arg!r} (expected one of "
                     f"{', '.join(DESENSITIZE)})")
  runs = [{"name": THIRD_PARTY, "config": "configs/market.py", "overrides": {}}]
  for d in (arg,) if arg else DESENSITIZE:
    for row, template in ROWS:
      runs.append({"name": f"{row}_{d}", "config": f"{CONFIG}:{template.format(d=d)}",
                   "overrides": {"evals.outsider.workdir": "{root}/" + THIRD_PARTY}})
  return runs
