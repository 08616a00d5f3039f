"""Method B (dual-stage privacy-enhancing Re-ID) on synthetic pedestrians, 2-core CPU size.

  python -m privreid_jax.main --config=configs/dual_synthetic.py --workdir=/tmp/dual
  python -m privreid_jax.main --config=configs/dual_synthetic.py:mosaic --workdir=...

Variants (comma-separated, e.g. `advid,tiny`) mirror the paper's ablation rows:
baseline | clean | blur | mosaic | noise | advid | onestage (see
privreid_jax/methods/dual_stage/config.py); none = the two-stage method; `tiny`
shrinks everything for tests and smoke runs.
"""

from privreid_jax import config_base
from privreid_jax.methods.dual_stage import config as dual_config


def get_config(arg=None):
  names = config_base.variants(arg, dual_config.VARIANTS + ("tiny",),
                               "configs/dual_synthetic.py")
  return dual_config.cpu_config(names, real=False)
