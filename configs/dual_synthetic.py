"""Method B (dual-stage privacy-enhancing Re-ID) on synthetic pedestrians, 2-core CPU size.

  python -m privreid_jax.main --config=configs/dual_synthetic.py --workdir=/tmp/dual
  python -m privreid_jax.main --config=configs/dual_synthetic.py:mosaic --workdir=...

Variants (comma-separated, e.g. `advid,tiny`) mirror the paper's ablation rows:
baseline | clean | blur | mosaic | noise | advid | onestage (see
privreid_jax/methods/dual_stage/config.py); none = the two-stage method; `tiny`
shrinks everything for tests and smoke runs.
"""

from privreid_jax import config_base
from privreid_jax.methods.dual_stage import config as dual_config


def get_config(arg=None):
  names = config_base.variants(arg, dual_config.VARIANTS + ("tiny",),
                               "configs/dual_synthetic.py")
  c = config_base.base_config()
  # Sized for the shared 2-core CPU: the 128x64 synthetic images are read at 64x32
  # (a 4x2 feature map, 4 decoder stages) with a ResNet-18 of width 16, 16 epochs
  # (720 steps, ~1 s/step on the loaded CPU) at configs/synthetic.py's from-scratch
  # lr. 128x64 at width 32 ran at 7.6 s/step on the same loaded machine: too slow
  # for an ablation of eight rows.
  config_base.make_small_synthetic(c)
  dual_config.add_to(c)
  c.evals.feature_attack.enabled = True     # both attackers, at the end of training
  c.evals.inversion.enabled = True
  dual_config.apply_variants(c, names)
  if "tiny" in names:
    config_base.make_tiny(c, steps_per_epoch=1, every_epochs=2)
    d = c.dual
    d.decoder_widths = (16, 8)
    d.adv_width = d.probe_width = 4
    d.adv_hidden = 16
    d.noise_draws = 2
    d.epsilons = (float("inf"), 100.0)
    if "onestage" in names:
      d.epsilons = ()
    c.evals.feature_attack.steps = 20
    c.evals.linkage.steps = 20
    # tests switch the attackers on where they check them
    c.evals.feature_attack.enabled = c.evals.inversion.enabled = False
    c.evals.inversion.steps = c.evals.inversion.classifier_steps = 10
    c.evals.inversion.widths = (8, 4)
    c.evals.features.count = 40
  return c
