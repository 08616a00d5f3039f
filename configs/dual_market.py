"""Method B (dual-stage privacy-enhancing Re-ID) on Market-1501 at paper scale.

  python -m privreid_jax.main --config=configs/dual_market.py \
      --config.data.root=/data/Market-1501-v15.09.15 --workdir=/tmp/dual_market

BoT ResNet-50 (256x128, last stride 1 -> 2048 x 16 x 8 map), P x K = 16 x 4,
120 epochs. The De-ID decoder reconstructs 256x128 images from the 16 x 8 map
(4 x2 stages). Variants (comma-separated) as in configs/dual_synthetic.py:
baseline | clean | blur | mosaic | noise | advid | onestage.
"""

from privreid_jax import config_base
from privreid_jax.methods.dual_stage import config as dual_config


def get_config(arg=None):
  names = config_base.variants(arg, dual_config.VARIANTS, "configs/dual_market.py")
  c = config_base.base_config()
  c.model.stem_relu = False     # BoT's ResNet: no ReLU after the stem BN (docs/baseline.md)
  c.data.name = "market1501"
  dual_config.add_to(c)
  c.dual.decoder_widths = (256, 128, 64, 32)
  c.dual.adv_width = 32
  c.dual.adv_stages = 5
  c.dual.adv_hidden = 512
  c.dual.probe_width = 32
  c.dual.probe_stages = 5
  c.dual.probe_max_images = 2000
  c.dual.noise_draws = 10
  c.evals.feature_attack.steps = 2000
  dual_config.apply_variants(c, names)
  return c
