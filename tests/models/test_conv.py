"""Tests for conv2d's matmul paths: space-to-depth, dot-first, the nested im2col.

(The generic im2col path is also checked against XLA in test_resnet.py, the
transposed conv in test_conv_transpose.py.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privreid_jax.models import conv


# (k, s, p, (h, w), cin, cout). Space-to-depth: stride s > 1 with k % s == 0, incl. odd
# sides (the last block is cropped or padded) and padding larger than s. Dot-first:
# stride 1 with cout * NARROW_OUTPUT <= cin.
CASES = [
    (4, 2, 1, (8, 6), 3, 5), (4, 2, 1, (7, 5), 3, 5), (6, 3, 2, (9, 10), 2, 3),
    (2, 2, 0, (6, 5), 3, 4), (4, 2, 3, (4, 4), 2, 3), (4, 2, 0, (5, 5), 2, 2),
    (4, 1, 1, (7, 5), 16, 1), (3, 1, 1, (6, 5), 16, 2), (3, 1, 0, (5, 6), 8, 1),
]


@pytest.mark.parametrize("k,s,p,hw,cin,cout", CASES)
def test_special_matmul_paths_match_xla(k, s, p, hw, cin, cout):
  rng = np.random.default_rng(k * 100 + s * 10 + p)
  x = jnp.asarray(rng.standard_normal((2, *hw, cin), np.float32))
  w = jnp.asarray(rng.standard_normal((k, k, cin, cout), np.float32))
  cot = jnp.asarray(rng.standard_normal(conv.conv2d(x, w, s, p, "xla").shape, np.float32))

  @jax.jit
  def values_and_grads(x, w):
    out = {}
    for impl in ("xla", "matmul"):
      loss = lambda x, w, impl=impl: jnp.sum(conv.conv2d(x, w, s, p, impl) * cot)
      out[impl] = (conv.conv2d(x, w, s, p, impl), jax.grad(loss, argnums=(0, 1))(x, w))
    return out

  got = values_and_grads(x, w)
  (y_x, g_x), (y_m, g_m) = got["xla"], got["matmul"]
  assert y_m.shape == y_x.shape
  np.testing.assert_allclose(y_m, y_x, rtol=1e-4, atol=1e-4)
  for a, b in zip(g_m, g_x):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# (k, s, p, (h, w), cin, cout): generic im2col (3x3, the 7x7 stem, strided, 9x9: more
# than 8 taps per row), and space-to-depth.
IM2COL_CASES = [
    (3, 1, 1, (6, 5), 4, 6), (7, 2, 3, (11, 9), 3, 5), (3, 2, 1, (7, 8), 5, 4),
    (9, 1, 4, (10, 10), 2, 3), (4, 2, 1, (8, 6), 3, 5),
]


@pytest.mark.parametrize("k,s,p,hw,cin,cout", IM2COL_CASES)
def test_nested_im2col_equals_flat_concatenation_bitwise(k, s, p, hw, cin, cout):
  rng = np.random.default_rng(k * 100 + s * 10 + p)
  x = jnp.asarray(rng.standard_normal((2, *hw, cin), np.float32))
  w = jnp.asarray(rng.standard_normal((k, k, cin, cout), np.float32))
  # A BatchNorm-like affine + ReLU in front, as in the networks: XLA fuses it into
  # the nested im2col's loop.
  a = jnp.asarray(rng.uniform(0.5, 1.5, cin).astype(np.float32))
  cot = jnp.asarray(rng.standard_normal(conv.conv2d(x, w, s, p, "xla").shape, np.float32))

  @jax.jit
  def values_and_grads(x, w):
    out = {}
    for impl in ("matmul", "matmul_flat"):
      f = lambda x, w, impl=impl: conv.conv2d(jnp.maximum(x * a - 0.1, 0), w, s, p, impl)
      out[impl] = (f(x, w), jax.grad(lambda x, w: jnp.sum(f(x, w) * cot), (0, 1))(x, w))
    return out

  got = values_and_grads(x, w)
  for nested, flat in zip(jax.tree.leaves(got["matmul"]), jax.tree.leaves(got["matmul_flat"])):
    np.testing.assert_array_equal(nested, flat)
  np.testing.assert_allclose(got["matmul"][0], conv.conv2d(jnp.maximum(x * a - 0.1, 0), w, s, p,
                                                           "xla"), rtol=1e-4, atol=1e-4)
