"""config.dual and method B's evaluators: the fields every method-B experiment shares.

Experiment configs (`configs/dual_*.py`) call `add_to(c)`, change only sizes,
then `apply_variants` with the paper's ablation rows:

  baseline  Re-ID encoder only (no decoder, no adversary)
  clean     + decoder reconstructing the clean image O
  blur | mosaic | noise   + De-ID decoder with that target, no adversary
  advid     + Adv-ID on the pooled feature, no decoder
  onestage  encoder + mosaic decoder + Adv-ID (no DP gallery rows)
  (none)    two-stage: onestage + DP gallery release at several epsilons
"""

import ml_collections

from privreid_jax.evaluation import base as eval_base

VARIANTS = ("baseline", "clean", "blur", "mosaic", "noise", "advid", "onestage")
TARGETS = ("mosaic", "blur", "noise", "clean", "none")
ADVERSARIAL = ("none", "reversal", "alternating")
ADV_INPUTS = ("recon", "feature")
ADV_OBJECTIVES = ("uniform", "maximize")


def dual_section() -> ml_collections.ConfigDict:
  """config.dual: everything method B adds to the shared defaults (docs/method_b.md)."""
  d = ml_collections.ConfigDict()
  # Stage 1: De-ID decoder target. mosaic (the paper's "pixelation", its best) | blur |
  # noise | clean (the input itself) | none (no decoder). Paper-scale parameters
  # (256x128 images), scaled to config.data.height by ops.desensitize.scale_params.
  d.target = "mosaic"
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
  d.probe_holdout = 0.2
  d.probe_seed = 0
  d.probe_width = 16
  d.probe_stages = 4
  d.probe_max_images = 1000     # 0 = all held-out images
  # Stage 2: gallery features released through the Gaussian mechanism, per-image
  # (epsilon, delta), L2 sensitivity 2; inf = clean gallery. Per-identity epsilon
  # composes the k gallery images of one person (see privacy/dp.py).
  d.epsilons = (float("inf"), 1000.0, 300.0, 100.0, 30.0, 10.0)
  d.delta = 1e-5
  d.noise_draws = 5
  d.dp_seed = -1                # -1: os.urandom noise (private); >= 0 only for tests
  return d


def add_to(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Makes `c` a method-B config: method, distance, config.dual, evaluators."""
  c.method = "dual_stage"
  c.eval.distance = "cosine"
  c.dual = dual_section()
  # Rows id_probe:clean / id_probe:recon / recon:quality and recon_grid.png.
  c.evals.id_probe = eval_base.section()
  # Rows dp:eps=...: clean queries against the DP-released gallery (config.dual).
  c.evals.dp_release = eval_base.section()
  # Row attack:feature_classifier: an MLP trained on released training features
  # (noised at `epsilon`), scored on the probe's held-out images. End of training only.
  c.evals.feature_attack = eval_base.section(enabled=False, every_epochs=0, steps=300,
                                             epsilon=float("inf"))
  # Row attack:inversion: a decoder feature -> image and a classifier on its
  # reconstructions, on the same split and released features. End only.
  c.evals.inversion = eval_base.section(enabled=False, every_epochs=0, steps=400,
                                        classifier_steps=400, widths=(64, 32, 16, 8),
                                        epsilon=float("inf"))
  # WORKDIR/features_test.npz: the first `count` query features (L2-normalised) with
  # pids, for t-SNE across runs.
  c.evals.features = eval_base.section(count=300)
  return c


def apply_variants(c: ml_collections.ConfigDict, names) -> None:
  d = c.dual
  for name in names:
    if name == "baseline":
      d.target, d.adversarial = "none", "none"
    elif name in ("clean", "blur", "noise", "mosaic"):
      d.target, d.adversarial = name, "none"
    elif name == "advid":
      d.target, d.adversarial, d.adv_input = "none", "reversal", "feature"
    elif name == "onestage":
      d.epsilons = ()


def check(d) -> None:
  """One-line errors for bad config.dual values."""
  for key, allowed in (("target", TARGETS), ("adversarial", ADVERSARIAL),
                       ("adv_input", ADV_INPUTS), ("adv_objective", ADV_OBJECTIVES)):
    if d[key] not in allowed:
      raise ValueError(f"config.dual.{key}={d[key]!r}: expected {' | '.join(allowed)}")
  if d.adversarial != "none" and d.adv_input == "recon" and d.target == "none":
    raise ValueError("config.dual.adv_input='recon' needs a decoder, but "
                     "config.dual.target='none'; use adv_input='feature'")
  if not 0.0 < d.probe_holdout < 1.0:
    raise ValueError(f"config.dual.probe_holdout={d.probe_holdout}: expected a "
                     "fraction in (0, 1)")
  for eps in d.epsilons:
    if eps is not None and not float(eps) > 0:
      raise ValueError(f"config.dual.epsilons: {eps!r} is not > 0 (use inf for clean)")
