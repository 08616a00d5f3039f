"""Weight layouts of method A's parity harness (experiments/parity_anon.py): our Flax
trees of G, G_R, D1, D2 and the AGW C <-> the names of whuzjw/privacy-reid's
PrivacyModel state dict.

An entry is (torch key, collection, path in our network's tree). Conv kernels:
torch (out, in, kh, kw) and ConvTranspose (in, out, kh, kw) are both the flax
kernel transposed by (3, 2, 0, 1) (see models/unet.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from experiments.parity_layout import Layout, jax_to_named, named_to_jax

NETWORKS = ("G", "G_R", "D1", "D2")
AGW_STAGES = (3, 4, 6, 3)

Entry = tuple[str, str, tuple[str, ...]]


def _bn_entries(key: str, name: Sequence[str]) -> list[Entry]:
  name = tuple(name)
  return [(f"{key}.weight", "params", name + ("scale",)),
          (f"{key}.bias", "params", name + ("bias",)),
          (f"{key}.running_mean", "batch_stats", name + ("mean",)),
          (f"{key}.running_var", "batch_stats", name + ("var",))]


def unet_entries(num_downs: int, prefix: str = "model.") -> list[Entry]:
  """pix2pix UnetGenerator keys for our UNetGenerator(num_downs).

  Block i (0 = outermost) has its Sequential at `prefix + "model."`, then
  "1.model." (the submodule follows the outermost block's single down conv),
  then "3.model." per further level (after LeakyReLU, conv, BN): `prefix` is
  "model." for the reference's UnetGenerator, "" for the bare outermost block
  of experiments/torch_anon_reference.py.
  """
  n = int(num_downs)
  if n < 2:
    raise ValueError(f"unet_entries: num_downs={n}, expected >= 2")
  out: list[Entry] = []
  for i in range(n):
    bp = prefix + "model." + ("1.model." if i else "") + "3.model." * max(i - 1, 0)
    if i == 0:
      out += [(f"{bp}0.weight", "params", ("down0", "kernel")),
              (f"{bp}3.weight", "params", ("up0", "kernel")),
              (f"{bp}3.bias", "params", ("up0", "bias"))]
    elif i == n - 1:
      out += [(f"{bp}1.weight", "params", (f"down{i}", "kernel")),
              (f"{bp}3.weight", "params", (f"up{i}", "kernel"))]
      out += _bn_entries(f"{bp}4", (f"up{i}_bn",))
    else:
      out += [(f"{bp}1.weight", "params", (f"down{i}", "kernel"))]
      out += _bn_entries(f"{bp}2", (f"down{i}_bn",))
      out += [(f"{bp}5.weight", "params", (f"up{i}", "kernel"))]
      out += _bn_entries(f"{bp}6", (f"up{i}_bn",))
  return out


def patchgan_entries(n_layers: int, prefix: str = "model.") -> list[Entry]:
  """pix2pix NLayerDiscriminator keys (its `model` Sequential) for our PatchDiscriminator."""
  n = int(n_layers)
  out: list[Entry] = [(f"{prefix}0.weight", "params", ("conv0", "kernel")),
                      (f"{prefix}0.bias", "params", ("conv0", "bias"))]
  for k in range(1, n + 1):
    out.append((f"{prefix}{3 * k - 1}.weight", "params", (f"conv{k}", "kernel")))
    out += _bn_entries(f"{prefix}{3 * k}", (f"conv{k}_bn",))
  last = 3 * n + 2
  out += [(f"{prefix}{last}.weight", "params", (f"conv{n + 1}", "kernel")),
          (f"{prefix}{last}.bias", "params", (f"conv{n + 1}", "bias"))]
  return out


def agw_extra_entries(base_prefix: str = "base.", pool_key: str = "global_pool.p",
                      non_local_layers: Sequence[int] = (0, 2, 3, 0),
                      stages: Sequence[int] = AGW_STAGES) -> list[Entry]:
  """AGW's pieces outside a torchvision ResNet: the non-local blocks and GeM's p.

  The reference's `ResNetNL` keeps stage s's blocks in `NL_{s}` (a ModuleList)
  after that stage's last len(NL_s) blocks; ours are `backbone/nl{s}_{b}`.
  """
  from privreid_jax.models import resnet  # pylint: disable=import-outside-toplevel
  out: list[Entry] = []
  for s, (blocks, count) in enumerate(zip(stages, non_local_layers), 1):
    for j, b in enumerate(resnet.non_local_indices(blocks, count) if count else ()):
      tk, ours = f"{base_prefix}NL_{s}.{j}", ("backbone", f"nl{s}_{b}")
      for sub, mine in (("g", "g"), ("theta", "theta"), ("phi", "phi"), ("W.0", "W_0")):
        out += [(f"{tk}.{sub}.weight", "params", ours + (mine, "kernel")),
                (f"{tk}.{sub}.bias", "params", ours + (mine, "bias"))]
      out += _bn_entries(f"{tk}.W.1", ours + ("W_1",))
  if pool_key:
    out.append((pool_key, "params", ("pool", "p")))
  return out


def get_path(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def set_path(tree, path, value):
  tree = dict(tree)
  tree[path[0]] = value if len(path) == 1 else set_path(tree[path[0]], path[1:], value)
  return tree


def to_torch(v) -> np.ndarray:
  v = np.asarray(v)
  return v.transpose(3, 2, 0, 1) if v.ndim == 4 else v


def from_torch(v) -> np.ndarray:
  v = np.asarray(v)
  return v.transpose(2, 3, 1, 0) if v.ndim == 4 else v


def tree_to_named(entries: Sequence[Entry], params, stats=None, prefix: str = ""
                  ) -> dict[str, np.ndarray]:
  """{prefix + torch key: torch-layout float32 array}; `stats` None skips BN buffers
  (so a params-shaped tree such as Adam's moments works too)."""
  out = {}
  trees = {"params": params, "batch_stats": stats}
  for key, coll, path in entries:
    if trees[coll] is None:
      continue
    out[prefix + key] = np.ascontiguousarray(to_torch(np.asarray(get_path(trees[coll], path),
                                                                 np.float32)))
  return out


def named_to_tree(entries: Sequence[Entry], named: Mapping[str, np.ndarray], params,
                  stats, prefix: str = "", strict_stats: bool = True):
  """(params, stats) with every entry copied from `named`, shapes checked.

  BN buffers missing from `named` keep their values unless `strict_stats`."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  trees = {"params": params, "batch_stats": stats}
  for key, coll, path in entries:
    full = prefix + key
    if full not in named:
      if coll == "batch_stats" and not strict_stats:
        continue
      raise KeyError(f"{full}: missing from the reference's weights")
    old = get_path(trees[coll], path)
    value = from_torch(named[full])
    if tuple(value.shape) != tuple(np.shape(old)):
      raise ValueError(f"{full}: reference {tuple(np.shape(named[full]))} does not fit "
                       f"ours {tuple(np.shape(old))} ({'/'.join(path)})")
    trees[coll] = set_path(trees[coll], path, jnp.asarray(value, jnp.float32))
  return trees["params"], trees["batch_stats"]


@dataclasses.dataclass(frozen=True)
class AnonLayout:
  """Where method A's networks live in the reference's PrivacyModel state dict."""
  num_downs: int
  d_layers: int = 3
  g: str = "netG."
  g_r: str = "netG_R."
  d1: str = "netD1."
  d2: str = "netD2."
  c: str = "netC."
  centers: str = "centers"
  unet_prefix: str = "model."       # the reference's UnetGenerator wrapper
  patchgan_prefix: str = "model."

  @property
  def reid(self) -> Layout:
    return Layout(backbone_prefix=self.c + "base.", neck=self.c + "bottleneck",
                  classifier=self.c + "classifier", centers=self.centers)

  def prefix(self, net: str) -> str:
    return {"G": self.g, "G_R": self.g_r, "D1": self.d1, "D2": self.d2}[net]

  def entries(self, net: str) -> list[Entry]:
    if net in ("G", "G_R"):
      return unet_entries(self.num_downs, self.unet_prefix)
    if net in ("D1", "D2"):
      return patchgan_entries(self.d_layers, self.patchgan_prefix)
    raise KeyError(net)

  @property
  def c_extra(self) -> list[Entry]:
    return agw_extra_entries("base.", "global_pool.p")


def reid_to_named(params, stats, layout: AnonLayout, *, with_frozen_bias: bool = True
                  ) -> dict[str, np.ndarray]:
  """Our AGW C (ReidModel params / BN stats) in the reference's names."""
  out = jax_to_named(params, stats, layout.reid, with_frozen_bias=with_frozen_bias)
  out.update(tree_to_named(layout.c_extra, params, stats, layout.c))
  return out


def named_to_reid(named: Mapping[str, np.ndarray], params, stats, layout: AnonLayout):
  extra_keys = {layout.c + k for k, _, _ in layout.c_extra}
  plain = {k: v for k, v in named.items() if k not in extra_keys}
  params, stats = named_to_jax(plain, params, stats, layout.reid)
  return named_to_tree(layout.c_extra, named, params, stats, layout.c,
                       strict_stats=bool(stats))


def anon_to_named(params: Mapping[str, Any], stats: Mapping[str, Any] | None,
                  layout: AnonLayout, *, reid_name: str = "reid",
                  with_frozen_bias: bool = True) -> dict[str, np.ndarray]:
  """All of method A's networks (params-shaped trees, e.g. Adam moments, with
  stats None) as {reference key: torch-layout array}."""
  out = {}
  for net in NETWORKS:
    if net in params:
      out.update(tree_to_named(layout.entries(net), params[net],
                               None if stats is None else stats[net], layout.prefix(net)))
  out.update(reid_to_named(params[reid_name], None if stats is None else stats[reid_name],
                           layout, with_frozen_bias=with_frozen_bias))
  centers = f"{reid_name}_centers"
  if centers in params:
    out[layout.centers] = np.asarray(params[centers], np.float32)
  return out


def named_to_anon(named: Mapping[str, np.ndarray], params: Mapping[str, Any],
                  stats: Mapping[str, Any], layout: AnonLayout, *, reid_name: str = "reid"):
  """(params, stats) of method A with every network copied from `named`."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  params, stats = dict(params), dict(stats)
  for net in NETWORKS:
    if net in params:
      params[net], stats[net] = named_to_tree(layout.entries(net), named, params[net],
                                              stats[net], layout.prefix(net))
  params[reid_name], stats[reid_name] = named_to_reid(named, params[reid_name],
                                                      stats[reid_name], layout)
  centers = f"{reid_name}_centers"
  if centers in params:
    c = np.asarray(named[layout.centers], np.float32)
    if c.shape != tuple(params[centers].shape):
      raise ValueError(f"centers: reference {c.shape} vs ours {params[centers].shape}")
    params[centers] = jnp.asarray(c)
  return params, stats
