"""Method A (learnable reversible anonymization) on synthetic pedestrians, CPU-sized.

  python -m privreid_jax.main --config=configs/anon_synthetic.py:mosaic --workdir=/tmp/anon
Variants (comma-separated after the colon): the supervision `mosaic` (default),
`blur` or `noise`; `base` (the paper's Base: C alone on raw plus desensitized
images); `stages` (the progressive supervision upgrade as named stages; without
it the learned mode is the paper's "w/o upgrade"); `agw`; `tiny` shrinks
everything for tests. E.g. `configs/anon_synthetic.py:blur,stages,tiny`.
config.anon and the evaluators live in privreid_jax/methods/anonymization/config.py.
"""

from privreid_jax import config_base
from privreid_jax.methods.anonymization import config as anon_config


def get_config(arg=None):
  names = config_base.variants(arg, anon_config.VARIANTS + ("tiny",),
                               "configs/anon_synthetic.py")
  return anon_config.cpu_config(names, real=False)
