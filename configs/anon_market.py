"""Method A on Market-1501 at paper scale: 256x128, unet_128, P16 x K4.

  python -m privreid_jax.main --config=configs/anon_market.py:mosaic \
      --config.data.root=/data/Market-1501-v15.09.15 --workdir=/tmp/anon_market
Variants (comma-separated): `mosaic` (default), `blur` or `noise`; `agw` (GeM,
non-local blocks, weighted triplet: the paper's C); `base` for the paper's Base
(e.g. `base,mosaic,agw`); `stages` for the progressive upgrade.
config.anon lives in privreid_jax/methods/anonymization/config.py.
"""

from privreid_jax import config_base
from privreid_jax.methods.anonymization import config as anon_config


def get_config(arg=None):
  names = config_base.variants(arg, anon_config.VARIANTS, "configs/anon_market.py")
  c = config_base.base_config()
  c.model.stem_relu = False     # BoT's ResNet: no ReLU after the stem BN (docs/baseline.md)
  c.data.name = "market1501"
  c.data.height = 256
  c.data.width = 128
  c.data.batch_size = 64        # P=16 ids x K=4
  c.data.num_instances = 4
  c.model.backbone = "resnet50"
  anon_config.add_to(c)
  c.anon.num_downs = 7          # unet_128
  c.evals.image_quality.images = 3368  # the whole Market-1501 query set
  anon_config.apply_variants(c, names)
  return c
