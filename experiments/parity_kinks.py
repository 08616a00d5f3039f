"""D1 alone on the same inputs: where each float32 run leaves float64 (anon diagnosis).

  JAX_PLATFORMS=cpu python experiments/parity_kinks.py --reference_dir=/path/to/privacy-reid \
      --seeds 0,1,2,3,4 [--height 256 --width 128 --ngf 64 --ndf 64]

A companion of `experiments/parity.py --reference=anon --grads_only`, whose per-tensor
table showed D1 at the paper's size further from float64 on one side than the other.
Per seed it builds the reference in float64 (its random init and the parity batch, as
parity.py), computes P = G(O) there, and gives D1 of both sides the same pairs,
(O, M) (the real term) and (O, P) (the fake term), cast to float32:

* per layer, how many of the values entering a LeakyReLU (conv0's output and every
  BatchNorm's) have the other sign than in the reference's float64 run: a "kink
  crossed" changes that element's backward slope from 1 to 0.2 (or back), a
  discrete change no tolerance on rounding covers;
* per pass, each D1 gradient tensor's distance from the float64 reference relative
  to its norm, for our float32 run, the reference's float32 run and our float64 run
  (jax x64: the formula check, which should sit at float32 output rounding).

Torch is needed (never a dependency of the package).
"""

from __future__ import annotations

import copy
import os
import sys
from typing import TYPE_CHECKING, Mapping

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:      # run as a script: python experiments/parity_kinks.py
  sys.path.insert(0, _REPO)

# pylint: disable=wrong-import-position
from experiments import parity_anon
from experiments.parity_anon_layout import get_path, named_to_tree, to_torch
from experiments.parity_verdict import sign_flips

if TYPE_CHECKING:
  import jax

PASSES = (("real", True), ("fake", False))


def _torch_d1(net, gan, a, b, is_real: bool):
  """The reference's D1 term on the pair (a, b): {torch key: grad}, loss."""
  net.zero_grad()
  for q in net.parameters():
    q.requires_grad_(True)
  loss = gan(net(_cat(a, b)), is_real)
  loss.backward()
  return {k: q.grad.detach().double().numpy() for k, q in net.named_parameters()}, float(loss)


def _cat(a, b):
  import torch  # pylint: disable=import-outside-toplevel
  return torch.cat((a, b), 1)


def _torch_acts(net, a, b, n_layers: int) -> list[np.ndarray]:
  """The values entering each LeakyReLU (conv0, then every BN), NCHW float64."""
  import torch  # pylint: disable=import-outside-toplevel
  picks = [0] + [3 * k for k in range(1, n_layers + 1)]
  out = {}
  hooks = [net.model[i].register_forward_hook(
      lambda _m, _i, y, i=i: out.__setitem__(i, y.detach().double().numpy().copy()))
           for i in picks]
  with torch.no_grad():
    net(_cat(a, b))
  for h in hooks:
    h.remove()
  return [out[i] for i in picks]


class OurD1:
  """Our PatchDiscriminator with the reference's D1 weights, in `dtype`."""

  def __init__(self, named: Mapping[str, np.ndarray], layout, ndf: int, dtype):
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from privreid_jax.models import patchgan  # pylint: disable=import-outside-toplevel
    self.jax, self.jnp, self.dtype = jax, jnp, dtype
    self.n_layers = layout.d_layers
    self.entries = layout.entries("D1")
    self.disc = patchgan.PatchDiscriminator(ndf=ndf, n_layers=self.n_layers, dtype=dtype)
    x = jnp.zeros((1, 8 << self.n_layers, 8 << self.n_layers, 3), dtype)
    init = self.disc.init(jax.random.PRNGKey(0), x, x, train=False)
    params, stats = named_to_tree(self.entries, named, init["params"], init["batch_stats"],
                                  layout.prefix("D1"))
    self.params = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), params)
    self.stats = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), stats)

  def _in(self, t) -> "jax.Array":
    return self.jnp.asarray(t.numpy().transpose(0, 2, 3, 1), self.dtype)

  def _apply(self, params, a, b, **kw):
    return self.disc.apply({"params": params, "batch_stats": self.stats}, a, b, train=True,
                           mutable=["batch_stats", "intermediates"], **kw)

  def grads(self, a, b, is_real: bool):
    """Our D1 term on the pair: {torch key: grad}, loss."""
    from privreid_jax import losses  # pylint: disable=import-outside-toplevel
    a, b = self._in(a), self._in(b)

    def loss_fn(p):
      logits, _ = self._apply(p, a, b)
      return losses.gan_bce(logits, is_real)

    loss, g = self.jax.value_and_grad(loss_fn)(self.params)
    out = {}
    for key, coll, path in self.entries:
      if coll == "params":
        out[key] = to_torch(np.asarray(get_path(g, path), np.float64))
    return out, float(loss)

  def acts(self, a, b) -> list[np.ndarray]:
    _, upd = self._apply(self.params, self._in(a), self._in(b), capture_intermediates=True)
    inter = upd["intermediates"]
    names = ["conv0"] + [f"conv{k}_bn" for k in range(1, self.n_layers + 1)]
    return [np.asarray(inter[n]["__call__"][0], np.float64).transpose(0, 3, 1, 2)
            for n in names]


def _rel(a, b) -> float:
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def run_seed(args, seed: int) -> dict[str, int]:
  """One seed's tables; returns the kinks crossed per side."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  ref = parity_anon.AnonReference(
      args.reference_dir, batch=args.batch, num_instances=args.num_instances,
      height=args.height, width=args.width, num_classes=args.num_classes, steps_per_epoch=2,
      seed=seed, dtype="float64", ngf=args.ngf, ndf=args.ndf)
  batch = ref.make_batches(1, args.batch, args.num_instances, args.height, args.width,
                           seed=seed, log=lambda *a: None)[0]
  named = ref.initial_weights()
  o = torch.from_numpy(batch.nchw()).double()
  pairs = {"real": torch.from_numpy(batch.targets_nchw()).double()}
  ref.model.train()
  with torch.no_grad():
    pairs["fake"] = ref.model.netG(o)
  gan = ref.criterion["gan"].fn
  d64 = ref.model.netD1
  d32 = copy.deepcopy(d64).float()
  gan32 = copy.deepcopy(gan).float()
  ours32 = OurD1(named, ref.layout, args.ndf, jnp.float32)
  ours64 = OurD1(named, ref.layout, args.ndf, jnp.float64)
  o32 = o.float()
  n = ref.layout.d_layers
  layers = ["conv0"] + [f"conv{k}_bn" for k in range(1, n + 1)]
  kinks = {"ours": 0, "ref": 0}
  print(f"seed {seed}: D1 (ndf {args.ndf}) at {args.height}x{args.width}, batch {args.batch}")
  for name, is_real in PASSES:
    b64 = pairs[name]
    b32 = b64.float()
    floor = _torch_acts(d64, o, b64, n)
    ref_acts = _torch_acts(d32, o32, b32, n)
    our_acts = ours32.acts(o, b64)
    row_o = [sign_flips(x, f) for x, f in zip(our_acts, floor)]
    row_r = [sign_flips(x, f) for x, f in zip(ref_acts, floor)]
    kinks["ours"] += sum(row_o)
    kinks["ref"] += sum(row_r)
    print(f"  {name} pair (O, {'M' if is_real else 'P'}): kinks crossed per layer "
          f"({', '.join(layers)}): ours {row_o}, reference {row_r}")
    g64, _ = _torch_d1(d64, gan, o, b64, is_real)
    g_ref, _ = _torch_d1(d32, gan32, o32, b32, is_real)
    g_ours, _ = ours32.grads(o, b64, is_real)
    g_ours64, _ = ours64.grads(o, b64, is_real)
    print(f"    {'tensor':<16} {'|g64|':>9} {'ours32':>9} {'ref32':>9} {'ours64':>9}")
    for key in sorted(g_ours, key=lambda k: int(k.split(".")[1])):
      f = g64[key]
      print(f"    {key:<16} {np.linalg.norm(f):9.2e} {_rel(g_ours[key], f):9.1e} "
            f"{_rel(g_ref[key], f):9.1e} {_rel(g_ours64[key], f):9.1e}")
  return kinks


def main(argv=None) -> int:
  from absl import flags  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from privreid_jax import cli  # pylint: disable=import-outside-toplevel
  fv = flags.FlagValues()
  flags.DEFINE_string("reference_dir", None, "Local checkout of whuzjw/privacy-reid.",
                      flag_values=fv)
  flags.DEFINE_list("seeds", ["0"], "Seeds (the reference's init and the batch).",
                    flag_values=fv)
  flags.DEFINE_integer("batch", 8, "Batch size, P x K.", flag_values=fv)
  flags.DEFINE_integer("num_instances", 4, "K images per identity.", flag_values=fv)
  flags.DEFINE_integer("height", 256, "Image height.", flag_values=fv)
  flags.DEFINE_integer("width", 128, "Image width.", flag_values=fv)
  flags.DEFINE_integer("num_classes", 751, "C's classifier size.", flag_values=fv)
  flags.DEFINE_integer("ngf", 64, "U-Net width of G (MODEL.NGF).", flag_values=fv)
  flags.DEFINE_integer("ndf", 64, "PatchGAN width of D1 (MODEL.NDF).", flag_values=fv)
  flags.mark_flag_as_required("reference_dir", flag_values=fv)
  argv = list(sys.argv[1:] if argv is None else argv)
  cli.parse_tool_flags(fv, ["python experiments/parity_kinks.py", *argv], __doc__)
  jax.config.update("jax_enable_x64", True)     # our float64 side; float32 stays float32
  total = {"ours": 0, "ref": 0}
  seeds = [int(s) for s in fv.seeds]
  for seed in seeds:
    for side, count in run_seed(fv, seed).items():
      total[side] += count
  print(f"kinks crossed over seeds {fv.seeds} (both passes, every layer): "
        f"ours {total['ours']}, reference {total['ref']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
