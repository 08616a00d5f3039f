"""Method A: learnable reversible anonymization (Zhang, Ye, Yang, ACM MM 2022).

METHODS.md s.2. Networks, all in one TrainState with their own optimizers:

* G ("G"): U-Net anonymizer, O -> P (full-body anonymized image);
* G_R ("G_R"): U-Net recovery network, P -> R ~ O (P is not detached);
* D1, D2 ("D1", "D2"): PatchGANs on image pairs, D1 real (O, M) vs fake
  (O, P), D2 real (P, O) vs fake (P, R);
* C ("reid", plus "reid_centers" with the center loss): the Re-ID model of
  `ReidLearner`, trained on O and on P.

M is the conventional desensitization of O (`train_targets`), computed by the
data pipeline after the resize and before augmentation, so it shares O's flip,
crop and erasing. Images live in the pipeline's normalised space; the configs
set data.std = 0.5 (ImageNet mean, as the reference code) so the generators'
tanh range covers the image range.

One step (`train_step`): G and G_R run once (train mode) and their outputs are
kept with a VJP; D1 and D2 are updated on detached fakes; then one joint
update of G, G_R and C on

  w_d1 GAN_D1 + w_d2 GAN_D2 + w_p L1(P, M) + w_r L1(R, O) + w_o reid(O) + w_a reid(P)

against the updated discriminators (pix2pix's order), the gradient reaching G
and G_R through the stored VJP. As pix2pix: each discriminator loss is halved,
and the discriminators run in train mode (batch statistics) in the generator
loss without their running statistics being updated there.

`anon.mode = "base"` is the paper's "Base": no generators, C alone trained on
raw plus desensitized images (reid(O) + reid(M)); its "anon" images are the
desensitized ones, computed in JAX at evaluation.

`anon.stages.enabled` adds the paper's progressive supervision upgrade as named
stages (`progressive.py`): the epoch hook checks the upgrade rule on the
validation split, and with `anon.targets_dir` M is read from a stored
G_teacher(O) target set instead of computed. Without it, the learned mode is
the paper's "w/o upgrade".
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from privreid_jax import losses, optim, train_state
from privreid_jax.data import pipeline, target_records
from privreid_jax.methods import base, progressive
from privreid_jax.methods.reid_learner import ReidLearner
from privreid_jax.models import patchgan, reid, unet
from privreid_jax.ops import desensitize, image_metrics

MODES = ("learned", "base")
KINDS = ("raw", "anon", "recovered")
GENERATORS = ("G", "G_R")
DISCRIMINATORS = ("D1", "D2")
SETTINGS = {"O->O": ("raw", "raw"), "O->P": ("raw", "anon"),
            "P->O": ("anon", "raw"), "P->P": ("anon", "anon"),
            "R->O": ("recovered", "raw")}
THIRD_PARTY_SETTINGS = {"3rd:O->O": ("raw", "raw"), "3rd:P->O": ("anon", "raw"),
                        "3rd:O->P": ("raw", "anon"), "3rd:P->P": ("anon", "anon")}


# --- the supervision M ----------------------------------------------------------


def desensitize_params(config) -> tuple[str, dict[str, Any]]:
  """(method, parameters at the image's scale) of config.anon.desensitize."""
  a = config.anon
  method = a.desensitize
  if method not in ("mosaic", "blur", "noise"):
    raise ValueError(f"config.anon.desensitize={method!r}: expected mosaic | blur | noise")
  paper = {"mosaic": {"block": int(a.mosaic_block), "fill": a.mosaic_fill},
           "blur": {"sigma": float(a.blur_sigma)},
           "noise": {"std": float(a.noise_std)}}[method]
  return method, desensitize.scale_params(method, paper, int(config.data.height))


# Picklable target function for the pipeline's paired mode (noise keyed by content).
Desensitizer = desensitize.TargetFunction


def train_targets(config) -> Desensitizer | target_records.TargetSource:
  """The pipeline's paired-mode target M: the conventional desensitization of O,
  or, with config.anon.targets_dir (a progressive stage), the stored targets
  G_teacher(O) aligned with the training source."""
  targets_dir = config.anon.get("targets_dir", "")
  if targets_dir:
    return target_records.open_targets(targets_dir, int(config.data.height),
                                       int(config.data.width))
  method, params = desensitize_params(config)
  return Desensitizer(method, params, config.seed)


def run(config, workdir: str):
  """`main.py`'s entry: the progressive stages when config.anon.stages.enabled,
  else one trainer run ("w/o upgrade", Base)."""
  return progressive.run(config, workdir)


# --- the method --------------------------------------------------------------------


def _to_unit(x: jax.Array, mean, std) -> jax.Array:
  """Normalised images -> [0, 1] pixels (clipped)."""
  return jnp.clip(x * jnp.asarray(std, jnp.float32) + jnp.asarray(mean, jnp.float32),
                  0.0, 1.0)


def _from_unit(x: jax.Array, mean, std) -> jax.Array:
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


class _Subset:
  """The first n items of a source (sources need not support slicing)."""

  def __init__(self, source, n: int):
    self.source, self.n = source, min(int(n), len(source))

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int):
    if not 0 <= i < self.n:
      raise IndexError(i)
    return self.source[i]


class Method(base.Method):
  """Method A (see the module docstring)."""

  def __init__(self, config, *, num_classes: int, steps_per_epoch: int):
    a = config.anon
    if a.mode not in MODES:
      raise ValueError(f"config.anon.mode={a.mode!r}: expected {' | '.join(MODES)}")
    self.config = config
    self.mode = a.mode
    self.mean = tuple(float(v) for v in config.data.mean)
    self.std = tuple(float(v) for v in config.data.std)
    self.weights = {k: float(a.weights[k]) for k in
                    ("gan_d1", "gan_d2", "l1_anon", "l1_rec", "reid_raw", "reid_anon")}
    self.desensitize_method, self.desensitize_params = desensitize_params(config)
    self.reid = ReidLearner(config, num_classes, steps_per_epoch)
    self.txs = dict(self.reid.txs)
    dtype = reid.parse_dtype(config.model.dtype)
    h, w = int(config.data.height), int(config.data.width)
    if self.mode == "learned":
      downs = unet.num_downs_for(h, w, int(a.num_downs))
      self.gen = unet.UNetGenerator(num_downs=downs, ngf=int(a.ngf),
                                    use_dropout=bool(a.dropout), dtype=dtype,
                                    conv_impl=config.model.conv_impl)
      self.disc = patchgan.PatchDiscriminator(ndf=int(a.ndf), n_layers=int(a.d_layers),
                                              dtype=dtype, conv_impl=config.model.conv_impl)
      out_h, out_w = patchgan.patchgan_output_shape(h, w, int(a.d_layers))
      if out_h < 1 or out_w < 1:
        raise ValueError(f"config.anon.d_layers={a.d_layers}: images of {h}x{w} leave a "
                         f"{out_h}x{out_w} PatchGAN logit map; use fewer layers")
      gan_tx = optim.from_config(config.optim, steps_per_epoch, b1=float(a.b1),
                                 b2=float(a.b2))
      for name in GENERATORS + DISCRIMINATORS:
        self.txs[name] = gan_tx
      self.eval_settings = dict(SETTINGS)
    else:
      self.eval_settings = {k: v for k, v in SETTINGS.items() if "R" not in k}
    self._quality_fn = None
    self._third_party = None
    if a.get("third_party_workdir"):
      _check_third_party(a.third_party_workdir)   # fail before training, not after
    stages = a.get("stages")
    self.monitor = (progressive.Monitor(config) if stages is not None and stages.enabled
                    and self.mode == "learned" else None)

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
    """pix2pix D loss: 0.5 (BCE(D(c, real), 1) + BCE(D(c, fake), 0)); stats threaded."""
    logits_real, st = self._discriminate(params, stats, name, cond, real)
    logits_fake, st = self._discriminate(params, {name: st}, name, cond, fake)
    loss = 0.5 * (losses.gan_bce(logits_real, True) + losses.gan_bce(logits_fake, False))
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
    if self.monitor is not None:
      self.monitor.on_epoch_end(self, state, epoch, ctx)
    return state

  # --- inference -------------------------------------------------------------------

  def anonymize(self, state, images: jax.Array) -> jax.Array:
    """O -> P (normalised space): G, or the fixed desensitization in base mode."""
    if self.mode == "base":
      x = _to_unit(images, self.mean, self.std)
      key = jax.random.PRNGKey(int(self.config.seed))
      m = desensitize.desensitize(x, self.desensitize_method, key,
                                  **self.desensitize_params)
      return _from_unit(m, self.mean, self.std)
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

  # --- extra evaluation rows --------------------------------------------------------

  def _quality_batch(self, state, images):
    """[0,1] O, P and R of a normalised batch (R = O in base mode)."""
    o01 = _to_unit(images, self.mean, self.std)
    p = self.anonymize(state, images)
    r = p if self.mode == "base" else self.recover(state, p)
    return o01, _to_unit(p, self.mean, self.std), _to_unit(r, self.mean, self.std)

  def image_quality(self, state, source, data_cfg, max_images: int):
    """PSNR / SSIM of M, P and R against O on the first `max_images` of a source.

    Returns ({metric: mean value}, [0,1] example images {name: [n, H, W, 3]}).
    """
    if self._quality_fn is None:
      self._quality_fn = jax.jit(self._quality_batch)
    target = Desensitizer(self.desensitize_method, self.desensitize_params,
                          self.config.seed)
    sums: dict[str, float] = {}
    count = 0
    examples = None
    for batch in pipeline.eval_loader(_Subset(source, max_images), data_cfg):
      o01, p01, r01 = (np.asarray(x) for x in self._quality_fn(state, batch["image"]))
      keep = batch["mask"]
      o01, p01, r01 = o01[keep], p01[keep], r01[keep]
      m01 = np.stack([target(x) for x in o01])
      for name, img in (("M", m01), ("P", p01), ("R", r01)):
        if name == "R" and self.mode == "base":
          continue
        sums[f"psnr_{name}"] = sums.get(f"psnr_{name}", 0.0) + float(
            np.sum(image_metrics.psnr(img, o01)))
        sums[f"ssim_{name}"] = sums.get(f"ssim_{name}", 0.0) + float(
            np.sum(image_metrics.ssim(img, o01)))
      count += len(o01)
      if examples is None:
        examples = {"O": o01[:8], "M": m01[:8], "P": p01[:8], "R": r01[:8]}
    return {k: v / max(count, 1) for k, v in sums.items()}, examples

  def extra_metrics(self, state, ctx) -> dict[str, dict[str, float]]:
    a = ctx.config.anon
    quality, examples = self.image_quality(state, ctx.splits.query.source,
                                           ctx.config.data, int(a.quality_images))
    rows = {"image_quality": quality}
    if examples is not None:
      names = ("O", "M", "P") if self.mode == "base" else ("O", "M", "P", "R")
      grid = np.concatenate([np.concatenate(list(examples[n]), axis=1) for n in names], 0)
      ctx.writer.images(int(state.step), {"anonymization/O_M_P_R": grid})
    if a.third_party_workdir:
      rows.update(self.third_party_rows(state, ctx))
    return rows

  def third_party_rows(self, state, ctx) -> dict[str, dict[str, float]]:
    """A Re-ID model trained only on raw images (a finished baseline run) matching
    anonymized images: settings "3rd:P->O" etc."""
    from privreid_jax.evaluation.reid import ReidEvaluator
    if self._third_party is None:
      self._third_party = ThirdParty.load(ctx.config.anon.third_party_workdir, self,
                                          ctx.config.data)
    tp = self._third_party
    evaluator = ReidEvaluator(tp, ctx.splits, ctx.config.data, ctx.config.eval, ctx.mesh)
    settings = dict(THIRD_PARTY_SETTINGS)
    return evaluator.run((state, tp.variables), settings)


def _check_third_party(workdir: str) -> None:
  from privreid_jax import checkpoint
  folder = checkpoint.run_folder(workdir)
  if not os.path.isdir(folder) or not any(n.isdigit() for n in os.listdir(folder)):
    raise FileNotFoundError(
        f"config.anon.third_party_workdir={workdir!r}: no checkpoint there; train a "
        "baseline on raw images into that folder first (configs/synthetic.py or "
        "configs/market.py at the same image size)")


class ThirdParty:
  """A finished baseline run's C3 seeing our images: embed((ours, C3 vars), x, kind)."""

  eval_settings = THIRD_PARTY_SETTINGS

  def __init__(self, method: Method, model, variables, mean, std):
    self.method, self.model, self.variables = method, model, variables
    self.mean, self.std = tuple(mean), tuple(std)

  @classmethod
  def load(cls, workdir: str, method: Method, data_cfg) -> ThirdParty:
    from privreid_jax import checkpoint
    where = f"config.anon.third_party_workdir={workdir!r}"
    state, cfg, step = checkpoint.restore_run(workdir, where)
    if (int(cfg.data.height), int(cfg.data.width)) != (int(data_cfg.height),
                                                       int(data_cfg.width)):
      raise ValueError(f"{where}: that run uses {cfg.data.height}x{cfg.data.width} "
                       f"images, this one {data_cfg.height}x{data_cfg.width}")
    if "reid" not in state["params"]:
      raise ValueError(f"{where}: its checkpoint has no 'reid' network "
                       f"(networks: {sorted(state['params'])})")
    variables = {"params": state["params"]["reid"],
                 "batch_stats": state["batch_stats"]["reid"]}
    variables["params"] = {k: v for k, v in variables["params"].items()
                           if k != "classifier"}
    model = reid.build_reid_model(cfg.model, 0)
    logging.info("third-party Re-ID model: %s step %d (%s)", workdir, step,
                 cfg.model.backbone)
    variables = jax.tree.map(jnp.asarray, variables)
    return cls(method, model, variables, cfg.data.mean, cfg.data.std)

  def embed(self, states, images, kind):
    ours, variables = states
    x = self.method.images_of_kind(ours, images, kind)
    # Our normalisation -> the third party's.
    x = _from_unit(_to_unit(x, self.method.mean, self.method.std), self.mean, self.std)
    _, out = self.model.apply(variables, x, train=False)
    return out["feat"].astype(jnp.float32)
