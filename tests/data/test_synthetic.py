"""Tests for the synthetic pedestrian generator (privreid_jax/data/synthetic.py)."""

import collections
import hashlib
import json
import os
import re

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from privreid_jax.data import synthetic
from privreid_jax.data import synthetic_appearance
from privreid_jax.data.records import DatasetError

MARKET_RE = re.compile(r"([-\d]+)_c(\d)")  # the Market parser's pattern
NAME_RE = re.compile(r"^(-1|\d{4})_c(\d)s(\d+)_(\d{6})_(\d{2})\.jpg$")
SMALL = dict(num_ids=16, num_cameras=4, height=64, width=32, seed=3)


def _listing(root):
  """{split: [(name, pid, cam)]} parsed with the Market regex."""
  out = {}
  for split, folder in synthetic.FOLDERS.items():
    rows = []
    for name in sorted(os.listdir(os.path.join(root, folder))):
      pid, cam = MARKET_RE.search(name).groups()
      rows.append((name, int(pid), int(cam)))
    out[split] = rows
  return out


def _digest(root):
  digests = {}
  for dirpath, _, files in os.walk(root):
    for f in files:
      path = os.path.join(dirpath, f)
      with open(path, "rb") as fh:
        digests[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
  return digests


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("synth") / "ds")
  return root, synthetic.generate(root, **SMALL)


def test_layout_names_and_images(small):
  root, _ = small
  assert sorted(os.listdir(root)) == sorted([*synthetic.FOLDERS.values(), synthetic.MARKER])
  listing = _listing(root)
  names = [n for rows in listing.values() for n, _, _ in rows]
  assert len(names) == len(set(names))
  for split, rows in listing.items():
    assert rows, split
    for name, pid, cam in rows:
      assert NAME_RE.match(name), name
      assert 1 <= cam <= SMALL["num_cameras"]
      assert pid >= 1 or split == "gallery"
  for split, rows in listing.items():
    for name, _, _ in rows[:3] + rows[-3:]:
      with Image.open(os.path.join(root, synthetic.FOLDERS[split], name)) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
        assert im.size == (SMALL["width"], SMALL["height"])
  train = {p for _, p, _ in listing["train"]}
  test = {p for _, p, _ in listing["query"] + listing["gallery"] if p > 0}
  assert not train & test
  assert train | test == set(range(1, SMALL["num_ids"] + 1))
  assert len(train) == len(test) == SMALL["num_ids"] // 2


def test_stats_and_marker_match_the_files(small):
  root, stats = small
  listing = _listing(root)
  for split in ("train", "query", "gallery"):
    real = [(p, c) for _, p, c in listing[split] if p > 0]
    assert stats[split] == {"ids": len({p for p, _ in real}), "images": len(real),
                            "cameras": len({c for _, c in real})}
  assert stats["distractors"] == sum(p == 0 for _, p, _ in listing["gallery"]) > 0
  assert stats["junk"] == sum(p == -1 for _, p, _ in listing["gallery"]) > 0
  with open(os.path.join(root, synthetic.MARKER)) as f:
    marker = json.load(f)
  assert marker["version"] == synthetic.VERSION
  assert marker["stats"] == stats
  assert marker["params"]["seed"] == SMALL["seed"]
  assert marker["params"]["images_per_camera"] == list(synthetic.DEFAULTS["images_per_camera"])


def test_query_gallery_protocol(small):
  root, _ = small
  listing = _listing(root)
  gallery_cams = collections.defaultdict(list)
  for _, pid, cam in listing["gallery"]:
    gallery_cams[pid].append(cam)
  query_per_cam = collections.Counter((pid, cam) for _, pid, cam in listing["query"])
  assert max(query_per_cam.values()) == 1  # at most one query per id and camera
  test_ids = {p for p in gallery_cams if p > 0}
  assert {p for p, _ in query_per_cam} == test_ids  # every test id is queried
  for (pid, cam) in query_per_cam:
    assert any(c != cam for c in gallery_cams[pid]), (pid, cam)  # cross-camera match
  assert all(p > 0 for _, p, _ in listing["train"] + listing["query"])


def test_same_arguments_give_identical_bytes(small, tmp_path):
  root, _ = small
  again = str(tmp_path / "again")
  synthetic.generate(again, **SMALL)
  assert _digest(again) == _digest(root)
  other = str(tmp_path / "other")
  synthetic.generate(other, **{**SMALL, "seed": SMALL["seed"] + 1})
  mine, theirs = _digest(root), _digest(other)
  common = set(mine) & set(theirs)
  assert sum(mine[k] != theirs[k] for k in common) > 0.9 * len(common)


def test_files_do_not_depend_on_the_thread_count(tmp_path, monkeypatch):
  # Small chunks, so that the threads interleave many of them.
  monkeypatch.setattr(synthetic, "_CHUNK", 16)
  digests = []
  for threads in (1, 3):
    monkeypatch.setattr(synthetic, "_THREADS", threads)
    root = str(tmp_path / f"t{threads}")
    synthetic.generate(root, **SMALL)
    digests.append(_digest(root))
  assert len(digests[0]) > 10 * 16 and digests[0] == digests[1]


def _image_means(root, split):
  """{pid: mean RGB over the split's images of that identity}."""
  sums = collections.defaultdict(list)
  folder = os.path.join(root, synthetic.FOLDERS[split])
  for name in os.listdir(folder):
    pid = int(MARKET_RE.search(name).group(1))
    if pid > 0:
      sums[pid].append(np.asarray(Image.open(os.path.join(folder, name)), np.float32).mean((0, 1)))
  return {pid: np.mean(v, 0) for pid, v in sums.items()}


def test_fresh_test_split_keeps_training_people_and_draws_new_test_people(small, tmp_path):
  """test_seed: same train ids, cameras and training people; new test people and images."""
  root, stats = small
  fresh = str(tmp_path / "fresh")
  fresh_stats = synthetic.generate(fresh, **SMALL, test_seed=7)
  old, new = _listing(root), _listing(fresh)
  ids = lambda rows: {pid for _, pid, _ in rows if pid > 0}
  assert ids(old["train"]) == ids(new["train"])
  assert ids(old["query"]) == ids(new["query"])
  assert stats["train"] == fresh_stats["train"]      # same training images per id and camera
  assert (collections.Counter((p, c) for _, p, c in old["train"])
          == collections.Counter((p, c) for _, p, c in new["train"]))
  # Training people look the same (only pose and sensor noise re-drawn); test people
  # do not: compare each identity's mean colour across the two datasets.
  train_old, train_new = _image_means(root, "train"), _image_means(fresh, "train")
  gal_old, gal_new = _image_means(root, "gallery"), _image_means(fresh, "gallery")
  d_train = np.median([np.abs(train_old[p] - train_new[p]).max() for p in train_old])
  d_test = np.median([np.abs(gal_old[p] - gal_new[p]).max() for p in gal_old])
  assert d_train < 6 and d_test > 3 * d_train, (d_train, d_test)
  q_old, q_new = _digest(os.path.join(root, "query")), _digest(os.path.join(fresh, "query"))
  assert not set(q_old.values()) & set(q_new.values())
  # The seed is part of the cache name, and the default output is what it was.
  assert synthetic.default_root(**SMALL, test_seed=7).endswith("-test7")
  assert synthetic.default_root(**SMALL) == synthetic.default_root(**SMALL, test_seed=-1)


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
  calls = []

  def failing_save(arr, path, quality):
    calls.append(path)
    if len(calls) == 6:
      raise KeyboardInterrupt
    Image.fromarray(arr).save(path, format="JPEG", quality=quality)

  monkeypatch.setattr(synthetic, "_save_jpeg", failing_save)
  monkeypatch.setattr(synthetic, "_CHUNK", 16)
  monkeypatch.setattr(synthetic, "_THREADS", 2)
  with pytest.raises(KeyboardInterrupt):
    synthetic.generate(str(tmp_path / "ds"), **SMALL)
  # The failing thread stops the others before their next image: at most the one
  # image the other thread was saving follows the failure, however late this thread
  # (waiting in futures.wait) wakes up.
  assert 6 <= len(calls) <= 6 + 1
  assert os.listdir(tmp_path) == []  # neither the dataset nor its temporary folder


def test_generate_refuses_to_overwrite(tmp_path):
  (tmp_path / "ds").mkdir()
  (tmp_path / "ds" / "mine.txt").write_text("user data")
  with pytest.raises(DatasetError, match=r"ds exists and is not an empty folder"):
    synthetic.generate(str(tmp_path / "ds"), **SMALL)
  assert os.listdir(tmp_path / "ds") == ["mine.txt"]
  (tmp_path / "a_file").write_text("x")
  with pytest.raises(DatasetError, match=r"ds: .*a_file is a file, not a folder"):
    synthetic.generate(str(tmp_path / "a_file" / "ds"), **SMALL)
  assert (tmp_path / "a_file").read_text() == "x"


def test_ensure_dataset(small, tmp_path, monkeypatch):
  root, _ = small
  marker = os.path.join(root, synthetic.MARKER)
  before = os.stat(marker).st_mtime_ns
  assert synthetic.ensure_dataset(root, **SMALL) == root  # reused, not regenerated
  assert os.stat(marker).st_mtime_ns == before
  with pytest.raises(DatasetError, match=r"seed=3 \(wanted 4\)") as e:
    synthetic.ensure_dataset(root, **{**SMALL, "seed": 4})
  assert "num_ids" not in str(e.value)
  with pytest.raises(DatasetError, match=r"group_size=4 \(wanted 2\)"):
    synthetic.ensure_dataset(root, **{**SMALL, "group_size": 2})

  empty = tmp_path / "empty"
  empty.mkdir()
  for target in (str(tmp_path / "new" / "ds"), str(empty)):
    assert synthetic.ensure_dataset(target, **SMALL) == target
    assert _digest(target) == _digest(root)

  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "image.jpg").write_bytes(b"x")
  with pytest.raises(DatasetError, match=r"foreign holds other data \(no synthetic.json\)"):
    synthetic.ensure_dataset(str(foreign), **SMALL)
  assert os.listdir(foreign) == ["image.jpg"]

  broken = str(tmp_path / "new" / "ds")
  query = os.path.join(broken, "query")
  os.remove(os.path.join(query, sorted(os.listdir(query))[0]))
  with pytest.raises(DatasetError, match=r"query holds \d+ images, expected \d+"):
    synthetic.ensure_dataset(broken, **SMALL)


def test_default_root(tmp_path, monkeypatch):
  monkeypatch.setenv("PRIVREID_DATA_DIR", str(tmp_path))
  root = synthetic.default_root(**SMALL)
  assert os.path.dirname(root) == str(tmp_path)
  assert "16ids" in root and "64x32" in root and "seed3" in root
  assert synthetic.default_root(**SMALL) == root
  assert synthetic.default_root(**{**SMALL, "seed": 4}) != root
  knob = synthetic.default_root(**SMALL, group_size=2)
  assert knob.startswith(root + "-") and knob != synthetic.default_root(**SMALL, group_size=3)
  assert synthetic.default_root(**SMALL, group_size=synthetic.DEFAULTS["group_size"]) == root
  monkeypatch.delenv("PRIVREID_DATA_DIR")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert synthetic.default_root(**SMALL).startswith(
      str(tmp_path / "home" / ".cache" / "privreid_jax") + os.sep)


@pytest.mark.parametrize("params, message", [
    (dict(num_cameras=10), r"num_cameras=10 must be in 2\.\.9"),
    (dict(num_ids=1), r"num_ids=1 must be >= 2"),
    (dict(images_per_camera=(1, 3)), r"images_per_camera=\(1, 3\)"),
    (dict(height="64"), r"height='64' must be of type int"),
    (dict(nmu_ids=3), r"unknown parameter\(s\) nmu_ids"),
    (dict(group_size=11), r"group_size=11 must be in 1\.\.10"),
    (dict(min_cameras_per_id=5), r"min_cameras_per_id=5 must be in 2\.\.num_cameras"),
    (dict(test_seed=-2), r"test_seed=-2 must be >= 0, or -1"),
])
def test_bad_parameters_are_named(params, message, tmp_path):
  with pytest.raises(ValueError, match=message):
    synthetic.ensure_dataset(str(tmp_path / "ds"), **{**SMALL, **params})
  assert not os.path.exists(tmp_path / "ds")


def test_cli_prints_the_table(tmp_path, capsys):
  out = str(tmp_path / "ds")
  assert synthetic.main(["--out", out, "--num_ids", "6", "--num_cameras=3",
                         "--height", "32", "--width", "16", "--seed", "1",
                         "--images_per_camera=2,3"]) == 0
  text = capsys.readouterr().out
  stats = synthetic._read_marker(out)["stats"]
  assert stats["train"]["ids"] == 3
  assert re.search(rf"train\s+3\s+{stats['train']['images']}\s+\d", text)
  assert re.search(rf"query\s+3\s+{stats['query']['images']}\s+\d", text)
  assert re.search(r"generated in \d+\.\d s", text)
  assert synthetic.main(["--out", out]) == 1  # non-empty: refused, not overwritten
  assert "not an empty folder" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--num-ids=6"], "num-ids"),                        # the old dashed spelling
    (["--images_per_camera=2"], "--images_per_camera takes MIN,MAX"),
    ([], "--out is required"),
    (["--out="], "--out= is empty"),        # the last --out wins: was a traceback
])
def test_cli_bad_flags_are_one_line_with_exit_2(argv, message, tmp_path, capsys):
  args = argv if not argv else ["--out", str(tmp_path / "ds"), *argv]
  with pytest.raises(SystemExit) as e:
    synthetic.main(args)
  err = capsys.readouterr().err
  assert e.value.code == 2 and message in err and err.count("\n") == 1, err
  assert not os.path.exists(tmp_path / "ds")


def _load_real_ids(root):
  """Images of the real identities (pid > 0) as floats in [0, 1], with pids and cameras."""
  images, pids, cams = [], [], []
  for split, rows in _listing(root).items():
    for name, pid, cam in rows:
      if pid > 0:
        with Image.open(os.path.join(root, synthetic.FOLDERS[split], name)) as im:
          images.append(np.asarray(im, np.float32) / 255)
        pids.append(pid)
        cams.append(cam)
  return np.stack(images), np.array(pids), np.array(cams)


def _same_camera_nn_accuracy(dist, pids, cams):
  """How often the nearest other image of the same camera shows the same id."""
  dist = dist.copy()
  np.fill_diagonal(dist, np.inf)
  dist[cams[:, None] != cams[None]] = np.inf
  valid = np.isfinite(dist).any(1)
  return float((pids[dist.argmin(1)] == pids)[valid].mean())


def _pixel_dist(x):
  f = x.reshape(len(x), -1)
  return (f * f).sum(1)[:, None] + (f * f).sum(1)[None] - 2 * f @ f.T


def _mosaic(x, block):
  """Block-mean mosaic on a grid anchored at the top-left corner."""
  n, h, w, _ = x.shape
  hp, wp = -(-h // block) * block, -(-w // block) * block
  padded = np.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)), mode="edge")
  means = padded.reshape(n, hp // block, block, wp // block, block, 3).mean((2, 4))
  return np.repeat(np.repeat(means, block, 1), block, 2)[:, :h, :w]


def test_fine_detail_identifies_and_blur_and_mosaic_destroy_it(tmp_path):
  # A fixed pose (jitter=0) keeps the images of a camera aligned, so pixel
  # nearest neighbours on the torso (where the print is) measure what the pixels
  # carry. Groups of 4 ids share every coarse cue, so only fine detail tells
  # them apart.
  h, w = 64, 32
  root = str(tmp_path / "ds")
  synthetic.generate(root, num_ids=32, num_cameras=4, height=h, width=w, seed=1, jitter=0.0,
                     shade_jitter=0.0)  # isolate the fine detail
  x, pids, cams = _load_real_ids(root)
  sigma, block = 12 * h / 256, 24 * h // 256  # the privacy methods' settings, scaled
  torso = np.s_[:, int(.15 * h):int(.5 * h), int(.25 * w):int(.75 * w)]
  acc = {name: _same_camera_nn_accuracy(_pixel_dist(im[torso]), pids, cams) for name, im in (
      ("raw", x), ("blur", ndimage.gaussian_filter(x, (0, sigma, sigma, 0))),
      ("mosaic", _mosaic(x, block)))}
  print("aligned same-camera NN on the torso:", acc)
  assert acc["raw"] > 0.85, acc
  assert acc["blur"] < acc["raw"] - 0.3, acc
  # An aligned grid cuts every print at the same place, so the mosaic leaks
  # more than the blur (as on Market-1501, where mosaic keeps more Rank-1).
  assert acc["mosaic"] < acc["raw"] - 0.2, acc
  assert acc["blur"] > 4 / 32, acc  # coarse cues survive: groups stay apart


def _template_dist(x, radius):
  """Min over shifts of the distance of each image's torso to a window of another."""
  n, h, w, _ = x.shape
  y0, y1, x0, x1 = int(.2 * h), int(.45 * h), int(.3 * w), int(.7 * w)
  tpl = x[:, y0:y1, x0:x1].reshape(n, -1)
  tpl = tpl - tpl.mean(1, keepdims=True)
  best = np.full((n, n), np.inf)
  for dy in range(-radius, radius + 1):
    for dx in range(-radius, radius + 1):
      win = x[:, y0 + dy:y1 + dy, x0 + dx:x1 + dx].reshape(n, -1)
      win = win - win.mean(1, keepdims=True)
      d = (tpl * tpl).sum(1)[:, None] + (win * win).sum(1)[None] - 2 * tpl @ win.T
      best = np.minimum(best, d)
  return best


def test_fine_detail_survives_pose_jitter_but_not_blur(tmp_path):
  # With the default jitter (position, scale, flip, back views) a shift-tolerant
  # template match on the torso still finds the same id far more often on raw
  # images than on blurred ones.
  h, w = 64, 32
  root = str(tmp_path / "ds")
  synthetic.generate(root, num_ids=32, num_cameras=4, height=h, width=w, seed=1,
                     shade_jitter=0.0)  # isolate the fine detail
  x, pids, cams = _load_real_ids(root)
  sigma = 12 * h / 256
  raw = _same_camera_nn_accuracy(_template_dist(x, 3), pids, cams)
  blur = _same_camera_nn_accuracy(
      _template_dist(ndimage.gaussian_filter(x, (0, sigma, sigma, 0)), 3), pids, cams)
  print(f"jittered same-camera template match: raw {raw:.3f} blur {blur:.3f}")
  assert raw > 0.6, raw
  assert blur < raw - 0.25, (raw, blur)


def test_group_prints_are_distinct_even_when_mirrored():
  """A flip must not turn one member's print into another member's."""
  rng = np.random.default_rng(0)
  groups = [np.arange(i, i + 4) for i in range(0, 40, 4)]
  people = synthetic_appearance.sample_people(rng, groups, 40)
  for members in groups:
    prints = [people["print"][m] for m in members]
    for i, a in enumerate(prints):
      for b in prints[i + 1:]:
        assert not np.array_equal(a, b)
        assert not np.array_equal(a[:, ::-1], b)
