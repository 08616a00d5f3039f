"""Re-ID features of a folder of images with a trained run.

  python -m privreid_jax.extract --checkpoint=WORKDIR --input=IMAGES --output=feats.npz [--kind=raw]
  python -m privreid_jax.extract ... --epsilon=100 [--delta=1e-5]   # a DP release of the features

Loads the latest checkpoint of WORKDIR (any method), embeds every image under
--input (recursively, sorted; resized and normalised as training's
evaluation) and writes one .npz file:

  features  float32 [N, D]   the retrieval feature (post-BN, not L2-normalised)
  names     str [N]          paths relative to --input
  pids      int32 [N]        Market-style names (`0001_c2s1_...`): the person id, else -1
  camids    int32 [N]        ... the 0-based camera (as the datasets' camids), else -1
  parsed    bool [N]         whether the name parsed (a Market pid may itself be -1)
  skipped   str [K]          files that could not be read as images
  kind, step, checkpoint     what was embedded with what

--kind=anon (method A) embeds G(O) instead of the raw image. Files that cannot
be read as images are skipped with a warning and counted. An existing --output
is refused unless --overwrite is given.

--epsilon releases the features through the Gaussian mechanism instead
(docs/method_b.md): each feature is L2-normalised and released by OpenDP's
Gaussian mechanism (privacy/dp_exact.py: an exact discrete-Gaussian sampler on a
fine grid, which, unlike the float32 noise of method B's evaluation, meets its
guarantee in floating point), calibrated for per-image (epsilon, delta)-DP under
replace-one adjacency (L2 sensitivity 2). The clean features are
not written, only the released ones (`features`; match them by cosine
similarity), in a random order (sorted file names would put one person's rows
together); the names, pids and camids stay in the file in clear, aligned with
the rows (the guarantee does not cover them: drop those keys before
publishing), with
`epsilon`, `delta`, `sigma` (the mechanism's scale), `k_max` (the most images
of one parsed pid), `epsilon_per_identity` (the k_max-fold composition; the
per-image epsilon when no name parsed), `mechanism` and `guarantee` (what the
release does and does not protect, also printed). ~0.02-0.04 s per 2048-d
feature. A --delta not below 1/N (N images released) is warned about: a
guarantee with such a delta is met even by releasing one image in the clear.
OpenDP marks its Gaussian constructor "contrib" (its proof is written, not yet
signed off by OpenDP's vetting).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from privreid_jax import api


@dataclasses.dataclass
class Features:
  features: np.ndarray
  names: list[str]
  pids: np.ndarray
  camids: np.ndarray
  parsed: np.ndarray
  skipped: list[str]


def list_files(folder: str) -> list[str]:
  """Relative paths of the non-hidden files under `folder`, sorted."""
  out = []
  for root, dirs, names in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    out += [os.path.relpath(os.path.join(root, n), folder) for n in names
            if not n.startswith(".")]
  return sorted(out)


def market_ids(name: str) -> tuple[int, int, bool]:
  """(pid, 0-based camid, parsed) of a file name in the Market pattern."""
  from privreid_jax.data import datasets
  from privreid_jax.data.records import DatasetError
  try:
    pid, cam = datasets.parse_market_name(name)
  except DatasetError:
    return -1, -1, False
  return pid, cam - 1, True


def check_paths(input_dir: str, output: str, overwrite: bool = True) -> None:
  """One-line errors for a missing input folder, an output that is a folder or
  one under a file, and an existing output unless `overwrite`."""
  from privreid_jax import cli
  if not os.path.isdir(input_dir):
    raise FileNotFoundError(f"--input={input_dir}: no such folder")
  if os.path.isdir(output) or output.endswith(os.sep):
    raise ValueError(f"--output={output} is a folder; give a file name such as "
                     f"{os.path.join(output, 'features.npz')}")
  if not overwrite and os.path.lexists(output):
    raise FileExistsError(f"--output={output} exists; pass --overwrite to replace it, or "
                          "pick another name")
  problem = cli.output_parent_error("output", output)
  if problem:
    raise ValueError(problem)


def extract_folder(model: api.Model, input_dir: str, kind: str = "raw",
                   batch_size: int = api.DEFAULT_BATCH, progress: bool = True) -> Features:
  """Features of every readable image under `input_dir` (see the module doc)."""
  from tqdm import tqdm
  from privreid_jax.data.records import DatasetError
  if not os.path.isdir(input_dir):
    raise FileNotFoundError(f"--input={input_dir}: no such folder")
  if kind not in model.kinds:
    base = getattr(model.method, "mode", None) == "base"
    raise ValueError(f"--kind={kind}: a {model.config.method!r} run embeds "
                     f"{' | '.join(model.kinds)}"
                     + (" (Base mode, config.anon.mode='base': no G_R)" if base else ""))
  if batch_size < 1:
    raise ValueError(f"--batch_size={batch_size}: must be >= 1")
  files = list_files(input_dir)
  if not files:
    raise FileNotFoundError(f"--input={input_dir}: no files")
  names, feats, skipped = [], [], []
  with tqdm(total=len(files), unit="img", disable=not progress,
            dynamic_ncols=True) as bar:
    for i in range(0, len(files), batch_size):
      images = []
      for name in files[i:i + batch_size]:
        try:
          images.append(api.read_image(os.path.join(input_dir, name), name))
          names.append(name)
        except DatasetError as e:
          api.warn(f"skipping {name}: {e}")
          skipped.append(name)
      if images:
        feats.append(model.embed(images, kind, batch_size=batch_size, fixed_batch=True))
      bar.update(len(files[i:i + batch_size]))
  if not names:
    raise ValueError(f"--input={input_dir}: none of its {len(files)} files is a "
                     "readable image")
  ids = [market_ids(n) for n in names]
  return Features(np.concatenate(feats), names,
                  np.array([p for p, _, _ in ids], np.int32),
                  np.array([c for _, c, _ in ids], np.int32),
                  np.array([ok for _, _, ok in ids], bool), skipped)


def release(out: Features, epsilon: float, delta: float,
            rng: np.random.Generator | None = None) -> tuple[Features, dict]:
  """`out` with its features released through OpenDP's Gaussian mechanism
  (privacy/dp_exact.py; module doc), its rows in a random order (`rng`; default
  seeded from os.urandom), and what to store about the release."""
  from privreid_jax.privacy import dp, dp_exact
  if rng is None:
    rng = np.random.default_rng(int.from_bytes(os.urandom(16), "little"))
  order = rng.permutation(len(out.names))      # sorted names group a person's rows
  out = dataclasses.replace(out, features=out.features[order],
                            names=[out.names[i] for i in order], pids=out.pids[order],
                            camids=out.camids[order], parsed=out.parsed[order])
  released, scale = dp_exact.release(out.features, epsilon, delta)
  dim = out.features.shape[1]
  k_max, _ = dp.gallery_k(np.where(out.parsed, out.pids, -1))
  info = {"epsilon": float(epsilon), "delta": float(delta), "sigma": float(scale),
          "k_max": int(k_max),
          "epsilon_per_identity": dp_exact.epsilon_of(scale, delta, int(k_max), dim),
          "mechanism": f"opendp {dp_exact.opendp_version()} make_gaussian, grid "
                       f"2^{dp_exact.GRID_K}",
          "guarantee": dp_exact.describe(epsilon, delta, scale, int(k_max), dim)}
  return dataclasses.replace(out, features=released.astype(np.float32)), info


def save(path: str, out: Features, *, kind: str, step: int, checkpoint: str,
         dp_release: dict | None = None) -> None:
  """Writes `out` as the .npz of the module doc (exactly at `path`, atomically);
  `dp_release` (from `release`) adds the release's fields."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  extra = {k: np.array(v) for k, v in (dp_release or {}).items()}
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    np.savez(f, features=out.features.astype(np.float32), names=np.array(out.names, str),
             pids=out.pids, camids=out.camids, parsed=out.parsed,
             skipped=np.array(out.skipped, str).reshape(-1), kind=np.array(kind),
             step=np.array(step, np.int64), checkpoint=np.array(checkpoint), **extra)
  os.replace(tmp, path)


def _define(fv):
  from absl import flags
  flags.DEFINE_string("checkpoint", None, "A run's workdir (or its checkpoints/ folder).",
                      flag_values=fv)
  flags.DEFINE_string("input", None, "Folder of images (read recursively).", flag_values=fv)
  flags.DEFINE_string("output", None, "The .npz file to write (its folder is created).",
                      flag_values=fv)
  flags.DEFINE_string("kind", "raw", "Image kind to embed: raw, or for method A anon "
                      "(G(O)) or recovered.", flag_values=fv)
  flags.DEFINE_integer("batch_size", api.DEFAULT_BATCH, "Images per forward pass.",
                       flag_values=fv)
  flags.DEFINE_float("epsilon", None, "Release the features with per-image (epsilon, "
                     "delta)-DP (the Gaussian mechanism; module doc) instead of as they are.",
                     flag_values=fv)
  flags.DEFINE_float("delta", 1e-5, "The release's delta (with --epsilon).", flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Replace an existing --output file (refused "
                    "otherwise).", flag_values=fv)
  for name in ("checkpoint", "input", "output"):
    flags.mark_flag_as_required(name, flag_values=fv)
  return fv


def main(argv=None) -> None:
  from absl import flags
  fv = _define(flags.FlagValues())
  api.parse_flags(fv, argv, __doc__)
  if fv.batch_size < 1:
    api.fail(f"--batch_size={fv.batch_size}: must be >= 1", 2)
  if fv.epsilon is None and fv["delta"].present:   # clean features, meant as a release?
    api.fail(f"--delta={fv.delta} without --epsilon: give --epsilon for a DP release, "
             "or drop --delta for the clean features", 2)
  if fv.epsilon is not None:
    from privreid_jax.privacy import dp_exact
    try:
      dp_exact.scale_for(fv.epsilon, fv.delta)     # the values' own one-line errors
    except ValueError as e:
      api.fail(f"--epsilon={fv.epsilon} --delta={fv.delta}: {api.one_line(e)}", 2)
  try:
    check_paths(fv.input, fv.output, fv.overwrite)
  except (OSError, ValueError) as e:
    api.fail(api.one_line(e))
  model = api.load_for_cli(fv.checkpoint)
  try:
    out = extract_folder(model, fv.input, fv.kind, fv.batch_size,
                         progress=True)
    info = None
    if fv.epsilon is not None:
      out, info = release(out, fv.epsilon, fv.delta)
      if fv.delta >= 1.0 / len(out.names):
        api.warn(f"--delta={fv.delta:g} is not below 1/N = 1/{len(out.names)}: an "
                 "(epsilon, delta) guarantee with such a delta is met even by releasing "
                 f"one of the N images as it is; pick delta well below 1/N, e.g. "
                 f"{0.01 / len(out.names):.1g}")
    save(fv.output, out, kind=fv.kind, step=model.step, checkpoint=model.path,
         dp_release=info)
  except (FileNotFoundError, ValueError, OSError) as e:
    api.fail(api.one_line(e))
  what = "extracted" if info is None else "released"
  print(f"{what} {len(out.names)} features ({out.features.shape[1]}-d, kind "
        f"{fv.kind}, checkpoint step {model.step}) into {fv.output}; skipped "
        f"{len(out.skipped)} unreadable files")
  if info is not None:
    print(info["guarantee"])


if __name__ == "__main__":
  main()
