"""Export a trained run: `jax.export` artifacts and a torchvision state dict.

  python -m privreid_jax.export --checkpoint=WORKDIR --output=DIR [--what=reid,anonymizer,torchvision]

Writes into DIR (created):

  reid.jax_export          the Re-ID model on raw images: uint8 [b, h, w, 3] -> float32
                           [b, D] retrieval features (as `Model.embed`, not L2-normalised)
  anonymizer.jax_export    method A's G (or Base mode's desensitization): uint8
                           [b, h, w, 3] -> uint8 [b, h, w, 3]
  recovery.jax_export      method A's G_R (only with --what=recovery): the same shapes
  backbone.safetensors     C's ResNet backbone as a torchvision state dict (OIHW convs,
                           BN running stats; no fc); torchvision's resnet(...)
                           load_state_dict(strict=False) takes it (fc missing)
  export.json              what each file holds: shapes, image size, mean/std, step

--what defaults to every artifact the run has (reid, torchvision, and for
method A anonymizer). The .jax_export files are serialized StableHLO with the
weights inside, polymorphic in the batch size b; h and w are the model's
(export.json): resize images to h x w (PIL bilinear, as training) first, the
normalisation is inside. They reload and run with JAX alone:

    import jax, numpy as np
    with open("DIR/reid.jax_export", "rb") as f:
      reid = jax.export.deserialize(bytearray(f.read()))
    features = np.asarray(reid.call(images))     # images: uint8 [b, h, w, 3]

An artifact runs on the platforms it was exported for (--platforms, default
this machine's backend, e.g. cpu; `cpu,cuda` lowers for both). Serializing
needs the `flatbuffers` package.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from privreid_jax import api

SUFFIX = ".jax_export"
WHAT = ("reid", "anonymizer", "recovery", "torchvision")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")     # what jax.export lowers for


def _normaliser(model: api.Model):
  """uint8 -> normalised float32, the arithmetic of `transforms.normalise`."""
  import jax.numpy as jnp
  mean = jnp.asarray(model.mean, jnp.float32)
  inv_std = jnp.asarray(np.float32(1.0) / model.std, jnp.float32)
  return lambda x: (x.astype(jnp.float32) * np.float32(1.0 / 255.0) - mean) * inv_std


def reid_function(model: api.Model, kind: str = "raw"):
  """uint8 [b, h, w, 3] at the model's size -> float32 [b, D] features (weights inside)."""
  norm = _normaliser(model)
  state = model.state
  return lambda images: model.method.embed(state, norm(images), kind)


def image_function(model: api.Model, net: str = "anonymize"):
  """uint8 [b, h, w, 3] -> uint8 [b, h, w, 3] through method A's G ("anonymize") or
  G_R ("recover"), rounded as `Model.anonymize` rounds."""
  import jax.numpy as jnp
  from privreid_jax.ops import normalize
  model._image_fn(net)          # pylint: disable=protected-access  (one-line errors)
  norm = _normaliser(model)
  state, fn = model.state, getattr(model.method, net)
  mean, std = tuple(model.mean.tolist()), tuple(model.std.tolist())

  def f(images):
    y = normalize.to_unit(fn(state, norm(images)), mean, std)
    return jnp.round(y * 255.0).astype(jnp.uint8)
  return f


def export_function(fn, height: int, width: int, platforms: Sequence[str] | None = None):
  """`jax.export` of `fn` on uint8 [b, height, width, 3], b symbolic."""
  import jax
  spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"b, {height}, {width}, 3"),
                              np.uint8)
  return jax.export.export(jax.jit(fn), platforms=platforms or None)(spec)


def save_exported(exported, path: str) -> None:
  try:
    blob = exported.serialize()
  except ImportError as e:     # jax.export's serializer needs flatbuffers
    raise ValueError(f"cannot serialize {os.path.basename(path)}: {api.one_line(e)} "
                     "(pip install flatbuffers)") from None
  with open(path + ".tmp", "wb") as f:
    f.write(blob)
  os.replace(path + ".tmp", path)


def load_exported(path: str):
  """A saved artifact back as a `jax.export.Exported` (call it with `.call(images)`)."""
  import jax
  with open(path, "rb") as f:
    return jax.export.deserialize(bytearray(f.read()))


def torchvision_state_dict(model: api.Model) -> dict[str, np.ndarray]:
  """C's ResNet backbone as a torchvision state dict (`pretrained.export_torchvision_resnet`)."""
  from privreid_jax.models import pretrained
  params, stats = model.state.params, model.state.batch_stats
  if "reid" not in params or "backbone" not in params["reid"]:
    raise ValueError(f"a {model.config.method!r} run has no Re-ID backbone params['reid']")
  return pretrained.export_torchvision_resnet(
      {"params": params["reid"], "batch_stats": stats.get("reid", {})})


def default_what(model: api.Model) -> list[str]:
  return ["reid", "torchvision"] + (["anonymizer"] if model.is_anonymizer else [])


def export(model: api.Model, output: str, what: Sequence[str] | None = None,
           platforms: Sequence[str] | None = None) -> dict:
  """Writes the artifacts `what` (default: `default_what`) into `output`; returns
  the manifest written to export.json."""
  from privreid_jax.models import pretrained
  what = list(what or default_what(model))
  unknown = [w for w in what if w not in WHAT]
  if unknown:
    raise ValueError(f"--what={unknown[0]}: expected some of {', '.join(WHAT)}")
  bad = [p for p in platforms or () if p not in PLATFORMS]
  if bad:      # jax.export lowers for any name: an artifact no machine could run
    raise ValueError(f"--platforms={bad[0]}: expected some of {', '.join(PLATFORMS)}")
  if ("anonymizer" in what or "recovery" in what) and not model.is_anonymizer:
    raise ValueError(f"--what={'anonymizer' if 'anonymizer' in what else 'recovery'}: a "
                     f"{model.config.method!r} run has no anonymizer (method A only)")
  os.makedirs(output, exist_ok=True)
  h, w = model.height, model.width
  image = f"uint8[b, {h}, {w}, 3]"
  files = {}
  for name in what:
    if name == "torchvision":
      sd = torchvision_state_dict(model)
      pretrained.write_safetensors(os.path.join(output, "backbone.safetensors"), sd)
      files[name] = {"file": "backbone.safetensors", "tensors": len(sd),
                     "backbone": str(model.config.model.backbone),
                     "width": int(model.config.model.width)}
      continue
    if name == "reid":
      fn, out = reid_function(model), f"float32[b, {model.feature_dim}]"
    else:
      fn, out = image_function(model, "anonymize" if name == "anonymizer" else "recover"), image
    exported = export_function(fn, h, w, platforms)
    save_exported(exported, os.path.join(output, name + SUFFIX))
    files[name] = {"file": name + SUFFIX, "input": image, "output": out,
                   "platforms": list(exported.platforms)}
  manifest = {"checkpoint": model.path, "step": model.step,
              "method": str(model.config.method), "height": h, "width": w,
              "mean": list(model.transform.mean), "std": list(model.transform.std),
              "resize": "PIL bilinear to height x width before calling", "files": files}
  with open(os.path.join(output, "export.json"), "w") as f:
    json.dump(manifest, f, indent=2)
    f.write("\n")
  return manifest


def _define(fv):
  from absl import flags
  flags.DEFINE_string("checkpoint", None, "A run's workdir (or its checkpoints/ folder).",
                      flag_values=fv)
  flags.DEFINE_string("output", None, "Folder to write the artifacts to (created).",
                      flag_values=fv)
  flags.DEFINE_list("what", [], f"Artifacts: some of {','.join(WHAT)} (default: reid, "
                    "torchvision, and anonymizer for method A).", flag_values=fv)
  flags.DEFINE_list("platforms", [], f"Platforms to lower for (some of "
                    f"{','.join(PLATFORMS)}; default: this machine's).", flag_values=fv)
  for name in ("checkpoint", "output"):
    flags.mark_flag_as_required(name, flag_values=fv)
  return fv


def main(argv=None) -> None:
  from absl import flags
  from privreid_jax import cli
  fv = _define(flags.FlagValues())
  api.parse_flags(fv, argv, __doc__)
  problem = cli.output_folder_error("output", fv.output)
  if problem:
    api.fail(problem)
  model = api.load_for_cli(fv.checkpoint)
  try:
    manifest = export(model, fv.output, fv.what, fv.platforms)
  except (FileNotFoundError, ValueError, OSError) as e:
    api.fail(api.one_line(e))
  for name, entry in manifest["files"].items():
    shapes = (f"{entry['input']} -> {entry['output']}" if "input" in entry
              else f"{entry['tensors']} tensors")
    print(f"{name}: {os.path.join(fv.output, entry['file'])} ({shapes})")


if __name__ == "__main__":
  main()
