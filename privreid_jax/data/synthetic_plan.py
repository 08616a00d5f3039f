"""Which images the synthetic dataset holds: splits, identities, cameras, names and poses.

The planning part of the synthetic dataset (`synthetic.py` checks the
parameters and writes the files, `synthetic_appearance.py` says what people
and cameras look like and draws them): from the normalised parameters,
`plan_images` decides every image (its split, Market pid, camera, who is in
it, whether it is a person, a junk box or an empty one, its Market file name
and its pose), and `stats` counts them per split. Every draw is seeded from
the parameters and the dataset's version, so the plan is deterministic in
them. Changing anything here changes the images: bump `synthetic.VERSION` so
cached datasets are regenerated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privreid_jax.data import synthetic_appearance as appearance


def plan_images(p: dict[str, Any], version: int) -> tuple[list[dict], dict, dict]:
  """Decides every image: split, pid, camera, who and how; returns (images, people, cams).

  `p` is `synthetic.check_params`' normalised dict; `version` (the dataset's
  VERSION) is part of every seed.
  """
  ss = np.random.SeedSequence([p["seed"], version])
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
  people = appearance.sample_people(rng_ids, groups, n, p["shade_jitter"])
  cams = appearance.sample_cameras(rng_cams, ncam, p["height"], p["width"])
  fresh = p["test_seed"] >= 0
  if fresh:
    # A fresh test split: same world (cameras) and training people, new test people.
    # Everything about the test identities (who they are, their images, poses, the
    # distractors and junk) comes from test_seed; the training identities' draws stay
    # on the streams above.
    t_ids, t_split, t_pose, t_extra = (np.random.default_rng(s) for s in np.random.SeedSequence(
        [p["seed"], p["test_seed"], version, 1]).spawn(4))
    order = t_ids.permutation(test_pids) - 1
    t_groups = [order[i:i + p["group_size"]] for i in range(0, len(order), p["group_size"])]
    new = appearance.sample_people(t_ids, t_groups, n, p["shade_jitter"])
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
  strangers = appearance.sample_people(rng_extra, [np.array([i]) for i in range(n_strangers)],
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


def stats(images: list[dict], ncam: int) -> dict[str, Any]:
  """The plan's counts: ids, images, cameras per split (real ids only), 0000s, -1s."""
  out: dict[str, Any] = {}
  for split in ("train", "query", "gallery"):
    ims = [im for im in images if im["split"] == split and im["pid"] > 0]
    out[split] = {"ids": len({im["pid"] for im in ims}), "images": len(ims),
                  "cameras": len({im["cam"] for im in ims})}
  out["distractors"] = sum(im["pid"] == 0 for im in images)
  out["junk"] = sum(im["pid"] == -1 for im in images)
  out["num_cameras"] = ncam
  return out

