"""Method B: dual-stage privacy-enhancing Re-ID (Kansal et al., WACV 2024).

docs/method_b.md has the method and what is ours. Stage 1 trains, in one pure step:
  - the Re-ID encoder (`ReidLearner`, BoT/AGW losses) on the raw image O;
  - a De-ID decoder reconstructing an image from the encoder's feature map,
    L1 against the de-identified target (config.dual.target: mosaic | blur |
    noise | clean = O itself | none = no decoder); its gradient flows into the
    encoder;
  - an Adv-ID identity classifier on the reconstruction (or, adv_input="feature",
    on the pooled feature) that encoder + decoder learn to defeat:
    adversarial="reversal" puts `grad_reverse` between them (one joint update),
    "alternating" first updates the adversary on the detached input, then
    updates encoder + decoder against the updated adversary ("uniform": push its
    prediction to uniform, or "maximize": raise its cross-entropy);
  - an ID probe: an identity classifier trained on clean training images only
    (stop-gradient, never touches the encoder), excluding a fixed, hashed
    fraction of training images (`privacy.holdout`) on which it is scored.

The encoder and decoder share one forward pass (`jax.vjp`), so the alternating
adversary step sees the current reconstruction and costs no second encoder pass.

Stage 2 and the attacks are evaluators (`evaluators.py`): gallery features
released through the Gaussian mechanism at each epsilon, the ID probe, the
feature-classifier and inversion attackers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from privreid_jax import losses, optim, train_state
from privreid_jax.methods import base
from privreid_jax.methods.dual_stage import config as dual_config
from privreid_jax.methods.dual_stage import evaluators
from privreid_jax.methods.reid_learner import ReidLearner
from privreid_jax.models import adversary as adversary_lib
from privreid_jax.models import deid_decoder, reid
from privreid_jax.ops import desensitize
from privreid_jax.privacy import holdout

# Picklable target function for the pipeline's paired mode (noise keyed by content).
TargetFn = desensitize.TargetFunction


def target_fn(config) -> TargetFn | None:
  """The de-identification of config.dual.target at the image's scale (None: none)."""
  d = config.dual
  if d.target == "none":
    return None
  if d.target == "clean":
    return TargetFn("none", {}, config.seed)
  return TargetFn(d.target, desensitize.config_params(d.target, d, config.data.height),
                  config.seed)


def _confusion(logits: jax.Array) -> jax.Array:
  """Cross-entropy against the uniform distribution (minimal when uninformative)."""
  return -jnp.mean(jax.nn.log_softmax(logits, axis=-1))


def _xent(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None):
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), labels[:, None], -1)[:, 0]
  if weights is None:
    return jnp.mean(nll)
  return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)


class Method(base.Method):
  eval_settings = {"O->O": ("raw", "raw")}

  def __init__(self, config, *, num_classes: int, steps_per_epoch: int, options=None):
    del options
    d = config.dual
    dual_config.check(d)
    self.config, self.d, self.num_classes = config, d, num_classes
    self.reid = ReidLearner(config, num_classes, steps_per_epoch)
    dtype = reid.parse_dtype(config.model.dtype)
    impl = config.model.conv_impl
    self.has_decoder = d.target != "none"
    self.has_adv = d.adversarial != "none"
    self.encoder_names = list(self.reid.txs)
    self.txs = dict(self.reid.txs)
    new_tx = lambda: optim.from_config(config.optim, steps_per_epoch)
    if self.has_decoder:
      self.decoder = deid_decoder.DeIDDecoder(
          config.data.height, config.data.width, widths=tuple(d.decoder_widths),
          dtype=dtype, conv_impl=impl)
      self.txs["decoder"] = new_tx()
    if self.has_adv:
      if d.adv_input == "recon":
        self.adversary = adversary_lib.ImageIdentityClassifier(
            num_classes, width=d.adv_width, num_stages=d.adv_stages, dtype=dtype,
            conv_impl=impl)
      else:
        self.adversary = adversary_lib.FeatureIdentityClassifier(
            num_classes, hidden=d.adv_hidden, dtype=dtype)
      self.txs["adversary"] = new_tx()
    self.probe = adversary_lib.ImageIdentityClassifier(
        num_classes, width=d.probe_width, num_stages=d.probe_stages, dtype=dtype,
        conv_impl=impl)
    self.txs["id_probe"] = new_tx()
    self.mean = tuple(float(v) for v in config.data.mean)
    self.std = tuple(float(v) for v in config.data.std)
    self.target_fn = target_fn(config)

  @classmethod
  def train_targets(cls, config, options=None):
    """Paired mode of the pipeline: batches carry the de-identified `target`."""
    dual_config.check(config.dual)
    return target_fn(config)

  # --- init / embed -------------------------------------------------------------

  def init(self, rng, batch):
    images = batch["image"]
    params, stats = self.reid.init(rng, images)
    _, out, _ = self.reid.apply(params, stats, images, train=False)
    keys = jax.random.split(jax.random.fold_in(rng, 7), 3)
    if self.has_decoder:
      v = self.decoder.init(keys[0], out["feature_map"], train=False)
      params["decoder"], stats["decoder"] = v["params"], v["batch_stats"]
    if self.has_adv:
      x = images if self.d.adv_input == "recon" else out["feat_pre"]
      v = self.adversary.init(keys[1], x, train=False)
      params["adversary"], stats["adversary"] = v["params"], v["batch_stats"]
    v = self.probe.init(keys[2], images, train=False)
    params["id_probe"], stats["id_probe"] = v["params"], v["batch_stats"]
    return train_state.create(params, stats, self.txs, rng)

  def embed(self, state, images, kind):
    if kind != "raw":
      raise ValueError(f"dual_stage has no image kind {kind!r} (expected 'raw')")
    return self.reid.features(state.params, state.batch_stats, images)

  # --- the training step ----------------------------------------------------------

  def _adv_apply(self, params, stats, x, train=True):
    v = {"params": params, "batch_stats": stats}
    if train:
      logits, upd = self.adversary.apply(v, x, train=True, mutable=["batch_stats"])
      return logits, upd["batch_stats"]
    return self.adversary.apply(v, x, train=False), stats

  def _forward(self, state, batch):
    """Encoder (+ decoder) forward: ((reid loss, feat, recon), vjp, aux)."""
    names = self.encoder_names + (["decoder"] if self.has_decoder else [])

    def fwd(p):
      loss, (stats, metrics, out) = self.reid.loss_and_out(p, state.batch_stats,
                                                           batch["image"], batch["pid"])
      recon = None
      if self.has_decoder:
        v = {"params": p["decoder"], "batch_stats": state.batch_stats["decoder"]}
        recon, upd = self.decoder.apply(v, out["feature_map"], train=True,
                                        mutable=["batch_stats"])
        stats = {**stats, "decoder": upd["batch_stats"]}
      outs = {"reid": jnp.asarray(loss, jnp.float32),
              "feat": out["feat_pre"].astype(jnp.float32), "recon": recon}
      return outs, (stats, metrics)

    return jax.vjp(fwd, {k: state.params[k] for k in names}, has_aux=True)

  def compute_grads(self, state, batch):
    """All gradients of one step: (grads {network: grads}, new batch_stats, metrics,
    state).

    With alternating steps the adversary is updated first, through its optimizer
    like every other network: the returned state holds that update and `grads`
    has no "adversary" entry; otherwise the state is the one given.
    """
    d = self.d
    outs, vjp_fn, (stats, metrics) = self._forward(state, batch)
    stats = dict(stats)
    target = batch.get("target") if self.has_decoder else None
    if self.has_decoder and target is None:
      raise ValueError("dual_stage: the batch has no 'target' (the pipeline's paired "
                       "mode is off; is train_targets(config) returning None?)")
    adv_key = "recon" if d.adv_input == "recon" else "feat"
    grads = {}

    adv_params = state.params.get("adversary")
    if self.has_adv and d.adversarial == "alternating":
      x = jax.lax.stop_gradient(outs[adv_key])

      def adv_loss(ap):
        logits, new = self._adv_apply(ap, state.batch_stats["adversary"], x)
        return _xent(logits, batch["pid"]), (new, logits)

      (a_loss, (new_stats, logits)), a_grads = jax.value_and_grad(
          adv_loss, has_aux=True)(adv_params)
      stats["adversary"] = new_stats
      metrics.update(adv_loss=a_loss,
                     adv_acc=jnp.mean(jnp.argmax(logits, -1) == batch["pid"]))
      state = train_state.apply_updates(state, self.txs, {"adversary": a_grads})
      adv_params = state.params["adversary"]

    def head(o, ap):
      total, m, new_adv = 0.0, {}, None
      if self.has_decoder:
        rec = losses.l1(o["recon"], target)
        total += d.recon_weight * rec
        m["recon_l1"] = rec
      if self.has_adv:
        x = o[adv_key]
        if d.adversarial == "reversal":
          x = losses.grad_reverse(x, d.adv_reversal_scale)
        logits, new_adv = self._adv_apply(ap, state.batch_stats["adversary"], x)
        xent = _xent(logits, batch["pid"])
        m["adv_xent"] = xent
        m["adv_acc"] = jnp.mean(jnp.argmax(logits, -1) == batch["pid"])
        if d.adversarial == "reversal":
          total += d.adv_weight * xent        # the adversary minimises it
        elif d.adv_objective == "uniform":
          total += d.adv_weight * _confusion(logits)
        else:
          total += -d.adv_weight * xent
      return jnp.asarray(total, jnp.float32), (m, new_adv)

    (h_loss, (h_metrics, new_adv)), (g_outs, g_adv) = jax.value_and_grad(
        head, argnums=(0, 1), has_aux=True)(outs, adv_params)
    metrics.update(h_metrics)
    g_outs = dict(g_outs, reid=jnp.ones((), jnp.float32))
    grads.update(vjp_fn(g_outs)[0])
    if self.has_adv and d.adversarial == "reversal":
      grads["adversary"] = g_adv
      stats["adversary"] = new_adv

    # The ID probe: clean images, stop-gradient, held-out images excluded.
    keep = 1.0 - holdout.heldout_mask(batch["index"], d.probe_holdout, d.probe_seed,
                                      xp=jnp).astype(jnp.float32)

    def probe_loss(pp):
      v = {"params": pp, "batch_stats": state.batch_stats["id_probe"]}
      logits, upd = self.probe.apply(v, jax.lax.stop_gradient(batch["image"]),
                                     train=True, mutable=["batch_stats"])
      return _xent(logits, batch["pid"], keep), upd["batch_stats"]

    (p_loss, stats["id_probe"]), grads["id_probe"] = jax.value_and_grad(
        probe_loss, has_aux=True)(state.params["id_probe"])
    reid_loss = outs["reid"]
    metrics.update(reid_loss=reid_loss, probe_loss=p_loss,
                   loss=reid_loss + h_loss)
    return grads, stats, metrics, state

  def train_step(self, state, batch):
    grads, stats, metrics, state = self.compute_grads(state, batch)
    state = train_state.apply_updates(state, self.txs, grads)
    metrics["lr"] = self.reid.schedule(state.step)
    return state.replace(step=state.step + 1,
                         batch_stats={**state.batch_stats, **stats}), metrics

  # --- evaluation -------------------------------------------------------------------

  def probe_forward(self, state, images):
    """(reconstruction or None, probe logits on images, probe logits on recon)."""
    p, s = state.params, state.batch_stats
    probe = lambda x: self.probe.apply(
        {"params": p["id_probe"], "batch_stats": s["id_probe"]}, x, train=False)
    if not self.has_decoder:
      return None, probe(images), None
    _, out, _ = self.reid.apply(p, s, images, train=False)
    recon = self.decoder.apply({"params": p["decoder"], "batch_stats": s["decoder"]},
                               out["feature_map"], train=False)
    return recon, probe(images), probe(recon)

  def evaluators(self, ctx):
    return evaluators.offered(self, ctx, base.shared_evaluators(self, ctx))
