"""Method A on Market-1501 at paper scale (METHODS.md s.2): 256x128, unet_128, P16 x K4.

  python -m privreid_jax.main --config=configs/anon_market.py:mosaic \
      --config.data.root=/data/Market-1501-v15.09.15 --workdir=/tmp/anon_market
Variants: `mosaic` (default), `blur`, `noise`, each optionally with `-agw`
(GeM, non-local blocks, weighted triplet; the paper's C), and `base-...` for the
paper's Base (AGW trained on raw plus desensitized images: `base-mosaic-agw`).

Normalisation: ImageNet mean with std 0.5 (the reference code), so the U-Nets'
tanh output (-1, 1) covers the normalised image range.
"""

from configs import anon_synthetic
from privreid_jax import config_base


def get_config(arg=None):
  c = config_base.base_config()
  c.method = "anonymization"
  c.data.name = "market1501"
  c.data.height = 256
  c.data.width = 128
  c.data.std = (0.5, 0.5, 0.5)
  c.data.batch_size = 64        # P=16 ids x K=4
  c.data.num_instances = 4
  c.model.backbone = "resnet50"
  c.anon = anon_section = anon_synthetic.anon_section()
  anon_section.num_downs = 7    # unet_128
  anon_section.quality_images = 3368  # the whole Market-1501 query set

  parts = (arg or "mosaic").split("-")
  if parts[0] == "base":
    c.anon.mode = "base"
    parts = parts[1:] or ["mosaic"]
  agw = parts[-1:] == ["agw"]
  parts = parts[:-1] if agw else parts
  if len(parts) != 1 or parts[0] not in ("mosaic", "blur", "noise"):
    raise ValueError(f"configs/anon_market.py: unknown variant {arg!r} (expected "
                     "[base-]mosaic|blur|noise[-agw])")
  c.anon.desensitize = parts[0]
  if agw:
    c.model.pooling = "gem"
    c.model.non_local = True
    c.loss.triplet = "weighted"
    c.optim.milestones = (40, 80)
  return c
