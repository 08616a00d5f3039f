"""Method A (learnable reversible anonymization) on synthetic pedestrians, CPU-sized.

  python -m privreid_jax.main --config=configs/anon_synthetic.py:mosaic --workdir=/tmp/anon
Variants (after the colon): the supervision `mosaic` (default), `blur` or
`noise`; `base` (the paper's Base: C alone on raw plus mosaic images, add
`-blur` / `-noise`, e.g. `base-blur`); `-stages` adds the progressive
supervision upgrade as named stages (e.g. `mosaic-stages`; without it, the
learned mode is the paper's "w/o upgrade"); `tiny` shrinks everything for tests.

Normalisation: ImageNet mean with std 0.5, as the reference code, so pixels in
[0, 1] map to about [-0.97, 1.09] and the generators' tanh output (-1, 1)
covers the image range.
"""

import ml_collections

from privreid_jax import config_base


def anon_section(desensitize: str = "mosaic") -> ml_collections.ConfigDict:
  """config.anon: method A's own fields, at paper scale (METHODS.md s.2)."""
  a = ml_collections.ConfigDict()
  a.mode = "learned"            # learned (G, G_R, D1, D2, C) | base (C on O and M)
  a.desensitize = desensitize   # initial supervision M: mosaic | blur | noise
  # Paper-scale (256-px-high) parameters, scaled to data.height by scale_params.
  a.mosaic_block = 24
  a.mosaic_fill = "top_left"    # top_left (reference code) | mean
  a.blur_sigma = 12.0
  a.noise_std = 0.5             # on the [0, 1] scale, not scaled
  a.ngf = 64                    # U-Net width (G and G_R)
  a.num_downs = 7               # unet_128; capped at what the image size allows
  a.dropout = False
  a.ndf = 64                    # PatchGAN width (D1 and D2)
  a.d_layers = 3
  a.b1 = 0.5                    # Adam betas of G, G_R, D1, D2 (C uses optim.b1/b2)
  a.b2 = 0.999
  a.weights = ml_collections.ConfigDict(dict(
      gan_d1=1.0, gan_d2=1.0, l1_anon=100.0, l1_rec=100.0, reid_raw=1.0, reid_anon=1.0))
  a.quality_images = 256        # query images for the PSNR / SSIM row
  a.third_party_workdir = ""    # a finished baseline run (raw images only) -> "3rd:*" rows
  # Stored targets (a progressive stage's G_teacher(O), data/target_records.py) in
  # place of the handcrafted M; the stage driver sets it.
  a.targets_dir = ""
  a.stages = stages_section()
  return a


def stages_section() -> ml_collections.ConfigDict:
  """config.anon.stages: the progressive supervision upgrade (METHODS.md s.2).

  Needs config.data.val_fraction > 0: the check runs on held-out training ids.
  """
  st = ml_collections.ConfigDict()
  st.enabled = False
  st.check_every_epochs = 5     # K (paper: 5)
  st.min_rank1 = 0.5            # [ours] the paper's threshold is not given; val Rank-1 in [0, 1]
  st.psnr_margin = 1.0          # PSNR(O,P) < PSNR(O,M) + 1 dB (M: handcrafted)
  st.ssim_margin = 0.05         # SSIM(O,P) < SSIM(O,M) + 0.05
  st.max_stages = 3             # [ours] upgrades at most; the last stage trains to the end
  st.quality_images = 256       # val gallery images for PSNR / SSIM
  st.index = 0                  # set by the driver: this run's stage
  st.last_rank1 = -1.0          # set by the driver: val Rank-1 of the last upgrade
  return st


def get_config(arg=None):
  c = config_base.base_config()
  c.method = "anonymization"
  # Sized for the 2-core CPU, as configs/dual_synthetic.py (config_base.make_small_synthetic:
  # 64x32, a width-16 ResNet-18 as C), with U-Nets and PatchGANs of width 16,
  # so the nine runs of the paper's table fit in an afternoon
  # (experiments/sweeps/anon_synthetic.py). At 128x64 with a width-32 C the joint
  # step ran at ~2 img/s on the loaded machine: hours per run. All five networks
  # train from scratch at lr 7e-4, twice the paper's 3.5e-4: at 3.5e-4 (this config
  # otherwise) Base on mosaic reached O->O Rank-1 16.2% against 45.6% for the
  # raw-only baseline at 7e-4.
  config_base.make_small_synthetic(c)
  # 32 epochs, not the shared 16: at 16 the authorized C matched mosaic-anonymized
  # queries (P->O) at 21% Rank-1, the level an outsider reaches from coarse cues;
  # wo_mosaic at 32 epochs reached 39.2% against the outsider's 22.7% (README).
  c.optim.epochs = 32
  c.optim.milestones = (24,)
  c.eval.every_epochs = 32
  c.checkpoint.every_epochs = 8
  c.data.std = (0.5, 0.5, 0.5)  # see the module docstring
  c.anon = anon_section()
  c.anon.ngf = 16
  c.anon.ndf = 16
  c.anon.quality_images = 256
  c.anon.stages.check_every_epochs = 4
  # [ours] The paper gives no Rank-1 threshold. Calibrated to this data: the first
  # check of the mosaic stage-0 run (epoch 4) measured val Rank-1 0.167, the raw-only
  # baseline at this size reaches 0.456 test Rank-1; 0.5 would never upgrade.
  c.anon.stages.min_rank1 = 0.2

  parts = (arg or "mosaic").split("-")
  if "stages" in parts:
    parts.remove("stages")
    c.anon.stages.enabled = True
    c.data.val_fraction = 0.2   # the check's validation identities
  if parts[0] == "base":
    c.anon.mode = "base"
    parts = parts[1:] or ["mosaic"]
  if parts == ["tiny"]:
    parts = ["mosaic", "tiny"]
  if parts[0] not in ("mosaic", "blur", "noise") or parts[1:] not in ([], ["tiny"]):
    raise ValueError(f"configs/anon_synthetic.py: unknown variant {arg!r} (expected "
                     "[base-]mosaic|blur|noise[-stages][-tiny], or tiny)")
  c.anon.desensitize = parts[0]
  if parts[1:] == ["tiny"]:
    config_base.make_tiny(c)
    c.anon.ngf = 4
    c.anon.ndf = 4
    c.anon.num_downs = 3        # small U-Nets and PatchGANs compile fast
    c.anon.d_layers = 1
    c.anon.quality_images = 16
    c.anon.stages.check_every_epochs = 1
    c.anon.stages.quality_images = 16
    c.log.tensorboard = False
  return c
