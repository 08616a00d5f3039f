"""Loss functions: Re-ID metric learning (ID, triplet, center) and image/GAN losses.

Every function is pure `jax.numpy`, jit-able, and meant to be called on the
GLOBAL batch inside a jitted step (under a data mesh XLA inserts the
collectives for the pairwise-distance matrix). Inputs are cast to float32 and
every loss is a scalar mean; the triplet losses also return a small dict of
extras for logging.

References (docs/baseline.md): torchreid `CrossEntropyLoss` (label smoothing),
BoT `TripletLoss` / `CenterLoss`, AGW `WeightedRegularizedTriplet`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

_DIST_EPS = 1e-12     # clamp inside the sqrt of a squared distance (BoT)
_NORM_EPS = 1e-12     # added to the L2 norm when normalising (BoT `normalize`)
_CENTER_MAX = 1e12    # upper clamp of the center-loss distance (BoT)
_WEIGHT_EPS = 1e-6    # added to the softmax normaliser in WRT (AGW)

Array = jax.Array


# ----------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------
def _check_features_labels(name: str, features: Array, labels: Array) -> None:
  if features.ndim != 2:
    raise ValueError(f"{name}: features must be [batch, dim], got shape {features.shape}")
  if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
    raise ValueError(f"{name}: labels must be [batch={features.shape[0]}], "
                     f"got shape {labels.shape}")


def l2_normalize(x: Array, axis: int = -1) -> Array:
  """x / (||x|| + 1e-12) as BoT's `normalize`, with a finite gradient at x = 0."""
  x = jnp.asarray(x, jnp.float32)
  sq = jnp.sum(x * x, axis=axis, keepdims=True)
  # sqrt of a strictly positive value keeps the gradient finite at x = 0; a
  # zero row still maps to 0 (1e-12 / (1e-12 + 1e-12) * 0).
  norm = jnp.sqrt(jnp.maximum(sq, _NORM_EPS * _NORM_EPS))
  return x / (norm + _NORM_EPS)


def _replicated(x: Array) -> Array:
  """Replicates `x` when it is sharded over Explicit mesh axes (no-op otherwise).

  Pairwise matrices pair a batch-sharded row operand with a column operand;
  with Explicit sharding both cannot be split over the same axis, so the
  column operand is gathered. Under Auto axes XLA decides by itself.
  """
  sharding = getattr(jax.typeof(x), "sharding", None)
  mesh = getattr(sharding, "mesh", None)
  if mesh is None or not getattr(mesh, "explicit_axes", ()):
    return x
  return jax.sharding.reshard(x, jax.sharding.PartitionSpec())


def pairwise_euclidean(x: Array, y: Array) -> Array:
  """[n, m] Euclidean distances sqrt(clamp(||x||^2 + ||y||^2 - 2 x.y, 1e-12)).

  The clamp makes the gradient exactly zero where the squared distance is
  below 1e-12 (coinciding features), so it never becomes inf/NaN. The Gram
  matrix uses HIGHEST precision so TPUs do not fall back to bf16 passes.
  """
  x = jnp.asarray(x, jnp.float32)
  y = _replicated(jnp.asarray(y, jnp.float32))
  xx = jnp.sum(x * x, axis=1, keepdims=True)
  yy = jnp.sum(y * y, axis=1, keepdims=True).T
  xy = jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.sqrt(jnp.maximum(xx + yy - 2.0 * xy, _DIST_EPS))


def self_pairwise_euclidean(x: Array) -> Array:
  """[n, n] distances within one batch, the triplet losses' matrix.

  As `pairwise_euclidean(x, x)`, but the squared norms are the Gram matrix's own
  diagonal, so every entry is ||x_i||^2 + ||x_j||^2 - 2 x_i.x_j with all three terms
  from one product: the self-distance is exactly 0 before the clamp (1e-6 after it,
  as in float64), not the square root of float32 rounding (~1e-3 at feature norms
  near 10, where norms and Gram come from differently ordered sums; the reference
  codes' `euclidean_dist` has that noise, and it reaches AGW's triplet through the
  self-included positive softmax). Measured on random batches: the WRT loss's
  float32 error from float64 is 1.1-250x below the reference's own
  (experiments/parity_triplet.py).
  """
  x = jnp.asarray(x, jnp.float32)
  x = x - jnp.mean(x, axis=0, keepdims=True)    # distances do not move; norms shrink
  gram = jnp.matmul(x, _replicated(x).T, precision=jax.lax.Precision.HIGHEST)
  # the diagonal as a masked row sum: exact (one term and zeros), and it keeps
  # the rows' sharding
  sq = jnp.sum(gram * jnp.eye(gram.shape[0], dtype=gram.dtype), axis=1, keepdims=True)
  return jnp.sqrt(jnp.maximum(sq + _replicated(sq).T - 2.0 * gram, _DIST_EPS))


def _same_label(labels: Array) -> Array:
  labels = jnp.asarray(labels)
  return labels[:, None] == _replicated(labels)[None, :]


# ----------------------------------------------------------------------------
# Identity (classification) loss.
# ----------------------------------------------------------------------------
def cross_entropy_label_smooth(logits: Array, labels: Array,
                               epsilon: float = 0.1) -> Array:
  """torchreid's label-smoothed cross-entropy, mean over the batch.

  Targets are (1 - eps) * onehot(label) + eps / num_classes.

  Args:
    logits: [batch, num_classes].
    labels: [batch] integer class ids in [0, num_classes).
    epsilon: smoothing in [0, 1); 0 gives plain cross-entropy.
  """
  if isinstance(epsilon, (int, float)) and not 0.0 <= epsilon < 1.0:
    raise ValueError(f"cross_entropy_label_smooth: epsilon must be in [0, 1), got {epsilon}")
  logits = jnp.asarray(logits, jnp.float32)
  if logits.ndim != 2:
    raise ValueError(f"cross_entropy_label_smooth: logits must be [batch, classes], "
                     f"got shape {logits.shape}")
  labels = jnp.asarray(labels)
  if labels.shape != logits.shape[:1]:
    raise ValueError(f"cross_entropy_label_smooth: labels must be [batch={logits.shape[0]}], "
                     f"got shape {labels.shape}")
  num_classes = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  targets = (1.0 - epsilon) * targets + epsilon / num_classes
  return jnp.mean(-jnp.sum(targets * log_probs, axis=-1))


# ----------------------------------------------------------------------------
# Triplet losses.
# ----------------------------------------------------------------------------
def batch_hard_triplet(features: Array, labels: Array, margin: float = 0.3,
                       soft_margin: bool = False,
                       normalize: bool = False) -> tuple[Array, dict[str, Array]]:
  """BoT / torchreid batch-hard triplet loss.

  For each anchor: d_ap = the largest distance to a same-id sample (the anchor
  itself counts, at distance ~1e-6), d_an = the smallest distance to a
  different-id sample. The loss is mean(max(0, d_ap - d_an + margin))
  (MarginRankingLoss) or, with `soft_margin`, mean(softplus(d_ap - d_an))
  (SoftMarginLoss; `margin` is then unused). An anchor with no negative in the
  batch has d_an = +inf and contributes 0; PK sampling never produces one.

  Args:
    features: [batch, dim] embeddings (BoT: the feature before the BNNeck).
    labels: [batch] integer ids.
    margin: hinge margin.
    soft_margin: use the soft-margin variant.
    normalize: L2-normalise features first.

  Returns:
    (loss, {"d_ap": mean d_ap, "d_an": mean d_an,
            "acc": fraction of anchors with d_an > d_ap}).
  """
  features = jnp.asarray(features, jnp.float32)
  _check_features_labels("batch_hard_triplet", features, jnp.asarray(labels))
  if normalize:
    features = l2_normalize(features)
  dist = self_pairwise_euclidean(features)
  pos = _same_label(labels)
  d_ap = jnp.max(jnp.where(pos, dist, -jnp.inf), axis=1)
  d_an = jnp.min(jnp.where(pos, jnp.inf, dist), axis=1)
  if soft_margin:
    per_anchor = jax.nn.softplus(d_ap - d_an)
  else:
    per_anchor = jax.nn.relu(d_ap - d_an + margin)
  extras = {
      "d_ap": jnp.mean(d_ap),
      "d_an": jnp.mean(d_an),
      "acc": jnp.mean((d_an > d_ap).astype(jnp.float32)),
  }
  return jnp.mean(per_anchor), extras


def _masked_softmax_weights(dist: Array, mask: Array) -> Array:
  """AGW `softmax_weights`: exp(d - max(d*mask)) * mask / (sum(...) + 1e-6)."""
  max_v = jnp.max(dist * mask, axis=1, keepdims=True)
  e = jnp.exp(dist - max_v) * mask
  return e / (jnp.sum(e, axis=1, keepdims=True) + _WEIGHT_EPS)


def weighted_regularized_triplet(features: Array, labels: Array,
                                 normalize: bool = False
                                 ) -> tuple[Array, dict[str, Array]]:
  """AGW's weighted regularised triplet (WRT) loss; no margin to tune.

  Per anchor, the positive distance is a softmax(d)-weighted mean over its
  positives (self included, as in AGW) and the negative distance a
  softmin(d)-weighted mean over its negatives; the loss is
  mean(softplus(d_ap - d_an)) (SoftMarginLoss).

  Returns:
    (loss, {"d_ap", "d_an", "acc"}) as `batch_hard_triplet`, with the weighted
    distances.
  """
  features = jnp.asarray(features, jnp.float32)
  _check_features_labels("weighted_regularized_triplet", features, jnp.asarray(labels))
  if normalize:
    features = l2_normalize(features)
  dist = self_pairwise_euclidean(features)
  same = _same_label(labels)
  is_pos = same.astype(jnp.float32)
  is_neg = 1.0 - is_pos
  dist_ap = dist * is_pos
  dist_an = dist * is_neg
  w_ap = _masked_softmax_weights(dist_ap, is_pos)
  w_an = _masked_softmax_weights(-dist_an, is_neg)
  d_ap = jnp.sum(dist_ap * w_ap, axis=1)
  d_an = jnp.sum(dist_an * w_an, axis=1)
  loss = jnp.mean(jax.nn.softplus(d_ap - d_an))
  extras = {
      "d_ap": jnp.mean(d_ap),
      "d_an": jnp.mean(d_an),
      "acc": jnp.mean((d_an > d_ap).astype(jnp.float32)),
  }
  return loss, extras


# ----------------------------------------------------------------------------
# Center loss.
# ----------------------------------------------------------------------------
def center_loss(features: Array, labels: Array, centers: Array) -> Array:
  """BoT CenterLoss: sum_i clamp(||f_i - c_{y_i}||^2, 1e-12, 1e12) / batch.

  (BoT clamps the whole masked [batch, classes] matrix, which adds a constant
  (classes - 1) * 1e-12 per sample; that constant is dropped here.)

  Training the centers (the trainer's job, BoT `train.py`):
    * `centers` [num_classes, dim] is a separate parameter with its own plain
      SGD optimizer (`optax.sgd(config.loss.center_lr)`, lr 0.5, no momentum,
      no weight decay, no schedule).
    * The total loss uses `center_weight * center_loss`, so the raw gradient
      w.r.t. the centers is scaled by `center_weight`; BoT multiplies the center
      gradient by 1 / center_weight before the SGD step, i.e. the centers move
      with the gradient of the UNWEIGHTED center loss. Multiply by
      `center_grad_scale(center_weight)`.
    * Centers are initialised N(0, 1) (torch.randn) in BoT.

  Labels outside [0, num_classes) are not checked at run time (jit); such a
  sample is compared with the zero vector. The own center is picked with a
  one-hot matmul rather than a gather, which shards cleanly over the batch.

  Args:
    features: [batch, dim] (BoT: the feature before the BNNeck).
    labels: [batch] integer ids.
    centers: [num_classes, dim].
  """
  features = jnp.asarray(features, jnp.float32)
  labels = jnp.asarray(labels)
  _check_features_labels("center_loss", features, labels)
  centers = jnp.asarray(centers, jnp.float32)
  if centers.ndim != 2 or centers.shape[1] != features.shape[1]:
    raise ValueError(f"center_loss: centers must be [num_classes, dim={features.shape[1]}], "
                     f"got shape {centers.shape}")
  onehot = jax.nn.one_hot(labels, centers.shape[0], dtype=jnp.float32)
  own = jnp.matmul(onehot, centers, precision=jax.lax.Precision.HIGHEST)
  diff = features - own
  sq = jnp.sum(diff * diff, axis=1)
  return jnp.sum(jnp.clip(sq, _DIST_EPS, _CENTER_MAX)) / features.shape[0]


def center_grad_scale(center_weight: float) -> float:
  """Factor BoT applies to the center gradient: 1 / center_weight (> 0)."""
  if not center_weight > 0:
    raise ValueError(f"center_grad_scale: loss.center_weight must be > 0, got {center_weight}")
  return 1.0 / float(center_weight)


# ----------------------------------------------------------------------------
# Image / adversarial losses.
# ----------------------------------------------------------------------------
def l1(a: Array, b: Array) -> Array:
  """Mean absolute error (torch L1Loss, reduction='mean')."""
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  if a.shape != b.shape:
    raise ValueError(f"l1: shapes differ, {a.shape} vs {b.shape}")
  return jnp.mean(jnp.abs(a - b))


def bce_with_logits(logits: Array, targets: Array) -> Array:
  """Mean binary cross-entropy on logits (torch BCEWithLogitsLoss), stable.

  Uses max(x, 0) - x * t + log1p(exp(-|x|)), finite for any finite logit.
  """
  x = jnp.asarray(logits, jnp.float32)
  t = jnp.asarray(targets, jnp.float32)
  if x.shape != t.shape:
    raise ValueError(f"bce_with_logits: logits {x.shape} and targets {t.shape} differ in shape")
  return jnp.mean(jnp.maximum(x, 0.0) - x * t + jnp.log1p(jnp.exp(-jnp.abs(x))))


def gan_bce(logits: Array, is_real: bool) -> Array:
  """GAN loss: BCE-with-logits against all ones (`is_real`) or all zeros."""
  if not isinstance(is_real, (bool, jnp.bool_)):
    raise ValueError(f"gan_bce: is_real must be a Python bool, got {is_real!r}")
  x = jnp.asarray(logits, jnp.float32)
  return bce_with_logits(x, jnp.full(x.shape, 1.0 if is_real else 0.0, jnp.float32))


# ----------------------------------------------------------------------------
# Gradient reversal.
# ----------------------------------------------------------------------------
@jax.custom_vjp
def _grad_reverse(x: Any, scale: Array) -> Any:
  del scale
  return x


def _grad_reverse_fwd(x, scale):
  return x, scale


def _grad_reverse_bwd(scale, g):
  flipped = jax.tree.map(lambda t: (-scale * t).astype(t.dtype), g)
  return flipped, jnp.zeros_like(scale)


_grad_reverse.defvjp(_grad_reverse_fwd, _grad_reverse_bwd)


def grad_reverse(x: Any, scale: float | Array = 1.0) -> Any:
  """Gradient reversal layer: identity forward, -scale * gradient backward.

  `x` may be an array or a pytree of arrays. `scale` may be a traced scalar
  (e.g. a DANN-style ramp); no gradient flows into it.
  """
  scale = jax.lax.stop_gradient(jnp.asarray(scale, jnp.float32))
  if scale.ndim != 0:
    raise ValueError(f"grad_reverse: scale must be a scalar, got shape {scale.shape}")
  return _grad_reverse(x, scale)
