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

# Palettes (RGB in [0, 1]). Coarse cues come from small palettes, so groups collide.
_UPPER = np.array([[.75, .12, .12], [.12, .18, .42], [.9, .9, .88], [.1, .1, .11],
                   [.5, .5, .52], [.15, .45, .2], [.9, .78, .2], [.45, .65, .85],
                   [.45, .2, .55], [.9, .5, .15], [.45, .3, .18], [.9, .55, .65]])
_LOWER = np.array([[.08, .08, .1], [.15, .22, .4], [.4, .4, .42], [.72, .65, .5],
                   [.35, .24, .15], [.85, .85, .82], [.18, .3, .2], [.55, .1, .12]])
_HAIR = np.array([[.05, .04, .04], [.2, .12, .07], [.4, .25, .12], [.8, .68, .4],
                  [.6, .6, .6], [.5, .2, .08]])
_SKIN = np.array([[.96, .8, .68], [.88, .68, .52], [.75, .55, .4], [.55, .38, .26],
                  [.38, .25, .17]])
_SHOES = np.array([[.06, .06, .06], [.9, .9, .9], [.35, .22, .12], [.3, .3, .35]])
_BAG = np.array([[.1, .1, .1], [.45, .28, .15], [.2, .25, .45], [.6, .15, .15]])
_WALL = np.array([[.62, .6, .58], [.72, .66, .55], [.6, .32, .25], [.4, .48, .52],
                  [.3, .45, .25], [.8, .8, .78], [.45, .42, .4]])
_GROUND = np.array([[.35, .35, .36], [.62, .58, .5], [.3, .45, .22], [.55, .35, .3],
                    [.5, .5, .5]])
# The print: PRINT_SHAPE cells made of 2x2 blocks, each one of the two diagonals.
# Every block has the same mean and centroid, so what tells two prints apart is
# at the cell frequency only, which the blur and the mosaic remove.
PRINT_SHAPE = (4, 4)
_DIAGONALS = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]]], np.float32)
_PRINT_BLOCKS = (PRINT_SHAPE[0] // 2, PRINT_SHAPE[1] // 2)
_NUM_PRINTS = 2 ** (_PRINT_BLOCKS[0] * _PRINT_BLOCKS[1])


def _print_pattern(code: int) -> np.ndarray:
  bits = (code >> np.arange(_PRINT_BLOCKS[0] * _PRINT_BLOCKS[1])) & 1
  blocks = _DIAGONALS[bits].reshape(*_PRINT_BLOCKS, 2, 2)
  return blocks.transpose(0, 2, 1, 3).reshape(PRINT_SHAPE)


def _mirror_orbits() -> list[tuple[int, ...]]:
  """Prints grouped with their left-right mirror image.

  A horizontal flip (the pipeline's augmentation, or a person seen mirrored)
  turns a print into its mirror, which is another valid print; two members of
  a group must never be each other's mirror, or their labels would conflict.
  """
  patterns = {code: _print_pattern(code).tobytes() for code in range(_NUM_PRINTS)}
  by_pattern = {v: k for k, v in patterns.items()}
  orbits = set()
  for code in range(_NUM_PRINTS):
    mirror = by_pattern[_print_pattern(code)[:, ::-1].copy().tobytes()]
    orbits.add(tuple(sorted({code, mirror})))
  return sorted(orbits)


_ORBITS = _mirror_orbits()


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
  need(1 <= p["group_size"] <= len(_ORBITS), "group_size",
       f"must be in 1..{len(_ORBITS)} (the number of prints distinct under mirroring)")
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


# --------------------------------------------------------------------------- world
def _sample_people(rng: np.random.Generator, groups: list[np.ndarray], n: int,
                   shade_jitter: float = 0.0) -> dict:
  """Attributes of n people; coarse cues drawn once per group, fine detail per person.

  `shade_jitter` gives each person a clothing shade of their own around the
  group's colours: a weak coarse cue that survives blur, as real clothes do.
  """
  a = {k: np.zeros((n, 3), np.float32) for k in
       ("upper", "lower", "hair", "skin", "shoes", "bag_rgb", "logo")}
  for k in ("build", "width", "leg", "head", "hairline", "long_hair", "sleeve",
            "lower_type", "bag"):
    a[k] = np.zeros(n, np.float32)
  a["print"] = np.zeros((n, *PRINT_SHAPE), np.float32)
  for members in groups:
    up = rng.integers(len(_UPPER))
    a["upper"][members] = _UPPER[up]
    a["lower"][members] = _LOWER[rng.integers(len(_LOWER))]
    a["hair"][members] = _HAIR[rng.integers(len(_HAIR))]
    a["skin"][members] = _SKIN[rng.integers(len(_SKIN))]
    a["shoes"][members] = _SHOES[rng.integers(len(_SHOES))]
    a["bag_rgb"][members] = _BAG[rng.integers(len(_BAG))]
    lum = _UPPER[up] @ np.array([.3, .59, .11])
    a["logo"][members] = ((.08, .08, .1) if lum > .5 else (.92, .92, .9)) if rng.random() < .6 \
        else np.roll(_UPPER[up], 1) * .5 + (.25 if lum < .5 else 0)
    a["build"][members] = rng.uniform(.9, 1.0)        # body height in the frame
    a["width"][members] = rng.uniform(.095, .125)     # shoulder half-width
    a["leg"][members] = rng.uniform(.44, .52)         # leg length
    a["head"][members] = rng.uniform(.9, 1.1)         # head size
    a["hairline"][members] = rng.uniform(.1, .5)
    a["long_hair"][members] = rng.random() < .3
    a["sleeve"][members] = rng.choice([.4, .92])      # short / long sleeves
    a["lower_type"][members] = rng.choice(3, p=[.65, .15, .2])  # trousers, shorts, skirt
    a["bag"][members] = rng.choice(3, p=[.5, .3, .2])  # none, shoulder bag, handbag
    # Fine detail, distinct within the group: the print (and the face, below).
    # Distinct mirror orbits, so no member's print is another's mirror image.
    orbits = rng.choice(len(_ORBITS), size=len(members), replace=False)
    for m, o in zip(members, orbits):
      a["print"][m] = _print_pattern(_ORBITS[o][rng.integers(len(_ORBITS[o]))])
  a["eye_dx"] = rng.uniform(.3, .55, n).astype(np.float32)
  a["eye_dy"] = rng.uniform(-.3, .05, n).astype(np.float32)
  a["mouth_dy"] = rng.uniform(.35, .6, n).astype(np.float32)
  a["mouth_w"] = rng.uniform(.12, .45, n).astype(np.float32)
  a["glasses"] = (rng.random(n) < .35).astype(np.float32)
  for k in ("upper", "lower"):
    a[k] = np.clip(a[k] + rng.normal(0, shade_jitter, (n, 3)), 0, 1).astype(np.float32)
  return a


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
  """Bilinearly upsampled uniform noise in [-1, 1] of shape (h, w)."""
  g = rng.uniform(-1, 1, (cells[0] + 1, cells[1] + 1))
  ys, xs = np.linspace(0, cells[0], h), np.linspace(0, cells[1], w)
  y0 = np.minimum(ys.astype(int), cells[0] - 1)
  x0 = np.minimum(xs.astype(int), cells[1] - 1)
  fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
  top = g[y0][:, x0] * (1 - fx) + g[y0][:, x0 + 1] * fx
  bot = g[y0 + 1][:, x0] * (1 - fx) + g[y0 + 1][:, x0 + 1] * fx
  return top * (1 - fy) + bot * fy


def _background(rng: np.random.Generator, hb: int, wb: int) -> np.ndarray:
  """A textured street scene (hb, wb, 3): wall with bricks/windows/foliage, ground, poles."""
  y = np.linspace(0, 1, hb)[:, None, None]
  x = np.linspace(0, wb / hb, wb)[None, :, None]
  horizon = rng.uniform(.45, .72)
  wall = _WALL[rng.integers(len(_WALL))] * rng.uniform(.85, 1.1)
  ground = _GROUND[rng.integers(len(_GROUND))] * rng.uniform(.85, 1.1)
  img = np.where(y < horizon, wall, ground) * np.ones((hb, wb, 3))
  up = y < horizon
  kind = rng.integers(4)
  if kind == 0:    # bricks
    bh = rng.uniform(.03, .05)
    row = np.floor(y / bh)
    bw = bh * rng.uniform(2, 3)
    mortar = ((y / bh) % 1 < .15) | (((x + (row % 2) * bw / 2) / bw) % 1 < .07)
    img = np.where(up & mortar, wall * .75 + .2, img)
  elif kind == 1:  # windows
    px, py = rng.uniform(.15, .3), rng.uniform(.15, .25)
    win = ((x / px) % 1 > .25) & ((x / px) % 1 < .8) & ((y / py) % 1 > .2) & ((y / py) % 1 < .75)
    glass = np.array([.2, .25, .3]) * rng.uniform(.6, 1.4)
    img = np.where(up & win, glass, img)
  elif kind == 2:  # foliage
    leaves = _smooth_noise(rng, hb, wb, (12, 12 * wb // hb + 1))[..., None]
    img = np.where(up, img * (1 + .35 * leaves) * [.8, 1.1, .8], img)
  else:            # panels
    pw = rng.uniform(.08, .2)
    img = np.where(up, img * (1 + .12 * np.sign(np.sin(x / pw * np.pi))), img)
  gkind = rng.integers(3)
  if gkind == 0:   # tiles
    t = rng.uniform(.06, .12)
    lines = ((x / t) % 1 < .08) | ((y / (t * .5)) % 1 < .1)
    img = np.where(~up & lines, ground * .7, img)
  elif gkind == 1:  # crossing stripes
    t = rng.uniform(.1, .2)
    img = np.where(~up & ((x / t) % 1 < .5) & (y > horizon + .1), [.85, .85, .82], img)
  for _ in range(rng.integers(1, 5)):  # poles, trees, bins
    x0, w = rng.uniform(0, wb / hb), rng.uniform(.01, .08)
    y0 = rng.uniform(0, horizon)
    col = rng.uniform(.1, .8, 3)
    img = np.where((x > x0) & (x < x0 + w) & (y > y0) & (y < horizon + rng.uniform(0, .2)),
                   col, img)
  img = img * (1 + .12 * _smooth_noise(rng, hb, wb, (4, 4 * wb // hb + 1))[..., None])
  img = img + .03 * _smooth_noise(rng, hb, wb, (hb // 2, wb // 2))[..., None]
  img = img * (1 + rng.uniform(-.2, .2) * (x - wb / hb / 2))  # light falls off sideways
  return np.clip(img, 0, 1).astype(np.float32)


def _sample_cameras(rng: np.random.Generator, num: int, h: int, w: int) -> dict:
  hb, wb = h + h // 4, 3 * w
  cams = {
      "bg": np.stack([_background(rng, hb, wb) for _ in range(num)]),
      "gain": rng.uniform(.72, 1.12, num),
      "cast": rng.uniform(.88, 1.12, (num, 3)),
      "contrast": rng.uniform(.8, 1.1, num),
      "noise": rng.uniform(.005, .025, num),
      "scale": rng.uniform(.8, .93, num),      # person height / image height
      "top": rng.uniform(.01, .06, num),
      "dx": rng.uniform(-.05, .05, num),
      "stretch": rng.uniform(.88, 1.12, num),  # detector box aspect
      "back_prob": rng.uniform(0, .5, num),    # chance to see the person from behind
  }
  return {k: a.astype(np.float32) for k, a in cams.items()}


# --------------------------------------------------------------------------- drawing
class _Canvas:
  """A batch of N images being drawn, with each image's body coordinates per pixel.

  Body units: y = 0 at the top of the head, 1 at the soles; x = 0 on the body
  axis, mirrored when the person is flipped. Shapes are drawn in row bands
  (`rows`) that cover the body part in every image of the batch.
  """

  def __init__(self, img: np.ndarray, top: np.ndarray, cx: np.ndarray, scale: np.ndarray,
               stretch: np.ndarray, flip: np.ndarray):
    n, self.h, self.w, _ = img.shape
    self.img, self.top, self.s = img, top, scale
    yy, xx = np.mgrid[0:self.h, 0:self.w].astype(np.float32) + .5
    self.y = (yy[None] - top) / scale
    self.x = (xx[None] - cx) / (scale * stretch) * flip
    self.r0 = 0

  def rows(self, y0, y1) -> tuple[np.ndarray, np.ndarray]:
    """Selects the rows showing body heights y0..y1; returns their (x, y)."""
    lo = np.floor(np.min(self.top + np.asarray(y0) * self.s)) - 1
    hi = np.ceil(np.max(self.top + np.asarray(y1) * self.s)) + 2
    self.r0, r1 = int(np.clip(lo, 0, self.h)), int(np.clip(hi, 0, self.h))
    return self.x[:, self.r0:r1], self.y[:, self.r0:r1]

  def paint(self, d: np.ndarray, rgb: np.ndarray, alpha=1.0):
    """Blends rgb into the selected rows, weighted by the anti-aliased coverage of d <= 0.

    rgb: per image (N, 1, 1, 3), per pixel of the band (N, rows, W, 3) or (3,).
    """
    a = np.clip(.5 - d * self.s, 0, 1) * alpha
    n, rows, w = a.shape
    idx = np.flatnonzero(a)
    if not len(idx):
      return
    weight = a.reshape(-1)[idx, None]
    if rgb.ndim == 4 and rgb.shape[2] == w:
      rgb = rgb.reshape(-1, 3)[idx]
    elif rgb.ndim == 4:
      rgb = rgb.reshape(n, 3)[idx // (rows * w)]
    full = idx + (idx // (rows * w) * (self.h - rows) + self.r0) * w
    flat = self.img.reshape(-1, 3)
    flat[full] += weight * (rgb - flat[full])


def _ellipse(x, y, cx, cy, a, b):
  return (np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2) - 1) * np.minimum(a, b)


def _box(x, y, cx, cy, hw, hh):
  return np.maximum(np.abs(x - cx) - hw, np.abs(y - cy) - hh)


def _capsule(x, y, ax, ay, bx, by, r):
  """Signed distance to a thick segment and the position t in [0, 1] along it."""
  px, py, vx, vy = x - ax, y - ay, bx - ax, by - ay
  t = np.clip((px * vx + py * vy) / (vx * vx + vy * vy), 0, 1)
  return np.hypot(px - vx * t, py - vy * t) - r, t


def _render(pose: dict, people: dict, cams: dict, h: int, w: int,
            rng: np.random.Generator) -> np.ndarray:
  """Draws N images (N, h, w, 3) uint8 for the per-image arrays in `pose`."""
  n, who = len(pose["cam"]), pose["who"]

  def col(k):  # a person attribute, broadcast over pixels
    return people[k][who][:, None, None]

  def rgb(k):  # a person colour, broadcast over pixels
    return people[k][who][:, None, None, :]

  def v(k):  # a per-image value, broadcast over pixels
    return pose[k][:, None, None]

  img = np.stack([cams["bg"][c, oy:oy + h, ox:ox + w] for c, oy, ox in
                  zip(pose["cam"], pose["oy"], pose["ox"])])
  cv = _Canvas(img, v("top"), v("cx"), v("scale"), v("stretch"), v("flip"))
  on, back = v("person"), v("back")                  # person: 0 for empty boxes
  wd, hip, hs = col("width"), 1 - col("leg"), col("head")
  ha, hh, hc = .046 * hs, .064 * hs, .07
  skin, upper, lower, hair = rgb("skin"), rgb("upper"), rgb("lower"), rgb("hair")
  # Long hair falls behind the shoulders (over them when seen from behind).
  x, y = cv.rows(0, .25)
  cv.paint(_box(x, y, 0, hc + .07, ha * 1.1, .08), hair, on * col("long_hair") * (1 - back))
  # Shadow on the ground, legs, shoes, lower garment (trousers, shorts or skirt).
  x, y = cv.rows(hip - .05, 1.02)
  cv.paint(_ellipse(x, y, .03 * v("flip"), .985, 2.2 * wd, .025), np.zeros(3, np.float32),
           .35 * on)
  for side, stride in ((-1, v("stride")), (1, -v("stride"))):
    ax = side * (.045 + v("spread")) + stride
    d, t = _capsule(x, y, side * .5 * wd, hip, ax, .955, .036)
    bare = np.where(col("lower_type") == 0, False,
                    np.where(col("lower_type") == 1, t > .45, True))
    cv.paint(d, np.where(bare[..., None], skin, lower), on)
    cv.paint(_ellipse(x, y, ax + .01 * v("flip"), .972, .036, .02), rgb("shoes"), on)
  skirt = col("lower_type") == 2
  half = np.where(skirt, .8 * wd + (y - hip) * .6, .8 * wd)
  cv.paint(np.maximum(np.abs(x) - half,
                      np.maximum(hip - .03 - y, y - hip - np.where(skirt, .2, .05))), lower, on)
  # Neck, torso with its print, shoulder-bag strap, arms, bags.
  x, y = cv.rows(.1, hip + .2)
  cv.paint(_box(x, y, 0, .14, .018, .035), skin, on)
  half = wd - .15 * wd * (y - .175) / (hip - .16)
  torso = np.minimum(np.maximum(np.abs(x) - half, np.maximum(.175 - y, y - hip - .015)),
                     _ellipse(x, y, 0, .2, wd, .045))
  cv.paint(torso, upper, on)
  (rows, cols), cell, ly0 = PRINT_SHAPE, .05, .215  # the print, below the collar
  lw, lh = cols * cell, rows * cell
  r = np.clip(np.floor((y - ly0) / cell), 0, rows - 1).astype(np.int32)
  c = np.clip(np.floor((x + lw / 2) / cell), 0, cols - 1).astype(np.int32)
  bits = np.take_along_axis(people["print"][who].reshape(n, rows * cols),
                            (r * cols + c).reshape(n, -1), axis=1).reshape(r.shape)
  inside = np.clip(.5 - torso * cv.s, 0, 1) * bits
  cv.paint(_box(x, y, 0, ly0 + lh / 2, lw / 2, lh / 2), rgb("logo"), on * inside)
  cv.paint(_box(x, y, 0, hc + .07, ha * 1.1, .08), hair, on * col("long_hair") * back)
  bag = col("bag")
  d, _ = _capsule(x, y, .7 * wd, .17, -.8 * wd, hip - .02, .009)
  cv.paint(d, rgb("bag_rgb"), on * (bag == 1))
  for side, swing in ((-1, v("swing_l")), (1, v("swing_r"))):
    hx, hy = side * (wd + .02) + swing, hip + .03
    d, t = _capsule(x, y, side * (wd - .012), .19, hx, hy, .026)
    cv.paint(d, np.where((t < col("sleeve"))[..., None], upper, skin), on)
    cv.paint(_ellipse(x, y, hx, hy + .02, .024, .026), skin, on)
    if side == 1:
      cv.paint(_box(x, y, hx, hy + .07, .035, .045), rgb("bag_rgb"), on * (bag == 2))
  cv.paint(_box(x, y, -wd - .03, hip + .02, .035, .04), rgb("bag_rgb"), on * (bag == 1))
  # Head, face (front view only) and hair.
  x, y = cv.rows(-.01, .16)
  cv.paint(_ellipse(x, y, 0, hc, ha, hh), skin, on)
  face = on * (1 - back)
  dark = np.array([.08, .06, .06], np.float32)
  ey = hc + col("eye_dy") * hh
  for side in (-1, 1):
    ex = side * col("eye_dx") * ha
    cv.paint(_ellipse(x, y, ex, ey, .0085, .0075), dark, face)
    cv.paint(np.abs(np.hypot(x - ex, y - ey) - .015) - .0035, dark, face * col("glasses"))
  cv.paint(_box(x, y, 0, hc + col("mouth_dy") * hh, col("mouth_w") * ha, .0055),
           np.array([.45, .15, .15], np.float32), face)
  cap = np.maximum(_ellipse(x, y, 0, hc - .004, ha * 1.1, hh * 1.05),
                   (y - (hc - col("hairline") * hh)) * (1 - back) - back)
  cv.paint(cap, hair, on)
  # Camera response: gain and colour cast, contrast, sensor noise.
  cam = pose["cam"]
  img *= (v("gain") * cams["gain"][cam][:, None, None])[..., None]
  img *= cams["cast"][cam][:, None, None]
  ct = cams["contrast"][cam][:, None, None, None]
  img = (img - .5) * ct + .5
  img += rng.standard_normal(img.shape, np.float32) * cams["noise"][cam][:, None, None, None]
  return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- dataset plan
def _plan(p: dict[str, Any]) -> tuple[list[dict], dict, dict]:
  """Decides every image: split, pid, camera, who and how; returns (images, people, cams)."""
  ss = np.random.SeedSequence([p["seed"], VERSION])
  rng_ids, rng_cams, rng_split, rng_pose, rng_extra = (
      np.random.default_rng(s) for s in ss.spawn(5))
  n, ncam = p["num_ids"], p["num_cameras"]
  pids = rng_ids.permutation(np.arange(1, n + 1))
  train_pids = np.sort(pids[:(n + 1) // 2])
  test_pids = np.sort(pids[(n + 1) // 2:])
  groups = []
  for part in (train_pids, test_pids):
    order = rng_ids.permutation(part) - 1
    groups += [order[i:i + p["group_size"]] for i in range(0, len(order), p["group_size"])]
  people = _sample_people(rng_ids, groups, n, p["shade_jitter"])
  cams = _sample_cameras(rng_cams, ncam, p["height"], p["width"])
  fresh = p["test_seed"] >= 0
  if fresh:
    # A fresh test split: same world (cameras) and training people, new test people.
    # Everything about the test identities (who they are, their images, poses, the
    # distractors and junk) comes from test_seed; the training identities' draws stay
    # on the streams above.
    t_ids, t_split, t_pose, t_extra = (np.random.default_rng(s) for s in np.random.SeedSequence(
        [p["seed"], p["test_seed"], VERSION, 1]).spawn(4))
    order = t_ids.permutation(test_pids) - 1
    t_groups = [order[i:i + p["group_size"]] for i in range(0, len(order), p["group_size"])]
    new = _sample_people(t_ids, t_groups, n, p["shade_jitter"])
    for k in people:
      people[k][test_pids - 1] = new[k][test_pids - 1]
    rng_extra = t_extra

  images = []  # dicts: split, pid, cam, who, kind (0 person, 1 junk, 2 background), track
  lo, hi = p["images_per_camera"]
  test_set = set(test_pids.tolist())

  def plan_id(r, is_test):
    """[(camera, images, is_query camera)] of one identity, drawn from r."""
    k = r.integers(p["min_cameras_per_id"], ncam + 1)
    id_cams = np.sort(r.choice(ncam, k, replace=False))
    query_cams = id_cams[r.random(k) < p["query_camera_prob"]]
    if is_test and not len(query_cams):
      query_cams = id_cams[r.integers(k):][:1]
    return [(int(c), int(r.integers(lo, hi + 1)), c in query_cams) for c in id_cams]

  for pid in range(1, n + 1):
    is_test = pid in test_set
    plan = plan_id(rng_split, is_test)   # drawn in any case: the stream stays aligned
    if fresh and is_test:
      plan = plan_id(t_split, is_test)
    for c, m, queried in plan:
      for j in range(m):
        split = "train" if not is_test else ("query" if j == 0 and queried else "gallery")
        images.append(dict(split=split, pid=pid, cam=c, who=pid - 1, kind=0,
                           track=(pid, c)))
  n_gal = sum(im["split"] == "gallery" for im in images)
  n_distract = int(round(p["distractor_ratio"] * n_gal))
  n_junk = int(round(p["junk_ratio"] * n_gal))
  # Distractors: passers-by who are no identity of the dataset, and empty boxes.
  n_strangers = max(1, n_distract // 3)
  strangers = _sample_people(rng_extra, [np.array([i]) for i in range(n_strangers)],
                             n_strangers)
  people = {k: np.concatenate([people[k], strangers[k]]) for k in people}
  for i in range(n_distract):
    empty = rng_extra.random() < .3
    who = n + int(rng_extra.integers(n_strangers))
    images.append(dict(split="gallery", pid=0, cam=int(rng_extra.integers(ncam)), who=who,
                       kind=2 if empty else 0, track=("d", i)))
  for i in range(n_junk):  # badly cut boxes of test identities
    images.append(dict(split="gallery", pid=-1, cam=int(rng_extra.integers(ncam)),
                       who=int(rng_extra.choice(test_pids)) - 1, kind=1, track=("j", i)))
  _name_images(images, ncam, rng_extra)
  if fresh:
    for part, r in ((False, rng_pose), (True, t_pose)):
      _sample_poses([im for im in images if (im["split"] != "train") == part],
                    people, cams, p, r)
  else:
    _sample_poses(images, people, cams, p, rng_pose)
  return images, people, cams


def _name_images(images: list[dict], ncam: int, rng: np.random.Generator):
  """Market names: tracks of an id in a camera are consecutive frames of one sequence."""
  for c in range(ncam):
    tracks: dict[Any, list[dict]] = {}
    for im in images:
      if im["cam"] == c:
        tracks.setdefault(im["track"], []).append(im)
    order = rng.permutation(len(tracks))
    keys = list(tracks)
    per_seq = max(1, -(-len(order) // int(rng.integers(1, 7))))
    frame, seq = 0, 0
    for rank, ti in enumerate(order):
      if rank % per_seq == 0 or frame > 990_000:
        seq, frame = seq + 1, 0
      frame += int(rng.integers(1, 100))
      for im in tracks[keys[ti]]:
        frame += int(rng.integers(1, 25))
        pid = "-1" if im["pid"] < 0 else f"{im['pid']:04d}"
        im["name"] = f"{pid}_c{c + 1}s{seq}_{frame:06d}_{int(rng.integers(1, 9)):02d}.jpg"


def _sample_poses(images: list[dict], people: dict, cams: dict, p: dict,
                  rng: np.random.Generator):
  """Per-image pose, placement and background crop (vectorised over all images)."""
  h, w, j = p["height"], p["width"], p["jitter"]
  n = len(images)
  cam = np.array([im["cam"] for im in images])
  who = np.array([im["who"] for im in images])
  kind = np.array([im["kind"] for im in images])

  def u(lo, hi):
    return rng.uniform(lo, hi, n).astype(np.float32)

  scale = h * cams["scale"][cam] * people["build"][who] * (1 + j * u(-.04, .04))
  top = h * (cams["top"][cam] + j * u(-.02, .02))
  cx = w * (.5 + cams["dx"][cam] + j * u(-.07, .07))
  junk = kind == 1
  big = rng.random(n) < .6  # junk: a zoomed-in body part or a tiny, off-centre person
  zoom = np.where(big, u(1.6, 2.4), u(.35, .55))
  scale = np.where(junk, scale * zoom, scale)
  top = np.where(junk, np.where(big, -h * u(0, 1.2), h * u(.1, .6)), top)
  cx = np.where(junk, w * (.5 + np.sign(u(-1, 1)) * u(.15, .45)), cx)
  hb, wb = cams["bg"].shape[1:3]
  pose = dict(
      cam=cam, who=who, scale=scale, top=top, cx=cx,
      stretch=cams["stretch"][cam] * (1 + j * u(-.04, .04)),
      flip=np.where(rng.random(n) < .5 * min(j, 1), -1.0, 1.0).astype(np.float32),
      back=(rng.random(n) < cams["back_prob"][cam] * min(j, 1)).astype(np.float32),
      person=(kind != 2).astype(np.float32),
      stride=j * u(-.05, .05), spread=j * u(-.01, .02),
      swing_l=j * u(-.04, .04), swing_r=j * u(-.04, .04),
      gain=1 + j * u(-.08, .08),
      oy=rng.integers(0, hb - h + 1, n), ox=rng.integers(0, wb - w + 1, n))
  for i, im in enumerate(images):
    im["pose"] = {k: a[i] for k, a in pose.items()}


# --------------------------------------------------------------------------- writing
def _save_jpeg(arr: np.ndarray, path: str, quality: int):
  Image.fromarray(arr).save(path, format="JPEG", quality=quality)


def _stats(images: list[dict], ncam: int) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for split in ("train", "query", "gallery"):
    ims = [im for im in images if im["split"] == split and im["pid"] > 0]
    out[split] = {"ids": len({im["pid"] for im in ims}), "images": len(ims),
                  "cameras": len({im["cam"] for im in ims})}
  out["distractors"] = sum(im["pid"] == 0 for im in images)
  out["junk"] = sum(im["pid"] == -1 for im in images)
  out["num_cameras"] = ncam
  return out


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
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.partial-", dir=parent)
  try:
    images, people, cams = _plan(p)
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
        pixels = _render(pose, people, cams, p["height"], p["width"], rng)
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
    stats = _stats(images, p["num_cameras"])
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
