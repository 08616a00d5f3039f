"""Synthetic pedestrians in the Market-1501 layout: the project's embedded default dataset.

Each identity has coarse cues (clothing colours, body proportions, hair, bag)
that are shared by a small group of identities (each person wearing their own
slight shade of the group's colours), and fine identifying detail (a face and a
checked print on the shirt) that tells the members of a group apart.
Prints differ only at the scale of their cells, so a Gaussian blur (sigma 12 px
at 256x128) or a 24-px mosaic erases them while the coarse cues survive:
desensitized images lose identity as in the real task. Each camera has its own
textured background, illumination, colour cast and viewpoint; images vary in
position, scale, limbs, facing (front/back) and left-right flip.

  python -m privreid_jax.data.synthetic --out /tmp/synth --num_ids 200 --seed 0

writes `bounding_box_train/`, `query/` and `bounding_box_test/` with names such
as `0002_c1s1_000451_03.jpg`; the gallery also holds `0000_...` distractors and
`-1_...` junk boxes, as Market does. Output is deterministic in the arguments.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent import futures
from typing import Any

import numpy as np
from PIL import Image

from privreid_jax import paths
from privreid_jax.data import synthetic_appearance as appearance
from privreid_jax.data import synthetic_plan
from privreid_jax.data.records import DatasetError

VERSION = 5  # bump when the images change, so cached datasets are regenerated
MARKER = "synthetic.json"
FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
DEFAULTS: dict[str, Any] = dict(
    num_ids=200,               # identities, split in half: train ids and test ids
    num_cameras=6,             # 2..9 (Market names hold one camera digit)
    height=128,
    width=64,
    seed=0,
    test_seed=-1,              # >= 0: the test people drawn from this seed (a fresh test split)
    group_size=4,              # identities sharing the coarse palette and shape
    shade_jitter=0.08,         # per-person std of clothing colour around the group's
    min_cameras_per_id=2,
    images_per_camera=(2, 6),  # inclusive range per identity and camera
    query_camera_prob=0.75,    # chance that a test id's camera gives a query
    distractor_ratio=0.1,      # 0000 images per gallery image of a real id
    junk_ratio=0.05,           # -1 images per gallery image of a real id
    jitter=1.0,                # scales pose / position / light jitter; 0: one fixed pose
    jpeg_quality=90,
)
_BASIC = ("num_ids", "num_cameras", "height", "width", "seed", "test_seed")
_CHUNK = 128  # images rendered per vectorised batch
# Chunks are rendered and written by this many threads: numpy's array arithmetic
# and PIL's JPEG encoder release the GIL, and each chunk has its own seeded
# generator, so the files do not depend on the thread count.
_THREADS = max(1, min(4, os.cpu_count() or 1))

# --------------------------------------------------------------------------- parameters
def check_params(**params) -> dict[str, Any]:
  """Returns the full, normalised parameter dict; one-line ValueError on a bad value."""
  unknown = sorted(set(params) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"synthetic dataset: unknown parameter(s) {', '.join(unknown)} "
                     f"(known: {', '.join(DEFAULTS)})")
  p = {**DEFAULTS, **params}
  for k, default in DEFAULTS.items():
    try:
      if isinstance(default, tuple):
        value = tuple(int(x) for x in p[k])
        ok = len(value) == len(default) and list(value) == list(p[k])
      else:
        value = type(default)(p[k])
        ok = not isinstance(p[k], (bool, str)) and value == p[k]
    except (TypeError, ValueError):
      ok = False
    if not ok:
      raise ValueError(f"synthetic dataset: {k}={p[k]!r} must be of type "
                       f"{type(default).__name__} like its default {default!r}")
    p[k] = value
  lo, hi = p["images_per_camera"]

  def need(ok: bool, key: str, what: str):
    if not ok:
      raise ValueError(f"synthetic dataset: {key}={p[key]!r} {what}")
  need(p["num_ids"] >= 2, "num_ids", "must be >= 2 (half train, half test)")
  need(2 <= p["num_cameras"] <= 9, "num_cameras", "must be in 2..9 (one camera digit)")
  need(p["height"] >= 16, "height", "must be >= 16")
  need(p["width"] >= 8, "width", "must be >= 8")
  need(p["seed"] >= 0, "seed", "must be >= 0")
  need(p["test_seed"] >= -1, "test_seed", "must be >= 0, or -1 (the test people from seed)")
  need(1 <= p["group_size"] <= len(appearance.ORBITS), "group_size",
       f"must be in 1..{len(appearance.ORBITS)} (the number of prints distinct under mirroring)")
  need(2 <= p["min_cameras_per_id"] <= p["num_cameras"], "min_cameras_per_id",
       "must be in 2..num_cameras (queries need a match in another camera)")
  need(2 <= lo <= hi, "images_per_camera", "must be (min, max) with 2 <= min <= max")
  need(0.0 < p["query_camera_prob"] <= 1.0, "query_camera_prob", "must be in (0, 1]")
  need(p["distractor_ratio"] >= 0, "distractor_ratio", "must be >= 0")
  need(p["junk_ratio"] >= 0, "junk_ratio", "must be >= 0")
  need(p["jitter"] >= 0, "jitter", "must be >= 0")
  need(1 <= p["jpeg_quality"] <= 100, "jpeg_quality", "must be in 1..100")
  need(0.0 <= p["shade_jitter"] <= 0.5, "shade_jitter", "must be in [0, 0.5]")
  return p


def _jsonable(p: dict[str, Any]) -> dict[str, Any]:
  return {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}


def default_root(**params) -> str:
  """A cache folder named after the params, under $PRIVREID_DATA_DIR or ~/.cache/privreid_jax."""
  p = check_params(**params)
  base = os.environ.get("PRIVREID_DATA_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "privreid_jax")
  name = (f"synthetic-v{VERSION}-{p['num_ids']}ids-{p['num_cameras']}cams-"
          f"{p['height']}x{p['width']}-seed{p['seed']}")
  extra = {k: v for k, v in _jsonable(p).items()
           if k not in _BASIC and v != _jsonable(DEFAULTS)[k]}
  if p["test_seed"] >= 0:
    name += f"-test{p['test_seed']}"
  if extra:
    name += "-" + hashlib.sha1(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:8]
  return os.path.join(base, name)


# --------------------------------------------------------------------------- writing
def _save_jpeg(arr: np.ndarray, path: str, quality: int):
  Image.fromarray(arr).save(path, format="JPEG", quality=quality)


def generate(out_dir: str, *, num_ids: int = 200, num_cameras: int = 6, height: int = 128,
             width: int = 64, seed: int = 0, test_seed: int = DEFAULTS["test_seed"],
             group_size: int = DEFAULTS["group_size"],
             shade_jitter: float = DEFAULTS["shade_jitter"],
             min_cameras_per_id: int = DEFAULTS["min_cameras_per_id"],
             images_per_camera: tuple[int, int] = DEFAULTS["images_per_camera"],
             query_camera_prob: float = DEFAULTS["query_camera_prob"],
             distractor_ratio: float = DEFAULTS["distractor_ratio"],
             junk_ratio: float = DEFAULTS["junk_ratio"], jitter: float = DEFAULTS["jitter"],
             jpeg_quality: int = DEFAULTS["jpeg_quality"]) -> dict[str, Any]:
  """Writes the dataset to `out_dir` (absent or empty) atomically; returns its statistics.

  The parameters are described in `DEFAULTS`. The dataset is built in a
  temporary folder beside `out_dir` and renamed into place, with the marker
  `synthetic.json` (parameters and statistics) written last.

  Returns:
    {"train" | "query" | "gallery": {"ids", "images", "cameras"}, "distractors",
    "junk", "num_cameras"}; gallery counts exclude the 0000 and -1 images.
  """
  p = check_params(**{k: v for k, v in locals().items() if k in DEFAULTS})
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
    raise DatasetError(f"{out_dir} exists and is not an empty folder: refusing to overwrite it")
  parent = os.path.dirname(out_dir)
  blocker = paths.file_in_the_way(out_dir)
  if blocker is not None:
    raise DatasetError(f"{out_dir}: {blocker} is a file, not a folder")
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.partial-", dir=parent)
  try:
    images, people, cams = synthetic_plan.plan_images(p, VERSION)
    for folder in FOLDERS.values():
      os.mkdir(os.path.join(tmp, folder))

    # Set by the first failing chunk, in its own thread (so the others stop without
    # waiting for the calling thread to wake up), and by the calling thread when it
    # leaves the pool (a failure or Ctrl-C): every thread then stops before its next
    # image, and the partial folder is removed.
    stop = threading.Event()

    def write_chunk(start: int) -> None:
      try:
        if stop.is_set():
          return
        chunk = images[start:start + _CHUNK]
        pose = {k: np.array([im["pose"][k] for im in chunk]) for k in chunk[0]["pose"]}
        rng = np.random.default_rng([p["seed"], VERSION, start]
                                    + ([p["test_seed"]] if p["test_seed"] >= 0 else []))
        pixels = appearance.render(pose, people, cams, p["height"], p["width"], rng)
        for im, arr in zip(chunk, pixels):
          if stop.is_set():
            return
          _save_jpeg(arr, os.path.join(tmp, FOLDERS[im["split"]], im["name"]),
                     p["jpeg_quality"])
      except BaseException:
        stop.set()
        raise

    pool = futures.ThreadPoolExecutor(_THREADS)
    try:
      jobs = [pool.submit(write_chunk, s) for s in range(0, len(images), _CHUNK)]
      futures.wait(jobs, return_when=futures.FIRST_EXCEPTION)
      for job in jobs:
        if job.done():
          job.result()              # the first failure is raised here
    finally:
      stop.set()                    # a no-op after a success: every chunk is done
      pool.shutdown(wait=True, cancel_futures=True)
    stats = synthetic_plan.stats(images, p["num_cameras"])
    with open(os.path.join(tmp, MARKER), "w") as f:
      json.dump({"generator": "privreid_jax.data.synthetic", "version": VERSION,
                 "params": _jsonable(p), "stats": stats}, f, indent=1, sort_keys=True)
    os.chmod(tmp, 0o755)
    try:
      os.rename(tmp, out_dir)
    except OSError as e:
      raise DatasetError(f"{out_dir} appeared while generating it ({e.strerror})") from e
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return stats


def _read_marker(root: str) -> dict | None:
  path = os.path.join(root, MARKER)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      marker = json.load(f)
  except (OSError, ValueError) as e:
    raise DatasetError(f"{path} is not a valid synthetic dataset marker ({e})") from e
  if not (isinstance(marker, dict) and isinstance(marker.get("params"), dict)
          and isinstance(marker.get("stats"), dict)):
    raise DatasetError(f"{path} is not a valid synthetic dataset marker (no params/stats)")
  return marker


def _check_existing(root: str, p: dict[str, Any]) -> bool:
  """True if root holds a complete dataset made with p; False if it is absent or empty."""
  if not os.path.exists(root) or (os.path.isdir(root) and not os.listdir(root)):
    return False
  marker = _read_marker(root) if os.path.isdir(root) else None
  if marker is None:
    raise DatasetError(f"{root} holds other data (no {MARKER}): refusing to overwrite it; "
                       "choose an empty or new folder")
  want = {"version": VERSION, **_jsonable(p)}
  have = {"version": marker.get("version"), **marker["params"]}
  diff = [f"{k}={have.get(k)!r} (wanted {v!r})" for k, v in want.items() if have.get(k) != v]
  if diff:
    raise DatasetError(f"{root} was generated with different parameters: {', '.join(diff)}; "
                       "delete it or choose another folder")
  st = marker["stats"]
  expected = {"train": st["train"]["images"], "query": st["query"]["images"],
              "gallery": st["gallery"]["images"] + st["distractors"] + st["junk"]}
  for split, folder in FOLDERS.items():
    path = os.path.join(root, folder)
    found = (sum(not n.startswith(".") for n in os.listdir(path))
             if os.path.isdir(path) else 0)  # hidden files (.DS_Store) ignored
    if found != expected[split]:
      raise DatasetError(f"{path} holds {found} images, expected {expected[split]}: "
                         "the synthetic dataset is incomplete; delete it to regenerate")
  return True


def ensure_dataset(root: str, **params) -> str:
  """Returns root holding a complete dataset made with params, generating it if absent/empty."""
  p = check_params(**params)
  if _check_existing(root, p):
    return root
  try:
    generate(root, **p)
  except DatasetError:
    if not _check_existing(root, p):  # another process may have generated it meanwhile
      raise
  return root


# --------------------------------------------------------------------------- CLI
def format_stats(stats: dict[str, Any]) -> str:
  lines = [f"{'subset':<8} {'# ids':>6} {'# images':>9} {'# cameras':>10}"]
  for split in ("train", "query", "gallery"):
    s = stats[split]
    lines.append(f"{split:<8} {s['ids']:>6} {s['images']:>9} {s['cameras']:>10}")
  lines.append(f"gallery also holds {stats['distractors']} distractors (0000) and "
               f"{stats['junk']} junk images (-1)")
  return "\n".join(lines)


def _define(fv):
  """The tool's flags (snake_case, absl), on `fv`: --out and one per DEFAULTS key."""
  from absl import flags
  flags.DEFINE_string("out", None, "Output folder (absent or empty).", flag_values=fv)
  flags.mark_flag_as_required("out", flag_values=fv)
  for key, default in DEFAULTS.items():
    if isinstance(default, tuple):
      flags.DEFINE_list(key, [str(v) for v in default],
                        f"MIN,MAX (default {default[0]},{default[1]}).", flag_values=fv)
      flags.register_validator(
          key, lambda v: len(v) == 2 and all(_is_int(x) for x in v),
          message=f"--{key} takes MIN,MAX (two integers), e.g. "
                  f"--{key}={default[0]},{default[1]}", flag_values=fv)
    elif isinstance(default, bool):
      flags.DEFINE_boolean(key, default, f"Default {default}.", flag_values=fv)
    elif isinstance(default, int):
      flags.DEFINE_integer(key, default, f"Default {default}.", flag_values=fv)
    elif isinstance(default, float):
      flags.DEFINE_float(key, default, f"Default {default}.", flag_values=fv)
    else:
      flags.DEFINE_string(key, default, f"Default {default}.", flag_values=fv)
  return fv


def _is_int(text: str) -> bool:
  try:
    int(text)
  except ValueError:
    return False
  return True


def main(argv: list[str] | None = None) -> int:
  """Generates the dataset; argv without the program name (default sys.argv[1:])."""
  from absl import flags
  from privreid_jax import cli
  argv = list(sys.argv[1:] if argv is None else argv)
  fv = _define(flags.FlagValues())
  cli.parse_tool_flags(fv, ["python -m privreid_jax.data.synthetic", *argv], __doc__)
  args = {key: fv[key].value for key in DEFAULTS}
  args = {key: tuple(int(x) for x in v) if isinstance(DEFAULTS[key], tuple) else v
          for key, v in args.items()}
  args["out"] = fv.out
  out = args.pop("out")
  start = time.perf_counter()
  try:
    stats = generate(out, **args)
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"synthetic pedestrians at {os.path.abspath(out)}")
  print(format_stats(stats))
  print(f"generated in {time.perf_counter() - start:.1f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
