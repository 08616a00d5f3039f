"""Load (and export) torchvision-layout ResNet weights into the Flax variable trees.

    variables = model.init(rng, images, train=False)
    variables = load_torchvision_resnet("resnet50.safetensors", variables)

Supported files: `.safetensors` (read and written with the `safetensors` package;
bfloat16 tensors are read as float32), `.npz` (`np.savez(path, **state_dict)`), and
`.pth` / `.pt` when torch is importable. A checkpoint may wrap the state dict under
"state_dict" or "model" and prefix keys with "module."; `fc.*` and
`*.num_batches_tracked` are ignored.

Only the ResNet subtree is replaced: `params["backbone"]` / `batch_stats["backbone"]`
for a `ReidModel`, or the whole trees for a bare `ResNet`. Non-local blocks (`nl*`),
pooling, BNNeck and classifier keep their initial values. Key mapping (resnet.py):
module names swap "_" for "."; conv `kernel` HWIO <-> `weight` OIHW; BN `scale` <->
`weight`, `bias` <-> `bias`, batch_stats `mean` / `var` <-> `running_mean` / `running_var`.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any, Mapping

import jax.numpy as jnp
import ml_dtypes  # a jax dependency; lets numpy (and safetensors) read bfloat16
import numpy as np
import safetensors
import safetensors.numpy

from privreid_jax import errors

_SHOW = 5  # keys listed in error messages


class PretrainedError(errors.UserError, ValueError):
  """A weights file that cannot be read or does not fit the model (a user error:
  the command-line tools print its one line, without a traceback)."""


# --------------------------------------------------------------------------- files


def _one_line(e: Exception) -> str:
  return " ".join(str(e).split()) or type(e).__name__


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """Reads a .safetensors file with the `safetensors` package; bfloat16 -> float32."""
  try:
    tensors = safetensors.numpy.load_file(path)
  except (safetensors.SafetensorError, TypeError, ValueError) as e:
    # TypeError: a dtype numpy does not know (bfloat16 comes from ml_dtypes, imported).
    raise PretrainedError(f"{path}: not a readable safetensors file ({_one_line(e)})"
                          ) from None
  return {k: v.astype(np.float32) if v.dtype == ml_dtypes.bfloat16 else v
          for k, v in tensors.items()}


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray]) -> None:
  """Writes numpy (or JAX) arrays as a .safetensors file with the `safetensors` package."""
  # safetensors.numpy copies from the array's pointer: make every array C-contiguous
  # (np.asarray, not np.ascontiguousarray, which turns a 0-d array into shape (1,)).
  arrays = {k: np.asarray(v, order="C") for k, v in tensors.items()}
  try:
    safetensors.numpy.save_file(arrays, path)
  except (safetensors.SafetensorError, TypeError, ValueError) as e:
    raise PretrainedError(f"{path}: cannot write safetensors ({_one_line(e)})") from None


def _read_torch(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise PretrainedError(
        f"{path}: reading .pth/.pt needs torch, which is not installed; convert the "
        "file to .safetensors or .npz elsewhere (e.g. np.savez(out, **{k: "
        "v.numpy() for k, v in state_dict.items()}))") from None
  import pickle  # pylint: disable=import-outside-toplevel
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError:
    # torch's own message is a paragraph on `weights_only`; say what it means here.
    raise PretrainedError(
        f"{path}: not a PyTorch weights file, or one holding more than tensors and "
        "plain containers (read with torch.load(weights_only=True); save its "
        "state_dict() alone)") from None
  except (EOFError, RuntimeError, ValueError, OSError) as e:
    # EOFError: an empty file; RuntimeError: a damaged zip archive (a copy cut short).
    raise PretrainedError(f"{path}: not a readable PyTorch file "
                          f"({_one_line(e)[:160]})") from None
  for wrapper in ("state_dict", "model"):
    if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
      obj = obj[wrapper]
  if not isinstance(obj, dict):
    raise PretrainedError(f"{path}: expected a state dict, got {type(obj).__name__}")
  return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
          for k, v in obj.items() if hasattr(v, "numpy")}


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a torchvision-style state dict from .safetensors / .npz / .pth / .pt."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: pretrained weights file not found")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".safetensors":
    sd = read_safetensors(path)
  elif ext == ".npz":
    try:
      with np.load(path, allow_pickle=False) as z:
        sd = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
      raise PretrainedError(f"{path}: not a readable .npz file ({_one_line(e)})") from None
  elif ext in (".pth", ".pt"):
    sd = _read_torch(path)
  else:
    raise PretrainedError(f"{path}: unsupported weights format {ext!r} (expected "
                          ".safetensors, .npz, .pth or .pt)")
  return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


# ------------------------------------------------------------------------- mapping


def _backbone(variables: Mapping[str, Any]) -> tuple[Mapping, Mapping, bool]:
  params = variables.get("params", {})
  stats = variables.get("batch_stats", {})
  if "backbone" in params:
    return params["backbone"], stats.get("backbone", {}), True
  if "conv1" in params:
    return params, stats, False
  raise PretrainedError("variables hold no ResNet: expected params['backbone'] "
                        "(ReidModel) or params['conv1'] (bare ResNet)")


_LEAVES = {
    "params": {"kernel": "weight", "scale": "weight", "bias": "bias"},
    "batch_stats": {"mean": "running_mean", "var": "running_var"},
}


def _key_map(params: Mapping, stats: Mapping) -> dict[str, tuple[str, tuple[str, ...]]]:
  """torch key -> (collection, path inside the backbone tree); skips `nl*` blocks."""
  out = {}
  for coll, tree in (("params", params), ("batch_stats", stats)):
    for path in _flat_paths(tree):
      if path[0].startswith("nl"):
        continue  # non-local blocks: no torchvision counterpart
      leaf = _LEAVES[coll].get(path[-1])
      if leaf is None:
        raise PretrainedError(f"unexpected backbone {coll} leaf {'/'.join(path)}")
      prefix = ".".join(p.replace("_", ".") for p in path[:-1])
      out[f"{prefix}.{leaf}"] = (coll, path)
  return out


def _flat_paths(tree: Mapping, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
  paths = []
  for name, sub in tree.items():
    if isinstance(sub, Mapping):
      paths += _flat_paths(sub, path + (name,))
    else:
      paths.append(path + (name,))
  return paths


def _get(tree: Mapping, path: tuple[str, ...]):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree: Mapping, path: tuple[str, ...], value) -> dict:
  """Copy of `tree` (nested dicts) with `path` replaced by `value`."""
  tree = dict(tree)
  tree[path[0]] = value if len(path) == 1 else _set(tree[path[0]], path[1:], value)
  return tree


def _to_torch(value: np.ndarray) -> np.ndarray:
  return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value  # HWIO -> OIHW


def _from_torch(value: np.ndarray) -> np.ndarray:
  return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value  # OIHW -> HWIO


def _listing(keys, n: int = _SHOW) -> str:
  keys = sorted(keys)
  more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
  return ", ".join(keys[:n]) + more


def load_torchvision_resnet(path: str, variables: Mapping[str, Any]) -> dict[str, Any]:
  """Returns `variables` with the ResNet subtree replaced by the file's weights.

  Raises PretrainedError (one line, naming the file and the first few keys) when
  keys are missing, unexpected or mis-shaped.
  """
  sd = {k: v for k, v in read_state_dict(path).items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
  params, stats, nested = _backbone(variables)
  kmap = _key_map(params, stats)
  missing = set(kmap) - set(sd)
  unexpected = set(sd) - set(kmap)
  trees = {"params": params, "batch_stats": stats}
  misshaped = []
  for key in sorted(set(kmap) & set(sd)):
    coll, p = kmap[key]
    shape = tuple(np.shape(_get(trees[coll], p)))
    want = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape
    if tuple(sd[key].shape) != want:
      misshaped.append(f"{key} file {tuple(sd[key].shape)} vs model {want}")
  if missing or unexpected or misshaped:
    parts = []
    if missing:
      parts.append(f"missing keys: {_listing(missing)}")
    if unexpected:
      parts.append(f"unexpected keys: {_listing(unexpected)}")
    if misshaped:
      parts.append(f"mis-shaped keys: {_listing(misshaped)}")
    raise PretrainedError(f"{path}: weights do not fit the ResNet ({'; '.join(parts)})")
  for key, (coll, p) in kmap.items():
    old = _get(trees[coll], p)
    trees[coll] = _set(trees[coll], p, jnp.asarray(_from_torch(sd[key]), dtype=old.dtype))
  out = dict(variables)
  if nested:
    out["params"] = _set(variables["params"], ("backbone",), trees["params"])
    if trees["batch_stats"]:
      out["batch_stats"] = _set(variables["batch_stats"], ("backbone",),
                                trees["batch_stats"])
  else:
    out["params"], out["batch_stats"] = trees["params"], trees["batch_stats"]
  return out


def export_torchvision_resnet(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The ResNet subtree as a torchvision state dict (float32 numpy, OIHW convs).

  Without `fc.*` and `num_batches_tracked` (torch fills the latter in on load).
  """
  params, stats, _ = _backbone(variables)
  trees = {"params": params, "batch_stats": stats}
  return {key: _to_torch(np.asarray(_get(trees[coll], p), np.float32))
          for key, (coll, p) in sorted(_key_map(params, stats).items())}
