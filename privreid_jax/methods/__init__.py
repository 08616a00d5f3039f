"""Training methods: each a `Method` class over the shared trainer (see base.py).

  baseline.py       the BoT/AGW strong baseline
  reid_learner.py   the Re-ID model C with its losses, shared by every method
  anonymization/    method A, reversible anonymization (ACM MM 2022)
  dual_stage/       method B, dual-stage privacy-enhancing Re-ID (WACV 2024)
"""
