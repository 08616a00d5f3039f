"""Images/s the training input pipeline delivers (decode + resize + augment + batch).

  python experiments/bench_input.py --workers=0,2 --num_batches=30 --repeats=3

Reads a folder of Market-named JPEGs: `--root` if given, else the synthetic
dataset (`privreid_jax.data.synthetic.ensure_dataset`, cached in a temporary
folder), else a temporary folder of random 128x64 JPEGs. Prints one row per
worker count (medians over alternated repeats) and the speed-up of each
worker count over the in-process loader.

  python experiments/bench_input.py --stages=512     # + one core's cost per stage

`--stages=N` also times each stage of one image on one thread, over N training
images: reading the file, JPEG decoding, the resize to the network's size, the
flip and pad-crop (what a worker does), then normalisation and erasing (in the
main process with `--finish=host`; the trainer does them on the devices); and the same image stored at training size
(a pre-resized source: a JPEG at quality 95, or raw uint8 pixels) so the decode
and resize columns show what such a source would save. 1000 / (the worker's ms)
is one core's img/s.
"""

import io
import os
import re
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from privreid_jax import config_base  # noqa: E402
from privreid_jax.data import pipeline, preresized, transforms  # noqa: E402
from privreid_jax.data.records import Record, relabel  # noqa: E402
from privreid_jax.methods.anonymization import targets  # noqa: E402
from configs import anon_market as anon_config  # noqa: E402
# pylint: enable=g-import-not-at-top,wrong-import-position

_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "Worker counts to compare.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 30, "Timed batches per run.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed batches after the first.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs per worker count, "
                                "alternated (the machine may be shared); "
                                "medians are reported.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global P x K batch size.")
_K = flags.DEFINE_integer("num_instances", 4, "K images per identity.")
_HEIGHT = flags.DEFINE_integer("height", 256, "Network input height.")
_WIDTH = flags.DEFINE_integer("width", 128, "Network input width.")
_ROOT = flags.DEFINE_string("root", "", "Folder of Market-named JPEGs (the "
                            "train split if it has bounding_box_train/).")
_FINISH = flags.DEFINE_list("finish", ["device"],
                            "Where normalise + erase run, one or both, alternated: 'device' "
                            "(what the trainer does: the loader yields uint8) or 'host' "
                            "(the main process).")
_PRERESIZED = flags.DEFINE_boolean(
    "preresized", False, "Also time the loader on the same images stored at the "
    "output size (data.preresize: raw uint8 in ArrayRecord, written to a temporary folder).")
_STAGES = flags.DEFINE_integer("stages", 0, "Also time each stage on one thread over "
                               "this many images (0: no).")
_NUM_IDS = flags.DEFINE_integer("num_ids", 100, "Identities to generate when "
                                "no --root is given.")

_NAME = re.compile(r"^(-?\d+)_c(\d+)")


def _random_folder(folder: str, num_ids: int) -> str:
  """Random 128x64 JPEGs named like Market's training images."""
  rng = np.random.default_rng(0)
  os.makedirs(folder, exist_ok=True)
  for pid in range(1, num_ids + 1):
    for j in range(8):
      img = rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)
      Image.fromarray(img).save(os.path.join(
          folder, f"{pid:04d}_c{j % 6 + 1}s1_{j:06d}_00.jpg"), quality=90)
  return folder


def _image_folder() -> tuple[str, str]:
  if _ROOT.value:
    return _ROOT.value, "--root"
  cache = os.path.join(tempfile.gettempdir(), "privreid_bench_input")
  try:
    from privreid_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  except ImportError:
    return _random_folder(os.path.join(cache, "random"), _NUM_IDS.value), \
        "random JPEGs"
  root = synthetic.ensure_dataset(os.path.join(cache, f"synth{_NUM_IDS.value}"),
                                  num_ids=_NUM_IDS.value, seed=0)
  return root, "synthetic.ensure_dataset"


def _records(folder: str) -> tuple[Record, ...]:
  if os.path.isdir(os.path.join(folder, "bounding_box_train")):
    folder = os.path.join(folder, "bounding_box_train")
  recs = []
  for name in sorted(os.listdir(folder)):
    match = _NAME.match(name)
    if match and name.lower().endswith((".jpg", ".jpeg", ".png")):
      pid, cam = int(match.group(1)), int(match.group(2))
      if pid > 0:
        recs.append(Record(os.path.join(folder, name), pid, cam - 1))
  if not recs:
    raise SystemExit(f"no Market-named images in {folder}")
  return relabel(recs)


def _run(source, pids, cfg, workers: int, finish: str) -> dict[str, float]:
  cfg.num_workers = workers
  start = time.perf_counter()
  with pipeline.train_loader(source, pids, cfg, seed=0, finish=finish) as loader:
    next(loader)
    first = time.perf_counter() - start
    for _ in range(_WARMUP.value):
      next(loader)
    t0 = time.perf_counter()
    for _ in range(_NUM_BATCHES.value):
      batch = next(loader)
    elapsed = time.perf_counter() - t0
  assert batch["image"].shape == (_BATCH.value, _HEIGHT.value, _WIDTH.value, 3)
  return {"first": first, "img_s": _NUM_BATCHES.value * _BATCH.value / elapsed,
          "ms": 1000 * elapsed / _NUM_BATCHES.value}


def _per_image_ms(fn, items) -> tuple[float, list]:
  t0 = time.perf_counter()
  out = [fn(x) for x in items]
  return 1000 * (time.perf_counter() - t0) / len(items), out


def stage_costs(records, cfg, count: int) -> dict[str, float]:
  """ms per image of each pipeline stage, on this thread (the best of 3 passes)."""
  paths = [r.path for r in records[:count]]
  tcfg = transforms.TransformConfig.from_config(cfg)
  rng = np.random.default_rng(0)
  geoms = [transforms.sample_geometry(rng, tcfg) for _ in paths]
  best: dict[str, float] = {}
  def keep(name, ms):
    best[name] = min(best.get(name, float("inf")), ms)
  for _ in range(3):
    ms, data = _per_image_ms(lambda p: open(p, "rb").read(), paths)
    keep("read file", ms)
    ms, images = _per_image_ms(lambda b: transforms.decode_image(b), data)
    keep("decode JPEG", ms)
    ms, resized = _per_image_ms(lambda x: transforms.resize(x, cfg.height, cfg.width),
                                images)
    keep("resize", ms)
    ms, cropped = _per_image_ms(
        lambda xg: transforms.flip_and_crop(xg[0], xg[1], cfg.pad),
        list(zip(resized, geoms)))
    keep("flip + pad-crop", ms)
    batch = np.stack(cropped)
    t0 = time.perf_counter()
    x = transforms.normalise(batch, tcfg)
    for j, g in enumerate(geoms):
      transforms.erase(x[j], g)
    keep("normalise + erase (finish='host')", 1000 * (time.perf_counter() - t0) / len(paths))
    def jpeg(x):
      buf = io.BytesIO()
      Image.fromarray(x).save(buf, format="JPEG", quality=95)
      return buf.getvalue()
    big = [jpeg(x) for x in resized]
    ms, _ = _per_image_ms(lambda b: transforms.decode_image(b), big)
    keep("pre-resized: decode JPEG at training size", ms)
    for op in ("mosaic", "blur", "noise"):   # method A's workers also make M
      target = targets.handcrafted(anon_config.get_config(op))
      args = (lambda x: (transforms.to_unit(x), rng)) if target.per_read else (
          lambda x: (transforms.to_unit(x),))
      ms, _ = _per_image_ms(lambda x: transforms.flip_and_crop(
          np.asarray(target(*args(x)), np.float32), geoms[0], cfg.pad), resized)
      keep(f"method A's target M ({op}) + its crop", ms)
    raw = [x.tobytes() for x in resized]
    shape = (cfg.height, cfg.width, 3)
    ms, _ = _per_image_ms(lambda b: np.frombuffer(b, np.uint8).reshape(shape).copy(), raw)
    keep("pre-resized: raw uint8 pixels", ms)
  return best


def print_stage_costs(best: dict[str, float]) -> None:
  worker = sum(best[k] for k in ("read file", "decode JPEG", "resize", "flip + pad-crop"))
  print(f"{'stage (one thread)':<44} {'ms/img':>7}")
  for name, ms in best.items():
    print(f"{name:<44} {ms:>7.3f}")
  for label, ms in (
      ("worker, as today (read+decode+resize+crop)", worker),
      ("worker, pre-resized JPEG", best["read file"]
       + best["pre-resized: decode JPEG at training size"] + best["flip + pad-crop"]),
      ("worker, pre-resized raw", best["read file"] + best["pre-resized: raw uint8 pixels"]
       + best["flip + pad-crop"])):
    print(f"{label:<44} {ms:>7.3f} ms -> {1000 / ms:,.0f} img/s per core")
  for op in ("mosaic", "blur", "noise"):
    ms = worker + best[f"method A's target M ({op}) + its crop"]
    print(f"{'worker, method A with ' + op + ' targets':<44} {ms:>7.3f} ms -> "
          f"{1000 / ms:,.0f} img/s per core")
  main_ms = best["normalise + erase (finish='host')"]
  print(f"{'main process with finish=host':<44} {main_ms:>7.3f} ms -> "
        f"{1000 / main_ms:,.0f} img/s at most, whatever the workers")


def main(argv):
  del argv
  folder, origin = _image_folder()
  records = _records(folder)
  cfg = config_base.base_config().data
  cfg.height, cfg.width = _HEIGHT.value, _WIDTH.value
  cfg.batch_size, cfg.num_instances = _BATCH.value, _K.value
  print(f"{len(records)} training images of "
        f"{len({r.pid for r in records})} ids from {folder} ({origin}); "
        f"output {cfg.height}x{cfg.width}, batch {cfg.batch_size}, "
        f"{os.cpu_count()} CPUs")
  if _STAGES.value:
    print_stage_costs(stage_costs(records, cfg, _STAGES.value))
  workers = [int(v) for v in _WORKERS.value]
  sources = {"": records}
  if _PRERESIZED.value:
    folder = os.path.join(tempfile.gettempdir(), "privreid_bench_input",
                          f"preresized_{cfg.height}x{cfg.width}_{len(records)}")
    sources[" pre"] = preresized.open_or_write(folder, records, cfg.height, cfg.width)
  tags = [f"{tag} {finish}" for tag in sources for finish in _FINISH.value]
  runs = {(w, tag): [] for tag in tags for w in workers}
  for _ in range(_REPEATS.value):
    for (w, tag) in runs:
      source, finish = sources[tag.rsplit(" ", 1)[0]], tag.rsplit(" ", 1)[1]
      runs[(w, tag)].append(_run(source, [r.pid for r in records], cfg, w, finish))
  results = {key: {k: float(np.median([r[k] for r in rs])) for k in rs[0]}
             for key, rs in runs.items()}
  print(f"{'workers':>7} {'first batch s':>13} {'ms/batch':>9} {'img/s':>8} "
        f"{'img/s per run':>20}   source, finish (pre = pre-resized)")
  for (w, tag), r in results.items():
    each = " ".join(f"{x['img_s']:.0f}" for x in runs[(w, tag)])
    print(f"{w:>7} {r['first']:>13.2f} {r['ms']:>9.1f} {r['img_s']:>8.1f} "
          f"{each:>20}  {tag.strip()}")
  for tag in tags:
    if (0, tag) in results:
      for (w, t), r in results.items():
        if w and t == tag:
          print(f"{w} workers vs in-process ({tag.strip()}): "
                f"x{r['img_s'] / results[(0, tag)]['img_s']:.2f}")


if __name__ == "__main__":
  app.run(main)
