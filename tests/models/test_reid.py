"""Tests for the Re-ID head (pooling, BNNeck, classifier) and ReidModel."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privreid_jax import config_base
from privreid_jax.models import reid
from privreid_jax.models import reid_head

jax.config.update("jax_disable_most_optimizations", True)

X = np.random.default_rng(0).uniform(0, 1, (4, 32, 16, 3)).astype(np.float32)


def _model(**kw):
  args = dict(num_classes=100, backbone="resnet18", width=8, conv_impl="xla")
  args.update(kw)
  return reid.ReidModel(**args)


@functools.partial(jax.jit, static_argnums=(0,))
def _init(m, x):
  return m.init(jax.random.key(0), x, train=False)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _apply(m, v, x, train):
  if train:
    return m.apply(v, x, train=True, mutable=["batch_stats"])
  return m.apply(v, x, train=False)


@pytest.fixture(scope="module")
def avg_vars():
  return _init(_model(), X)


# ------------------------------------------------------------------------ pooling


def test_gem_with_p1_equals_average_pooling():
  x = jnp.asarray(np.random.default_rng(1).uniform(0.1, 2, (2, 4, 3, 5)), jnp.float32)
  gem = reid_head.GeM(p_init=1.0)
  v = gem.init(jax.random.key(0), x)
  np.testing.assert_allclose(gem.apply(v, x), reid_head.avg_pool(x), rtol=1e-5)
  np.testing.assert_allclose(reid_head.avg_pool(x), np.asarray(x).mean(axis=(1, 2)),
                             rtol=1e-6)


def test_gem_formula_clamp_and_learnable_p():
  x = np.random.default_rng(2).normal(size=(2, 4, 3, 5)).astype(np.float32)
  gem = reid_head.GeM(p_init=3.0)
  v = gem.init(jax.random.key(0), x)
  np.testing.assert_array_equal(v["params"]["p"], [3.0])
  ref = (np.maximum(x, 1e-6) ** 3).mean(axis=(1, 2)) ** (1 / 3)
  np.testing.assert_allclose(gem.apply(v, x), ref, rtol=1e-4)
  g = jax.grad(lambda p: jnp.sum(gem.apply({"params": {"p": p}}, x)))(v["params"]["p"])
  assert g.shape == (1,) and np.isfinite(g).all() and float(g[0]) != 0.0
  # bfloat16 maps are pooled in float32.
  assert gem.apply(v, x.astype(jnp.bfloat16)).dtype == jnp.float32


# ----------------------------------------------------------------- BNNeck / model


def test_bnneck_has_no_bias_and_classifier_init(avg_vars):
  p = avg_vars["params"]
  assert set(p) == {"backbone", "bnneck", "classifier"}
  assert set(p["bnneck"]) == {"scale"}
  assert set(p["classifier"]) == {"kernel"}
  k = np.asarray(p["classifier"]["kernel"])
  assert k.shape == (64, 100)
  np.testing.assert_allclose(k.std(), 0.001, rtol=0.05)
  assert abs(k.mean()) < 1e-4
  assert set(avg_vars["batch_stats"]) == {"backbone", "bnneck"}


def test_outputs_and_feature_relations(avg_vars):
  m = _model()
  logits, out = _apply(m, avg_vars, X, False)
  assert logits.shape == (4, 100) and logits.dtype == jnp.float32
  assert out["feature_map"].shape == (4, 2, 1, 64)
  assert out["feat_pre"].shape == out["feat"].shape == (4, 64)
  np.testing.assert_allclose(out["feat_pre"], out["feature_map"].mean(axis=(1, 2)),
                             rtol=1e-5, atol=1e-6)
  # Eval-mode BNNeck: running mean 0, var 1, scale 1, no bias.
  np.testing.assert_allclose(out["feat"], out["feat_pre"] / np.sqrt(1 + 1e-5), rtol=1e-5)
  np.testing.assert_allclose(
      logits, out["feat"] @ avg_vars["params"]["classifier"]["kernel"],
      rtol=1e-4, atol=1e-7)


def test_train_mode_updates_batch_stats_and_normalises(avg_vars):
  (logits, out), upd = _apply(_model(), avg_vars, X, True)
  f = np.asarray(out["feat_pre"])
  np.testing.assert_allclose(upd["batch_stats"]["bnneck"]["mean"], 0.1 * f.mean(0),
                             rtol=1e-4, atol=1e-7)
  # Train-mode BN standardises over the batch (no bias: mean exactly 0).
  np.testing.assert_allclose(np.asarray(out["feat"]).mean(0), 0.0, atol=1e-4)
  assert not np.allclose(upd["batch_stats"]["backbone"]["bn1"]["mean"],
                         avg_vars["batch_stats"]["backbone"]["bn1"]["mean"])
  assert logits.shape == (4, 100)


def test_feature_extractor_without_classes():
  m = _model(num_classes=0, pooling="gem", gem_p=3.0)
  v = jax.eval_shape(lambda: m.init(jax.random.key(0), X, train=False))
  assert "classifier" not in v["params"]
  assert v["params"]["pool"]["p"].shape == (1,)
  logits, out = jax.eval_shape(lambda v: m.apply(v, X, train=False), v)
  assert logits is None
  assert out["feat"].shape == (4, 64)


def test_bfloat16_compute_keeps_float32_params_and_outputs(avg_vars):
  m = _model(dtype=jnp.bfloat16, pooling="gem")
  v = jax.eval_shape(lambda: m.init(jax.random.key(0), X, train=False))
  assert {a.dtype for a in jax.tree.leaves(v)} == {jnp.dtype(jnp.float32)}
  (logits, out), upd = jax.eval_shape(
      lambda v: m.apply(v, X, train=True, mutable=["batch_stats"]), v)
  assert out["feature_map"].dtype == jnp.bfloat16
  assert logits.dtype == out["feat"].dtype == out["feat_pre"].dtype == jnp.float32
  assert {a.dtype for a in jax.tree.leaves(upd)} == {jnp.dtype(jnp.float32)}
  # Numerically close to float32 with the same weights (avg pooling).
  l16, _ = _apply(_model(dtype=jnp.bfloat16), avg_vars, X, False)
  l32, _ = _apply(_model(), avg_vars, X, False)
  rel = float(jnp.linalg.norm(l16 - l32) / jnp.linalg.norm(l32))
  assert 0 < rel < 0.05


def test_resnet50_last_stride_shapes():
  m = _model(backbone="resnet50", last_stride=1, non_local=True, pooling="gem")
  x = jnp.zeros((2, 64, 32, 3))
  v = jax.eval_shape(lambda: m.init(jax.random.key(0), x, train=False))
  assert "nl3_5" in v["params"]["backbone"]
  logits, out = jax.eval_shape(lambda v: m.apply(v, x, train=False), v)
  assert out["feature_map"].shape == (2, 4, 2, 256)
  assert logits.shape == (2, 100)


# --------------------------------------------------------------------- from config


def test_build_from_config():
  cfg = config_base.base_config().model
  cfg.backbone, cfg.width, cfg.dtype, cfg.pooling = "resnet34", 16, "bfloat16", "gem"
  cfg.non_local, cfg.gem_p, cfg.last_stride = True, 4.0, 2
  m = reid.build_reid_model(cfg, 7)
  assert (m.num_classes, m.backbone, m.width, m.dtype, m.pooling, m.gem_p,
          m.non_local, m.last_stride, m.conv_impl) == (
              7, "resnet34", 16, jnp.bfloat16, "gem", 4.0, True, 2, "auto")
  v = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((1, 64, 32, 3)),
                                    train=False))
  assert v["params"]["classifier"]["kernel"].shape == (128, 7)


@pytest.mark.parametrize("inter, width", [(None, "one"), (0, "half")])
def test_agw_non_local_width_follows_agws_code_by_default(inter, width):
  """AGW's code (and privacy-reid's C) embeds in 1 channel; 0 = the paper's C/2."""
  c = config_base.base_config()
  config_base.make_agw(c)
  c.model.backbone, c.model.width = "resnet18", 16
  if inter is not None:
    c.model.non_local_inter_channels = inter
  m = reid.build_reid_model(c.model, 3)
  v = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((1, 64, 32, 3)),
                                    train=False))
  blocks = {k: p for k, p in v["params"]["backbone"].items() if k.startswith("nl")}
  assert len(blocks) == 4                        # resnet18: 2 blocks per stage, 2 + 2
  for name, p in blocks.items():
    channels = p["W_0"]["kernel"].shape[-1]
    assert p["theta"]["kernel"].shape[-1] == (1 if width == "one" else channels // 2), name


@pytest.mark.parametrize("field,value", [
    ("backbone", "resnet101"), ("pooling", "max"), ("dtype", "float8"),
    ("conv_impl", "cudnn"), ("last_stride", 3)])
def test_build_rejects_bad_values(field, value):
  cfg = config_base.base_config().model
  cfg[field] = value
  with pytest.raises(ValueError, match=f"{value!r}"):
    reid.build_reid_model(cfg, 10)
