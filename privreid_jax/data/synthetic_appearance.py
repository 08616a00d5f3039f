"""What the synthetic pedestrians and cameras look like: palettes, prints, people, drawing.

The appearance part of the synthetic dataset (`synthetic_plan.py` plans the
splits, names and poses, `synthetic.py` writes the files): each identity's
coarse cues come from small palettes shared by a group of look-alikes, with a
per-person shade and a checked print on the shirt that tells the members of a
group apart; each camera has its own background, light, colour cast and
viewpoint. `render` draws a batch of posed people with NumPy alone,
deterministic in its generator. Changing anything here changes the images:
bump `synthetic.VERSION` so cached datasets are regenerated.
"""

from __future__ import annotations

import numpy as np

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


ORBITS = _mirror_orbits()


# --------------------------------------------------------------------------- world
def sample_people(rng: np.random.Generator, groups: list[np.ndarray], n: int,
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
    orbits = rng.choice(len(ORBITS), size=len(members), replace=False)
    for m, o in zip(members, orbits):
      a["print"][m] = _print_pattern(ORBITS[o][rng.integers(len(ORBITS[o]))])
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


def sample_cameras(rng: np.random.Generator, num: int, h: int, w: int) -> dict:
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


def render(pose: dict, people: dict, cams: dict, h: int, w: int,
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
