"""Method A (reversible anonymization) on synthetic pedestrians: the paper's ablation table.

  python -m experiments.ablate --sweep experiments/sweeps/anon_synthetic.py --root /tmp/anon_sweep
  python -m experiments.ablate --sweep experiments/sweeps/anon_synthetic.py:tiny --root /tmp/smoke
  python -m experiments.report --root /tmp/anon_sweep

First `third_party`: the baseline Re-ID model trained on raw images only
(`configs/synthetic.py` at method A's image size and data), the outsider whose
matching of anonymized images every row reports ("3rd:P->O" etc.). Then nine
runs of `configs/anon_synthetic.py`: for each desensitization used as the
initial supervision (mosaic, blur, noise), the paper's three rows:

  base  "Base": the Re-ID model alone, trained on raw plus desensitized images
        (variant `base,<d>`); its anonymized images are the desensitized ones;
  wo    "w/o upgrade": the learned G, G_R, D1, D2 and C, supervised by the
        fixed desensitization throughout (variant `<d>`);
  full  the full method: the same plus the progressive supervision upgrade
        (variant FULL_VARIANT, `<d>,stages`, method A's staged driver).

The runs are ordered by desensitization (mosaic first, the paper's main
setting), so a sweep cut short still gives complete groups. With `--shard`,
the machine without `third_party` needs its finished folder copied into its
root first (the rows check for it before training). `:tiny` runs the same grid
on the `tiny` variants as a smoke test.
"""

DESENSITIZE = ("mosaic", "blur", "noise")
# Variant templates per row; {d} is the desensitization.
ROWS = (
    ("base", "base,{d}"),
    ("wo", "{d}"),
    ("full", "{d},stages"),   # FULL_VARIANT: the progressive stages
)
FULL_VARIANT = dict(ROWS)["full"]
CONFIG = "configs/anon_synthetic.py"
THIRD_PARTY = "third_party"
# configs/synthetic.py brought to configs/anon_synthetic.py's data, image size and
# Re-ID model (tests/experiments/test_sweep_files.py checks they agree).
THIRD_PARTY_OVERRIDES = {
    "data.synthetic.num_ids": 200, "data.height": 64, "data.width": 32, "data.pad": 3,
    "model.width": 16, "optim.epochs": 32, "optim.warmup_epochs": 2,
    "optim.milestones": (24,), "eval.every_epochs": 32, "checkpoint.every_epochs": 8,
}


def get_sweep(arg=None):
  if arg not in (None, "tiny"):
    raise ValueError(f"anon_synthetic.py: unknown argument {arg!r} (expected 'tiny')")
  tiny = arg == "tiny"
  runs = [{"name": THIRD_PARTY,
           "config": "configs/synthetic.py" + (":tiny" if tiny else ""),
           "overrides": {} if tiny else dict(THIRD_PARTY_OVERRIDES)}]
  for d in DESENSITIZE:
    for row, template in ROWS:
      variant = template.format(d=d) + (",tiny" if tiny else "")
      runs.append({"name": f"{row}_{d}", "config": f"{CONFIG}:{variant}",
                   "overrides": {"evals.outsider.workdir": "{root}/" + THIRD_PARTY}})
  return runs
