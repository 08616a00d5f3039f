"""The Re-ID model C with its losses: the piece every method trains.

BoT/AGW (docs/baseline.md): ID loss (label-smoothed CE) on the BNNeck logits,
triplet (and optional center) loss on the feature before the BN; retrieval on
the post-BN feature.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from privreid_jax import losses, optim
from privreid_jax.models import pretrained, reid


class ReidLearner:
  """Builds C, its optimizer(s), and the pure loss / feature functions."""

  def __init__(self, config, num_classes: int, steps_per_epoch: int,
               name: str = "reid"):
    self.name = name
    self.loss_cfg = config.loss
    self.model_cfg = config.model
    self.model = reid.build_reid_model(config.model, num_classes)
    self.num_classes = num_classes
    self.use_center = config.loss.center_weight > 0
    self.schedule = optim.schedule_from_config(config.optim, steps_per_epoch)
    self.txs = {name: optim.from_config(config.optim, steps_per_epoch)}
    if self.use_center:
      # BoT: centers have their own SGD; their gradient is rescaled by
      # 1/center_weight so the weight only affects the backbone.
      self.txs[self._center_name] = optax.chain(
          optax.scale(1.0 / config.loss.center_weight),
          optax.sgd(config.loss.center_lr))

  @property
  def _center_name(self) -> str:
    return f"{self.name}_centers"

  def init(self, rng: jax.Array, images: jax.Array):
    """Returns ({name: params, ...}, {name: batch_stats})."""
    variables = self.model.init(rng, images, train=False)
    if self.model_cfg.pretrained:
      variables = pretrained.load_torchvision_resnet(self.model_cfg.pretrained,
                                                     variables)
    params = {self.name: variables["params"]}
    stats = {self.name: variables.get("batch_stats", {})}
    if self.use_center:
      _, out = self.model.apply(variables, images, train=False)
      params[self._center_name] = jax.random.normal(
          jax.random.fold_in(rng, 1), (self.num_classes, out["feat_pre"].shape[-1]))
    return params, stats

  def apply(self, params, batch_stats, images, train: bool):
    """Runs C; returns (logits, out, new_batch_stats)."""
    variables = {"params": params[self.name], "batch_stats": batch_stats[self.name]}
    if train:
      (logits, out), upd = self.model.apply(variables, images, train=True,
                                            mutable=["batch_stats"])
      return logits, out, upd["batch_stats"]
    logits, out = self.model.apply(variables, images, train=False)
    return logits, out, batch_stats[self.name]

  def loss(self, params, batch_stats, images, pids, prefix: str = ""):
    """Training loss of C on one batch: (loss, (new_batch_stats, metrics))."""
    total, (stats, metrics, _) = self.loss_and_out(params, batch_stats, images, pids,
                                                   prefix)
    return total, (stats, metrics)

  def loss_and_out(self, params, batch_stats, images, pids, prefix: str = ""):
    """As `loss`, also handing back the forward pass's extras:
    (loss, (new_batch_stats, metrics, out)) with out["feature_map"], ["feat_pre"]."""
    cfg = self.loss_cfg
    logits, out, new_stats = self.apply(params, batch_stats, images, train=True)
    metrics = {}
    total = 0.0
    if cfg.id_weight:
      id_loss = losses.cross_entropy_label_smooth(logits, pids, cfg.label_smoothing)
      total += cfg.id_weight * id_loss
      metrics["id_loss"] = id_loss
      metrics["acc"] = jnp.mean(jnp.argmax(logits, -1) == pids)
    feat = out["feat_pre"]
    if cfg.triplet != "none" and cfg.triplet_weight:
      if cfg.triplet == "batch_hard":
        tri, _ = losses.batch_hard_triplet(feat, pids, margin=cfg.triplet_margin)
      elif cfg.triplet == "soft_margin":
        tri, _ = losses.batch_hard_triplet(feat, pids, soft_margin=True)
      elif cfg.triplet == "weighted":
        tri = losses.weighted_regularized_triplet(feat, pids)
        tri = tri[0] if isinstance(tri, tuple) else tri
      else:
        raise ValueError(f"config.loss.triplet={cfg.triplet!r}: expected "
                         "batch_hard | soft_margin | weighted | none")
      total += cfg.triplet_weight * tri
      metrics["tri_loss"] = tri
    if self.use_center:
      cen = losses.center_loss(feat, pids, params[self._center_name])
      total += cfg.center_weight * cen
      metrics["center_loss"] = cen
    metrics = {f"{prefix}{k}": v for k, v in metrics.items()}
    return total, ({self.name: new_stats}, metrics, out)

  def features(self, params, batch_stats, images) -> jax.Array:
    """Retrieval feature: the post-BN feature in eval mode (float32)."""
    _, out, _ = self.apply(params, batch_stats, images, train=False)
    return out["feat"].astype(jnp.float32)

  def network_names(self) -> list[str]:
    return list(self.txs)

