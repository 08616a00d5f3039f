"""Tests for method B's De-ID decoder and identity adversaries."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from privreid_jax.models import adversary
from privreid_jax.models import deid_decoder


def _shapes(model, x):
  """Output and variables as shapes only (jax.eval_shape: nothing is compiled)."""
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  y = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  return y, variables


def _init(model, x, seed=0):
  """Variables filled on the host from their shapes (skips compiling `init`).

  Kernels ~ N(0, 1/fan_in) (LeCun, flax's default), BatchNorm at identity.
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)
    if name in ("scale", "var"):
      return jnp.ones(leaf.shape, leaf.dtype)
    return jnp.zeros(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, _shapes(model, x)[1])


def _run(model, x, train=False):
  """Real values from one jitted apply."""
  variables = _init(model, x)
  if train:
    apply = lambda v: model.apply(v, x, train=True, mutable=["batch_stats"])[0]
  else:
    apply = lambda v: model.apply(v, x, train=False)
  return jax.jit(apply)(variables), variables


@pytest.mark.parametrize("in_hw,out_hw,stages", [
    ((4, 2), (64, 32), 4), ((8, 4), (32, 16), 2), ((2, 2), (16, 16), 3),
    ((8, 4), (8, 4), 0)])
def test_decoder_output_shape_follows_the_ratio(in_hw, out_hw, stages):
  x = jax.random.normal(jax.random.key(1), (2, *in_hw, 24))
  dec = deid_decoder.DeIDDecoder(*out_hw, widths=(16, 8, 4))
  y, variables = _shapes(dec, x)
  assert y.shape == (2, *out_hw, 3) and y.dtype == jnp.float32
  ups = sorted(k for k in variables["params"] if k.startswith("up") and "bn" not in k)
  assert len(ups) == stages
  # The stages nearest the output keep the narrowest widths.
  if stages:
    last = variables["params"][f"up{stages - 1}"]["kernel"]
    assert last.shape[-1] == 4
    first = variables["params"]["up0"]["kernel"]
    assert first.shape[-1] == deid_decoder.stage_widths((16, 8, 4), stages)[0]


def test_stage_widths_trim_and_pad():
  assert deid_decoder.stage_widths((256, 128, 64, 32), 2) == (64, 32)
  assert deid_decoder.stage_widths((256, 128, 64, 32), 6) == (256, 256, 256, 128, 64, 32)


@pytest.mark.parametrize("in_hw,out_hw", [((4, 2), (24, 12)), ((4, 2), (32, 32)),
                                          ((5, 2), (16, 8))])
def test_decoder_rejects_non_power_of_two_ratio(in_hw, out_hw):
  dec = deid_decoder.DeIDDecoder(*out_hw, widths=(8, 4))
  with pytest.raises(ValueError, match=f"{out_hw[0]}x{out_hw[1]}"):
    _shapes(dec, jnp.zeros((1, *in_hw, 8)))


def test_decoder_vector_input_tanh_and_transpose():
  vec = jax.random.normal(jax.random.key(2), (3, 40)) * 10
  dec = deid_decoder.DeIDDecoder(32, 16, widths=(8, 4), vector_map_hw=(4, 2), tanh=True)
  y, _ = _run(dec, vec, train=True)
  assert y.shape == (3, 32, 16, 3)
  assert float(jnp.max(jnp.abs(y))) < 1.0
  dec_t = deid_decoder.DeIDDecoder(32, 16, widths=(8, 4), upsample="transpose")
  y_t, _ = _shapes(dec_t, jnp.ones((2, 4, 2, 6)))
  assert y_t.shape == (2, 32, 16, 3)
  with pytest.raises(ValueError, match="upsample"):
    _shapes(deid_decoder.DeIDDecoder(32, 16, upsample="bilinear"), jnp.ones((1, 4, 2, 6)))


def test_decoder_linear_output_is_not_bounded():
  # Default head is linear: a large input map must be able to leave (-1, 1).
  dec = deid_decoder.DeIDDecoder(16, 8, widths=(8,))
  x = jax.random.normal(jax.random.key(3), (4, 8, 4, 8))
  variables = _init(dec, x)
  params = jax.tree.map(lambda p: p * 4.0, variables["params"])
  y = jax.jit(lambda v: dec.apply(v, x, train=False))({**variables, "params": params})
  assert float(jnp.max(jnp.abs(y))) > 1.0


def test_classifier_output_shapes_and_errors():
  img = jnp.ones((2, 32, 16, 3))
  logits, _ = _shapes(adversary.ImageIdentityClassifier(7, width=4, num_stages=3), img)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  feat_logits, _ = _shapes(adversary.FeatureIdentityClassifier(5, hidden=8), jnp.ones((3, 12)))
  assert feat_logits.shape == (3, 5)
  map_logits, _ = _shapes(adversary.FeatureIdentityClassifier(5, hidden=8),
                       jnp.ones((3, 2, 2, 12)))
  assert map_logits.shape == (3, 5)
  with pytest.raises(ValueError, match="too small"):
    _shapes(adversary.ImageIdentityClassifier(7, num_stages=5), jnp.ones((1, 16, 16, 3)))
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    _shapes(adversary.ImageIdentityClassifier(7), jnp.ones((4, 3)))


def _fit(model, x, y, steps=25, lr=1e-2):
  variables = _init(model, x)
  params, stats = variables["params"], variables["batch_stats"]
  tx = optax.adam(lr)
  opt_state = tx.init(params)

  def loss_fn(params, stats):
    logits, new = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                              mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, new["batch_stats"]

  @jax.jit
  def step(params, stats, opt_state):
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  losses = []
  for _ in range(steps):
    params, stats, opt_state, loss = step(params, stats, opt_state)
    losses.append(float(loss))
  logits = jax.jit(lambda v: model.apply(v, x, train=False))(
      {"params": params, "batch_stats": stats})
  return losses, float(jnp.mean(jnp.argmax(logits, -1) == y))


def test_image_adversary_learns_separable_identities():
  num_ids = 4
  y = jnp.arange(16) % num_ids
  # Identity = which horizontal band is bright, plus pixel noise.
  rows = jnp.arange(16)[None, :, None, None] // 4
  x = (rows == y[:, None, None, None]).astype(jnp.float32) * jnp.ones((16, 16, 8, 3))
  x = x + 0.3 * jax.random.normal(jax.random.key(5), x.shape)
  model = adversary.ImageIdentityClassifier(num_ids, width=8, num_stages=2)
  losses, acc = _fit(model, x, y)
  assert losses[-1] < 0.3 * losses[0], losses
  assert acc == 1.0


def test_feature_adversary_learns_separable_identities():
  num_ids = 5
  y = jnp.arange(40) % num_ids
  centres = 3.0 * jax.random.normal(jax.random.key(6), (num_ids, 16))
  x = centres[y] + jax.random.normal(jax.random.key(7), (40, 16))
  model = adversary.FeatureIdentityClassifier(num_ids, hidden=32)
  losses, acc = _fit(model, x, y)
  assert losses[-1] < 0.3 * losses[0], losses
  assert acc == 1.0
