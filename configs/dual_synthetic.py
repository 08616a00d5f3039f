"""Method B (dual-stage privacy-enhancing Re-ID) on synthetic pedestrians, 2-core CPU size.

  python -m privreid_jax.main --config=configs/dual_synthetic.py --workdir=/tmp/dual
  python -m privreid_jax.main --config=configs/dual_synthetic.py:pixel --workdir=...

Variants (comma-separated, e.g. `advid,tiny`) mirror the paper's ablation rows:
  baseline  Re-ID encoder only (no decoder, no adversary)
  clean     + decoder reconstructing the clean image O
  blur | pixel | noise   + De-ID decoder with that target, no adversary
  advid     + Adv-ID on the pooled feature, no decoder
  onestage  encoder + pixelation decoder + Adv-ID (no DP gallery rows)
  (default) two-stage: onestage + DP gallery release at several epsilons
  tiny      shrinks everything for tests and smoke runs
"""

from privreid_jax import config_base
import ml_collections

VARIANTS = ("baseline", "clean", "blur", "pixel", "noise", "advid", "onestage", "tiny")


def dual_section() -> ml_collections.ConfigDict:
  """config.dual: everything method B adds to the shared defaults."""
  d = ml_collections.ConfigDict()
  # Stage 1: De-ID decoder target. pixelation (best in the paper) | blur | noise |
  # clean (the input itself) | none (no decoder). Paper-scale parameters (256x128
  # images), scaled to config.data.height by ops.desensitize.scale_params.
  d.target = "pixelation"
  d.mosaic_block = 24
  d.mosaic_fill = "top_left"    # top_left | mean
  d.blur_sigma = 12.0
  d.noise_std = 0.5             # fixed per image (seeded by its content)
  d.decoder_widths = (64, 32, 16, 8)
  d.recon_weight = 1.0          # L1(recon, target), in normalised image space [ours]
  # Adv-ID: none | reversal (grad_reverse, one joint step) | alternating (adversary
  # step first, then encoder + decoder against the updated adversary).
  d.adversarial = "reversal"
  d.adv_input = "recon"         # recon (decoder output) | feature (pooled feature)
  d.adv_objective = "uniform"   # alternating only: uniform (confuse) | maximize (its CE)
  d.adv_weight = 0.1            # [ours]: the paper gives no weight
  d.adv_reversal_scale = 1.0
  d.adv_width = 16
  d.adv_stages = 4
  d.adv_hidden = 256
  # ID probe [ours]: an identity classifier trained on CLEAN training images only
  # (stop-gradient; it never changes the encoder). Query identities are unseen in
  # training, so it is scored on a fixed hashed fraction of TRAINING images that it
  # never trains on ("held out"); the Re-ID encoder and decoder do train on them.
  # Rows: id_probe:clean (does the probe work at all), id_probe:recon (ID accuracy
  # from the decoder's reconstructions), both with the chance level.
  d.probe_holdout = 0.2
  d.probe_seed = 0
  d.probe_width = 16
  d.probe_stages = 4
  d.probe_max_images = 1000     # 0 = all held-out images
  # Stage 2: gallery features released through the Gaussian mechanism, per-image
  # (epsilon, delta), L2 sensitivity 2; inf = clean gallery. Per-identity epsilon
  # composes k = median gallery images per id (see privacy/dp.py).
  d.epsilons = (float("inf"), 1000.0, 300.0, 100.0, 30.0, 10.0)
  d.delta = 1e-5
  d.noise_draws = 5
  d.dp_seed = -1                # -1: os.urandom noise (private); >= 0 only for tests
  # Stronger attacker (privacy/attacks.py): trains its own classifier on released
  # training features; row attack:feature_classifier.
  d.attack = False
  d.attack_epsilon = float("inf")  # noise on the attacker's features (inf = clean)
  d.attack_steps = 300
  # Inversion attacker [ours] (privacy/inversion.py): trains its own decoder
  # (released feature vector -> image, L1 to the input) and identity classifier
  # on its reconstructions, on the same split and released features as above;
  # row attack:inversion (id_acc of its classifier, probe_acc of the clean ID
  # probe on its reconstructions, PSNR/SSIM vs the input), inversion_grid.png.
  d.inversion = False
  d.inversion_steps = 400
  d.inversion_classifier_steps = 400
  d.inversion_widths = (64, 32, 16, 8)
  # Figures: the first N query features (L2-normalised) with pids are saved to
  # WORKDIR/features_test.npz at every evaluation (t-SNE across runs); 0 = off.
  d.save_features = 300
  return d


def apply_variant(c, name: str) -> None:
  d = c.dual
  if name == "baseline":
    d.target, d.adversarial = "none", "none"
  elif name in ("clean", "blur", "noise"):
    d.target, d.adversarial = name, "none"
  elif name == "pixel":
    d.target, d.adversarial = "pixelation", "none"
  elif name == "advid":
    d.target, d.adversarial, d.adv_input = "none", "reversal", "feature"
  elif name == "onestage":
    d.epsilons = ()
  elif name == "tiny":
    config_base.make_tiny(c, steps_per_epoch=1, every_epochs=2)
    d.decoder_widths = (16, 8)
    d.adv_width = d.probe_width = 4
    d.adv_hidden = 16
    d.noise_draws = 2
    d.epsilons = (float("inf"), 100.0)
    d.attack_steps = 20
    d.attack = d.inversion = False   # tests switch them on where they check them
    d.inversion_steps = d.inversion_classifier_steps = 10
    d.inversion_widths = (8, 4)
    d.save_features = 40
  else:
    raise ValueError(f"configs/dual_synthetic.py: unknown variant {name!r} "
                     f"(expected a comma-separated subset of {', '.join(VARIANTS)})")


def get_config(arg=None):
  c = config_base.base_config()
  c.method = "dual_stage"
  # Sized for the shared 2-core CPU: the 128x64 synthetic images are read at 64x32
  # (a 4x2 feature map, 4 decoder stages) with a ResNet-18 of width 16, 16 epochs
  # (720 steps, ~1 s/step on the loaded CPU) at configs/synthetic.py's from-scratch
  # lr. 128x64 at width 32 ran at 7.6 s/step on the same loaded machine: too slow
  # for an ablation of eight rows.
  config_base.make_small_synthetic(c)
  c.eval.distance = "cosine"
  c.dual = dual_section()
  c.dual.attack = True          # both attackers run at every evaluation
  c.dual.inversion = True
  for name in filter(None, (arg or "").split(",")):
    apply_variant(c, name.strip())
  return c
