"""Method A: learnable reversible anonymization (Zhang, Ye, Yang, ACM MM 2022).

  method.py        the networks' pure steps, embed, anonymize / recover
  networks.py      G / G_R (U-Net) and D1 / D2 (PatchGAN) from config.anon
  targets.py       the supervision M (handcrafted, or a stage's stored targets)
  evaluators.py    PSNR / SSIM of M, P and R
  third_party.py   the outsider: a raw-only Re-ID model matching our images
  upgrade_rule.py  the progressive stage check and its rule
  stages.py        the stage driver (several trainer runs)
  config.py        config.anon, the evaluators' entries and the variant names
"""

from privreid_jax.methods.anonymization.method import KINDS, Method, SETTINGS

__all__ = ["KINDS", "Method", "SETTINGS"]
