"""Attacks on released Re-ID features (METHODS.md s.3, "better [ours]").

`feature_classifier_attack` is a stronger attacker than method B's fixed ID
probe: it holds released (optionally DP-noised) features of training images
with their identities, trains its own identity classifier (an MLP, full batch,
Adam) on them, and is scored on held-out images of the same identities. Its
accuracy says how linkable one released feature is to a known person, which a
Re-ID feature is built to be: expect it to be high for any useful model, and to
fall with the DP noise only where retrieval falls too.

`feature_attack_rows` runs it inside a method's `extra_metrics` (row
"attack:feature_classifier"), with the same held-out split as the ID probe.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from privreid_jax.privacy import dp


def _init_mlp(key: jax.Array, dim: int, hidden: int, classes: int) -> dict[str, Any]:
  k1, k2 = jax.random.split(key)
  return {"w1": jax.random.normal(k1, (dim, hidden)) * math.sqrt(2.0 / dim),
          "b1": jnp.zeros((hidden,)),
          "w2": jax.random.normal(k2, (hidden, classes)) * math.sqrt(1.0 / hidden),
          "b2": jnp.zeros((classes,))}


def _logits(p, x):
  return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def feature_classifier_attack(train_x, train_y, test_x, test_y, *, num_classes: int,
                              steps: int = 300, hidden: int = 256, lr: float = 1e-2,
                              weight_decay: float = 1e-4, seed: int = 0) -> float:
  """Trains an MLP identity classifier on (train_x, train_y); accuracy on the test set.

  Args:
    train_x, test_x: [N, D] released features (already noised if DP applies).
    train_y, test_y: [N] identity labels in [0, num_classes).
    num_classes: number of identities.
    steps: full-batch Adam steps; hidden: width of the hidden layer (0 = linear).
  """
  train_x, test_x = (np.asarray(x, np.float32) for x in (train_x, test_x))
  train_y, test_y = (np.asarray(y, np.int32) for y in (train_y, test_y))
  for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
    if x.ndim != 2 or len(x) != len(y) or not len(x):
      raise ValueError(f"feature_classifier_attack: {name} features {x.shape} and "
                       f"labels {y.shape} must be [N, D] and [N] with N > 0")
    if y.min() < 0 or y.max() >= num_classes:
      raise ValueError(f"feature_classifier_attack: {name} labels outside "
                       f"[0, {num_classes})")
  if train_x.shape[1] != test_x.shape[1]:
    raise ValueError(f"feature_classifier_attack: feature dims differ, "
                     f"{train_x.shape[1]} vs {test_x.shape[1]}")
  # Standardise with the attacker's own (training) statistics.
  mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
  train_x, test_x = (train_x - mu) / sd, (test_x - mu) / sd
  key = jax.random.PRNGKey(seed)
  if hidden:
    params = _init_mlp(key, train_x.shape[1], hidden, num_classes)
    logits_fn = _logits
  else:
    params = {"w": jnp.zeros((train_x.shape[1], num_classes)), "b": jnp.zeros(num_classes)}
    logits_fn = lambda p, x: x @ p["w"] + p["b"]
  tx = optax.adamw(lr, weight_decay=weight_decay)

  def loss_fn(p, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits_fn(p, x), y).mean()

  @jax.jit
  def fit(params, x, y):
    def body(_, carry):
      p, s = carry
      g = jax.grad(loss_fn)(p, x, y)
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s
    return jax.lax.fori_loop(0, steps, body, (params, tx.init(params)))[0]

  params = fit(params, jnp.asarray(train_x), jnp.asarray(train_y))
  pred = np.asarray(jnp.argmax(logits_fn(params, jnp.asarray(test_x)), -1))
  return float(np.mean(pred == test_y))


def release(features: np.ndarray, epsilon: float, delta: float, key) -> np.ndarray:
  """L2-normalised features, plus Gaussian-mechanism noise unless epsilon is inf/None."""
  if epsilon is None or math.isinf(float(epsilon)):
    return np.asarray(dp.l2_normalize(features))
  return np.asarray(dp.release_gallery(features, key, epsilon=float(epsilon), delta=delta))


def released_train_features(method, state, ctx, key_salt: int, feats=None):
  """What an attacker of method B holds: (released features, pids, held-out mask).

  The released features are the training split's "raw" retrieval features,
  L2-normalised and noised at config.dual.attack_epsilon with a key salted by
  `key_salt` (so two attacks draw independent noise); the held-out mask is the
  ID probe's (`dual_stage.heldout_mask`). `feats` skips recomputing the features
  when the caller already has them.
  """
  from privreid_jax.methods import dual_stage
  d = method.d
  pids = np.asarray(ctx.splits.train.pids)
  if feats is None:
    feats = ctx.evaluator.features(state, "train", "raw")
  held = dual_stage.heldout_mask(np.arange(len(pids)), d.probe_holdout, d.probe_seed)
  key = dp.os_key() if d.dp_seed < 0 else dp.os_key(d.dp_seed + key_salt)
  released = release(np.asarray(feats, np.float32), d.attack_epsilon, d.delta, key)
  return released, pids, held


def feature_attack_rows(method, state, ctx, feats=None) -> dict[str, dict[str, float]]:
  """Row "attack:feature_classifier" for a method with `d` = config.dual.

  The attacker sees released features of the training split (the method's
  "raw" retrieval feature), learns on the images the ID probe trains on and is
  scored on the probe's held-out images (`dual_stage.heldout_mask`).
  """
  d = method.d
  released, pids, held = released_train_features(method, state, ctx, 7, feats)
  acc = feature_classifier_attack(released[~held], pids[~held], released[held],
                                  pids[held], num_classes=method.num_classes,
                                  steps=d.attack_steps, seed=max(d.dp_seed, 0))
  row = {"id_acc": acc, "chance": 1.0 / method.num_classes,
         "num_images": float(held.sum())}
  eps = d.attack_epsilon
  if not (eps is None or math.isinf(float(eps))):
    row["eps_image"] = float(eps)
  return {"attack:feature_classifier": row}
