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

import math
import numbers

import ml_collections

from privreid_jax import config_base
from privreid_jax.errors import ConfigError
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
  # Rows attack:linkage@eps=E: the attacker links labelled photos of the test people
  # (the query split) to the released, noised gallery at each of config.dual.epsilons.
  c.evals.linkage = eval_base.section(every_epochs=0, steps=300)
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


def cpu_config(names, *, real: bool = False) -> ml_collections.ConfigDict:
  """The 2-core CPU method-B config with variants `names`: synthetic pedestrians
  (configs/dual_synthetic.py) or, with `real`, the small public datasets
  (configs/dual_real_small.py, config_base.make_small_real with CUHK01's test split
  as the run's own and the released gallery the attacks target).

  The 128x64 images are read at 64x32 (a 4x2 feature map, 4 decoder stages) with a
  ResNet-18 of width 16, 16 epochs (720 steps on the synthetic data, ~1 s/step on
  the loaded CPU) at lr 7e-4 (command 1's from-scratch lr until 8967b58). 128x64 at
  width 32 ran at 7.6 s/step on the same loaded machine: too slow for an ablation of
  eight rows.
  """
  c = config_base.base_config()
  config_base.make_small_synthetic(c)     # the CPU sizes (and the synthetic data)
  if real:
    config_base.make_small_real(c, primary="cuhk01")
  add_to(c)
  c.evals.feature_attack.enabled = True     # both attackers, at the end of training
  c.evals.inversion.enabled = True
  apply_variants(c, names)
  if "tiny" in names:
    make_tiny(c, names)
  return c


def make_tiny(c: ml_collections.ConfigDict, names) -> ml_collections.ConfigDict:
  """The `tiny` variant of a method-B config (after apply_variants): tests and smoke
  runs; the attackers are off (tests switch them on where they check them)."""
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
  c.evals.feature_attack.enabled = c.evals.inversion.enabled = False
  c.evals.inversion.steps = c.evals.inversion.classifier_steps = 10
  c.evals.inversion.widths = (8, 4)
  c.evals.features.count = 40
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


def _need(ok: bool, key: str, value, what: str) -> None:
  if not ok:
    raise ConfigError(f"config.dual.{key}={value!r}: {what}")


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool) and not math.isnan(v)


def check(d) -> None:
  """One-line errors (ConfigError, a ValueError) for bad config.dual values."""
  for key, allowed in (("target", TARGETS), ("adversarial", ADVERSARIAL),
                       ("adv_input", ADV_INPUTS), ("adv_objective", ADV_OBJECTIVES),
                       ("mosaic_fill", ("top_left", "mean"))):
    if d[key] not in allowed:
      raise ConfigError(f"config.dual.{key}={d[key]!r}: expected {' | '.join(allowed)}")
  if d.adversarial != "none" and d.adv_input == "recon" and d.target == "none":
    raise ConfigError("config.dual.adv_input='recon' needs a decoder, but "
                      "config.dual.target='none'; use adv_input='feature'")
  _need(_is_real(d.probe_holdout) and 0.0 < d.probe_holdout < 1.0, "probe_holdout",
        d.probe_holdout, "expected a fraction in (0, 1)")
  epsilons = d.epsilons
  _need(isinstance(epsilons, (tuple, list)), "epsilons", epsilons,
        "expected a tuple of epsilons (inf for the clean gallery)")
  for eps in epsilons:
    if not (eps is None or (_is_real(eps) and eps > 0)):
      raise ConfigError(f"config.dual.epsilons: {eps!r} is not > 0 (use inf for clean)")
  _need(_is_real(d.delta) and 0.0 < d.delta < 1.0, "delta", d.delta,
        "expected a probability in (0, 1), e.g. 1e-5")
  _need(_is_int(d.noise_draws) and d.noise_draws >= 1, "noise_draws", d.noise_draws,
        "expected an integer >= 1 (DP rows average over that many noise draws)")
  _need(_is_int(d.dp_seed) and d.dp_seed >= -1, "dp_seed", d.dp_seed,
        "expected -1 (os.urandom noise) or a seed >= 0")
  for key in ("mosaic_block", "adv_width", "adv_stages", "adv_hidden", "probe_width",
              "probe_stages"):
    _need(_is_int(d[key]) and d[key] >= 1, key, d[key], "expected an integer >= 1")
  for key in ("probe_max_images", "probe_seed"):
    _need(_is_int(d[key]) and d[key] >= 0, key, d[key], "expected an integer >= 0")
  for key in ("recon_weight", "adv_weight", "adv_reversal_scale", "noise_std"):
    _need(_is_real(d[key]) and math.isfinite(d[key]) and d[key] >= 0, key, d[key],
          "expected a finite number >= 0")
  _need(_is_real(d.blur_sigma) and math.isfinite(d.blur_sigma) and d.blur_sigma > 0,
        "blur_sigma", d.blur_sigma, "expected a finite number > 0")
  widths = d.decoder_widths
  _need(isinstance(widths, (tuple, list)) and len(widths) > 0
        and all(_is_int(w) and w >= 1 for w in widths), "decoder_widths", widths,
        "expected a non-empty tuple of integers >= 1")
