"""The feature-classifier attacker on synthetic features with a known answer."""

import types

import numpy as np
import pytest

from privreid_jax.methods.dual_stage import evaluators as dual_evaluators
from privreid_jax.privacy import feature_attack, holdout

from configs import dual_synthetic


def clustered(num_classes=10, per_class=12, dim=32, spread=0.3, seed=0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(num_classes, dim))
  y = np.repeat(np.arange(num_classes), per_class)
  x = centers[y] + spread * rng.normal(size=(len(y), dim))
  return x.astype(np.float32), y.astype(np.int32)


def test_attacker_recognises_separable_identities_and_not_random_labels():
  x, y = clustered()
  test = np.arange(len(y)) % 4 == 0
  acc = feature_attack.feature_classifier_attack(x[~test], y[~test], x[test], y[test],
                                          num_classes=10, steps=100)
  assert acc > 0.9
  shuffled = np.random.default_rng(1).permutation(y)
  acc_rand = feature_attack.feature_classifier_attack(x[~test], shuffled[~test], x[test],
                                               shuffled[test], num_classes=10, steps=100)
  assert acc_rand < 0.4            # chance is 0.1: labels unrelated to features


def test_dp_noise_on_released_features_lowers_attack_accuracy():
  x, y = clustered(dim=64, spread=0.5)
  test = np.arange(len(y)) % 4 == 0
  key = feature_attack.dp.os_key(0)
  accs = []
  for eps in (float("inf"), 3.0):
    r = feature_attack.release(x, eps, 1e-5, key)
    accs.append(feature_attack.feature_classifier_attack(r[~test], y[~test], r[test], y[test],
                                                  num_classes=10, steps=100))
  assert accs[0] > 0.9 and accs[1] < accs[0] - 0.3
  np.testing.assert_allclose(np.linalg.norm(feature_attack.release(x, None, 1e-5, key), axis=1),
                             1.0, rtol=1e-5)


def test_bad_inputs_are_named():
  x, y = clustered()
  with pytest.raises(ValueError, match="train labels outside"):
    feature_attack.feature_classifier_attack(x, y + 5, x, y, num_classes=10)
  with pytest.raises(ValueError, match="feature dims differ"):
    feature_attack.feature_classifier_attack(x, y, x[:, :5], y, num_classes=10)


def test_feature_attack_row_uses_the_probe_holdout_split():
  """The row asks the evaluator for training features, trains on the probe's
  training images and is scored on its held-out ones; DP noise lowers it."""
  config = dual_synthetic.get_config("tiny")
  config.evals.feature_attack.steps = 100
  config.dual.dp_seed = 0
  x, y = clustered(num_classes=8, per_class=20)
  calls = []

  class Evaluator:
    def features(self, state, split, kind):
      calls.append((split, kind))
      return x

  method = types.SimpleNamespace(d=config.dual, num_classes=8)
  ctx = types.SimpleNamespace(splits=types.SimpleNamespace(
      train=types.SimpleNamespace(pids=y)), evaluator=Evaluator())
  row = dual_evaluators.FeatureAttack(method, ctx, config.evals.feature_attack).run(
      None, 0)["attack:feature_classifier"]
  held = holdout.heldout_mask(np.arange(len(y)), config.dual.probe_holdout,
                                 config.dual.probe_seed)
  assert calls == [("train", "raw")]
  assert row["num_images"] == held.sum() and row["chance"] == pytest.approx(1 / 8)
  assert row["id_acc"] > 0.9 and "eps_image" not in row
  config.evals.feature_attack.epsilon = 1.0
  noisy = dual_evaluators.FeatureAttack(method, ctx, config.evals.feature_attack).run(
      None, 0)["attack:feature_classifier"]
  assert noisy["eps_image"] == 1.0 and noisy["id_acc"] < row["id_acc"]
