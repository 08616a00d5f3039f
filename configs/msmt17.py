"""BoT baseline on MSMT17_V1 at paper scale (docs/baseline.md, docs/evaluation.md).

  python -m privreid_jax.main --config=configs/msmt17.py \
      --config.data.root=/data/MSMT17_V1 --workdir=/tmp/msmt17
"""

from privreid_jax import config_base


def get_config(arg=None):
  config_base.variants(arg, (), "configs/msmt17.py")
  c = config_base.base_config()
  c.model.stem_relu = False     # BoT's ResNet: no ReLU after the stem BN (docs/baseline.md)
  c.data.name = "msmt17"
  return c
