"""BoT baseline on cuhk03-np at paper scale (docs/baseline.md, docs/evaluation.md).

  python -m privreid_jax.main --config=configs/cuhk03.py \
      --config.data.root=/data/cuhk03-np --workdir=/tmp/cuhk03
"""

from privreid_jax import config_base


def get_config(arg=None):
  config_base.variants(arg, (), "configs/cuhk03.py")
  c = config_base.base_config()
  c.model.stem_relu = False     # BoT's ResNet: no ReLU after the stem BN (docs/baseline.md)
  c.data.name = "cuhk03"  # CUHK03-NP; --config.data.cuhk03_subset=detected
  return c
