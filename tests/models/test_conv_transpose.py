"""Tests for conv.ConvTranspose and the U-Net / PatchGAN's choice of conv lowering.

The matmul lowering (one dot + col2im overlap-add) must reproduce
`nn.ConvTranspose(transpose_kernel=True)` (the layer the U-Net used before, whose
params existing checkpoints hold) in value, gradient and parameter tree.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privreid_jax.models import conv, patchgan, unet

# (batch, h, w, cin, cout, k, s, p): the U-Net's k4 s2 p1 at even, odd and 1-pixel
# sides, and other kernels / strides / paddings.
SHAPES = [
    (2, 4, 2, 8, 6, 4, 2, 1),
    (2, 5, 3, 3, 4, 4, 2, 1),
    (1, 1, 1, 4, 3, 4, 2, 1),
    (2, 3, 4, 3, 2, 3, 2, 1),
    (1, 3, 3, 2, 3, 5, 3, 2),
    (1, 2, 3, 2, 2, 2, 2, 0),
    (1, 3, 2, 3, 2, 3, 1, 1),
    (1, 4, 3, 2, 2, 4, 2, 3),
]


def _flax_reference(cout, k, s, p):
  return nn.ConvTranspose(cout, (k, k), strides=(s, s), padding=((k - 1 - p,) * 2,) * 2,
                          transpose_kernel=True)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_conv_transpose_matches_flax_value_and_gradients(shape):
  n, h, w, cin, cout, k, s, p = shape
  rng = np.random.default_rng(sum(shape))
  x = jnp.asarray(rng.standard_normal((n, h, w, cin), np.float32))
  ref = _flax_reference(cout, k, s, p)
  variables = ref.init(jax.random.key(1), x)
  variables = jax.tree.map(  # a non-zero bias, so a wrong bias path shows
      lambda v: jnp.asarray(rng.standard_normal(v.shape, np.float32)), variables)
  probe = jnp.asarray(rng.standard_normal(ref.apply(variables, x).shape, np.float32))

  modules = [ref] + [conv.ConvTranspose(cout, k, s, p, impl=impl) for impl in ("matmul", "xla")]

  @jax.jit
  def values_and_grads(variables, x):  # one compilation for the three layers
    def loss(module, variables, x):
      y = module.apply(variables, x)
      return jnp.sum(y * probe), y
    return [jax.grad(loss, argnums=(1, 2), has_aux=True)(m, variables, x) for m in modules]

  (want_g, want_y), *mine = values_and_grads(variables, x)
  for got_g, y in mine:
    assert y.shape == (n, (h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k, cout)
    np.testing.assert_allclose(y, want_y, atol=1e-5, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g)):
      np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_conv_transpose_params_and_init_equal_flax():
  x = jnp.zeros((1, 3, 5, 7))
  want = _flax_reference(4, 4, 2, 1).init(jax.random.key(3), x)
  got = conv.ConvTranspose(4, 4, 2, 1, impl="matmul").init(jax.random.key(3), x)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  assert got["params"]["kernel"].shape == (4, 4, 4, 7)  # [kh, kw, out, in]
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)


def test_conv_transpose_rejects_bad_input():
  x = jnp.zeros((1, 3, 3, 2))
  kernel = jnp.zeros((4, 4, 3, 2))
  with pytest.raises(ValueError, match="padding"):
    conv.conv_transpose2d(x, kernel, 2, 4, impl="matmul")
  with pytest.raises(ValueError, match="channels"):
    conv.conv_transpose2d(jnp.zeros((1, 3, 3, 5)), kernel, 2, 1)
  with pytest.raises(ValueError, match="conv_impl"):
    conv.conv_transpose2d(x, kernel, 2, 1, impl="cudnn")


def _tree_shapes(tree):
  return jax.tree_util.tree_map_with_path(lambda path, v: (jax.tree_util.keystr(path),
                                                           v.shape), tree)


@pytest.mark.parametrize("model,inputs", [
    (lambda impl: unet.UNetGenerator(num_downs=3, ngf=4, conv_impl=impl),
     lambda x: (x,)),
    (lambda impl: patchgan.PatchDiscriminator(ndf=4, n_layers=2, conv_impl=impl),
     lambda x: (x, x[..., :2])),
], ids=["unet", "patchgan"])
def test_models_same_params_and_outputs_across_impls(model, inputs):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 32, 16, 3), np.float32))
  args = inputs(x)
  variables = jax.jit(lambda args: {
      impl: model(impl).init(jax.random.key(0), *args, train=False)
      for impl in ("xla", "matmul")})(args)
  assert _tree_shapes(variables["xla"]) == _tree_shapes(variables["matmul"])
  for a, b in zip(jax.tree.leaves(variables["xla"]), jax.tree.leaves(variables["matmul"])):
    np.testing.assert_array_equal(a, b)

  def loss(params, impl):
    out, upd = model(impl).apply({**variables["xla"], "params": params}, *args, train=True,
                                 mutable=["batch_stats"])
    return jnp.mean(out * out), (out, upd)

  results = jax.jit(lambda params: {impl: jax.grad(loss, has_aux=True)(params, impl)
                                    for impl in ("xla", "matmul")})(variables["xla"]["params"])
  (g_x, (out_x, upd_x)), (g_m, (out_m, upd_m)) = results["xla"], results["matmul"]
  np.testing.assert_allclose(out_m, out_x, atol=1e-5, rtol=1e-4)
  for a, b in zip(jax.tree.leaves((g_m, upd_m)), jax.tree.leaves((g_x, upd_x))):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-3)


def test_unet_params_unchanged_from_flax_layers():
  """The tree the U-Net had with nn.Conv / nn.ConvTranspose: names and shapes."""
  variables = jax.eval_shape(lambda: unet.UNetGenerator(num_downs=3, ngf=4).init(
      jax.random.key(0), jnp.zeros((1, 16, 8, 3)), train=False))
  shapes = {jax.tree_util.keystr(path): v.shape
            for path, v in jax.tree_util.tree_leaves_with_path(variables["params"])}
  assert shapes == {
      "['down0']['kernel']": (4, 4, 3, 4),
      "['down1']['kernel']": (4, 4, 4, 8),
      "['down1_bn']['bias']": (8,), "['down1_bn']['scale']": (8,),
      "['down2']['kernel']": (4, 4, 8, 16),
      "['up2']['kernel']": (4, 4, 8, 16),
      "['up2_bn']['bias']": (8,), "['up2_bn']['scale']": (8,),
      "['up1']['kernel']": (4, 4, 4, 16),
      "['up1_bn']['bias']": (4,), "['up1_bn']['scale']": (4,),
      "['up0']['kernel']": (4, 4, 3, 8), "['up0']['bias']": (3,),
  }
