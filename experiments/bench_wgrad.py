"""Layouts of a convolution's weight-gradient product on ResNet-50's shapes.

  python experiments/bench_wgrad.py --batch=32 --rounds=5

The weight gradient of a convolution lowered to a matrix product is Xᵀ·G,
X the [M, K] patches (M = N·H·W, K = kh·kw·Cin) and G the [M, Cout] output
gradient: a product contracting dimension 0 of both operands, which XLA:CPU
hands to Eigen rather than to YNNPACK. Timed alone, per shape, in alternating
rounds (median ms per call):

  XtG      today's form, `dot_general` contracting dimension 0 of both;
  (GtX)t   Gᵀ·X as a canonical product, then transposed (Gᵀ held by
           `optimization_barrier` so XLA cannot fold the transpose back);
  Xt@G     Xᵀ materialised the same way, then a canonical product.

A ratio above 1 means the variant is faster than today's form. The shapes are
the BoT ResNet-50's at 256x128 (last stride 1).
"""

from __future__ import annotations

import statistics
import time

from absl import app, flags

_BATCH = flags.DEFINE_integer("batch", 32, "Images per batch.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating rounds (one call per variant each).")

# (name, H·W of the layer's output map at 256x128, K, Cout)
SHAPES = (("layer1 3x3", 64 * 32, 9 * 64, 64), ("layer1 1x1 expand", 64 * 32, 64, 256),
          ("layer2 3x3", 32 * 16, 9 * 128, 128), ("layer3 3x3", 16 * 8, 9 * 256, 256),
          ("layer3 1x1 reduce", 16 * 8, 1024, 256), ("layer4 3x3", 16 * 8, 9 * 512, 512),
          ("layer4 1x1 expand", 16 * 8, 512, 2048))


def variants():
  import jax

  def xtg(x, g):
    return jax.lax.dot_general(x, g, (((0,), (0,)), ((), ())))

  def gtx_t(x, g):
    return (jax.lax.optimization_barrier(g.T) @ x).T

  def xt_at_g(x, g):
    return jax.lax.optimization_barrier(x.T) @ g

  return {"XtG": jax.jit(xtg), "(GtX)t": jax.jit(gtx_t), "Xt@G": jax.jit(xt_at_g)}


def main(argv):
  del argv
  import numpy as np
  fns = variants()
  rng = np.random.default_rng(0)
  for name, hw, k, n in SHAPES:
    m = _BATCH.value * hw
    x = rng.random((m, k), np.float32)
    g = rng.random((m, n), np.float32)
    ref = np.asarray(fns["XtG"](x, g))
    for key, fn in fns.items():
      np.testing.assert_allclose(np.asarray(fn(x, g)), ref, rtol=2e-3, err_msg=key)
    times = {key: [] for key in fns}
    for _ in range(_ROUNDS.value):
      for key, fn in fns.items():
        start = time.perf_counter()
        fn(x, g).block_until_ready()
        times[key].append(time.perf_counter() - start)
    ms = {key: 1e3 * statistics.median(v) for key, v in times.items()}
    cells = "  ".join(f"{key} {v:7.1f} ms ({ms['XtG'] / v:.2f}x)" for key, v in ms.items())
    print(f"{name:18s} M={m:6d} K={k:5d} N={n:5d}  {cells}", flush=True)


if __name__ == "__main__":
  app.run(main)
