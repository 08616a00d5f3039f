"""Method B's evaluators: the ID probe, the DP gallery release, the attackers, features.

Each is an object with `run(state, step) -> rows`, enabled and scheduled by
`config.evals.<name>` (evaluation/base.py). They turn a method-B state into
arrays and hand them to `privreid_jax.privacy`, which never sees the method:

  id_probe        id_probe:clean, id_probe:recon (the probe's identity accuracy on
                  held-out training images, clean and reconstructed), recon:quality
  dp_release      dp:eps=E: clean queries against gallery features released
                  through the Gaussian mechanism, mean and std over noise draws;
                  the per-identity epsilon for the person with the most gallery
                  images (k_per_id), the median person's beside it
  linkage         attack:linkage@eps=E: an attacker holding labelled photos of the
                  test people (the query split) links them to the released, noised
                  gallery features: Rank-1 / mAP of its matching and the accuracy of
                  an identity classifier trained on its photos' features
  feature_attack  attack:feature_classifier (privacy/feature_attack.py)
  inversion       attack:inversion (privacy/inversion.py), inversion_grid.png
  features        WORKDIR/features_test.npz for t-SNE across runs
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from privreid_jax import sharding
from privreid_jax.data import pipeline
from privreid_jax.data.split_types import Subset
from privreid_jax.evaluation import ranking
from privreid_jax.ops import image_metrics, normalize
from privreid_jax.privacy import dp, feature_attack, holdout, inversion

GRID_IMAGES = 8               # examples per reconstruction grid
FEATURES_FILE = "features_test.npz"


def _is_clean(eps) -> bool:
  return eps is None or math.isinf(float(eps))


def save_grid(ctx, step: int, name: str, columns) -> str | None:
  """One row per example, `columns` ([N, H, W, 3] in [0, 1]) side by side: written
  to TensorBoard as `dual/<name>` and to WORKDIR/<name>.png (process 0 only)."""
  if jax.process_index() != 0:
    return None
  grid = np.concatenate([np.concatenate(list(c), axis=0) for c in columns], axis=1)
  grid = (np.clip(grid, 0.0, 1.0) * 255).round().astype(np.uint8)
  ctx.writer.images(int(step), {f"dual/{name}": grid})
  from PIL import Image
  path = os.path.join(ctx.workdir, f"{name}.png")
  Image.fromarray(grid).save(path)
  return path


class IdProbe:
  """The ID probe on held-out training images, clean and reconstructed, and
  PSNR/SSIM of the reconstructions vs the input and vs the target."""

  def __init__(self, method, ctx):
    self.method, self.ctx = method, ctx
    self._forward = jax.jit(method.probe_forward)

  def run(self, state, step: int):
    m, d, ctx = self.method, self.method.d, self.ctx
    train = ctx.splits.train
    idx = holdout.heldout_indices(len(train), d.probe_holdout, d.probe_seed,
                                  d.probe_max_images)
    if not len(idx):
      return {}
    source = [train.source[int(i)] for i in idx]
    pids = np.asarray(train.pids)[idx]
    examples = []
    hits_clean, hits_recon, q = [], [], {k: [] for k in
                                         ("psnr_input", "ssim_input", "psnr_target",
                                          "ssim_target")}
    for batch in pipeline.eval_loader(source, ctx.config.data):
      mask = batch["mask"]
      g = sharding.global_batch(ctx.mesh, {"image": batch["image"]})
      recon, logit_c, logit_r = sharding.to_host(self._forward(state, g["image"]))
      y = pids[batch["index"][mask]]
      hits_clean.append(np.argmax(logit_c[mask], -1) == y)
      if recon is None:
        continue
      hits_recon.append(np.argmax(logit_r[mask], -1) == y)
      x01 = normalize.to_unit(batch["image"][mask], m.mean, m.std)
      r01 = normalize.to_unit(recon[mask], m.mean, m.std)
      t01 = np.stack([m.target_fn(im) for im in x01])
      if sum(len(e[0]) for e in examples) < GRID_IMAGES:
        examples.append((x01, t01, r01))
      for ref, name in ((x01, "input"), (t01, "target")):
        q[f"psnr_{name}"].append(np.asarray(image_metrics.psnr(r01, ref)))
        if min(x01.shape[1:3]) >= image_metrics.SSIM_WINDOW:
          q[f"ssim_{name}"].append(np.asarray(image_metrics.ssim(r01, ref)))
    chance = 1.0 / m.num_classes
    rows = {"id_probe:clean": {"id_acc": float(np.mean(np.concatenate(hits_clean))),
                               "chance": chance, "num_images": float(len(idx))}}
    if hits_recon:
      rows["id_probe:recon"] = {"id_acc": float(np.mean(np.concatenate(hits_recon))),
                                "chance": chance, "num_images": float(len(idx))}
      rows["recon:quality"] = {k: float(np.mean(np.concatenate(v)))
                               for k, v in q.items() if v}
      x01, t01, r01 = (np.concatenate(a)[:GRID_IMAGES] for a in zip(*examples))
      save_grid(ctx, step, "recon_grid", (x01, t01, r01))
    return rows


class DpRelease:
  """Stage 2: Rank-1/mAP of clean queries against DP-released gallery features."""

  def __init__(self, method, ctx):
    self.method, self.ctx = method, ctx

  def run(self, state, step: int):
    d, ctx = self.method.d, self.ctx
    if not len(d.epsilons):
      return {}
    q, g = ctx.splits.query, ctx.splits.gallery
    qf = ctx.evaluator.features(state, "query", "raw")
    gf = ctx.evaluator.features(state, "gallery", "raw")
    k, k_median = dp.gallery_k(g.pids)
    rows = {}
    for e_i, eps in enumerate(d.epsilons):
      clean = _is_clean(eps)
      draws = 1 if clean else d.noise_draws
      r1, m_ap = [], []
      for draw in range(draws):
        if clean:
          released = gf
        else:
          key = _release_key(d, e_i, draw)
          released = np.asarray(dp.release_gallery(gf, key, epsilon=float(eps),
                                                   delta=d.delta))
        r = ranking.evaluate_features(qf, released, q.pids, g.pids, q.camids,
                                      g.camids, metric="cosine",
                                      max_rank=ctx.config.eval.max_rank)
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
            "k_per_id": float(k), "k_median": k_median,
            "eps_identity": dp.composed_epsilon(sigma, dp.DEFAULT_SENSITIVITY,
                                                d.delta, k),
            "eps_identity_median": dp.composed_epsilon(
                sigma, dp.DEFAULT_SENSITIVITY, d.delta, max(1, round(k_median)))}
    return rows


def _release_key(d, e_i: int, draw: int, salt: int = 0):
  return (dp.os_key() if d.dp_seed < 0
          else dp.os_key(d.dp_seed * 100003 + e_i * 1009 + draw + salt))


class Linkage:
  """The attack on what stage 2 releases, at every epsilon, on test identities.

  The attacker has labelled photos of the people it looks for (the query split,
  embedded with the released model) and the released gallery: the noised,
  L2-normalised gallery features. Rows `attack:linkage@eps=E`: Rank-1 / mAP of
  linking each photo to its person's released features (mean over noise draws,
  fresh draws independent of the dp rows'), and `classifier_acc`: an identity
  classifier trained on the photos' features, scored on the released gallery
  features of the same people.
  """

  def __init__(self, method, ctx, ev_cfg):
    self.method, self.ctx, self.steps = method, ctx, int(ev_cfg.steps)

  def run(self, state, step: int):
    d, ctx = self.method.d, self.ctx
    q, g = ctx.splits.query, ctx.splits.gallery
    qf = ctx.evaluator.features(state, "query", "raw")
    gf = ctx.evaluator.features(state, "gallery", "raw")
    q_pids, g_pids = np.asarray(q.pids), np.asarray(g.pids)
    people = np.unique(q_pids[q_pids > 0])
    label = {p: i for i, p in enumerate(people)}
    in_g = np.isin(g_pids, people)
    rows = {}
    for e_i, eps in enumerate(d.epsilons):
      clean = _is_clean(eps)
      r1, m_ap, acc = [], [], []
      for draw in range(1 if clean else d.noise_draws):
        key = None if clean else _release_key(d, e_i, draw, salt=17)
        released = feature_attack.release(gf, None if clean else float(eps), d.delta, key)
        r = ranking.evaluate_features(qf, released, q.pids, g.pids, q.camids, g.camids,
                                      metric="cosine", max_rank=ctx.config.eval.max_rank)
        r1.append(float(np.asarray(r["cmc"])[0]))
        m_ap.append(float(r["mAP"]))
        keep = q_pids > 0
        acc.append(feature_attack.feature_classifier_attack(
            np.asarray(dp.l2_normalize(qf))[keep], [label[p] for p in q_pids[keep]],
            released[in_g], [label[p] for p in g_pids[in_g]], num_classes=len(people),
            steps=self.steps, seed=max(d.dp_seed, 0)))
      name = "inf" if clean else f"{float(eps):g}"
      rows[f"attack:linkage@eps={name}"] = {
          "rank1": float(np.mean(r1)), "mAP": float(np.mean(m_ap)),
          "classifier_acc": float(np.mean(acc)), "chance": 1.0 / max(len(people), 1),
          "rank1_std": float(np.std(r1)), "draws": float(len(r1)),
          "eps_image": float("inf") if clean else float(eps)}
    return rows


def released_train_features(method, state, ctx, epsilon, key_salt: int):
  """What an attacker of method B holds: (released features, pids, held-out mask).

  The training split's "raw" retrieval features, L2-normalised and noised at
  `epsilon` with a key salted by `key_salt` (two attacks draw independent
  noise); the held-out mask is the ID probe's.
  """
  d = method.d
  pids = np.asarray(ctx.splits.train.pids)
  feats = ctx.evaluator.features(state, "train", "raw")
  held = holdout.heldout_mask(np.arange(len(pids)), d.probe_holdout, d.probe_seed)
  key = dp.os_key() if d.dp_seed < 0 else dp.os_key(d.dp_seed + key_salt)
  released = feature_attack.release(np.asarray(feats, np.float32), epsilon, d.delta, key)
  return released, pids, held


class FeatureAttack:
  """Row attack:feature_classifier: trains on the images the ID probe trains on,
  scored on its held-out ones."""

  def __init__(self, method, ctx, ev_cfg):
    self.method, self.ctx = method, ctx
    self.steps, self.epsilon = int(ev_cfg.steps), ev_cfg.epsilon

  def run(self, state, step: int):
    m = self.method
    released, pids, held = released_train_features(m, state, self.ctx, self.epsilon, 7)
    acc = feature_attack.feature_classifier_attack(
        released[~held], pids[~held], released[held], pids[held],
        num_classes=m.num_classes, steps=self.steps, seed=max(m.d.dp_seed, 0))
    row = {"id_acc": acc, "chance": 1.0 / m.num_classes, "num_images": float(held.sum())}
    if not _is_clean(self.epsilon):
      row["eps_image"] = float(self.epsilon)
    return {"attack:feature_classifier": row}


def _images(source, data) -> np.ndarray:
  """Every image of `source` through the eval pipeline (normalised), in order."""
  images = np.zeros((len(source), data.height, data.width, 3), np.float32)
  for batch in pipeline.eval_loader(source, data):
    mask = batch["mask"]
    images[batch["index"][mask]] = batch["image"][mask]
  return images


class Inversion:
  """Row attack:inversion: the attacker's decoder and classifier, trained on the
  images the ID probe trains on, scored on its held-out ones; `probe_acc` is the
  clean ID probe on the attacker's reconstructions. The `people_*` values are the
  same decoder on the test identities (never trained on): it inverts their
  released gallery features (noised at `epsilon`), and a classifier trained on
  the reconstructions of the attacker's labelled photos of them (the query
  split, embedded with the model) names the reconstructions (`people_id_acc`
  against `people_chance`)."""

  def __init__(self, method, ctx, ev_cfg):
    self.method, self.ctx, self.cfg = method, ctx, ev_cfg

  def _test_people(self, state, epsilon) -> inversion.People:
    d, ctx = self.method.d, self.ctx
    q, g = ctx.splits.query, ctx.splits.gallery
    q_pids, g_pids = np.asarray(q.pids), np.asarray(g.pids)
    people = np.unique(q_pids[q_pids > 0])
    label = {p: i for i, p in enumerate(people)}
    photos = np.flatnonzero(q_pids > 0)
    theirs = np.flatnonzero(np.isin(g_pids, people))
    qf = np.asarray(dp.l2_normalize(ctx.evaluator.features(state, "query", "raw")))
    gf = np.asarray(ctx.evaluator.features(state, "gallery", "raw"), np.float32)[theirs]
    key = None if _is_clean(epsilon) else _release_key(d, 0, 0, salt=13)
    released = feature_attack.release(gf, None if _is_clean(epsilon) else float(epsilon),
                                      d.delta, key)
    images = _images(Subset(g.source, theirs), ctx.config.data)
    return inversion.People(qf[photos], np.array([label[p] for p in q_pids[photos]]),
                            np.asarray(released), images,
                            np.array([label[p] for p in g_pids[theirs]]), len(people))

  def run(self, state, step: int):
    m, ctx, cfg = self.method, self.ctx, self.cfg
    d, data = m.d, ctx.config.data
    released, pids, held = released_train_features(m, state, ctx, cfg.epsilon, 11)
    images = _images(ctx.splits.train.source, data)
    p, s = state.params["id_probe"], state.batch_stats["id_probe"]

    # The attack runs on host-local arrays (one process; the probe's params are
    # replicated, so this is a plain single-device apply).
    @jax.jit
    def probe(x):
      return m.probe.apply({"params": p, "batch_stats": s}, x, train=False)

    result = inversion.inversion_attack(
        released[~held], images[~held], pids[~held], released[held], images[held],
        pids[held], num_classes=m.num_classes, steps=int(cfg.steps),
        classifier_steps=int(cfg.classifier_steps), widths=tuple(cfg.widths),
        classifier_width=d.probe_width, classifier_stages=d.probe_stages,
        batch_size=data.batch_size, mean=data.mean, std=data.std,
        seed=max(d.dp_seed, 0), probe_fn=probe, conv_impl=ctx.config.model.conv_impl,
        people=self._test_people(state, cfg.epsilon))
    save_grid(ctx, step, "inversion_grid", result["examples"])
    row = inversion.inversion_row(result)
    if not _is_clean(cfg.epsilon):
      row["eps_image"] = float(cfg.epsilon)
    return {"attack:inversion": row}


class SaveFeatures:
  """WORKDIR/features_test.npz: the first `count` query features (L2-normalised,
  as released) with pids and camids, for t-SNE across runs. No rows."""

  def __init__(self, ctx, count: int):
    self.ctx, self.count = ctx, int(count)

  def run(self, state, step: int):
    ctx = self.ctx
    if self.count <= 0 or jax.process_index() != 0:
      return {}
    q = ctx.splits.query
    feats = np.asarray(ctx.evaluator.features(state, "query", "raw"), np.float32)
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    n = self.count
    np.savez(os.path.join(ctx.workdir, FEATURES_FILE), features=feats[:n],
             pids=np.asarray(q.pids)[:n], camids=np.asarray(q.camids)[:n], step=int(step))
    return {}


def offered(method, ctx, shared):
  """Method B's evaluators by name after the `shared` ones, in the order their rows
  are written."""
  return {
      **shared,
      "id_probe": lambda cfg: IdProbe(method, ctx),
      "dp_release": lambda cfg: DpRelease(method, ctx),
      "linkage": lambda cfg: Linkage(method, ctx, cfg),
      "feature_attack": lambda cfg: FeatureAttack(method, ctx, cfg),
      "inversion": lambda cfg: Inversion(method, ctx, cfg),
      "features": lambda cfg: SaveFeatures(ctx, cfg.count),
  }
