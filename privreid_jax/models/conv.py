"""2-D convolution and max-pooling with a choice of lowering: XLA conv or matrix products.

On XLA:CPU, convolutions (and above all their weight gradients) are much slower than
the same arithmetic written as plain matrix products (measured in experiments/bench_conv.py).
`Conv` therefore computes either with `lax.conv_general_dilated` (impl "xla") or as
matrix products (impl "matmul"): a 1x1 convolution is one `lax.dot_general` on
(N*H*W, C), a kxk convolution is im2col (k*k shifted strided slices gathered on
the channel axis by nested stacks that XLA:CPU fuses into one loop, see `_im2col`)
followed by one dot; "matmul_flat" is the same with one flat concatenation (the
same bits, slower; kept to measure the difference). Two special cases of "matmul": a stride-s
convolution whose kernel sides are multiples of s (the pix2pix 4x4 stride-2 convs)
first folds s x s pixel blocks into channels (space-to-depth), so its im2col takes
(k/s)^2 contiguous slices instead of k^2 strided ones; a stride-1 convolution with
few output channels (the PatchGAN's 1-channel head) does the dot first and then
adds the k*k shifted output maps. "auto" picks "matmul" on the CPU backend and
"xla" elsewhere (cuDNN / the TPU compiler handle convolutions best).

`ConvTranspose` is PyTorch's `ConvTranspose2d` (the pix2pix U-Net's up-sampling
layers) with the same choice: impl "xla" is `lax.conv_transpose`, impl "matmul"
is one dot of the input (N*H*W, Cin) with the kernel as (Cin, kh*kw*Cout),
followed by an overlap-add (col2im) of the kh*kw contributions on the s-times
finer grid, written as zero pads and adds per output phase, which XLA fuses.
On the U-Net's shapes its forward+backward is 4-15x faster than XLA:CPU's
transposed convolution; the sub-pixel forms (four 2x2 phase convolutions, or
one 3x3 im2col dot with a zero-filled kernel) measured 1.2-4x slower than col2im.

Both lowerings share one parameter layout, identical to `flax.linen.Conv`:
`kernel` [kh, kw, in, out] (HWIO) and an optional `bias` [out], so checkpoints and
converted ImageNet weights load whatever the implementation. Padding is torch-style:
a symmetric integer number of pixels per spatial side. `ConvTranspose` keeps the
layout of `flax.linen.ConvTranspose(..., transpose_kernel=True)` with padding
k - 1 - p: `kernel` [kh, kw, out, in] (a PyTorch ConvTranspose2d weight
(in, out, kh, kw) transposed by (2, 3, 1, 0)) and an optional `bias` [out].
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

IMPLS = ("auto", "xla", "matmul", "matmul_flat")

Pair = int | Sequence[int]


def _pair(v: Pair, what: str) -> tuple[int, int]:
  if isinstance(v, int):
    return (v, v)
  v = tuple(int(a) for a in v)
  if len(v) != 2:
    raise ValueError(f"{what} must be an int or a pair of ints, got {v!r}")
  return v


def resolve_impl(impl: str) -> str:
  """Maps "auto" to "matmul" on the CPU backend and "xla" elsewhere."""
  if impl not in IMPLS:
    raise ValueError(f"conv_impl={impl!r}: expected one of {' | '.join(IMPLS)}")
  if impl == "auto":
    return "matmul" if jax.default_backend() == "cpu" else "xla"
  return impl


def _out_size(size: int, k: int, s: int, p: int) -> int:
  out = (size + 2 * p - k) // s + 1
  if out < 1:
    raise ValueError(f"window {k} (stride {s}, padding {p}) does not fit an input "
                     f"of size {size}")
  return out


def _shifted_slices(x: jax.Array, kernel: tuple[int, int], strides: tuple[int, int],
                    out_hw: tuple[int, int]) -> list[jax.Array]:
  """The kh*kw strided windows of an (already padded) NHWC input, row-major order."""
  (kh, kw), (sh, sw), (ho, wo) = kernel, strides, out_hw
  n, _, _, c = x.shape
  slices = []
  for i in range(kh):
    for j in range(kw):
      slices.append(lax.slice(
          x, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c),
          (1, sh, sw, 1)))
  return slices


def _im2col(slices: list[jax.Array], kh: int, kw: int, nested: bool = True) -> jax.Array:
  """The kh*kw tap slices [N, H, W, C] (row-major) as patches [N, H, W, kh*kw*C].

  nested: stack each kernel row's kw taps on a new axis, then the kh rows on another
  ([N, H, W, kh, kw, C], reshaped for free). XLA:CPU fuses neither a concatenation of
  more than 8 operands nor one along the minor axis when it is >= 128 wide, so the
  flat form (one concatenation on the channel axis) writes every tap's slice out and
  copies it again; the nested one (kernels up to 8x8) is a single fused loop that
  writes the patches once, reading the (padded, BatchNorm + ReLU'd) input. The values are
  the same bits either way ("matmul_flat" keeps the flat form for comparison).
  """
  if len(slices) == 1:
    return slices[0]
  if not nested:
    return jnp.concatenate(slices, axis=-1)
  n, h, w, c = slices[0].shape
  rows = [jnp.stack(slices[i * kw:(i + 1) * kw], axis=3) for i in range(kh)]
  return jnp.stack(rows, axis=3).reshape(n, h, w, kh * kw * c)


# A stride-1 kxk convolution with at most Cin / NARROW_OUTPUT output channels
# (the PatchGAN's 1-channel head) runs dot-first (see _conv2d_dot_first).
NARROW_OUTPUT = 8


def _conv2d_dot_first(x, kernel, out_hw):
  """Stride-1 convolution of a padded input as one dot, then a sum of shifted maps.

  z = x (N*H*W, Cin) @ kernel (Cin, kh*kw*Cout), and the output adds z's tap (i, j)
  map shifted by (i, j). Same flops as im2col, but the intermediate holds
  kh*kw*Cout instead of kh*kw*Cin values per pixel: far less for narrow outputs.
  """
  kh, kw, cin, cout = kernel.shape
  n, hp, wp, _ = x.shape
  ho, wo = out_hw
  z = lax.dot_general(x.reshape(n * hp * wp, cin),
                      kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout),
                      (((1,), (0,)), ((), ())))
  z = z.reshape(n, hp, wp, kh, kw, cout)
  y = None
  for i in range(kh):
    for j in range(kw):
      t = z[:, i:i + ho, j:j + wo, i, j]
      y = t if y is None else y + t
  return y


def _conv2d_space_to_depth(x, kernel, strides, padding, out_hw, nested=True):
  """A stride-s convolution whose kernel sides are multiples of s, as a stride-1 one.

  Space-to-depth folds each s x s block of the padded input into channels and the
  kernel [s*a, s*b, C, O] into [a, b, s*s*C, O]: output (y, x), tap (s*i + r) reads
  block row y + i, phase r. The im2col then takes a*b contiguous slices instead of
  k*k strided ones (cheaper gradients, smaller programs).
  """
  (sh, sw), (ph, pw), (ho, wo) = strides, padding, out_hw
  kh, kw, cin, cout = kernel.shape
  n, h, w, _ = x.shape
  ah, aw = kh // sh, kw // sw
  hs, ws = ho + ah - 1, wo + aw - 1  # blocks the output reads
  # Pad (and crop) to exactly hs*sh x ws*sw rows and columns.
  x = jnp.pad(x, ((0, 0), (ph, max(hs * sh - h - ph, 0)), (pw, max(ws * sw - w - pw, 0)),
                  (0, 0)))[:, :hs * sh, :ws * sw]
  x = x.reshape(n, hs, sh, ws, sw, cin).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(n, hs, ws, sh * sw * cin)
  k = kernel.reshape(ah, sh, aw, sw, cin, cout).transpose(0, 2, 1, 3, 4, 5)
  k = k.reshape(ah * aw * sh * sw * cin, cout)
  slices = [x[:, i:i + ho, j:j + wo] for i in range(ah) for j in range(aw)]
  cols = _im2col(slices, ah, aw, nested)
  y = lax.dot_general(cols.reshape(n * ho * wo, -1), k, (((1,), (0,)), ((), ())))
  return y.reshape(n, ho, wo, cout)


def conv2d(x: jax.Array, kernel: jax.Array, strides: Pair = 1, padding: Pair = 0,
           impl: str = "auto") -> jax.Array:
  """NHWC x HWIO convolution with symmetric integer padding (torch semantics)."""
  impl = resolve_impl(impl)
  kh, kw, cin, cout = kernel.shape
  if x.ndim != 4 or x.shape[-1] != cin:
    raise ValueError(f"conv2d: input of shape {x.shape} does not match kernel "
                     f"{kernel.shape} (expected NHWC with {cin} channels)")
  sh, sw = _pair(strides, "strides")
  ph, pw = _pair(padding, "padding")
  if impl == "xla":
    return lax.conv_general_dilated(
        x, kernel, window_strides=(sh, sw), padding=((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  n, h, w, _ = x.shape
  ho, wo = _out_size(h, kh, sh, ph), _out_size(w, kw, sw, pw)
  nested = impl != "matmul_flat"
  if (sh, sw) != (1, 1) and kh % sh == 0 and kw % sw == 0:
    return _conv2d_space_to_depth(x, kernel, (sh, sw), (ph, pw), (ho, wo), nested)
  if ph or pw:
    x = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  if (sh, sw) == (1, 1) and kh * kw > 1 and NARROW_OUTPUT * cout <= cin:
    return _conv2d_dot_first(x, kernel, (ho, wo))
  if (kh, kw) == (1, 1) and (sh, sw) == (1, 1) and x.shape[1:3] == (ho, wo):
    cols = x
  else:
    cols = _im2col(_shifted_slices(x, (kh, kw), (sh, sw), (ho, wo)), kh, kw, nested)
  # (N*Ho*Wo, kh*kw*Cin) @ (kh*kw*Cin, Cout): the HWIO reshape matches the
  # (i, j)-major, channel-minor order of the concatenated slices.
  y = lax.dot_general(cols.reshape(n * ho * wo, kh * kw * cin),
                      kernel.reshape(kh * kw * cin, cout),
                      (((1,), (0,)), ((), ())))
  return y.reshape(n, ho, wo, cout)


def max_pool(x: jax.Array, window: Pair = 3, strides: Pair = 2, padding: Pair = 1,
             impl: str = "auto") -> jax.Array:
  """NHWC max-pooling with torch `MaxPool2d` semantics.

  Padded positions never win; the gradient goes to the first maximum of each
  window in row-major order and a NaN counts as the maximum (torch's rule; the
  "xla" lowering's select-and-scatter also routes ties to the first maximum).
  """
  impl = resolve_impl(impl)
  kh, kw = _pair(window, "window")
  sh, sw = _pair(strides, "strides")
  ph, pw = _pair(padding, "padding")
  if impl == "xla":
    return nn.max_pool(x, (kh, kw), strides=(sh, sw), padding=((ph, ph), (pw, pw)))
  return _max_pool_taps(x, (kh, kw), (sh, sw), (ph, pw))


def _max_pool_slices(x, window, strides, padding):
  """The k*k strided windows' taps of the -inf-padded input, row-major."""
  (kh, kw), (sh, sw), (ph, pw) = window, strides, padding
  _, h, w, _ = x.shape
  ho, wo = _out_size(h, kh, sh, ph), _out_size(w, kw, sw, pw)
  if ph or pw:
    x = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=-jnp.inf)
  return _shifted_slices(x, (kh, kw), (sh, sw), (ho, wo))


def _max_of(slices):
  best = slices[0]
  for s in slices[1:]:
    best = jnp.maximum(best, s)
  return best


# The pooled map as k*k shifted strided slices (fast on XLA:CPU), with a
# hand-written gradient that sends the upstream gradient to each window's winner.
# Autodiff of the chain of maxima gave XLA one select fusion that recomputed the
# chain for every tap: in the synthetic baseline's b32 step (configs/synthetic.py)
# it took 39.5 ms of a 330 ms step; this gradient plus the argmax take ~8 ms
# (profile of experiments/bench_train.py's step, jax.profiler).
@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_taps(x, window, strides, padding):
  return _max_of(_max_pool_slices(x, window, strides, padding))


def _max_pool_taps_fwd(x, window, strides, padding):
  """The pooled map and, per output, the row-major tap of its window's winner (int8)."""
  kh, kw = window
  if kh * kw > 127:
    raise ValueError(f"max_pool: window {kh}x{kw} has more taps than an int8 index holds")
  slices = _max_pool_slices(x, window, strides, padding)
  # argmax is a reduction, which XLA keeps as its own loop instead of fusing (and
  # recomputing) it into each tap's part of the gradient. Stacked on a new leading
  # axis: ~2x faster than on a trailing one (the synthetic stem's pool at b32).
  tap = jnp.argmax(jnp.stack(slices), axis=0).astype(jnp.int8)
  return _max_of(slices), (tap, x.shape)


def _max_pool_taps_bwd(window, strides, padding, residuals, g):
  tap, (_, h, w, _) = residuals
  (kh, kw), (sh, sw), (ph, pw) = window, strides, padding
  _, ho, wo, _ = g.shape
  hp, wp = h + 2 * ph, w + 2 * pw
  zero = jnp.zeros((), g.dtype)
  dx = None
  for i in range(kh):
    for j in range(kw):
      # Tap (i, j) read padded rows i, i + sh, ...: the transpose of that strided
      # slice is a pad with sh - 1 zeros between rows.
      part = lax.pad(jnp.where(tap == i * kw + j, g, zero), zero,
                     ((0, 0, 0), (i, hp - i - sh * (ho - 1) - 1, sh - 1),
                      (j, wp - j - sw * (wo - 1) - 1, sw - 1), (0, 0, 0)))
      dx = part if dx is None else dx + part
  return (dx[:, ph:ph + h, pw:pw + w],)


_max_pool_taps.defvjp(_max_pool_taps_fwd, _max_pool_taps_bwd)


def _params(module: nn.Module, x: jax.Array, kernel_shape: tuple[int, ...]):
  """`Conv`'s and `ConvTranspose`'s parameters (as flax names them) and compute dtype."""
  kernel = module.param("kernel", module.kernel_init, kernel_shape, module.param_dtype)
  bias = (module.param("bias", module.bias_init, (module.features,), module.param_dtype)
          if module.use_bias else None)
  return kernel, bias, module.dtype or jnp.promote_types(x.dtype, module.param_dtype)


class Conv(nn.Module):
  """A 2-D convolution with `nn.Conv`'s parameters and init, and a selectable lowering.

  Attributes:
    features: output channels.
    kernel_size: int or (kh, kw).
    strides: int or (sh, sw).
    padding: symmetric zero padding in pixels, int or (ph, pw) (torch-style).
    use_bias: add a learned bias (torch convs in ResNets have none).
    dtype: compute dtype (None: the promoted input/param dtype); params stay
      `param_dtype`.
    param_dtype: parameter dtype (float32).
    kernel_init, bias_init: initializers, defaults as `nn.Conv`.
    impl: "auto" | "xla" | "matmul" | "matmul_flat" (see the module docstring).
  """
  features: int
  kernel_size: Pair = 3
  strides: Pair = 1
  padding: Pair = 0
  use_bias: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.linear.default_kernel_init
  bias_init: Callable = nn.initializers.zeros_init()
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = _pair(self.kernel_size, "kernel_size")
    kernel, bias, dtype = _params(self, x, (kh, kw, x.shape[-1], self.features))
    y = conv2d(x.astype(dtype), kernel.astype(dtype), self.strides, self.padding,
               self.impl)
    if bias is not None:
      y = y + bias.astype(dtype)
    return y


def conv_transpose2d(x: jax.Array, kernel: jax.Array, strides: Pair = 2,
                     padding: Pair = 0, impl: str = "auto") -> jax.Array:
  """PyTorch ConvTranspose2d on NHWC input with a [kh, kw, out, in] kernel.

  Output side (size - 1) * s - 2 * p + k, as torch with output_padding 0.
  """
  impl = resolve_impl(impl)
  kh, kw, cout, cin = kernel.shape
  if x.ndim != 4 or x.shape[-1] != cin:
    raise ValueError(f"conv_transpose2d: input of shape {x.shape} does not match kernel "
                     f"{kernel.shape} (expected NHWC with {cin} channels)")
  sh, sw = _pair(strides, "strides")
  ph, pw = _pair(padding, "padding")
  if not (0 <= ph < kh and 0 <= pw < kw):
    raise ValueError(f"conv_transpose2d: padding ({ph}, {pw}) must lie in [0, kernel "
                     f"size - 1] for kernel ({kh}, {kw})")
  n, h, w, _ = x.shape
  ho, wo = (h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw
  if ho < 1 or wo < 1:
    raise ValueError(f"conv_transpose2d: input {h}x{w} with kernel ({kh}, {kw}), stride "
                     f"({sh}, {sw}) and padding ({ph}, {pw}) gives an empty output")
  if impl == "xla":
    return lax.conv_transpose(
        x, kernel, (sh, sw), ((kh - 1 - ph, kh - 1 - ph), (kw - 1 - pw, kw - 1 - pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)
  # z[n, y, x, i, j, o]: what input pixel (y, x) adds at output (s*y + i - p, s*x + j - p).
  z = lax.dot_general(x.reshape(n * h * w, cin),
                      kernel.transpose(3, 0, 1, 2).reshape(cin, kh * kw * cout),
                      (((1,), (0,)), ((), ())))
  z = z.reshape(n, h, w, kh, kw, cout)
  # Tap i = s*q + r lands on phase r of coarse row y + q: per phase, add the taps'
  # maps shifted by q on a coarse grid of h + qh - 1 rows (qh = ceil(kh / sh)).
  qh, qw = -(-kh // sh), -(-kw // sw)
  phase_rows = []
  for ry in range(sh):
    phase_cols = []
    for rx in range(sw):
      acc = jnp.zeros((n, h + qh - 1, w + qw - 1, cout), z.dtype)
      for qy in range(qh):
        for qx in range(qw):
          i, j = sh * qy + ry, sw * qx + rx
          if i < kh and j < kw:
            acc = acc + jnp.pad(z[:, :, :, i, j, :],
                                ((0, 0), (qy, qh - 1 - qy), (qx, qw - 1 - qx), (0, 0)))
      phase_cols.append(acc)
    phase_rows.append(jnp.stack(phase_cols, axis=3))
  y = jnp.stack(phase_rows, axis=2).reshape(
      n, (h + qh - 1) * sh, (w + qw - 1) * sw, cout)
  return y[:, ph:ph + ho, pw:pw + wo]


class ConvTranspose(nn.Module):
  """PyTorch's ConvTranspose2d with `nn.ConvTranspose(transpose_kernel=True)`'s params.

  Same parameters, init and output as `nn.ConvTranspose(features, kernel_size,
  strides, padding=k - 1 - p per side, transpose_kernel=True)`, so checkpoints of
  either load into the other.

  Attributes:
    features: output channels.
    kernel_size: int or (kh, kw).
    strides: int or (sh, sw).
    padding: torch's ConvTranspose2d padding p, int or (ph, pw), 0 <= p < k.
    use_bias: add a learned bias.
    dtype: compute dtype (None: the promoted input/param dtype).
    param_dtype: parameter dtype (float32).
    kernel_init, bias_init: initializers, defaults as `nn.ConvTranspose`.
    impl: "auto" | "xla" | "matmul" | "matmul_flat" (see the module docstring).
  """
  features: int
  kernel_size: Pair = 4
  strides: Pair = 2
  padding: Pair = 1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.linear.default_kernel_init
  bias_init: Callable = nn.initializers.zeros_init()
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = _pair(self.kernel_size, "kernel_size")
    kernel, bias, dtype = _params(self, x, (kh, kw, self.features, x.shape[-1]))
    y = conv_transpose2d(x.astype(dtype), kernel.astype(dtype), self.strides,
                         self.padding, self.impl)
    if bias is not None:
      y = y + bias.astype(dtype)
    return y
