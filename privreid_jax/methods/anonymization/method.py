"""Method A: learnable reversible anonymization (Zhang, Ye, Yang, ACM MM 2022).

docs/method_a.md has the method and every deviation from the reference code.
Networks, all in one TrainState with their own optimizers:

* G ("G"): U-Net anonymizer, O -> P (full-body anonymized image);
* G_R ("G_R"): U-Net recovery network, P -> R ~ O (P is not detached);
* D1, D2 ("D1", "D2"): PatchGANs on image pairs, D1 real (O, M) vs fake
  (O, P), D2 real (P, O) vs fake (P, R);
* C ("reid", plus "reid_centers" with the center loss): the Re-ID model of
  `ReidLearner`, trained on O and on P.

M is the handcrafted desensitization of O, or a progressive stage's stored
G_teacher(O) (`targets.py`). Images live in the pipeline's normalised space.

One step (`train_step`): G and G_R run once (train mode) and their outputs are
kept with a VJP; D1 and D2 are updated on detached fakes; then one joint
update of G, G_R and C on

  w_d1 GAN_D1 + w_d2 GAN_D2 + w_p L1(P, M) + w_r L1(R, O) + w_o reid(O) + w_a reid(P)

against the updated discriminators (pix2pix's order), the gradient reaching G
and G_R through the stored VJP. Each discriminator loss sums its real and fake
terms as the reference code (`anon.d_loss_scale = 0.5` halves it, pix2pix); as
pix2pix, the discriminators run in train mode (batch statistics) in the
generator loss without their running statistics being updated there.

`anon.mode = "base"` is the paper's "Base": no generators, C alone trained on
raw plus desensitized images (reid(O) + reid(M)); its "anon" images are the
desensitized ones, computed in JAX at evaluation.

With `anon.stages.enabled` the epoch hook runs the upgrade check
(`upgrade_rule.py`) and `driver` (`stages.run`) trains stage after stage;
without it, the learned mode is the paper's "w/o upgrade".
"""

from __future__ import annotations

import jax

from privreid_jax import losses, optim, train_state
from privreid_jax.methods import base
from privreid_jax.methods.anonymization import (adaptive_outsider, evaluators, networks,
                                                stages, targets, third_party, upgrade_rule)
from privreid_jax.methods.reid_learner import ReidLearner
from privreid_jax.ops import desensitize, normalize

MODES = ("learned", "base")
KINDS = ("raw", "anon", "recovered")
GENERATORS = ("G", "G_R")
DISCRIMINATORS = ("D1", "D2")
SETTINGS = {"O->O": ("raw", "raw"), "O->P": ("raw", "anon"),
            "P->O": ("anon", "raw"), "P->P": ("anon", "anon"),
            "R->O": ("recovered", "raw")}


class Method(base.Method):
  """Method A (see the module docstring)."""

  driver = staticmethod(stages.run)

  def __init__(self, config, *, num_classes: int, steps_per_epoch: int, options=None):
    a = config.anon
    stage = (options or {}).get("stage")
    if a.mode not in MODES:
      raise ValueError(f"config.anon.mode={a.mode!r}: expected {' | '.join(MODES)}")
    self.config = config
    self.mode = a.mode
    self.mean = tuple(float(v) for v in config.data.mean)
    self.std = tuple(float(v) for v in config.data.std)
    self.weights = {k: float(a.weights[k]) for k in
                    ("gan_d1", "gan_d2", "l1_anon", "l1_rec", "reid_raw", "reid_anon")}
    self.desensitize_method, self.desensitize_params = targets.desensitize_params(config)
    self.d_loss_scale = float(a.d_loss_scale)
    self.reid = ReidLearner(config, num_classes, steps_per_epoch)
    self.txs = dict(self.reid.txs)
    if self.mode == "learned":
      self.gen = networks.generator(config)
      self.disc = networks.discriminator(config)
      gan_tx = optim.from_config(config.optim, steps_per_epoch, b1=float(a.b1),
                                 b2=float(a.b2))
      for name in GENERATORS + DISCRIMINATORS:
        self.txs[name] = gan_tx
      self.eval_settings = dict(SETTINGS)
    else:
      self.eval_settings = {k: v for k, v in SETTINGS.items() if "R" not in k}
    self.quality = evaluators.ImageQuality(self, config.data)
    self.check = (upgrade_rule.StageCheck(config, stage or upgrade_rule.Stage(),
                                          self.quality)
                  if a.stages.enabled and self.mode == "learned" else None)

  @classmethod
  def train_targets(cls, config, options=None):
    stage = (options or {}).get("stage")
    return targets.train_targets(config, stage.targets_dir if stage else "")

  def handcrafted_target(self) -> targets.Desensitizer:
    """The handcrafted M as a [0, 1] image function (the quality anchor): noise
    fixed per image, so the anchor is the same at every measurement."""
    return targets.handcrafted(self.config, fresh=False)

  # --- networks ------------------------------------------------------------------

  def init(self, rng, batch):
    images = batch["image"]
    params, stats = self.reid.init(rng, images)
    if self.mode == "learned":
      keys = jax.random.split(jax.random.fold_in(rng, 7), 4)
      for name, key in zip(GENERATORS, keys[:2]):
        v = self.gen.init(key, images, train=False)
        params[name], stats[name] = v["params"], v["batch_stats"]
      for name, key in zip(DISCRIMINATORS, keys[2:]):
        v = self.disc.init(key, images, images, train=False)
        params[name], stats[name] = v["params"], v["batch_stats"]
    return train_state.create(params, stats, self.txs, rng)

  def _generate(self, params, stats, name, x, train: bool, rng=None):
    variables = {"params": params[name], "batch_stats": stats[name]}
    if not train:
      return self.gen.apply(variables, x, train=False), stats[name]
    rngs = {"dropout": rng} if rng is not None else {}
    y, upd = self.gen.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
    return y, upd["batch_stats"]

  def _discriminate(self, params, stats, name, a, b):
    """D in train mode -> (logits, updated batch stats)."""
    logits, upd = self.disc.apply({"params": params[name], "batch_stats": stats[name]},
                                  a, b, train=True, mutable=["batch_stats"])
    return logits, upd["batch_stats"]

  def _d_loss(self, params, stats, name, cond, real, fake):
    """D loss: s (BCE(D(c, real), 1) + BCE(D(c, fake), 0)), s = anon.d_loss_scale
    (1: the reference's sum; 0.5: pix2pix); stats threaded."""
    logits_real, st = self._discriminate(params, stats, name, cond, real)
    logits_fake, st = self._discriminate(params, {name: st}, name, cond, fake)
    loss = self.d_loss_scale * (losses.gan_bce(logits_real, True)
                                + losses.gan_bce(logits_fake, False))
    return loss, st

  # --- training ------------------------------------------------------------------

  def train_step(self, state, batch):
    if self.mode == "base":
      return self._base_step(state, batch)
    o, m, pids = batch["image"], batch["target"], batch["pid"]
    w = self.weights
    rng_g, rng_r = jax.random.split(state.step_rng())
    stats = dict(state.batch_stats)

    def generators(p_g, p_r):
      prm = {"G": p_g, "G_R": p_r}
      p, st_g = self._generate(prm, stats, "G", o, True, rng_g)
      r, st_r = self._generate(prm, stats, "G_R", p, True, rng_r)
      return (p, r), {"G": st_g, "G_R": st_r}

    (p, r), gen_vjp, gen_stats = jax.vjp(generators, state.params["G"],
                                         state.params["G_R"], has_aux=True)
    stats.update(gen_stats)

    # 1. D1, D2 on detached fakes.
    p_sg, r_sg = jax.lax.stop_gradient(p), jax.lax.stop_gradient(r)

    def d_loss_fn(d_params):
      l1_, s1 = self._d_loss(d_params, stats, "D1", o, m, p_sg)
      l2_, s2 = self._d_loss(d_params, stats, "D2", p_sg, o, r_sg)
      return l1_ + l2_, ({"D1": s1, "D2": s2}, {"d1_loss": l1_, "d2_loss": l2_})

    d_params = {k: state.params[k] for k in DISCRIMINATORS}
    (_, (d_stats, metrics)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
    state = train_state.apply_updates(state, self.txs, d_grads)
    stats.update(d_stats)

    # 2. Joint G, G_R, C update against the updated discriminators.
    def joint_loss(c_params, p, r):
      d1_logits, _ = self._discriminate(state.params, stats, "D1", o, p)
      d2_logits, _ = self._discriminate(state.params, stats, "D2", p, r)
      gan_d1 = losses.gan_bce(d1_logits, True)
      gan_d2 = losses.gan_bce(d2_logits, True)
      l1_anon = losses.l1(p, m)
      l1_rec = losses.l1(r, o)
      reid_o, (c_stats, m_o) = self.reid.loss(c_params, stats, o, pids, prefix="raw_")
      reid_p, (c_stats, m_p) = self.reid.loss(c_params, {**stats, **c_stats}, p, pids,
                                              prefix="anon_")
      total = (w["gan_d1"] * gan_d1 + w["gan_d2"] * gan_d2 + w["l1_anon"] * l1_anon
               + w["l1_rec"] * l1_rec + w["reid_raw"] * reid_o + w["reid_anon"] * reid_p)
      aux = {"gan_d1": gan_d1, "gan_d2": gan_d2, "l1_anon": l1_anon, "l1_rec": l1_rec,
             "reid_raw": reid_o, "reid_anon": reid_p, **m_o, **m_p}
      return total, (c_stats, aux)

    c_names = self.reid.network_names()
    c_params = {k: state.params[k] for k in c_names}
    (loss, (c_stats, aux)), (c_grads, g_p, g_r) = jax.value_and_grad(
        joint_loss, argnums=(0, 1, 2), has_aux=True)(c_params, p, r)
    grad_g, grad_gr = gen_vjp((g_p, g_r))
    state = train_state.apply_updates(state, self.txs,
                                      {**c_grads, "G": grad_g, "G_R": grad_gr})
    stats.update(c_stats)
    metrics.update(aux)
    metrics.update(loss=loss, lr=self.reid.schedule(state.step))
    return state.replace(step=state.step + 1, batch_stats=stats), metrics

  def _base_step(self, state, batch):
    """Base: C on raw plus desensitized images, reid(O) + reid(M)."""
    o, m, pids = batch["image"], batch["target"], batch["pid"]
    w = self.weights

    def loss_fn(params):
      lo, (st, m_o) = self.reid.loss(params, state.batch_stats, o, pids, prefix="raw_")
      lm, (st, m_m) = self.reid.loss(params, {**state.batch_stats, **st}, m, pids,
                                     prefix="anon_")
      total = w["reid_raw"] * lo + w["reid_anon"] * lm
      return total, (st, {"reid_raw": lo, "reid_anon": lm, **m_o, **m_m})

    (loss, (st, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = train_state.apply_updates(state, self.txs, grads)
    metrics.update(loss=loss, lr=self.reid.schedule(state.step))
    return state.replace(step=state.step + 1,
                         batch_stats={**state.batch_stats, **st}), metrics

  def on_epoch_end(self, state, epoch, ctx):
    """Progressive stages: the upgrade check (may ask the trainer to stop)."""
    if self.check is not None:
      self.check.on_epoch_end(self, state, epoch, ctx)
    return state

  # --- inference -------------------------------------------------------------------

  def anonymize(self, state, images: jax.Array) -> jax.Array:
    """O -> P (normalised space): G, or the fixed desensitization in base mode."""
    if self.mode == "base":
      x = normalize.to_unit(images, self.mean, self.std)
      key = jax.random.PRNGKey(int(self.config.seed))
      m = desensitize.desensitize_per_image(x, self.desensitize_method, key,
                                            **self.desensitize_params)
      return normalize.from_unit(m, self.mean, self.std)
    return self._generate(state.params, state.batch_stats, "G", images, False)[0]

  def recover(self, state, images: jax.Array) -> jax.Array:
    """P -> R (normalised space) with G_R."""
    if self.mode == "base":
      raise ValueError("config.anon.mode='base' has no recovery network")
    return self._generate(state.params, state.batch_stats, "G_R", images, False)[0]

  def images_of_kind(self, state, images: jax.Array, kind: str) -> jax.Array:
    if kind == "raw":
      return images
    if kind == "anon":
      return self.anonymize(state, images)
    if kind == "recovered":
      return self.recover(state, self.anonymize(state, images))
    raise ValueError(f"anonymization: unknown image kind {kind!r} (expected {KINDS})")

  def embed(self, state, images, kind):
    x = self.images_of_kind(state, images, kind)
    return self.reid.features(state.params, state.batch_stats, x)

  # --- evaluators --------------------------------------------------------------------

  def evaluators(self, ctx):
    return {
        **base.shared_evaluators(self, ctx),
        "image_quality": lambda cfg: evaluators.ImageQualityEvaluator(
            self.quality, ctx, cfg.images, cfg.split),
        "outsider": lambda cfg: third_party.evaluator(self, ctx, cfg),
        "adaptive_outsider": lambda cfg: adaptive_outsider.evaluator(self, ctx, cfg),
    }
