"""Weight layouts for the parity harness: our ReidModel's Flax trees <-> a reference's
PyTorch state-dict names (experiments/parity.py), and the optimizer-state lookups
that go with them."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where our ReidModel's pieces live in a reference's state dict.

  The backbone's torchvision keys (`layer3.1.conv2.weight`, what
  `pretrained.export_torchvision_resnet` writes) get `backbone_prefix`; with
  `flat_stages` (our PyTorch twin's single `layers` Sequential), `layer{s}.{b}.`
  becomes `layers.{i}.` with i counted over the stages' blocks.
  """
  backbone_prefix: str = ""
  neck: str = "bnneck"             # BatchNorm1d of the BNNeck
  classifier: str = "classifier"   # bias-free Linear
  centers: str = "centers"         # center-loss centers (a name of ours)
  flat_stages: tuple[int, ...] | None = None

  def backbone_key(self, tv_key: str) -> str:
    key = tv_key
    if self.flat_stages is not None and tv_key.startswith("layer"):
      stage_block, rest = tv_key.split(".", 2)[:2], tv_key.split(".", 2)[2]
      s, b = int(stage_block[0][len("layer"):]), int(stage_block[1])
      key = f"layers.{sum(self.flat_stages[:s - 1]) + b}.{rest}"
    return self.backbone_prefix + key

  def torchvision_key(self, key: str) -> str | None:
    """Inverse of `backbone_key`; None for a key outside the backbone."""
    if not key.startswith(self.backbone_prefix):
      return None
    key = key[len(self.backbone_prefix):]
    head = key.split(".", 1)[0]
    if head in (self.neck, self.classifier, self.centers):
      return None
    if self.flat_stages is not None and key.startswith("layers."):
      _, i, rest = key.split(".", 2)
      i = int(i)
      for s, n in enumerate(self.flat_stages, 1):
        if i < n:
          return f"layer{s}.{i}.{rest}"
        i -= n
      raise ValueError(f"{key}: block index beyond the stages {self.flat_stages}")
    return key


def jax_to_named(params: Mapping[str, Any], batch_stats: Mapping[str, Any] | None,
                 layout: Layout, *, with_frozen_bias: bool = True
                 ) -> dict[str, np.ndarray]:
  """A ReidModel's params (and BN stats) as {reference key: torch-layout array}.

  Works on any tree shaped like the params (Adam moments too). The BNNeck's
  bias is frozen at zero in BoT (no parameter of ours): `with_frozen_bias`
  adds it as zeros so the reference's stays checked.
  """
  from privreid_jax.models import pretrained  # pylint: disable=import-outside-toplevel
  stats = dict(batch_stats or {})
  variables = {"params": params, "batch_stats": stats}
  out = {layout.backbone_key(k): v
         for k, v in pretrained.export_torchvision_resnet(variables).items()}
  neck = params["bnneck"]
  out[f"{layout.neck}.weight"] = np.asarray(neck["scale"], np.float32)
  if with_frozen_bias:
    out[f"{layout.neck}.bias"] = np.zeros_like(out[f"{layout.neck}.weight"])
  if "bnneck" in stats:
    out[f"{layout.neck}.running_mean"] = np.asarray(stats["bnneck"]["mean"], np.float32)
    out[f"{layout.neck}.running_var"] = np.asarray(stats["bnneck"]["var"], np.float32)
  if "classifier" in params:
    out[f"{layout.classifier}.weight"] = np.asarray(params["classifier"]["kernel"],
                                                    np.float32).T
  return out


def named_to_jax(named: Mapping[str, np.ndarray], params: Mapping[str, Any],
                 batch_stats: Mapping[str, Any], layout: Layout):
  """Returns (params, batch_stats) of a ReidModel with `named`'s values copied in.

  The backbone goes through `pretrained.load_torchvision_resnet` (which checks
  every key and shape); the BNNeck and classifier are set here.
  """
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from privreid_jax.models import pretrained  # pylint: disable=import-outside-toplevel
  tv = {}
  for key, value in named.items():
    tvk = layout.torchvision_key(key)
    if tvk is not None:
      tv[tvk] = np.asarray(value, np.float32)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "backbone.npz")
    np.savez(path, **tv)
    variables = pretrained.load_torchvision_resnet(
        path, {"params": params, "batch_stats": batch_stats})
  params, stats = dict(variables["params"]), dict(variables["batch_stats"])
  neck = dict(params["bnneck"])
  neck["scale"] = jnp.asarray(named[f"{layout.neck}.weight"], jnp.float32)
  params["bnneck"] = neck
  bias = named.get(f"{layout.neck}.bias")
  if bias is not None and np.any(bias != 0):
    raise ValueError(f"{layout.neck}.bias is not zero: our BNNeck has no bias")
  if "bnneck" in stats:
    stats["bnneck"] = {"mean": jnp.asarray(named[f"{layout.neck}.running_mean"]),
                       "var": jnp.asarray(named[f"{layout.neck}.running_var"])}
  clf = dict(params["classifier"])
  clf["kernel"] = jnp.asarray(np.asarray(named[f"{layout.classifier}.weight"]).T)
  params["classifier"] = clf
  return params, stats


def find_adam_state(opt_state) -> Any:
  """The optax ScaleByAdamState (has `mu`, `nu`, `count`) inside a chain's state."""
  if hasattr(opt_state, "mu") and hasattr(opt_state, "nu"):
    return opt_state
  if isinstance(opt_state, (tuple, list)):
    for sub in opt_state:
      found = find_adam_state(sub)
      if found is not None:
        return found
  return None


def is_bn_stat(key: str) -> bool:
  return key.endswith("running_mean") or key.endswith("running_var")
