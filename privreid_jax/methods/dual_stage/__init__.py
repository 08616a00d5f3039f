"""Method B: dual-stage privacy-enhancing Re-ID (Kansal et al., WACV 2024).

  method.py      stage 1's pure step: encoder, De-ID decoder, Adv-ID, ID probe
  evaluators.py  the ID probe, the DP gallery release (stage 2), the attackers
  config.py      config.dual, the evaluators' entries and the variant names
"""

from privreid_jax.methods.dual_stage.method import Method

__all__ = ["Method"]
