"""Per-layer speed of ResNet-50's convolutions (forward + both gradients), JAX vs PyTorch.

  python experiments/bench_conv.py --batch=16,32
  python experiments/bench_conv.py --batch=16,32 --impl=matmul,xla --torch   # a Python with torch

Where does the train step's time go, layer by layer, and how does it scale with
the batch? Each distinct convolution of the BoT ResNet-50 at 256x128 (last
stride 1) is timed alone: `privreid_jax.models.conv.conv2d` under jit, forward
plus the gradients of input and kernel (the stem only the kernel's, as in
training), on random float32 NHWC data; with `--torch`, the same convolution in
PyTorch (channels_last, `torch.backends.mkldnn` as installed). Variants run in
alternating rounds (the machine may be shared) and the median step is kept.

Columns: `n` how often the layer occurs in the network; ms per call of each
variant; `ms/img` n * ms / batch summed over the network in the TOTAL row, so a
batch size whose TOTAL ms/img is not lower than the smaller batch's does not
gain from batching. BatchNorm, ReLU, pooling and the head are not included.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from privreid_jax import host_memory  # noqa: E402

host_memory.keep_freed_memory()  # as the trainer (before NumPy / JAX threads start)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from privreid_jax.models import conv  # noqa: E402


# (name, count, H, W, Cin, Cout, k, stride, padding, input gradient)
def resnet50_layers(height: int = 256, width: int = 128) -> list[tuple]:
  """The distinct convolutions of a torchvision ResNet-50 with last stride 1."""
  h, w = height // 2, width // 2
  layers = [("stem 7x7/2", 1, height, width, 3, 64, 7, 2, 3, False)]
  h, w = h // 2, w // 2     # max-pool
  cin = 64
  for stage, (mid, blocks, stride) in enumerate(
      [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 1)], start=1):
    out = mid * 4
    ho, wo = h // stride, w // stride
    # With stride 1 the first block's 3x3 has the later ones' shape: one row for all.
    layers += [
        (f"L{stage} 1x1 in", 1, h, w, cin, mid, 1, 1, 0, True),
        (f"L{stage} 3x3/{stride}", blocks if stride == 1 else 1, h, w, mid, mid, 3, stride,
         1, True),
        (f"L{stage} 1x1 down/{stride}", 1, h, w, cin, out, 1, stride, 0, True),
        (f"L{stage} 1x1 out", blocks, ho, wo, mid, out, 1, 1, 0, True),
        (f"L{stage} 1x1 red", blocks - 1, ho, wo, out, mid, 1, 1, 0, True),
    ]
    if stride != 1:
      layers.append((f"L{stage} 3x3", blocks - 1, ho, wo, mid, mid, 3, 1, 1, True))
    h, w, cin = ho, wo, out
  return layers


def jax_call(layer, batch: int, impl: str):
  _, _, h, w, cin, cout, k, s, p, dx = layer
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, h, w, cin), np.float32))
  kern = jnp.asarray(rng.standard_normal((k, k, cin, cout), np.float32) * 0.05)

  def loss(x, kern):
    y = conv.conv2d(x, kern, strides=s, padding=p, impl=impl)
    return jnp.sum(y * y) * 0.5

  f = jax.jit(jax.grad(loss, argnums=(0, 1) if dx else (1,)))
  jax.block_until_ready(f(x, kern))   # compile

  def call():
    jax.block_until_ready(f(x, kern))
  return call


def torch_call(layer, batch: int):
  import torch  # pylint: disable=import-outside-toplevel
  _, _, h, w, cin, cout, k, s, p, dx = layer
  m = torch.nn.Conv2d(cin, cout, k, s, p, bias=False).to(memory_format=torch.channels_last)
  x = torch.randn(batch, cin, h, w).to(memory_format=torch.channels_last)
  x.requires_grad_(dx)

  def call():
    m.zero_grad(set_to_none=True)
    if x.grad is not None:
      x.grad = None
    y = m(x)
    (0.5 * (y * y).sum()).backward()
  call()
  return call


def _define(fv):
  """The benchmark's flags (absl, snake_case) on `fv`."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("batch", "16,32", "Batch sizes, comma-separated.", flag_values=fv)
  flags.DEFINE_string("impl", "matmul", "conv2d lowerings, comma-separated.", flag_values=fv)
  flags.DEFINE_boolean("torch", False, "Also time PyTorch channels_last.", flag_values=fv)
  flags.DEFINE_integer("steps", 3, "Timed calls per variant and round.", flag_values=fv)
  flags.DEFINE_integer("repeats", 2, "Alternating rounds.", flag_values=fv)
  flags.DEFINE_string("only", "", "Substring of the layer names to keep.", flag_values=fv)
  return fv


def main(argv: list[str] | None = None) -> int:
  """Runs the benchmark; argv without the program name (default sys.argv[1:])."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from privreid_jax import cli  # pylint: disable=import-outside-toplevel
  argv = list(sys.argv[1:] if argv is None else argv)
  args = _define(flags.FlagValues())
  cli.parse_tool_flags(args, ["python experiments/bench_conv.py", *argv], __doc__)
  batches = [int(b) for b in args.batch.split(",")]
  impls = args.impl.split(",")
  layers = [l for l in resnet50_layers() if args.only in l[0]]
  names = [f"jax-{i}" for i in impls] + (["torch"] if args.torch else [])
  if args.torch:
    import torch  # pylint: disable=import-outside-toplevel
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; batches {batches}")
  header = "layer".ljust(20) + " n  " + "".join(
      f"{f'{v} b{b}':>16}" for b in batches for v in names)
  print(header + "   (ms per call)")
  total = {(v, b): 0.0 for v in names for b in batches}
  for layer in layers:
    calls = {}
    for b in batches:
      for i in impls:
        calls[(f"jax-{i}", b)] = jax_call(layer, b, i)
      if args.torch:
        calls[("torch", b)] = torch_call(layer, b)
    times = {key: [] for key in calls}
    order = list(calls)
    for r in range(args.repeats):
      for key in (order if r % 2 == 0 else order[::-1]):
        for _ in range(args.steps):
          t0 = time.perf_counter()
          calls[key]()
          times[key].append(time.perf_counter() - t0)
    line = f"{layer[0]:<20}{layer[1]:>2}  "
    for b in batches:
      for v in names:
        ms = 1e3 * statistics.median(times[(v, b)])
        total[(v, b)] += layer[1] * ms / b
        line += f"{ms:>16.1f}"
    print(line, flush=True)
  print("TOTAL ms/img".ljust(24) + "".join(
      f"{total[(v, b)]:>16.1f}" for b in batches for v in names))
  return 0


if __name__ == "__main__":
  sys.exit(main())
