"""Ranked-results strips of a trained run (torchreid's visrank).

  python -m privreid_jax.visrank --checkpoint=WORKDIR --output=OUT [--config=configs/X.py \\
      --config.data.root=DIR] [--num_queries=20 --topk=10]

For --num_queries queries of the dataset's query split (evenly spaced over
it), one PNG strip per query and setting: the query (black border), then its
top --topk gallery images in rank order, each with a green border when it is
the query's identity and red when not. As in the evaluation protocol, gallery
images of the query's identity taken by the query's camera are left out of
the ranking. Distances, normalisation and re-ranking follow the config's
`eval` section (--config.eval.rerank=True re-ranks) and the dataset its
`data` section, as in `python -m privreid_jax.evaluate` (without --config:
the run's own).

Settings: the first of the method's ("O->O") and, for method A, also "P->P"
(anonymized queries against anonymized gallery); --settings picks others
(e.g. O->P,R->O). In a strip of a setting with anonymized (or recovered)
images each of them is drawn beside its raw image, the anonymized one first.
Files: OUT/<query index>_<query file stem>_<setting, "->" as "_to_">.png, and
OUT/visrank.json listing every strip's query and ranked gallery (file, pid,
camera, distance, match).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from privreid_jax import api

GRID_SPACING = 10          # torchreid's visrank layout
QUERY_EXTRA_SPACING = 90
BORDER = 5
GREEN, RED, BLACK = (0, 200, 0), (230, 0, 0), (0, 0, 0)


@dataclasses.dataclass
class Ranked:
  """One query's top-k under one setting."""
  setting: str
  query: int
  gallery: list[int]          # gallery indices in rank order
  distances: list[float]
  matches: list[bool]


def default_settings(model: api.Model) -> list[str]:
  first = next(iter(model.settings))
  return [first] + (["P->P"] if "P->P" in model.settings and first != "P->P" else [])


def pick_queries(num_queries: int, total: int) -> np.ndarray:
  """`num_queries` indices evenly spaced over [0, total) (all when fewer)."""
  if num_queries < 1:
    raise ValueError(f"--num_queries={num_queries}: must be >= 1")
  if num_queries >= total:
    return np.arange(total)
  return np.unique(np.round(np.linspace(0, total - 1, num_queries)).astype(np.int64))


def _normalize(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def rank(qf: np.ndarray, gf: np.ndarray, queries: np.ndarray, q_pids, g_pids, q_camids,
         g_camids, *, topk: int, metric: str = "euclidean", rerank: bool = False,
         setting: str = "") -> list[Ranked]:
  """Top-k gallery items of each of `queries` (indices into qf), the protocol's
  way: L2-normalised features, `metric` distances (or k-reciprocal re-ranked
  ones over the whole query set), stable order, same-id same-camera items left out."""
  from privreid_jax.evaluation import ranking
  if topk < 1:
    raise ValueError(f"--topk={topk}: must be >= 1")
  qf, gf = _normalize(np.asarray(qf, np.float32)), _normalize(np.asarray(gf, np.float32))
  if rerank:
    dist = lambda a, b: np.asarray(ranking.pairwise_distance(a, b, metric))
    d = ranking.rerank(dist(qf, gf), dist(qf, qf), dist(gf, gf))[queries]
  else:
    d = np.asarray(ranking.pairwise_distance(qf[queries], gf, metric))
  q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
  q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
  out = []
  for row, q in zip(d, queries):
    order = np.argsort(row, kind="stable")
    junk = (g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q])
    top = order[~junk][:topk]
    out.append(Ranked(setting, int(q), top.tolist(), row[top].astype(float).tolist(),
                      (g_pids[top] == q_pids[q]).tolist()))
  return out


# ------------------------------------------------------------------ drawing


def _read(source: Sequence[Any], index: int) -> tuple[np.ndarray, str]:
  """(uint8 image, file name) of a split item (a Record or a dict with 'image')."""
  item = source[index]
  if isinstance(item, Mapping):
    name = str(item.get("filename", item.get("file_name", f"item{index}")))
    if isinstance(name, bytes):
      name = name.decode()
    return api.read_image(item["image"], name), name
  return api.read_image(item.path, item.path), item.path


def _fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
  from PIL import Image
  if image.shape[:2] == (height, width):
    return image
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def _bordered(images: Sequence[np.ndarray], color, height: int, width: int) -> np.ndarray:
  """Images side by side at (height, width) each, with a BORDER-pixel frame."""
  body = np.concatenate([_fit(x, height, width) for x in images], axis=1)
  out = np.empty((height + 2 * BORDER, body.shape[1] + 2 * BORDER, 3), np.uint8)
  out[:] = np.asarray(color, np.uint8)
  out[BORDER:BORDER + height, BORDER:BORDER + body.shape[1]] = body
  return out


def strip(query: Sequence[np.ndarray], gallery: Sequence[Sequence[np.ndarray]],
          matches: Sequence[bool], height: int, width: int) -> np.ndarray:
  """One strip: the query cell, QUERY_EXTRA_SPACING, then the ranked cells
  GRID_SPACING apart on white; a cell is one image or several side by side."""
  cells = [_bordered(query, BLACK, height, width)]
  cells += [_bordered(g, GREEN if m else RED, height, width)
            for g, m in zip(gallery, matches)]
  total = sum(c.shape[1] for c in cells) + QUERY_EXTRA_SPACING + GRID_SPACING * max(
      0, len(cells) - 2)
  out = np.full((height + 2 * BORDER, total, 3), 255, np.uint8)
  x = 0
  for i, c in enumerate(cells):
    out[:, x:x + c.shape[1]] = c
    x += c.shape[1] + (QUERY_EXTRA_SPACING if i == 0 else GRID_SPACING)
  return out


class _Images:
  """Raw and kind images of a split's items, read once."""

  def __init__(self, model: api.Model, source):
    self.model, self.source = model, source
    self.raw: dict[int, tuple[np.ndarray, str]] = {}
    self.kind: dict[tuple[str, int], np.ndarray] = {}

  def load(self, indices: Sequence[int], kinds: Sequence[str]) -> None:
    new = [i for i in dict.fromkeys(indices) if i not in self.raw]
    for i in new:
      self.raw[i] = _read(self.source, i)
    for kind in kinds:
      todo = [i for i in dict.fromkeys(indices) if (kind, i) not in self.kind]
      if not todo or kind == "raw":
        continue
      raws = [self.raw[i][0] for i in todo]
      out = self.model.anonymize(raws, size="model")
      if kind == "recovered":
        out = self.model.recover(list(out), size="model")
      for i, img in zip(todo, out):
        self.kind[(kind, i)] = img

  def cell(self, i: int, kind: str) -> list[np.ndarray]:
    raw = self.raw[i][0]
    return [raw] if kind == "raw" else [self.kind[(kind, i)], raw]

  def name(self, i: int) -> str:
    return self.raw[i][1]


def visualize(model: api.Model, config, output: str, *, num_queries: int = 20,
              topk: int = 10, settings: Sequence[str] | None = None,
              image_height: int = 256) -> list[str]:
  """Writes the strips and visrank.json under `output`; returns the PNG paths."""
  from PIL import Image
  if image_height < 8:
    raise ValueError(f"--image_height={image_height}: must be >= 8")
  chosen = model._settings(settings or default_settings(model))  # pylint: disable=protected-access
  evaluator, splits, eval_cfg = model.evaluator(model.config if config is None else config)
  q, g = splits.query, splits.gallery
  queries = pick_queries(num_queries, len(q))
  width = max(1, round(image_height * model.width / model.height))
  q_images, g_images = _Images(model, q.source), _Images(model, g.source)
  os.makedirs(output, exist_ok=True)
  written, index = [], []
  for setting, (q_kind, g_kind) in chosen.items():
    ranked = rank(evaluator.features(model.state, "query", q_kind),
                  evaluator.features(model.state, "gallery", g_kind), queries,
                  q.pids, g.pids, q.camids, g.camids, topk=topk,
                  metric=eval_cfg.distance, rerank=bool(eval_cfg.rerank), setting=setting)
    q_images.load(queries.tolist(), [q_kind])
    g_images.load([i for r in ranked for i in r.gallery], [g_kind])
    tag = setting.replace("->", "_to_")
    for r in ranked:
      picture = strip(q_images.cell(r.query, q_kind),
                      [g_images.cell(i, g_kind) for i in r.gallery], r.matches,
                      image_height, width)
      stem = os.path.splitext(os.path.basename(q_images.name(r.query)))[0]
      path = os.path.join(output, f"{r.query:04d}_{stem}_{tag}.png")
      Image.fromarray(picture).save(path)
      written.append(path)
      index.append({
          "setting": setting, "file": os.path.basename(path),
          "query": {"index": r.query, "name": q_images.name(r.query),
                    "pid": int(q.pids[r.query]), "camid": int(q.camids[r.query])},
          "gallery": [{"index": i, "name": g_images.name(i), "pid": int(g.pids[i]),
                       "camid": int(g.camids[i]), "distance": d, "match": bool(m)}
                      for i, d, m in zip(r.gallery, r.distances, r.matches)]})
  with open(os.path.join(output, "visrank.json"), "w") as f:
    json.dump({"checkpoint": model.path, "step": model.step, "dataset": splits.name,
               "distance": eval_cfg.distance, "rerank": bool(eval_cfg.rerank),
               "strips": index}, f, indent=1)
  return written


def _define(fv, argv):
  from absl import flags
  from privreid_jax import cli
  cli.define_run_flags(fv, argv, "Folder for the PNG strips (created).")
  flags.DEFINE_integer("num_queries", 20, "Queries to draw (evenly spaced over the "
                       "query split).", flag_values=fv)
  flags.DEFINE_integer("topk", 10, "Gallery images per strip.", flag_values=fv)
  flags.DEFINE_list("settings", [], "Settings to draw (default: the method's first, and "
                    "P->P for method A).", flag_values=fv)
  flags.DEFINE_integer("image_height", 256, "Height of each image in a strip (pixels).",
                       flag_values=fv)
  for name in ("checkpoint", "output"):
    flags.mark_flag_as_required(name, flag_values=fv)
  return fv


def main(argv=None) -> None:
  import sys
  from absl import flags
  from privreid_jax import cli
  argv = list(sys.argv if argv is None else argv)
  fv = _define(flags.FlagValues(), argv)
  api.parse_flags(fv, argv, __doc__)
  problem = cli.output_folder_error("output", fv.output)
  if problem:
    api.fail(problem)
  model = api.load_for_cli(fv.checkpoint)
  try:
    written = visualize(model, fv.config, fv.output, num_queries=fv.num_queries,
                        topk=fv.topk, settings=fv.settings, image_height=fv.image_height)
  except (FileNotFoundError, ValueError, OSError) as e:
    api.fail(api.one_line(e))
  print(f"wrote {len(written)} strips into {fv.output} (checkpoint step {model.step})")


if __name__ == "__main__":
  main()
