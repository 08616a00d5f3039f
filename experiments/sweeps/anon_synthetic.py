"""Method A (reversible anonymization) on synthetic pedestrians: the paper's ablation table.

  python -m experiments.ablate --sweep experiments/sweeps/anon_synthetic.py --root /tmp/anon_sweep
  python -m experiments.ablate --sweep experiments/sweeps/anon_synthetic.py:tiny --root /tmp/smoke
  python -m experiments.report --root /tmp/anon_sweep

Nine runs of `configs/anon_synthetic.py` (30 epochs each on a 2-core CPU): for
each desensitization used as the initial supervision (mosaic, blur, noise), the
paper's three rows:

  base  "Base": the Re-ID model alone, trained on raw plus desensitized images
        (variant `base-<d>`); its anonymized images are the desensitized ones;
  wo    "w/o upgrade": the learned G, G_R, D1, D2 and C, supervised by the
        fixed desensitization throughout (variant `<d>`);
  full  the full method: the same plus the progressive supervision upgrade
        (variant FULL_VARIANT, `<d>-stages`, method A's staged driver).

The runs are ordered by desensitization (mosaic first, the paper's main
setting), so `--shard` or a sweep cut short still gives complete groups.
`:tiny` runs the same grid on the `tiny` variants as a smoke test.
"""

DESENSITIZE = ("mosaic", "blur", "noise")
# Variant templates per row; {d} is the desensitization.
ROWS = (
    ("base", "base-{d}"),
    ("wo", "{d}"),
    ("full", "{d}-stages"),   # FULL_VARIANT: the progressive stages
)
FULL_VARIANT = dict(ROWS)["full"]
CONFIG = "configs/anon_synthetic.py"


def get_sweep(arg=None):
  if arg not in (None, "tiny"):
    raise ValueError(f"anon_synthetic.py: unknown argument {arg!r} (expected 'tiny')")
  runs = []
  for d in DESENSITIZE:
    for row, template in ROWS:
      variant = template.format(d=d) + ("-tiny" if arg == "tiny" else "")
      runs.append({"name": f"{row}_{d}", "config": f"{CONFIG}:{variant}", "overrides": {}})
  return runs
