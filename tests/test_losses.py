"""Tests for privreid_jax.losses against independent numpy loops and hand values."""

import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from privreid_jax import losses


def _feats(n=8, d=5, seed=0, scale=1.0):
  return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32) * scale


LABELS = np.array([0, 0, 1, 1, 2, 2, 3, 3], np.int32)


def _np_dist(a, b):
  """Euclidean distance with BoT's 1e-12 clamp, in float64."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  return math.sqrt(max(float(np.sum((a - b) ** 2)), 1e-12))


def _np_normalize(x):
  x = np.asarray(x, np.float64)
  return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def _all_finite(tree):
  return all(bool(np.all(np.isfinite(np.asarray(t)))) for t in jax.tree.leaves(tree))


# ---------------------------------------------------------------------------
# Cross-entropy with label smoothing.
# ---------------------------------------------------------------------------
def test_label_smooth_ce_matches_explicit_logsumexp():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(4, 6)).astype(np.float32) * 3
  labels = np.array([0, 5, 2, 2])
  eps = 0.1
  total = 0.0
  for i in range(4):
    row = logits[i].astype(np.float64)
    m = row.max()
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    for k in range(6):
      t = (1 - eps) * (k == labels[i]) + eps / 6
      total += -t * (row[k] - lse)
  want = total / 4
  got = losses.cross_entropy_label_smooth(logits, labels, eps)
  assert got.shape == ()
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_label_smooth_zero_equals_plain_ce():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=(5, 7)), jnp.float32)
  labels = jnp.array([1, 0, 6, 3, 3])
  want = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  got = losses.cross_entropy_label_smooth(logits, labels, epsilon=0.0)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
  # A confident, correct prediction: ~0 without smoothing, penalised with it.
  sure = jnp.array([[20.0, 0.0, 0.0]])
  assert float(losses.cross_entropy_label_smooth(sure, jnp.array([0]), 0.0)) < 1e-6
  np.testing.assert_allclose(
      float(losses.cross_entropy_label_smooth(sure, jnp.array([0]), 0.3)), 0.2 * 20.0, rtol=1e-4)


def test_label_smooth_bf16_input_and_errors():
  logits = jnp.zeros((2, 4), jnp.bfloat16)
  got = losses.cross_entropy_label_smooth(logits, jnp.array([0, 1]))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), math.log(4), rtol=1e-6)
  with pytest.raises(ValueError, match="epsilon"):
    losses.cross_entropy_label_smooth(logits, jnp.array([0, 1]), epsilon=1.0)
  with pytest.raises(ValueError, match="labels"):
    losses.cross_entropy_label_smooth(logits, jnp.array([0, 1, 2]))


# ---------------------------------------------------------------------------
# Batch-hard triplet.
# ---------------------------------------------------------------------------
def _np_batch_hard(x, labels, margin, soft):
  n = len(labels)
  per, aps, ans = [], [], []
  for i in range(n):
    d_ap, d_an = -1.0, float("inf")
    for j in range(n):
      d = _np_dist(x[i], x[j])
      if labels[j] == labels[i]:
        d_ap = max(d_ap, d)
      else:
        d_an = min(d_an, d)
    aps.append(d_ap)
    ans.append(d_an)
    per.append(math.log1p(math.exp(d_ap - d_an)) if soft else max(0.0, d_ap - d_an + margin))
  acc = sum(a < b for a, b in zip(aps, ans)) / n
  return np.mean(per), np.mean(aps), np.mean(ans), acc


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_batch_hard_triplet_matches_loops(soft, normalize):
  x = _feats(scale=0.5)
  loss, ex = losses.batch_hard_triplet(x, LABELS, margin=0.3, soft_margin=soft,
                                       normalize=normalize)
  ref_x = _np_normalize(x) if normalize else x
  want, ap, an, acc = _np_batch_hard(ref_x, LABELS, 0.3, soft)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(ex["d_ap"]), ap, rtol=1e-5)
  np.testing.assert_allclose(float(ex["d_an"]), an, rtol=1e-5)
  np.testing.assert_allclose(float(ex["acc"]), acc)


def test_batch_hard_triplet_hand_value():
  # 1-D points: ids A at 0 and 1, id B at 3. Anchor 0: ap 1, an 3 -> 0.
  # Anchor 1: ap 1, an 2 -> 0. Anchor 2 (B, alone): ap ~1e-6, an 2 -> 0.
  # With margin 2.5: 0.5 + 1.5 + 0.5 (ap=1e-6) ~ 2.5 / 3.
  x = np.array([[0.0], [1.0], [3.0]], np.float32)
  y = np.array([0, 0, 1])
  loss, ex = losses.batch_hard_triplet(x, y, margin=2.5)
  np.testing.assert_allclose(float(loss), (0.5 + 1.5 + (0.5 + 1e-6)) / 3, rtol=1e-5)
  np.testing.assert_allclose(float(ex["acc"]), 1.0)
  loss0, _ = losses.batch_hard_triplet(x, y, margin=0.3)
  assert float(loss0) == 0.0


def test_batch_hard_triplet_gradient_finite_when_features_coincide():
  x = _feats()
  x[1] = x[0]          # same id, zero distance (hardest positive excludes it)
  x[2] = x[0]          # different id at zero distance: the hardest negative
  grad_fn = jax.grad(lambda f: losses.batch_hard_triplet(f, LABELS)[0])
  g = grad_fn(jnp.asarray(x))
  assert _all_finite(g)
  assert float(jnp.abs(g).sum()) > 0
  # Every feature identical: distances all clamped, gradient finite (zero).
  same = jnp.ones((8, 5), jnp.float32)
  g_same = grad_fn(same)
  assert _all_finite(g_same)
  g_soft = jax.grad(lambda f: losses.batch_hard_triplet(f, LABELS, soft_margin=True,
                                                        normalize=True)[0])(same)
  assert _all_finite(g_soft)


def test_batch_hard_triplet_gradient_matches_finite_difference():
  x = jnp.asarray(_feats(seed=3, scale=0.3), jnp.float32)
  f = lambda v: losses.batch_hard_triplet(v, LABELS, margin=1.0)[0]
  g = jax.grad(f)(x)
  direction = jnp.asarray(np.random.default_rng(4).normal(size=x.shape), jnp.float32)
  h = 1e-3
  fd = (f(x + h * direction) - f(x - h * direction)) / (2 * h)
  np.testing.assert_allclose(float(jnp.sum(g * direction)), float(fd), rtol=2e-2, atol=1e-4)


def test_triplet_shape_errors():
  with pytest.raises(ValueError, match="labels"):
    losses.batch_hard_triplet(_feats(), LABELS[:5])
  with pytest.raises(ValueError, match="features"):
    losses.weighted_regularized_triplet(np.zeros((8,), np.float32), LABELS)


# ---------------------------------------------------------------------------
# Weighted regularised triplet (AGW).
# ---------------------------------------------------------------------------
def _np_wrt(x, labels):
  """AGW's formula written per anchor: weights shifted by the masked row max, +1e-6."""
  n = len(labels)
  per, aps, ans = [], [], []
  for i in range(n):
    row = [_np_dist(x[i], x[j]) for j in range(n)]
    pos = [j for j in range(n) if labels[j] == labels[i]]
    neg = [j for j in range(n) if labels[j] != labels[i]]
    # Positive weights: softmax over positive distances (masked row max, zeros elsewhere).
    m_p = max(max(row[j] for j in pos), 0.0)
    z_p = sum(math.exp(row[j] - m_p) for j in pos) + 1e-6
    d_ap = sum(row[j] * math.exp(row[j] - m_p) / z_p for j in pos)
    # Negative weights: softmax over -d; masked row max is 0 (the non-negatives).
    z_n = sum(math.exp(-row[j]) for j in neg) + 1e-6
    d_an = sum(row[j] * math.exp(-row[j]) / z_n for j in neg)
    aps.append(d_ap)
    ans.append(d_an)
    per.append(math.log1p(math.exp(d_ap - d_an)))
  return np.mean(per), np.mean(aps), np.mean(ans)


@pytest.mark.parametrize("normalize,scale", [(False, 0.5), (False, 3.0), (True, 1.0)])
def test_wrt_matches_loops(normalize, scale):
  x = _feats(seed=5, scale=scale)
  loss, ex = losses.weighted_regularized_triplet(x, LABELS, normalize=normalize)
  ref_x = _np_normalize(x) if normalize else x
  want, ap, an = _np_wrt(ref_x, LABELS)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(ex["d_ap"]), ap, rtol=1e-5)
  np.testing.assert_allclose(float(ex["d_an"]), an, rtol=1e-5)


def test_wrt_weighting_lies_between_mean_and_hardest():
  x = _feats(seed=6, scale=0.7)
  _, ex = losses.weighted_regularized_triplet(x, LABELS)
  _, hard = losses.batch_hard_triplet(x, LABELS)
  # Softmax-weighted positives are no larger than the hardest; softmin negatives no smaller.
  assert float(ex["d_ap"]) <= float(hard["d_ap"]) + 1e-6
  assert float(ex["d_an"]) >= float(hard["d_an"]) - 1e-6


def test_wrt_gradient_finite_when_features_coincide():
  x = _feats(seed=7)
  x[1] = x[0]
  x[3] = x[0]
  g = jax.grad(lambda f: losses.weighted_regularized_triplet(f, LABELS)[0])(jnp.asarray(x))
  assert _all_finite(g)
  g_same = jax.grad(lambda f: losses.weighted_regularized_triplet(f, LABELS, normalize=True)[0])(
      jnp.zeros((8, 5), jnp.float32))
  assert _all_finite(g_same)


# ---------------------------------------------------------------------------
# Center loss.
# ---------------------------------------------------------------------------
def test_center_loss_value_and_gradient():
  rng = np.random.default_rng(8)
  feats = rng.normal(size=(4, 3)).astype(np.float32)
  centers = rng.normal(size=(5, 3)).astype(np.float32)
  labels = np.array([0, 2, 2, 4])
  want = sum(float(np.sum((feats[i].astype(np.float64) - centers[labels[i]]) ** 2))
             for i in range(4)) / 4
  got = losses.center_loss(feats, labels, centers)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)

  g_f, g_c = jax.grad(losses.center_loss, argnums=(0, 2))(
      jnp.asarray(feats), jnp.asarray(labels), jnp.asarray(centers))
  want_f = np.stack([2 * (feats[i] - centers[labels[i]]) / 4 for i in range(4)])
  want_c = np.zeros_like(centers)
  for i in range(4):
    want_c[labels[i]] -= 2 * (feats[i] - centers[labels[i]]) / 4
  np.testing.assert_allclose(np.asarray(g_f), want_f, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(g_c), want_c, rtol=1e-5, atol=1e-7)
  assert np.all(np.asarray(g_c)[[1, 3]] == 0)   # classes absent from the batch


def test_center_loss_clamp_at_zero_distance():
  centers = jnp.asarray(_feats(n=3, d=4, seed=9))
  labels = jnp.array([1, 2])
  feats = centers[labels]
  np.testing.assert_allclose(float(losses.center_loss(feats, labels, centers)), 1e-12, rtol=1e-3)
  g = jax.grad(losses.center_loss)(feats, labels, centers)
  assert _all_finite(g) and float(jnp.abs(g).max()) == 0.0


def test_center_grad_scale_and_errors():
  assert losses.center_grad_scale(5e-4) == pytest.approx(2000.0)
  with pytest.raises(ValueError, match="center_weight"):
    losses.center_grad_scale(0.0)
  with pytest.raises(ValueError, match="centers"):
    losses.center_loss(np.zeros((2, 3), np.float32), np.array([0, 1]),
                       np.zeros((4, 5), np.float32))


# ---------------------------------------------------------------------------
# L1 and BCE.
# ---------------------------------------------------------------------------
def test_l1_hand_value():
  a = np.array([[1.0, -2.0], [0.5, 4.0]], np.float32)
  b = np.array([[0.0, 1.0], [0.5, 2.0]], np.float32)
  np.testing.assert_allclose(float(losses.l1(a, b)), (1 + 3 + 0 + 2) / 4)
  with pytest.raises(ValueError, match="shapes"):
    losses.l1(a, b[:1])


def test_bce_with_logits_matches_probability_formula():
  rng = np.random.default_rng(10)
  x = rng.normal(size=(3, 4)) * 3
  t = rng.uniform(size=(3, 4))
  p = 1 / (1 + np.exp(-x))
  want = np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))
  got = losses.bce_with_logits(x.astype(np.float32), t.astype(np.float32))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_gan_bce_values_and_stability():
  np.testing.assert_allclose(float(losses.gan_bce(jnp.zeros((2, 3)), True)), math.log(2), rtol=1e-6)
  np.testing.assert_allclose(float(losses.gan_bce(jnp.full((2,), 2.0), False)),
                             math.log1p(math.exp(2.0)), rtol=1e-6)
  big = jnp.array([1e4, -1e4], jnp.float32)
  real = losses.gan_bce(big, True)     # -log sigmoid: [0, 1e4]
  fake = losses.gan_bce(big, False)    # -log(1 - sigmoid): [1e4, 0]
  np.testing.assert_allclose(float(real), 5e3, rtol=1e-6)
  np.testing.assert_allclose(float(fake), 5e3, rtol=1e-6)
  np.testing.assert_allclose(float(losses.gan_bce(big[:1], True)), 0.0, atol=1e-6)
  np.testing.assert_allclose(float(losses.gan_bce(big[1:], True)), 1e4, rtol=1e-6)
  g = jax.grad(lambda v: losses.gan_bce(v, True))(big)
  # d/dx mean(-log sigmoid(x)) = (sigmoid(x) - 1) / n.
  np.testing.assert_allclose(np.asarray(g), [0.0, -0.5], atol=1e-6)
  with pytest.raises(ValueError, match="is_real"):
    losses.gan_bce(big, 1.0)


# ---------------------------------------------------------------------------
# Gradient reversal.
# ---------------------------------------------------------------------------
def test_grad_reverse_sign_and_scale():
  x = jnp.array([1.0, -2.0, 3.0])
  w = jnp.array([0.5, 2.0, -1.0])
  np.testing.assert_array_equal(np.asarray(losses.grad_reverse(x, 0.7)), np.asarray(x))
  g = jax.grad(lambda v: jnp.sum(losses.grad_reverse(v) * w))(x)
  np.testing.assert_allclose(np.asarray(g), -np.asarray(w))
  g2 = jax.grad(lambda v: jnp.sum(losses.grad_reverse(v, 2.5) * w))(x)
  np.testing.assert_allclose(np.asarray(g2), -2.5 * np.asarray(w))


def test_grad_reverse_traced_scale_and_pytree():
  x = {"a": jnp.ones((2,)), "b": jnp.full((3,), 2.0)}

  @jax.jit
  def grads(v, s):
    return jax.grad(lambda t: jnp.sum(losses.grad_reverse(t, s)["a"]) * 3.0
                    + jnp.sum(losses.grad_reverse(t, s)["b"] ** 2))(v)

  g = grads(x, jnp.float32(0.5))
  np.testing.assert_allclose(np.asarray(g["a"]), [-1.5, -1.5])
  np.testing.assert_allclose(np.asarray(g["b"]), [-2.0, -2.0, -2.0])
  # No gradient flows into the scale.
  gs = jax.grad(lambda s: jnp.sum(losses.grad_reverse(jnp.ones(2), s)))(1.0)
  assert float(gs) == 0.0


# ---------------------------------------------------------------------------
# Data-parallel sharding of the global batch.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("axis_type", ["Auto", "Explicit"])
def test_losses_under_data_sharding_match_single_device(axis_type):
  script = textwrap.dedent(f"""
    import numpy as np, jax, jax.numpy as jnp
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from privreid_jax import losses
    assert jax.device_count() == 4, jax.devices()
    mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.{axis_type},))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3], np.int32)
    logits = rng.normal(size=(8, 4)).astype(np.float32)
    centers = rng.normal(size=(4, 6)).astype(np.float32)
    def f(x, y, logits, centers):
      return (losses.batch_hard_triplet(x, y)[0], losses.weighted_regularized_triplet(x, y)[0],
              losses.cross_entropy_label_smooth(logits, y), losses.center_loss(x, y, centers),
              jax.grad(lambda v: losses.batch_hard_triplet(v, y, soft_margin=True)[0])(x),
              jax.grad(lambda v: losses.weighted_regularized_triplet(v, y)[0])(x))
    ref = jax.jit(f)(x, y, logits, centers)
    sh = NamedSharding(mesh, P("data"))
    with jax.set_mesh(mesh):
      got = jax.jit(f)(jax.device_put(x, sh), jax.device_put(y, sh), jax.device_put(logits, sh),
                       jax.device_put(centers, NamedSharding(mesh, P())))
    for a, b in zip(ref, got):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    print("OK")
  """)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", script], env=env, cwd=root,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-2000:]


def test_self_distances_are_float64_accurate_where_the_gram_trick_is_not():
  """The triplet losses' distance matrix: the self-distance is the clamp's 1e-6 (as in
  float64), and a large common offset costs no accuracy (the batch is centred)."""
  rng = np.random.default_rng(0)
  x64 = 50.0 + rng.normal(size=(8, 256)) * 0.05          # |x| ~ 800, distances ~ 1
  truth = np.sqrt(((x64[:, None] - x64[None]) ** 2).sum(-1))
  x = jnp.asarray(x64, jnp.float32)
  ours = np.asarray(losses.self_pairwise_euclidean(x), np.float64)
  plain = np.asarray(losses.pairwise_euclidean(x, x), np.float64)
  off = ~np.eye(8, dtype=bool)
  x32 = np.asarray(x, np.float64)                        # the float32 inputs, exactly
  truth32 = np.sqrt(((x32[:, None] - x32[None]) ** 2).sum(-1))
  assert np.max(np.abs(ours - truth32)[off] / truth32[off]) < 1e-5
  assert np.max(np.abs(plain - truth32)[off] / truth32[off]) > 1e-3   # the plain formula
  np.testing.assert_array_equal(np.diag(ours), np.float32(1e-6))
  assert np.max(np.diag(plain)) > 1e-3      # rounding noise under the square root
  np.testing.assert_allclose(ours[off], truth[off], rtol=1e-3)
  # the same function of the features: gradients agree with the plain formula's
  # where that one is accurate (no offset)
  y = jnp.asarray(rng.normal(size=(8, 16)), jnp.float32)
  f = lambda fn: jax.grad(lambda v: jnp.sum(fn(v) * (1 - jnp.eye(8))))(y)
  np.testing.assert_allclose(f(losses.self_pairwise_euclidean),
                             f(lambda v: losses.pairwise_euclidean(v, v)), rtol=1e-4, atol=1e-5)
