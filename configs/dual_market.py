"""Method B (dual-stage privacy-enhancing Re-ID) on Market-1501 at paper scale.

  python -m privreid_jax.main --config=configs/dual_market.py \
      --config.data.root=/data/Market-1501-v15.09.15 --workdir=/tmp/dual_market

BoT ResNet-50 (256x128, last stride 1 -> 2048 x 16 x 8 map), P x K = 16 x 4,
120 epochs. The De-ID decoder reconstructs 256x128 images from the 16 x 8 map
(4 x2 stages). Variants as in configs/dual_synthetic.py (except `tiny`):
baseline | clean | blur | pixel | noise | advid | onestage.
"""

from privreid_jax import config_base

from configs import dual_synthetic


def get_config(arg=None):
  c = config_base.base_config()
  c.method = "dual_stage"
  c.data.name = "market1501"
  c.eval.distance = "cosine"
  c.dual = dual_synthetic.dual_section()
  c.dual.decoder_widths = (256, 128, 64, 32)
  c.dual.adv_width = 32
  c.dual.adv_stages = 5
  c.dual.adv_hidden = 512
  c.dual.probe_width = 32
  c.dual.probe_stages = 5
  c.dual.probe_max_images = 2000
  c.dual.noise_draws = 10
  c.dual.attack_steps = 2000
  for name in filter(None, (arg or "").split(",")):
    if name.strip() == "tiny":
      raise ValueError("configs/dual_market.py: use configs/dual_synthetic.py:tiny for tests")
    dual_synthetic.apply_variant(c, name.strip())
  return c
