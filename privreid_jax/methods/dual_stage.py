"""Method B: dual-stage privacy-enhancing Re-ID (Kansal et al., WACV 2024; METHODS.md s.3).

Stage 1 trains, in one pure step:
  - the Re-ID encoder (`ReidLearner`, BoT/AGW losses) on the raw image O;
  - a De-ID decoder reconstructing an image from the encoder's feature map,
    L1 against the de-identified target (config.dual.target: pixelation | blur |
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
    fraction of training images (`heldout_mask`) on which it is scored.

The encoder and decoder share one forward pass (`jax.vjp`), so the alternating
adversary step sees the current reconstruction and costs no second encoder pass.

Stage 2 (`extra_metrics`): gallery features released through the Gaussian
mechanism (`privacy.dp.release_gallery`) for each epsilon of config.dual.epsilons,
clean queries, cosine matching; Rank-1 / mAP mean and std over noise draws.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from privreid_jax import losses, optim, sharding, train_state
from privreid_jax.data import pipeline
from privreid_jax.evaluation import ranking
from privreid_jax.methods import base
from privreid_jax.methods.reid_learner import ReidLearner
from privreid_jax.models import adversary as adversary_lib
from privreid_jax.models import deid_decoder, reid
from privreid_jax.ops import desensitize, image_metrics
from privreid_jax.privacy import dp

TARGETS = ("pixelation", "blur", "noise", "clean", "none")
ADVERSARIAL = ("none", "reversal", "alternating")
ADV_INPUTS = ("recon", "feature")
ADV_OBJECTIVES = ("uniform", "maximize")
GRID_IMAGES = 8               # examples per reconstruction grid
FEATURES_FILE = "features_test.npz"
_DESENSITIZE = {"pixelation": "mosaic", "blur": "blur", "noise": "noise"}


def check_dual_config(d) -> None:
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


# --- de-identified targets (host side, in grain workers) ------------------------


# Picklable target function for the pipeline's paired mode (noise keyed by content).
TargetFn = desensitize.TargetFunction


def target_fn(config) -> TargetFn | None:
  """The de-identification of config.dual.target at the image's scale (None: none)."""
  d = config.dual
  if d.target == "none":
    return None
  if d.target == "clean":
    return TargetFn("none", {}, config.seed)
  method = _DESENSITIZE[d.target]
  paper = {"mosaic": {"block": d.mosaic_block, "fill": d.mosaic_fill},
           "blur": {"sigma": d.blur_sigma}, "noise": {"std": d.noise_std}}[method]
  return TargetFn(method, desensitize.scale_params(method, paper, config.data.height),
                  config.seed)


def train_targets(config):
  """Paired mode of the pipeline: batches carry the de-identified `target`."""
  check_dual_config(config.dual)
  return target_fn(config)


# --- the ID probe's held-out split ----------------------------------------------


def heldout_mask(index, fraction: float, seed: int, xp=np):
  """True for the training images the ID probe never trains on (hash of the index).

  The same integer hash runs in numpy (host) and jax.numpy (inside the step).
  """
  x = xp.asarray(index).astype(xp.uint32)
  x = x * xp.uint32(0x9E3779B1) + xp.uint32((int(seed) * 0x632BE5AB + 1) & 0xFFFFFFFF)
  x = x ^ (x >> 16)
  x = x * xp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  return (x >> 8) < xp.uint32(int(fraction * (1 << 24)))


def _confusion(logits: jax.Array) -> jax.Array:
  """Cross-entropy against the uniform distribution (minimal when uninformative)."""
  return -jnp.mean(jax.nn.log_softmax(logits, axis=-1))


def _xent(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None):
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), labels[:, None], -1)[:, 0]
  if weights is None:
    return jnp.mean(nll)
  return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)


class _Learner(ReidLearner):
  """ReidLearner whose training forward also hands back its `out` extras.

  `ReidLearner.loss` returns only (loss, aux); the decoder needs the feature
  map of the same forward pass, which `apply` records during tracing.
  """

  def apply(self, params, batch_stats, images, train):
    logits, out, stats = super().apply(params, batch_stats, images, train)
    self.last_out = out
    return logits, out, stats


class Method(base.Method):
  eval_settings = {"O->O": ("raw", "raw")}

  def __init__(self, config, *, num_classes: int, steps_per_epoch: int):
    d = config.dual
    check_dual_config(d)
    self.config, self.d, self.num_classes = config, d, num_classes
    self.reid = _Learner(config, num_classes, steps_per_epoch)
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
    self.mean = np.asarray(config.data.mean, np.float32)
    self.std = np.asarray(config.data.std, np.float32)
    self._target_fn = target_fn(config)
    self._probe_eval = jax.jit(self._probe_forward)

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
      loss, (stats, metrics) = self.reid.loss(p, state.batch_stats, batch["image"],
                                              batch["pid"])
      out = self.reid.last_out
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
    """All gradients of one step: (grads {network: grads}, new batch_stats, metrics).

    With alternating steps, the adversary's update is applied inside (its
    new params are returned in grads["_adversary_params"]).
    """
    d = self.d
    outs, vjp_fn, (stats, metrics) = self._forward(state, batch)
    stats = dict(stats)
    target = batch.get("target") if self.has_decoder else None
    if self.has_decoder and target is None:
      raise ValueError("dual_stage: the batch has no 'target' (the pipeline's paired "
                       "mode is off; is train_targets(config) returning None?)")
    adv_key = "recon" if d.adv_input == "recon" else "feat"
    grads, extra = {}, {}

    adv_params = state.params.get("adversary")
    if self.has_adv and d.adversarial == "alternating":
      x = jax.lax.stop_gradient(outs[adv_key])

      def adv_loss(ap):
        logits, new = self._adv_apply(ap, state.batch_stats["adversary"], x)
        return _xent(logits, batch["pid"]), (new, logits)

      (a_loss, (new_stats, logits)), a_grads = jax.value_and_grad(
          adv_loss, has_aux=True)(adv_params)
      grads["adversary"] = a_grads
      stats["adversary"] = new_stats
      metrics.update(adv_loss=a_loss,
                     adv_acc=jnp.mean(jnp.argmax(logits, -1) == batch["pid"]))
      upd, extra["adversary_opt"] = self.txs["adversary"].update(
          a_grads, state.opt_state["adversary"], adv_params)
      adv_params = jax.tree.map(jnp.add, adv_params, upd)
      extra["adversary_params"] = adv_params

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
    keep = 1.0 - heldout_mask(batch["index"], d.probe_holdout, d.probe_seed,
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
    return grads, stats, metrics, extra

  def train_step(self, state, batch):
    grads, stats, metrics, extra = self.compute_grads(state, batch)
    if "adversary_params" in extra:    # alternating: the adversary already stepped
      grads = {k: v for k, v in grads.items() if k != "adversary"}
      state = state.replace(
          params={**state.params, "adversary": extra["adversary_params"]},
          opt_state={**state.opt_state, "adversary": extra["adversary_opt"]})
    state = train_state.apply_updates(state, self.txs, grads)
    metrics["lr"] = self.reid.schedule(state.step)
    return state.replace(step=state.step + 1,
                         batch_stats={**state.batch_stats, **stats}), metrics

  # --- evaluation -------------------------------------------------------------------

  def _probe_forward(self, state, images):
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

  def _to_unit(self, x: np.ndarray) -> np.ndarray:
    return np.clip(x * self.std + self.mean, 0.0, 1.0).astype(np.float32)

  def heldout_indices(self, num_train: int) -> np.ndarray:
    idx = np.arange(num_train)
    idx = idx[heldout_mask(idx, self.d.probe_holdout, self.d.probe_seed)]
    return idx[:self.d.probe_max_images] if self.d.probe_max_images > 0 else idx

  def probe_metrics(self, state, ctx) -> dict[str, dict[str, float]]:
    """ID accuracy of the probe on held-out training images, clean and reconstructed,
    and PSNR/SSIM of the reconstructions vs the input and vs the target."""
    train = ctx.splits.train
    idx = self.heldout_indices(len(train))
    if not len(idx):
      return {}
    source = [train.source[int(i)] for i in idx]
    pids = np.asarray(train.pids)[idx]
    examples = []
    hits_clean, hits_recon, q = [], [], {k: [] for k in
                                         ("psnr_input", "ssim_input", "psnr_target",
                                          "ssim_target")}
    for batch in pipeline.eval_loader(source, self.config.data):
      mask = batch["mask"]
      g = sharding.global_batch(ctx.mesh, {"image": batch["image"]})
      recon, logit_c, logit_r = sharding.to_host(self._probe_eval(state, g["image"]))
      y = pids[batch["index"][mask]]
      hits_clean.append(np.argmax(logit_c[mask], -1) == y)
      if recon is None:
        continue
      hits_recon.append(np.argmax(logit_r[mask], -1) == y)
      x01, r01 = self._to_unit(batch["image"][mask]), self._to_unit(recon[mask])
      t01 = np.stack([self._target_fn(im) for im in x01])
      if sum(len(e[0]) for e in examples) < GRID_IMAGES:
        examples.append((x01, t01, r01))
      for ref, name in ((x01, "input"), (t01, "target")):
        q[f"psnr_{name}"].append(np.asarray(image_metrics.psnr(r01, ref)))
        if min(x01.shape[1:3]) >= image_metrics.SSIM_WINDOW:
          q[f"ssim_{name}"].append(np.asarray(image_metrics.ssim(r01, ref)))
    chance = 1.0 / self.num_classes
    rows = {"id_probe:clean": {"id_acc": float(np.mean(np.concatenate(hits_clean))),
                               "chance": chance, "num_images": float(len(idx))}}
    if hits_recon:
      rows["id_probe:recon"] = {"id_acc": float(np.mean(np.concatenate(hits_recon))),
                                "chance": chance, "num_images": float(len(idx))}
      rows["recon:quality"] = {k: float(np.mean(np.concatenate(v)))
                               for k, v in q.items() if v}
      x01, t01, r01 = (np.concatenate(a)[:GRID_IMAGES] for a in zip(*examples))
      self.save_grid(state, ctx, "recon_grid", (x01, t01, r01))
    return rows

  def save_grid(self, state, ctx, name: str, columns) -> str | None:
    """One row per example, `columns` ([N, H, W, 3] in [0, 1]) side by side: written
    to TensorBoard as `dual/<name>` and to WORKDIR/<name>.png (process 0 only)."""
    if jax.process_index() != 0:
      return None
    grid = np.concatenate([np.concatenate(list(c), axis=0) for c in columns], axis=1)
    grid = (np.clip(grid, 0.0, 1.0) * 255).round().astype(np.uint8)
    ctx.writer.images(int(state.step), {f"dual/{name}": grid})
    from PIL import Image
    path = os.path.join(ctx.workdir, f"{name}.png")
    Image.fromarray(grid).save(path)
    return path

  def save_features(self, state, ctx) -> str | None:
    """WORKDIR/features_test.npz: the first config.dual.save_features query features
    (L2-normalised, as released) with pids and camids, for t-SNE across runs."""
    n = int(self.d.save_features)
    if n <= 0 or jax.process_index() != 0:
      return None
    q = ctx.splits.query
    feats = np.asarray(ctx.evaluator.features(state, "query", "raw"), np.float32)
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    path = os.path.join(ctx.workdir, FEATURES_FILE)
    np.savez(path, features=feats[:n], pids=np.asarray(q.pids)[:n],
             camids=np.asarray(q.camids)[:n], step=int(state.step))
    return path

  def dp_metrics(self, state, ctx) -> dict[str, dict[str, float]]:
    """Stage 2: Rank-1/mAP of clean queries against DP-released gallery features."""
    d = self.d
    if not len(d.epsilons):
      return {}
    q, g = ctx.splits.query, ctx.splits.gallery
    qf = ctx.evaluator.features(state, "query", "raw")
    gf = ctx.evaluator.features(state, "gallery", "raw")
    _, counts = np.unique(np.asarray(g.pids), return_counts=True)
    k = max(1, int(np.median(counts)))
    rows = {}
    for e_i, eps in enumerate(d.epsilons):
      clean = eps is None or math.isinf(float(eps))
      draws = 1 if clean else d.noise_draws
      r1, m_ap = [], []
      for draw in range(draws):
        if clean:
          released = gf
        else:
          key = (dp.os_key() if d.dp_seed < 0
                 else dp.os_key(d.dp_seed * 100003 + e_i * 1009 + draw))
          released = np.asarray(dp.release_gallery(gf, key, epsilon=float(eps),
                                                   delta=d.delta))
        r = ranking.evaluate_features(qf, released, q.pids, g.pids, q.camids,
                                         g.camids, metric="cosine",
                                         max_rank=self.config.eval.max_rank)
        r1.append(float(np.asarray(r["cmc"])[0]))
        m_ap.append(float(r["mAP"]))
      row = {"rank1": float(np.mean(r1)), "mAP": float(np.mean(m_ap)),
             "rank1_std": float(np.std(r1)), "mAP_std": float(np.std(m_ap)),
             "draws": float(draws)}
      if clean:
        rows["dp:eps=inf"] = {**row, "sigma": 0.0}
      else:
        sigma = dp.gaussian_sigma(float(eps), d.delta)
        rows[f"dp:eps={float(eps):g}"] = {
            **row, "sigma": sigma, "eps_image": float(eps), "delta": d.delta,
            "k_per_id": float(k),
            "eps_identity": dp.composed_epsilon(sigma, dp.DEFAULT_SENSITIVITY,
                                                d.delta, k)}
    return rows

  def extra_metrics(self, state, ctx) -> dict[str, dict[str, float]]:
    rows = self.probe_metrics(state, ctx)
    rows.update(self.dp_metrics(state, ctx))
    # Both attackers hold the same training features: embed them once.
    feats = (ctx.evaluator.features(state, "train", "raw")
             if self.d.attack and self.d.inversion else None)
    if self.d.attack:
      from privreid_jax.privacy import attacks
      rows.update(attacks.feature_attack_rows(self, state, ctx, feats))
    if self.d.inversion:
      from privreid_jax.privacy import inversion
      rows.update(inversion.inversion_attack_rows(self, state, ctx, feats))
    self.save_features(state, ctx)
    return rows
