"""BoT baseline on Market-1501 at paper scale (docs/baseline.md).

  python -m privreid_jax.main --config=configs/market.py \
      --config.data.root=/data/Market-1501-v15.09.15 --workdir=/tmp/market
Variant `agw` switches to GeM pooling, non-local blocks, weighted triplet and
milestones 40/80: --config=configs/market.py:agw
"""

from privreid_jax import config_base


def get_config(arg=None):
  c = config_base.base_config()
  c.model.stem_relu = False     # BoT's ResNet: no ReLU after the stem BN (docs/baseline.md)
  c.data.name = "market1501"
  if "agw" in config_base.variants(arg, ("agw",), "configs/market.py"):
    config_base.make_agw(c)
  return c
