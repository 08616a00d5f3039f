"""Tests for the pix2pix U-Net (privreid_jax.models.unet) and PatchGAN (models.patchgan)."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privreid_jax.models import patchgan, unet


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  """XLA:CPU takes tens of seconds to optimise the init's threefry code; tests need no speed."""
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", before)


def _init(model, *inputs, train=False):
  return jax.jit(lambda *xs: model.init(jax.random.key(0), *xs, train=train))(*inputs)


def _pix2pix_unet_param_count(num_downs, ngf=64, in_nc=3, out_nc=3):
  """Parameter count of pix2pix's UnetGenerator(norm=batch), built outside-in as torch does."""

  def block(outer, inner, input_nc, outermost=False, innermost=False):
    down = input_nc * inner * 16                         # Conv2d(k4), bias=False
    if outermost:
      return down + inner * 2 * outer * 16 + outer       # ConvTranspose2d with bias
    if innermost:
      return down + inner * outer * 16 + 2 * outer       # upconv + upnorm
    return down + 2 * inner + inner * 2 * outer * 16 + 2 * outer

  total = block(ngf * 8, ngf * 8, ngf * 8, innermost=True)
  total += (num_downs - 5) * block(ngf * 8, ngf * 8, ngf * 8)
  total += block(ngf * 4, ngf * 8, ngf * 4) + block(ngf * 2, ngf * 4, ngf * 2)
  total += block(ngf, ngf * 2, ngf) + block(out_nc, ngf, in_nc, outermost=True)
  return total


def _torch_conv_transpose(x, w_torch, bias, stride=2, pad=1):
  """PyTorch ConvTranspose2d by definition (scatter-add), NHWC input, (in, out, kh, kw) weight."""
  b, h, w, _ = x.shape
  k = w_torch.shape[-1]
  full = np.zeros((b, (h - 1) * stride + k, (w - 1) * stride + k, w_torch.shape[1]))
  for i in range(h):
    for j in range(w):
      full[:, i * stride:i * stride + k, j * stride:j * stride + k] += np.einsum(
          "bc,cokl->bklo", x[:, i, j], w_torch)
  return full[:, pad:full.shape[1] - pad, pad:full.shape[2] - pad] + bias


def test_num_downs_for():
  assert unet.num_downs_for(256, 128) == 7
  assert unet.num_downs_for(128, 64) == 6
  assert unet.num_downs_for(32, 16) == 4
  assert unet.num_downs_for(256, 256) == 8
  assert unet.num_downs_for(256, 256, max_downs=7) == 7
  assert unet.num_downs_for(96, 48) == 4  # 48 = 16 * 3
  with pytest.raises(ValueError, match="odd side"):
    unet.num_downs_for(33, 16)


def test_up_conv_reproduces_torch_conv_transpose():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
  w_torch = rng.normal(size=(4, 6, 4, 4)).astype(np.float32)  # (in, out, kh, kw)
  bias = rng.normal(size=(6,)).astype(np.float32)
  layer = unet.up_conv(6, True, jnp.float32, name="up")
  params = {"params": {"kernel": w_torch.transpose(2, 3, 1, 0), "bias": bias}}
  got = np.asarray(layer.apply(params, x))
  assert got.shape == (2, 6, 10, 6)
  np.testing.assert_allclose(got, _torch_conv_transpose(x, w_torch, bias), atol=1e-4)


def test_unet_param_count_matches_pix2pix():
  for n, size in [(7, (256, 128)), (8, (256, 256))]:
    shapes = jax.eval_shape(lambda n=n, size=size: unet.UNetGenerator(num_downs=n).init(
        jax.random.key(0), jnp.zeros((1, *size, 3)), train=False))
    count = sum(np.prod(p.shape) for p in jax.tree.leaves(shapes["params"]))
    assert count == _pix2pix_unet_param_count(n)
  assert _pix2pix_unet_param_count(8) == 54_413_955  # pix2pix prints 54.414 M for unet_256


@pytest.mark.parametrize("size", [(32, 16), (16, 16), (64, 32)])
def test_unet_output_shape_and_range(size):
  n = unet.num_downs_for(*size)
  model = unet.UNetGenerator(num_downs=n, ngf=4)
  x = jax.random.normal(jax.random.key(1), (2, *size, 3))
  variables = _init(model, x)
  out, _ = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, x)
  assert out.shape == x.shape and out.dtype == jnp.float32
  assert float(jnp.abs(out).max()) < 1.0
  assert float(out.std()) > 1e-3


def test_unet_structure_has_skip_concatenations_and_pix2pix_norms():
  n, ngf = 5, 4
  model = unet.UNetGenerator(num_downs=n, ngf=ngf, out_channels=2)
  params = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))["params"]
  widths = [4, 8, 16, 32, 32]
  for i in range(n):
    assert params[f"down{i}"]["kernel"].shape[-1] == widths[i]
    assert "bias" not in params[f"down{i}"]
    # up i reads the skip concatenation of block i+1 (twice its width), except the innermost.
    up_in = widths[i] if i == n - 1 else 2 * widths[i]
    up_out = 2 if i == 0 else widths[i - 1]
    assert params[f"up{i}"]["kernel"].shape == (4, 4, up_out, up_in)
  assert "bias" in params["up0"] and "bias" not in params["up1"]
  assert sorted(k for k in params if k.endswith("_bn")) == sorted(
      [f"down{i}_bn" for i in range(1, n - 1)] + [f"up{i}_bn" for i in range(1, n)])


def test_unet_skip_connections_keep_changes_local():
  model = unet.UNetGenerator(num_downs=4, ngf=8)
  x = jax.random.uniform(jax.random.key(2), (1, 32, 32, 3))
  variables = _init(model, x)
  apply = jax.jit(lambda x: model.apply(variables, x, train=False))
  r, c = 17, 14
  diff = np.abs(np.asarray(apply(x.at[0, r, c].add(1.0)) - apply(x)))[0].sum(-1)
  near = diff[r - 2:r + 3, c - 2:c + 3]
  far = diff.copy()
  far[r - 8:r + 9, c - 8:c + 9] = 0
  assert near.max() == diff.max() > 0
  assert near.max() > 10 * far.max()


def test_unet_init_follows_pix2pix():
  variables = _init(unet.UNetGenerator(num_downs=5, ngf=16), jnp.zeros((1, 32, 32, 3)))
  flat = flax.traverse_util.flatten_dict(variables["params"], sep="/")
  for name, value in flat.items():
    value = np.asarray(value)
    if name.endswith("kernel"):
      assert abs(value.std() - 0.02) < 0.002 and abs(value.mean()) < 0.002, name
    elif name.endswith("_bn/scale"):
      assert abs(value.mean() - 1.0) < 0.01 and 0.01 < value.std() < 0.03, name
    else:
      assert name.endswith("bias") and np.all(value == 0), name
  stats = flax.traverse_util.flatten_dict(variables["batch_stats"], sep="/")
  assert all(np.all(np.asarray(v) == (1 if k.endswith("var") else 0)) for k, v in stats.items())


def test_unet_dropout_and_bfloat16():
  model = unet.UNetGenerator(num_downs=6, ngf=4, use_dropout=True, dtype=jnp.bfloat16)
  x = jax.random.normal(jax.random.key(3), (2, 64, 64, 3))
  variables = _init(model, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))

  @jax.jit
  def run(key):
    return model.apply(variables, x, train=True, mutable=["batch_stats"],
                       rngs={"dropout": key})[0]

  a, b, c = run(jax.random.key(0)), run(jax.random.key(0)), run(jax.random.key(1))
  assert a.dtype == jnp.float32 and a.shape == x.shape
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert float(jnp.abs(a - c).max()) > 1e-3


def test_unet_rejects_indivisible_input():
  with pytest.raises(ValueError, match="not divisible by 2\\^num_downs = 16"):
    unet.UNetGenerator(num_downs=4, ngf=4).init(jax.random.key(0), jnp.zeros((1, 24, 16, 3)),
                                                train=False)


@pytest.mark.parametrize("size,n_layers", [((64, 32), 3), ((32, 16), 2), ((32, 32), 1)])
def test_patchgan_output_shape(size, n_layers):
  model = patchgan.PatchDiscriminator(ndf=4, n_layers=n_layers)
  a = jax.random.normal(jax.random.key(4), (2, *size, 3))
  b = jax.random.normal(jax.random.key(5), (2, *size, 3))
  variables = _init(model, a, b)
  apply = jax.jit(lambda a, b: model.apply(variables, a, b, train=False))
  out = apply(a, b)
  want = (2, size[0] // 2**n_layers - 2, size[1] // 2**n_layers - 2, 1)
  assert out.shape == want
  assert patchgan.patchgan_output_shape(*size, n_layers) == want[1:3]
  assert variables["params"]["conv0"]["kernel"].shape == (4, 4, 6, 4)
  assert not np.allclose(np.asarray(apply(b, a)), np.asarray(out))


def test_patchgan_matches_pix2pix_layout_and_init():
  shapes = jax.eval_shape(lambda: patchgan.PatchDiscriminator().init(
      jax.random.key(0), jnp.zeros((1, 256, 128, 3)), jnp.zeros((1, 256, 128, 3)), train=False))
  count = sum(np.prod(p.shape) for p in jax.tree.leaves(shapes["params"]))
  # pix2pix NLayerDiscriminator(6, 64, 3, BatchNorm): biases only on the first and last conv.
  want = (6 * 64 * 16 + 64) + (64 * 128 * 16 + 256) + (128 * 256 * 16 + 512)
  want += (256 * 512 * 16 + 1024) + (512 * 1 * 16 + 1)
  assert count == want
  model = patchgan.PatchDiscriminator(ndf=16, n_layers=3)
  variables = _init(model, jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 32, 32, 3)))
  flat = flax.traverse_util.flatten_dict(variables["params"], sep="/")
  assert sorted(k for k in flat if k.endswith("bias") and "_bn" not in k) == [
      "conv0/bias", "conv4/bias"]
  big = np.asarray(flat["conv3/kernel"])
  assert abs(big.std() - 0.02) < 0.001
  assert abs(np.asarray(flat["conv3_bn/scale"]).std() - 0.02) < 0.008


def test_patchgan_rejects_too_small_input():
  with pytest.raises(ValueError, match="too small for n_layers=3"):
    _init(patchgan.PatchDiscriminator(ndf=4), jnp.zeros((1, 32, 16, 3)), jnp.zeros((1, 32, 16, 3)))
