"""A classifier attack on released Re-ID features: arrays in, accuracy out.

`feature_classifier_attack` is a stronger attacker than method B's fixed ID
probe: it holds released (optionally DP-noised) features of images with their
identities, trains its own identity classifier (an MLP, full batch, AdamW) on
them, and is scored on held-out images of the same identities. Its accuracy
says how linkable one released feature is to a known person, which a Re-ID
feature is built to be: expect it to be high for any useful model, and to fall
with the DP noise only where retrieval falls too.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from privreid_jax.privacy import dp, fitting


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
  def loss_fn(p, s, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits_fn(p, x), y).mean(), s

  params, _, _ = fitting.fit(loss_fn, params, {}, (train_x, train_y), steps=steps,
                             tx=optax.adamw(lr, weight_decay=weight_decay))
  pred = np.asarray(jnp.argmax(logits_fn(params, jnp.asarray(test_x)), -1))
  return float(np.mean(pred == test_y))


def release(features: np.ndarray, epsilon: float, delta: float, key) -> np.ndarray:
  """L2-normalised features, plus Gaussian-mechanism noise unless epsilon is inf/None."""
  if epsilon is None or math.isinf(float(epsilon)):
    return np.asarray(dp.l2_normalize(features))
  return np.asarray(dp.release_gallery(features, key, epsilon=float(epsilon), delta=delta))
