"""Tests for the convolution lowerings, the ResNet backbones and the non-local block."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privreid_jax.models import conv as conv_lib
from privreid_jax.models import non_local
from privreid_jax.models import resnet

jax.config.update("jax_disable_most_optimizations", True)


def _rand(seed, shape, scale=1.0):
  return scale * np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------- conv lowering


@pytest.mark.parametrize("k,s,p,hw", [
    (1, 1, 0, (6, 5)), (1, 2, 0, (7, 6)), (3, 1, 1, (6, 5)), (3, 2, 1, (7, 6)),
    (3, 2, 0, (9, 7)), (7, 2, 3, (11, 8)), (2, 1, 1, (5, 4)),
])
def test_matmul_conv_matches_xla_forward_and_grads(k, s, p, hw):
  x = jnp.asarray(_rand(0, (2, *hw, 3)))
  w = jnp.asarray(_rand(1, (k, k, 3, 4)))
  cot = jnp.asarray(_rand(2, conv_lib.conv2d(x, w, s, p, "xla").shape))

  def loss(impl):
    return lambda x, w: jnp.sum(conv_lib.conv2d(x, w, s, p, impl) * cot)

  y_x = jax.jit(conv_lib.conv2d, static_argnums=(2, 3, 4))(x, w, s, p, "xla")
  y_m = jax.jit(conv_lib.conv2d, static_argnums=(2, 3, 4))(x, w, s, p, "matmul")
  assert y_m.shape == y_x.shape
  np.testing.assert_allclose(y_m, y_x, rtol=1e-5, atol=1e-5)
  gx = jax.jit(jax.grad(loss("xla"), argnums=(0, 1)))(x, w)
  gm = jax.jit(jax.grad(loss("matmul"), argnums=(0, 1)))(x, w)
  for a, b in zip(gm, gx):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_matches_numpy_reference():
  x = _rand(3, (1, 5, 4, 2))
  w = _rand(4, (3, 3, 2, 3))
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  ref = np.zeros((1, 3, 2, 3), np.float32)
  for i in range(3):
    for j in range(2):
      patch = xp[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
      ref[0, i, j] = np.einsum("hwc,hwco->o", patch, w)
  for impl in ("xla", "matmul"):
    np.testing.assert_allclose(conv_lib.conv2d(x, w, 2, 1, impl), ref, atol=1e-5)


@pytest.mark.parametrize("win,s,p,hw", [(3, 2, 1, (8, 6)), (3, 2, 1, (7, 5)),
                                        (2, 2, 0, (6, 4)), (3, 1, 1, (5, 4))])
def test_matmul_max_pool_matches_xla(win, s, p, hw):
  x = jnp.asarray(_rand(5, (2, *hw, 3)))
  y_x = conv_lib.max_pool(x, win, s, p, "xla")
  y_m = conv_lib.max_pool(x, win, s, p, "matmul")
  np.testing.assert_allclose(y_m, y_x)
  cot = jnp.asarray(_rand(6, y_x.shape))
  g = [jax.jit(jax.grad(
      lambda x: jnp.sum(conv_lib.max_pool(x, win, s, p, impl) * cot)))(x)
       for impl in ("xla", "matmul")]
  np.testing.assert_allclose(g[1], g[0], atol=1e-6)


def _first_max_pool_grad(x, cot, win, s, p):
  """NumPy reference of torch's MaxPool2d backward: each window's upstream gradient
  goes to its first maximum in row-major order (padding never wins)."""
  n, h, w, c = x.shape
  ho, wo = cot.shape[1:3]
  dx = np.zeros_like(x)
  for b in range(n):
    for ch in range(c):
      for i in range(ho):
        for j in range(wo):
          best, arg = -np.inf, None
          for di in range(win):
            for dj in range(win):
              y, z = s * i + di - p, s * j + dj - p
              if 0 <= y < h and 0 <= z < w and x[b, y, z, ch] > best:
                best, arg = x[b, y, z, ch], (y, z)
          dx[b, arg[0], arg[1], ch] += cot[b, i, j, ch]
  return dx


@pytest.mark.parametrize("win,s,p", [(3, 2, 1), (2, 2, 0), (3, 1, 1)])
def test_max_pool_gradient_goes_to_the_first_tied_maximum(win, s, p):
  # After a ReLU most windows tie at zero; torch (and XLA's select-and-scatter)
  # give the whole gradient to the first maximum, not a share to each.
  x = np.maximum(np.round(_rand(8, (2, 7, 6, 3))), 0.0).astype(np.float32)
  for impl in ("xla", "matmul"):
    y = conv_lib.max_pool(jnp.asarray(x), win, s, p, impl)
    cot = _rand(9, y.shape)
    g = jax.jit(jax.grad(lambda x: jnp.sum(conv_lib.max_pool(x, win, s, p, impl) * cot)))(
        jnp.asarray(x))
    np.testing.assert_allclose(g, _first_max_pool_grad(x, cot, win, s, p), atol=1e-6,
                               err_msg=impl)


def test_max_pool_gradient_matches_torch_at_ties():
  torch = pytest.importorskip("torch")
  x = np.maximum(np.round(_rand(10, (2, 9, 7, 4))), 0.0).astype(np.float32)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
  yt = torch.nn.functional.max_pool2d(xt, 3, 2, 1)
  cot = _rand(11, tuple(yt.shape))
  yt.backward(torch.from_numpy(cot))
  cot_nhwc = jnp.asarray(cot.transpose(0, 2, 3, 1))
  g = jax.grad(lambda x: jnp.sum(conv_lib.max_pool(x, 3, 2, 1, "matmul") * cot_nhwc))(
      jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(g), xt.grad.numpy().transpose(0, 2, 3, 1), atol=1e-6)


def test_matmul_max_pool_propagates_nan_like_torch():
  x = jnp.zeros((1, 4, 4, 1)).at[0, 1, 1, 0].set(jnp.nan)
  y = conv_lib.max_pool(x, 3, 2, 1, "matmul")
  assert np.isnan(np.asarray(y)[0, :, :, 0]).tolist() == [[True, True], [True, True]]


def test_max_pool_padding_never_wins():
  x = -jnp.ones((1, 4, 4, 1)) - jnp.arange(16.0).reshape(1, 4, 4, 1)
  for impl in ("xla", "matmul"):
    y = conv_lib.max_pool(x, 3, 2, 1, impl)
    assert float(jnp.max(y)) == -1.0  # padding zeros/-inf must not appear


def test_conv_module_has_nn_conv_params_and_output():
  x = jnp.asarray(_rand(7, (2, 6, 5, 3)))
  ref = nn.Conv(4, (3, 3), strides=2, padding=((1, 1), (1, 1)), use_bias=True)
  mine = conv_lib.Conv(4, 3, strides=2, padding=1, use_bias=True, impl="matmul")
  v_ref = ref.init(jax.random.key(0), x)
  v_mine = mine.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, v_mine) == jax.tree.map(jnp.shape, v_ref)
  jax.tree.map(np.testing.assert_array_equal, v_mine, v_ref)
  v_ref["params"]["bias"] = jnp.arange(4.0)
  np.testing.assert_allclose(mine.apply(v_ref, x), ref.apply(v_ref, x), atol=1e-5)


def test_conv_compute_dtype_keeps_float32_params():
  x = jnp.ones((1, 4, 4, 2))
  m = conv_lib.Conv(3, 3, padding=1, use_bias=True, dtype=jnp.bfloat16, impl="matmul")
  v = m.init(jax.random.key(0), x)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(v))
  assert m.apply(v, x).dtype == jnp.bfloat16


def test_resolve_impl():
  assert conv_lib.resolve_impl("auto") == "matmul"  # tests run on the CPU backend
  assert conv_lib.resolve_impl("xla") == "xla"
  with pytest.raises(ValueError, match="'cudnn'"):
    conv_lib.resolve_impl("cudnn")


# ------------------------------------------------------------------------ ResNet

X = np.random.default_rng(20).standard_normal((2, 32, 16, 3)).astype(np.float32)
R18 = resnet.ResNet(depth=18, width=8, conv_impl="xla")


@functools.partial(jax.jit, static_argnums=(0,))
def _init_jit(m, x):
  return m.init(jax.random.key(0), x, train=False)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _apply_jit(m, v, x, train=False, capture=False):
  mutable = (["batch_stats"] if train else []) + (["intermediates"] if capture else [])
  return m.apply(v, x, train=train, capture_intermediates=capture,
                 mutable=mutable or False)


@pytest.fixture(scope="module")
def r18_vars():
  return _init_jit(R18, X)


@pytest.mark.parametrize("depth,channels", [(18, 64), (34, 64), (50, 256)])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_resnet_output_shapes(depth, channels, last_stride):
  m = resnet.ResNet(depth=depth, width=8, last_stride=last_stride)
  x = jnp.zeros((2, 64, 32, 3))
  v = jax.eval_shape(lambda: m.init(jax.random.key(0), x, train=False))
  y = jax.eval_shape(lambda v: m.apply(v, x, train=False), v)
  # 64 x 32 input: /32 -> 2 x 1, or /16 -> 4 x 2 with last stride 1.
  assert y.shape == ((2, 4, 2, channels) if last_stride == 1 else (2, 2, 1, channels))


@pytest.mark.parametrize("depth,count", [(18, 11_176_512), (34, 21_284_672),
                                         (50, 23_508_032)])
def test_param_count_matches_torchvision(depth, count):
  # torchvision totals minus fc: R18 11,689,512 - 513,000; R34 21,797,672 - 513,000;
  # R50 25,557,032 - (2048*1000 + 1000).
  m = resnet.ResNet(depth=depth, width=64)
  x = jnp.zeros((1, 256, 128, 3))
  v = jax.eval_shape(lambda: m.init(jax.random.key(0), x, train=False))
  assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(v["params"])) == count
  y = jax.eval_shape(lambda v: m.apply(v, x, train=False), v)
  assert y.shape[1:] == ((16, 8, 2048) if depth == 50 else (16, 8, 512))


def test_param_tree_names():
  x = jnp.zeros((1, 64, 32, 3))
  v50 = jax.eval_shape(lambda: resnet.ResNet(depth=50, width=8).init(
      jax.random.key(0), x, train=False))
  p = v50["params"]
  assert p["conv1"]["kernel"].shape == (7, 7, 3, 8)
  assert set(p["layer1_0"]) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3",
                                "downsample_0", "downsample_1"}
  assert "downsample_0" not in p["layer1_1"]
  assert p["layer4_2"]["conv3"]["kernel"].shape == (1, 1, 64, 256)
  assert set(v50["batch_stats"]["layer4_2"]["bn3"]) == {"mean", "var"}
  assert set(p["bn1"]) == {"scale", "bias"}
  v18 = jax.eval_shape(lambda: R18.init(jax.random.key(0), x, train=False))
  assert "downsample_0" not in v18["params"]["layer1_0"]
  assert set(v18["params"]["layer2_0"]) == {"conv1", "bn1", "conv2", "bn2",
                                            "downsample_0", "downsample_1"}
  assert sorted(k for k in v18["params"] if k.startswith("layer")) == [
      f"layer{s}_{b}" for s in range(1, 5) for b in range(2)]


def test_bottleneck_strides_on_3x3():
  # v1.5: conv2 of the first block of layer2 halves the map, conv1 does not.
  m = resnet.ResNet(depth=50, width=8, last_stride=2)
  x = jnp.zeros((1, 64, 32, 3))
  v = jax.eval_shape(lambda: m.init(jax.random.key(0), x, train=False))
  _, inter = jax.eval_shape(lambda v: m.apply(
      v, x, train=False, capture_intermediates=True, mutable=["intermediates"]), v)
  blk = inter["intermediates"]["layer2_0"]
  assert blk["conv1"]["__call__"][0].shape[1:3] == (16, 8)
  assert blk["conv2"]["__call__"][0].shape[1:3] == (8, 4)


def test_init_matches_torchvision():
  x = jnp.zeros((1, 4, 4, 256))
  v = _init_jit(resnet.Bottleneck(planes=128), x)
  k = np.asarray(v["params"]["conv3"]["kernel"])  # (1, 1, 128, 512)
  np.testing.assert_allclose(k.std(), np.sqrt(2.0 / 512), rtol=0.03)
  k = np.asarray(v["params"]["conv2"]["kernel"])  # (3, 3, 128, 128)
  np.testing.assert_allclose(k.std(), np.sqrt(2.0 / (9 * 128)), rtol=0.03)
  assert abs(k.mean()) < 0.002
  assert np.abs(k).max() > 3 * k.std()  # normal, not truncated
  bn = v["params"]["bn3"]
  np.testing.assert_array_equal(bn["scale"], 1.0)
  np.testing.assert_array_equal(bn["bias"], 0.0)
  np.testing.assert_array_equal(v["batch_stats"]["bn3"]["var"], 1.0)
  np.testing.assert_array_equal(v["batch_stats"]["bn3"]["mean"], 0.0)
  vz = _init_jit(resnet.Bottleneck(planes=128, zero_init_residual=True), x)
  np.testing.assert_array_equal(vz["params"]["bn3"]["scale"], 0.0)
  np.testing.assert_array_equal(vz["params"]["bn2"]["scale"], 1.0)


def test_batchnorm_uses_torch_momentum_and_eps(r18_vars):
  v = r18_vars
  _, upd = _apply_jit(R18, v, X, True, True)
  c1 = np.asarray(upd["intermediates"]["conv1"]["__call__"][0])
  np.testing.assert_allclose(upd["batch_stats"]["bn1"]["mean"],
                             0.1 * c1.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(upd["batch_stats"]["bn1"]["var"],
                             0.9 + 0.1 * c1.var(axis=(0, 1, 2)), rtol=1e-4)
  # eps: with running var 0 the eval-mode BN divides by sqrt(1e-5).
  v0 = {"params": v["params"],
        "batch_stats": jax.tree.map(jnp.zeros_like, v["batch_stats"])}
  _, inter = _apply_jit(R18, v0, X, False, True)
  inter = inter["intermediates"]
  np.testing.assert_allclose(inter["bn1"]["__call__"][0],
                             inter["conv1"]["__call__"][0] / np.sqrt(1e-5), rtol=1e-4)


def test_resnet_xla_and_matmul_agree(r18_vars):
  mm = resnet.ResNet(depth=18, width=8, conv_impl="matmul")
  yx, sx = _apply_jit(R18, r18_vars, X, True)
  ym, sm = _apply_jit(mm, r18_vars, X, True)
  np.testing.assert_allclose(ym, yx, rtol=1e-4, atol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               sm, sx)


def test_bfloat16_compute_keeps_float32_params(r18_vars):
  m = resnet.ResNet(depth=18, width=8, conv_impl="xla", dtype=jnp.bfloat16)
  assert {a.dtype for a in jax.tree.leaves(r18_vars)} == {jnp.dtype(jnp.float32)}
  y16, upd = _apply_jit(m, r18_vars, X, True)
  assert y16.dtype == jnp.bfloat16
  assert {a.dtype for a in jax.tree.leaves(upd)} == {jnp.dtype(jnp.float32)}
  # Compare in eval mode: train-mode BN over a 2 x 1 x 1 final map is ill-conditioned.
  y16, y32 = _apply_jit(m, r18_vars, X), _apply_jit(R18, r18_vars, X)
  rel = float(jnp.linalg.norm(y16.astype(jnp.float32) - y32) / jnp.linalg.norm(y32))
  assert 0 < rel < 0.05


def test_bad_depth_and_stride():
  x = jnp.zeros((1, 32, 16, 3))
  with pytest.raises(ValueError, match="depth=101"):
    jax.eval_shape(lambda: resnet.ResNet(depth=101).init(jax.random.key(0), x,
                                                         train=False))
  with pytest.raises(ValueError, match="last_stride=3"):
    jax.eval_shape(lambda: resnet.ResNet(depth=18, last_stride=3).init(
        jax.random.key(0), x, train=False))


# --------------------------------------------------------------------- non-local


def test_non_local_indices_follow_agw():
  assert resnet.non_local_indices(4, 2) == (2, 3)   # R50 layer2
  assert resnet.non_local_indices(6, 3) == (3, 4, 5)  # R50 layer3
  assert resnet.non_local_indices(2, 3) == (0, 1)   # R18 layer3: all blocks
  assert resnet.non_local_indices(3, 0) == ()


def test_non_local_blocks_start_as_identity(r18_vars):
  x = jnp.zeros((1, 64, 32, 3))
  v50 = jax.eval_shape(lambda: resnet.ResNet(
      depth=50, width=8, non_local_layers=resnet.AGW_NON_LOCAL_LAYERS).init(
          jax.random.key(0), x, train=False))
  assert sorted(k for k in v50["params"] if k.startswith("nl")) == [
      "nl2_2", "nl2_3", "nl3_3", "nl3_4", "nl3_5"]
  m_nl = resnet.ResNet(depth=18, width=8, conv_impl="xla",
                       non_local_layers=resnet.AGW_NON_LOCAL_LAYERS)
  v = _init_jit(m_nl, X)
  assert sorted(k for k in v["params"] if k.startswith("nl")) == [
      "nl2_0", "nl2_1", "nl3_0", "nl3_1"]
  plain = {c: {k: t for k, t in v[c].items() if not k.startswith("nl")} for c in v}
  np.testing.assert_allclose(_apply_jit(m_nl, v, X), _apply_jit(R18, plain, X),
                             rtol=1e-5, atol=1e-5)


def test_non_local_matches_reference_formula():
  x = _rand(13, (2, 3, 2, 8))
  blk = non_local.NonLocal(conv_impl="xla")
  v = blk.init(jax.random.key(0), x, train=False)
  np.testing.assert_allclose(blk.apply(v, x, train=False), x, atol=1e-6)
  p = jax.tree.map(np.asarray, v["params"])
  p["W_1"]["scale"] = np.full(8, 2.0, np.float32)
  p["W_1"]["bias"] = np.full(8, 0.5, np.float32)
  for name in ("theta", "phi", "g", "W_0"):
    p[name]["bias"] = _rand(14, p[name]["bias"].shape)
  out = blk.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=False)
  assert p["theta"]["kernel"].shape == (1, 1, 8, 4)  # C / reduc_ratio
  flat = x.reshape(2, 6, 8)
  proj = lambda n, a: a @ p[n]["kernel"][0, 0] + p[n]["bias"]
  th, ph, g = proj("theta", flat), proj("phi", flat), proj("g", flat)
  f = np.einsum("bic,bjc->bij", th, ph) / 6
  y = proj("W_0", np.einsum("bij,bjc->bic", f, g))
  ref = flat + (2.0 * y / np.sqrt(1 + 1e-5) + 0.5)  # running mean 0, var 1
  np.testing.assert_allclose(out, ref.reshape(x.shape), rtol=1e-4, atol=1e-4)


def test_stem_relu_switch_is_bots_missing_relu():
  """stem_relu=False (BoT's ResNet) lets negative stem activations reach the max-pool:
  same parameters, different output, and equal to the torchvision stem only where the
  stem BN output is non-negative."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 64, 32, 3))
  with_relu = resnet.ResNet(depth=18, width=8)
  without = resnet.ResNet(depth=18, width=8, stem_relu=False)
  v = with_relu.init(jax.random.PRNGKey(1), x, train=False)
  assert jax.tree.structure(v) == jax.tree.structure(
      without.init(jax.random.PRNGKey(1), x, train=False))
  assert not np.allclose(with_relu.apply(v, x, train=False), without.apply(v, x, train=False))
