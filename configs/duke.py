"""BoT baseline on DukeMTMC-reID at paper scale (docs/baseline.md, docs/evaluation.md).

  python -m privreid_jax.main --config=configs/duke.py \
      --config.data.root=/data/DukeMTMC-reID --workdir=/tmp/duke
"""

from privreid_jax import config_base


def get_config(arg=None):
  config_base.variants(arg, (), "configs/duke.py")
  c = config_base.base_config()
  c.model.stem_relu = False     # BoT's ResNet: no ReLU after the stem BN (docs/baseline.md)
  c.data.name = "dukemtmcreid"
  return c
