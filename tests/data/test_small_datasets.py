"""Small datasets in torchreid's layouts, multi-source training and combineall.

Every dataset is a tiny fake folder of empty image files: the loaders list
files and never open them.
"""

import logging
import os
import shutil

import numpy as np
import pytest

from configs import anon_real_small, dual_real_small, real_small
from configs import market as market_config
from privreid_jax import config_base
from privreid_jax.data import catalog
from privreid_jax.data import datasets
from privreid_jax.data import multi_source
from privreid_jax.data import small_datasets
from privreid_jax.data import splits
from privreid_jax.data.records import DatasetError

_HIDDEN = [".DS_Store", "._hidden.jpg", ".0001001.png"]


def _touch(folder, names):
  os.makedirs(folder, exist_ok=True)
  for name in names:
    open(os.path.join(folder, name), "wb").close()


# --- fake layouts --------------------------------------------------------------

VIPER_NUMS = (0, 3, 5, 10, 11, 20, 31, 42)


def _viper(parent, nums=VIPER_NUMS):
  base = os.path.join(parent, "viper", "VIPeR")
  _touch(os.path.join(base, "cam_a"), [f"{n:03d}_45.bmp" for n in nums])
  _touch(os.path.join(base, "cam_b"), [f"{n:03d}_{90 if n % 2 else 0}.bmp" for n in nums])
  return base


def _grid_mat(path, folds, named=True):
  from scipy import io as sio
  names = ("probeImIdx", "galleryImIdx", "personIdx") if named else ("f1", "f2", "f3")
  cells = np.empty((1, len(folds)), dtype=object)
  for k, ids in enumerate(folds):
    s = np.zeros((1, 1), dtype=[(n, object) for n in names])
    s[0, 0][names[0]] = np.zeros((1, 0))
    s[0, 0][names[1]] = np.zeros((1, 0))
    s[0, 0][names[2]] = np.asarray(ids, float)[None, :]
    cells[0, k] = s
  sio.savemat(path, {"trainIdxAll": cells})


GRID_FOLDS = [[1, 3, 5, 7], [2, 4, 6, 8], [1, 2, 3, 4]]


def _grid(parent, num_ids=8, distractors=5, folds=GRID_FOLDS, named=True):
  base = os.path.join(parent, "grid", "underground_reid")
  _touch(os.path.join(base, "probe"),
         [f"{p:04d}_{1 + p % 3}_2500{p}_1_2_3_4.jpeg" for p in range(1, num_ids + 1)])
  _touch(os.path.join(base, "gallery"),
         [f"{p:04d}_{4 + p % 3}_2600{p}_1_2_3_4.jpeg" for p in range(1, num_ids + 1)]
         + [f"0000_{1 + d % 8}_2700{d}_1_2_3_4.jpeg" for d in range(distractors)])
  _grid_mat(os.path.join(base, small_datasets.GRID_MAT), folds, named)
  return base


def _prid(parent, paired=8, a_only=(201, 202, 385), b_only=(201, 203, 204, 749)):
  base = os.path.join(parent, "prid2011", "prid_2011", "single_shot")
  ids = range(1, paired + 1)
  _touch(os.path.join(base, "cam_a"), [f"person_{p:04d}.png" for p in [*ids, *a_only]])
  _touch(os.path.join(base, "cam_b"), [f"person_{p:04d}.png" for p in [*ids, *b_only]])
  return base


def _cuhk01(parent, num_ids=7):
  base = os.path.join(parent, "cuhk01")
  _touch(os.path.join(base, "campus"),
         [f"{p:04d}{k:03d}.png" for p in range(1, num_ids + 1) for k in range(1, 5)])
  return base


ILIDS_IMAGES = {1: 4, 2: 2, 3: 3, 4: 5, 5: 2, 6: 3, 7: 4}


def _ilids(parent, images=None):
  base = os.path.join(parent, "ilids", "i-LIDS_Pedestrian")
  images = ILIDS_IMAGES if images is None else images
  _touch(os.path.join(base, "Persons"),
         [f"{p:04d}{k:03d}.jpg" for p, n in images.items() for k in range(1, n + 1)])
  return base


BUILDERS = {"viper": _viper, "grid": _grid, "prid2011": _prid, "cuhk01": _cuhk01,
            "ilids": _ilids}
IMAGE_FOLDERS = {"viper": ("cam_a", "cam_b"), "grid": ("probe", "gallery"),
                 "prid2011": ("cam_a", "cam_b"), "cuhk01": ("campus",),
                 "ilids": ("Persons",)}


def _names(records):
  return {os.path.basename(r.path) for r in records}


def _check_split_shape(ds):
  """Train relabelled 0..n-1, train and test images and identities disjoint."""
  train_pids = sorted({r.pid for r in ds.train})
  assert train_pids == list(range(len(train_pids)))
  paths = [{r.path for r in recs} for recs in (ds.train, ds.query, ds.gallery)]
  assert not paths[0] & (paths[1] | paths[2]) and not paths[1] & paths[2]
  assert {r.pid for r in ds.query} <= {r.pid for r in ds.gallery}
  for r in ds.train + ds.query + ds.gallery:
    assert os.path.isabs(r.path) and os.path.isfile(r.path)


# --- protocols -------------------------------------------------------------------

def test_viper_protocol(tmp_path):
  base = _viper(tmp_path)
  ds = small_datasets.load_small_dataset("viper", str(tmp_path))
  assert ds.name == "viper" and ds.root == base
  _check_split_shape(ds)
  assert len(ds.train) == 8 and ds.num_train_pids == 4
  assert sorted(r.camid for r in ds.train) == [0] * 4 + [1] * 4
  # Query = cam_a, gallery = cam_b, one image each; pid = file number + 1.
  assert {r.camid for r in ds.query} == {0} and {r.camid for r in ds.gallery} == {1}
  assert all(os.path.dirname(r.path).endswith("cam_a") for r in ds.query)
  assert len(ds.query) == len(ds.gallery) == 4
  assert sorted(r.pid for r in ds.query) == sorted(r.pid for r in ds.gallery)
  test_nums = {int(os.path.basename(r.path)[:3]) for r in ds.query}
  assert {r.pid for r in ds.query} == {n + 1 for n in test_nums}
  train_nums = {int(os.path.basename(r.path)[:3]) for r in ds.train}
  assert train_nums | test_nums == set(VIPER_NUMS) and not train_nums & test_nums
  # Each training identity: its cam_a and cam_b image under one label.
  for label in range(4):
    nums = {os.path.basename(r.path)[:3] for r in ds.train if r.pid == label}
    assert len(nums) == 1


def test_grid_protocol_uses_the_mat_folds(tmp_path):
  base = _grid(tmp_path)
  for k, fold in enumerate(GRID_FOLDS):
    ds = small_datasets.load_small_dataset("grid", str(tmp_path), split_index=k)
    assert ds.root == base
    _check_split_shape(ds)
    # Train: probe + gallery images of the fold's persons, relabelled in pid order.
    assert {int(n[:4]) for n in _names(ds.train)} == set(fold)
    assert len(ds.train) == 2 * len(fold)
    test = set(range(1, 9)) - set(fold)
    assert {r.pid for r in ds.query} == test and len(ds.query) == len(test)
    assert all("/probe/" in r.path for r in ds.query)
    # Gallery: the test persons' gallery images and every distractor (pid 0).
    assert sorted(r.pid for r in ds.gallery) == [0] * 5 + sorted(test)
    assert all("/gallery/" in r.path for r in ds.gallery)
  # Cameras from the second field, 0-based.
  ds = small_datasets.load_small_dataset("grid", str(tmp_path))
  q = {os.path.basename(r.path): r.camid for r in ds.query}
  assert q["0002_3_25002_1_2_3_4.jpeg"] == 2
  with pytest.raises(DatasetError, match="split_index 3: .*has 3 folds"):
    small_datasets.load_small_dataset("grid", str(tmp_path), split_index=3)


def test_grid_mat_struct_without_field_names_uses_the_third_field(tmp_path):
  _grid(tmp_path, named=False)
  ds = small_datasets.load_small_dataset("grid", str(tmp_path), split_index=1)
  assert {int(n[:4]) for n in _names(ds.train)} == set(GRID_FOLDS[1])


@pytest.mark.parametrize("content,match", [
    (b"not a mat file", "cannot read .*features_and_partitions.mat as a MATLAB"),
    (None, "no trainIdxAll variable"),
])
def test_grid_bad_mat_is_one_line(tmp_path, content, match):
  base = _grid(tmp_path)
  mat = os.path.join(base, small_datasets.GRID_MAT)
  if content is None:
    from scipy import io as sio
    sio.savemat(mat, {"something": np.zeros(3)})
  else:
    with open(mat, "wb") as f:
      f.write(content)
  with pytest.raises(DatasetError, match=match) as e:
    small_datasets.load_small_dataset("grid", str(tmp_path))
  assert "\n" not in str(e.value)


def test_grid_fold_with_unknown_person_and_probe_distractor(tmp_path):
  _grid(tmp_path, folds=[[1, 2, 99]])
  with pytest.raises(DatasetError, match="fold 0 trains on person 99, who has no image"):
    small_datasets.load_small_dataset("grid", str(tmp_path))
  base = _grid(tmp_path / "b")
  _touch(os.path.join(base, "probe"), ["0000_1_1_1_1_1_1.jpeg"])
  with pytest.raises(DatasetError, match="pid 0000 .* in probe/"):
    small_datasets.load_small_dataset("grid", str(tmp_path / "b"))
  base = _grid(tmp_path / "c")
  _touch(os.path.join(base, "gallery"), ["0003_9_1_1_1_1_1.jpeg"])
  with pytest.raises(DatasetError, match="0003_9_1_1_1_1_1.jpeg: camera 9 outside"):
    small_datasets.load_small_dataset("grid", str(tmp_path / "c"))


def test_prid_protocol_and_distractors(tmp_path):
  base = _prid(tmp_path)
  ds = small_datasets.load_small_dataset("prid2011", str(tmp_path))
  assert ds.root == base
  _check_split_shape(ds)
  assert ds.num_train_pids == 4 and len(ds.train) == 8
  assert {int(n[7:11]) for n in _names(ds.train)} <= set(range(1, 9))
  test = {r.pid for r in ds.query}
  assert len(test) == 4 and test <= set(range(1, 9))
  assert all(r.camid == 0 and "/cam_a/" in r.path for r in ds.query)
  assert all(r.camid == 1 and "/cam_b/" in r.path for r in ds.gallery)
  # Gallery: the test persons' cam_b images, then cam_b's pids > 200 (kept);
  # cam_a's pids > 200 are other people and are not used.
  assert sorted(r.pid for r in ds.gallery) == sorted(test) + [201, 203, 204, 749]
  assert not any(r.pid > 200 for r in ds.train + ds.query)


def test_prid_unpaired_low_pid_is_an_error(tmp_path):
  base = _prid(tmp_path)
  os.remove(os.path.join(base, "cam_b", "person_0003.png"))
  with pytest.raises(DatasetError, match=r"cam_a/person_0003.png: person 3 has no image in "
                     r".*single_shot/cam_b"):
    small_datasets.load_small_dataset("prid2011", str(tmp_path))


def test_cuhk01_protocol(tmp_path):
  base = _cuhk01(tmp_path)
  ds = small_datasets.load_small_dataset("cuhk01", str(tmp_path))
  assert ds.root == base
  _check_split_shape(ds)
  assert ds.num_train_pids == 3 and len(ds.train) == 12     # 7 // 2 identities x 4
  # Images 001/002 are camera 0 (query), 003/004 camera 1 (gallery).
  assert {n[4:7] for n in _names(ds.query)} == {"001", "002"}
  assert {n[4:7] for n in _names(ds.gallery)} == {"003", "004"}
  assert {r.camid for r in ds.query} == {0} and {r.camid for r in ds.gallery} == {1}
  assert len(ds.query) == len(ds.gallery) == 8 and len({r.pid for r in ds.query}) == 4
  cams = {os.path.basename(r.path)[4:7]: r.camid for r in ds.train}
  assert cams == {"001": 0, "002": 0, "003": 1, "004": 1}


def test_ilids_protocol(tmp_path):
  base = _ilids(tmp_path)
  ds = small_datasets.load_small_dataset("ilids", str(tmp_path))
  assert ds.root == base
  _check_split_shape(ds)
  train_ids = {int(n[:4]) for n in _names(ds.train)}
  assert len(train_ids) == 3                                   # int(0.5 * 7)
  assert len(ds.train) == sum(ILIDS_IMAGES[p] for p in train_ids)
  # Every test person: one query and one gallery image, two different images.
  test = set(ILIDS_IMAGES) - train_ids
  assert sorted(r.pid for r in ds.query) == sorted(test) == sorted(r.pid for r in ds.gallery)
  for q, g in zip(ds.query, ds.gallery):
    assert q.pid == g.pid and q.path != g.path and q.camid != g.camid
  # Camera = image number - 1.
  assert all(r.camid == int(os.path.basename(r.path)[4:7]) - 1
             for r in ds.train + ds.query + ds.gallery)
  # The two images drawn per test person change with the split.
  picks = {tuple(sorted(_names(small_datasets.load_small_dataset(
      "ilids", str(tmp_path), split_index=k).query))) for k in range(10)}
  assert len(picks) > 1


def test_ilids_person_with_one_image_is_an_error(tmp_path):
  _ilids(tmp_path, images={**ILIDS_IMAGES, 8: 1})
  with pytest.raises(DatasetError, match="0008001.jpg: person 0008 has one image"):
    small_datasets.load_small_dataset("ilids", str(tmp_path))


# --- splits ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", small_datasets.SMALL_DATASETS)
def test_splits_are_seeded_disjoint_and_differ(tmp_path, name):
  BUILDERS[name](tmp_path)
  trains = []
  num_splits = len(GRID_FOLDS) if name == "grid" else small_datasets.NUM_SPLITS
  for k in range(num_splits):
    ds = catalog.load(name, str(tmp_path), split_index=k)
    assert catalog.load(name, str(tmp_path), split_index=k) == ds     # seeded
    _check_split_shape(ds)
    trains.append(frozenset(_names(ds.train)))
  assert len(set(trains)) > 1
  assert catalog.load(name, str(tmp_path)) == catalog.load(name, str(tmp_path), split_index=0)


@pytest.mark.parametrize("bad", [10, -1, 1.5, "0", True])
def test_split_index_out_of_range(tmp_path, bad):
  _viper(tmp_path)
  with pytest.raises(DatasetError, match="split_index .*0..9 .*config.data.split_index"):
    small_datasets.load_small_dataset("viper", str(tmp_path), split_index=bad)


@pytest.mark.parametrize("name", small_datasets.SMALL_DATASETS)
def test_root_can_be_parent_dataset_folder_or_image_parent(tmp_path, name):
  base = BUILDERS[name](tmp_path)
  ds = catalog.load(name, str(tmp_path))
  for root in {os.path.join(str(tmp_path), catalog.expected_folder(name).split("/")[0]),
               base}:
    assert catalog.load(name, root) == ds
  assert catalog.usual_location(name, str(tmp_path)) == base
  assert catalog.usual_location(name, base) is None        # not the root itself


# --- hidden files -------------------------------------------------------------------

@pytest.mark.parametrize("name", small_datasets.SMALL_DATASETS)
def test_hidden_files_are_ignored(tmp_path, name):
  base = BUILDERS[name](tmp_path)
  clean = catalog.load(name, str(tmp_path), split_index=1)
  for folder in IMAGE_FOLDERS[name]:
    _touch(os.path.join(base, folder), _HIDDEN + ["._" + sorted(os.listdir(
        os.path.join(base, folder)))[0], "notes.txt"])
  assert catalog.load(name, str(tmp_path), split_index=1) == clean


def test_hidden_files_are_ignored_by_the_market_reader(tmp_path):
  names = {"bounding_box_train": ["0002_c1s1_000451_03.jpg", "0007_c3s1_000100_01.jpg"],
           "query": ["0005_c1s1_001051_00.jpg"],
           "bounding_box_test": ["0005_c4s1_000003_00.jpg", "0000_c2s1_000002_00.jpg"]}
  for folder, files in names.items():
    _touch(tmp_path / folder, files)
  clean = datasets.load_dataset("market1501", str(tmp_path))
  for folder, files in names.items():
    # AppleDouble files (._<name>) would otherwise parse as valid images.
    _touch(tmp_path / folder, _HIDDEN + ["._" + f for f in files])
  assert datasets.load_dataset("market1501", str(tmp_path)) == clean
  assert datasets.list_images(str(tmp_path / "query")) == ["0005_c1s1_001051_00.jpg"]


# --- errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,expected", [
    ("viper", "viper/VIPeR/cam_a"), ("grid", "grid/underground_reid/probe"),
    ("prid2011", "prid2011/prid_2011/single_shot/cam_a"), ("cuhk01", "cuhk01/campus"),
    ("ilids", "ilids/i-LIDS_Pedestrian/Persons")])
def test_missing_layout_names_the_expected_folder(tmp_path, name, expected):
  with pytest.raises(DatasetError) as e:
    catalog.load(name, str(tmp_path))
  msg = str(e.value)
  assert f"missing {tmp_path}/{expected} " in msg and "\n" not in msg


@pytest.mark.parametrize("name,remove", [
    ("viper", "cam_b"), ("grid", "gallery"), ("grid", small_datasets.GRID_MAT),
    ("prid2011", "cam_a")])
def test_partial_layout_names_the_missing_part(tmp_path, name, remove):
  base = BUILDERS[name](tmp_path)
  path = os.path.join(base, remove)
  if os.path.isdir(path):
    for f in os.listdir(path):
      os.remove(os.path.join(path, f))
    os.rmdir(path)
  else:
    os.remove(path)
  with pytest.raises(DatasetError, match=f"^missing {path} .*layout") as e:
    catalog.load(name, str(tmp_path))
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", small_datasets.SMALL_DATASETS)
def test_empty_image_folder_and_bad_file_name(tmp_path, name):
  base = BUILDERS[name](tmp_path)
  folder = os.path.join(base, IMAGE_FOLDERS[name][-1])
  _touch(folder, ["photo.jpg"])
  with pytest.raises(DatasetError, match=f"file {folder}/photo.jpg does not match"):
    catalog.load(name, str(tmp_path))
  for f in os.listdir(folder):
    os.remove(os.path.join(folder, f))
  _touch(folder, [".DS_Store"])
  with pytest.raises(DatasetError, match=f"no images .* in {folder}$"):
    catalog.load(name, str(tmp_path))


def test_viper_unpaired_and_duplicate_images(tmp_path):
  base = _viper(tmp_path)
  _touch(os.path.join(base, "cam_a"), ["099_45.bmp"])
  with pytest.raises(DatasetError, match="cam_a/099_45.bmp: person 99 has no image in"):
    catalog.load("viper", str(tmp_path))
  base = _viper(tmp_path / "d")
  _touch(os.path.join(base, "cam_b"), ["003_180.bmp"])
  with pytest.raises(DatasetError, match="a second image of person 3"):
    catalog.load("viper", str(tmp_path / "d"))


def test_cuhk01_bad_image_number_and_one_camera(tmp_path):
  base = _cuhk01(tmp_path)
  _touch(os.path.join(base, "campus"), ["0003005.png"])
  with pytest.raises(DatasetError, match="0003005.png: image number 005 outside"):
    catalog.load("cuhk01", str(tmp_path))
  base = _cuhk01(tmp_path / "b")
  _touch(os.path.join(base, "campus"), ["0050001.png"])
  with pytest.raises(DatasetError, match="person 0050 has images of one camera"):
    catalog.load("cuhk01", str(tmp_path / "b"))


def test_load_dataset_points_small_names_to_catalog(tmp_path):
  with pytest.raises(DatasetError, match="'grid' is not one of load_dataset's .*catalog.load"):
    datasets.load_dataset("grid", str(tmp_path))
  with pytest.raises(DatasetError, match="unknown dataset name 'caviar'; known: market1501"):
    catalog.load("caviar", str(tmp_path))


# --- open_splits, multi-source, combineall -----------------------------------------

def _market(parent):
  base = os.path.join(parent, "Market-1501-v15.09.15")
  _touch(os.path.join(base, "bounding_box_train"),
         ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg",
          "0007_c3s1_000100_01.jpg", "0009_c6s1_000100_01.jpg"])
  _touch(os.path.join(base, "query"), ["0005_c1s1_001051_00.jpg", "0011_c2s1_000001_00.jpg"])
  _touch(os.path.join(base, "bounding_box_test"),
         ["-1_c1s1_000001_00.jpg", "0000_c2s1_000002_00.jpg", "0005_c4s1_000003_00.jpg",
          "0011_c1s1_000004_00.jpg", "0013_c5s1_000004_00.jpg"])
  return base


def _config(root, name="viper", **data):
  config = market_config.get_config()
  config.data.name, config.data.root = name, str(root)
  for k, v in data.items():
    config.data[k] = v
  return config.data


def _consistent(split):
  """Items carry the split's labels (the pipeline reads camids from the items)."""
  items = [split.source[i] for i in range(len(split))]
  assert [r.pid for r in items] == list(split.pids)
  assert [r.camid for r in items] == list(split.camids)
  return items


def test_open_splits_reads_a_small_dataset_with_split_index(tmp_path):
  _viper(tmp_path)
  s0 = splits.open_splits(_config(tmp_path))
  s3 = splits.open_splits(_config(tmp_path, split_index=3))
  ds3 = catalog.load("viper", str(tmp_path), split_index=3)
  assert s3.name == "viper" and len(s3.train) == 8 and s3.num_train_pids == 4
  assert list(s3.query.pids) == [r.pid for r in ds3.query]
  assert set(s0.query.pids) != set(s3.query.pids)
  with pytest.raises(DatasetError, match="source='tfds' prepares .*read viper with"):
    splits.open_splits(_config(tmp_path, source="tfds"))


def test_combineall_single_dataset(tmp_path):
  _viper(tmp_path)
  plain = splits.open_splits(_config(tmp_path))
  s = splits.open_splits(_config(tmp_path, combineall=True))
  assert len(s.train) == 16 and s.num_train_pids == 8
  assert sorted(np.unique(s.train.pids)) == list(range(8))
  # The training part is unchanged; test identities follow, in pid order.
  assert list(s.train.pids[:8]) == list(plain.train.pids)
  test_ids = sorted(set(plain.query.pids))
  added = _consistent(s.train)[8:]
  assert [r.pid for r in added] == [4 + test_ids.index(p) for p in plain.query.pids] + [
      4 + test_ids.index(p) for p in plain.gallery.pids]
  assert list(s.query.pids) == list(plain.query.pids)      # test split still reported


@pytest.mark.parametrize("name,builder,junk", [
    ("market1501", _market, {0}), ("prid2011", _prid, {201, 203, 204, 749}),
    ("grid", _grid, {0})])
def test_combineall_leaves_out_junk_identities(tmp_path, name, builder, junk):
  builder(tmp_path)
  plain = splits.open_splits(_config(tmp_path, name))
  s = splits.open_splits(_config(tmp_path, name, combineall=True))
  kept_q = [p for p in plain.query.pids if p not in junk]
  kept_g = [p for p in plain.gallery.pids if p not in junk]
  assert len(s.train) == len(plain.train) + len(kept_q) + len(kept_g)
  assert s.num_train_pids == plain.num_train_pids + len(set(kept_q) | set(kept_g))
  _consistent(s.train)


def test_multi_source_offsets_pids_and_cameras(tmp_path, caplog):
  _market(tmp_path)
  _viper(tmp_path)
  _cuhk01(tmp_path)
  data = _config(tmp_path, "viper", sources=("market1501", "grid", "viper", "cuhk01"))
  with caplog.at_level(logging.WARNING):
    s = splits.open_splits(data)
  assert any("grid not found at" in r.getMessage() and "skipped" in r.getMessage()
             for r in caplog.records)
  market = catalog.load("market1501", str(tmp_path))
  viper = catalog.load("viper", str(tmp_path))
  cuhk01 = catalog.load("cuhk01", str(tmp_path))
  assert s.name == "market1501+viper+cuhk01" and s.root == str(tmp_path)
  n_m, n_v = market.num_train_pids, viper.num_train_pids
  assert len(s.train) == len(market.train) + len(viper.train) + len(cuhk01.train)
  assert s.num_train_pids == n_m + n_v + cuhk01.num_train_pids
  items = _consistent(s.train)
  # Market first with its own labels; VIPeR's pids after Market's, cameras after
  # Market's largest (c6 -> 5); CUHK01 after both.
  assert items[:len(market.train)] == list(market.train)
  v = items[len(market.train):len(market.train) + len(viper.train)]
  assert [r.path for r in v] == [r.path for r in viper.train]
  assert [r.pid for r in v] == [r.pid + n_m for r in viper.train]
  assert [r.camid for r in v] == [r.camid + 6 for r in viper.train]
  c = items[len(market.train) + len(viper.train):]
  assert [r.pid for r in c] == [r.pid + n_m + n_v for r in cuhk01.train]
  assert {r.camid for r in c} == {8, 9}
  # The test split is data.name's.
  assert list(s.query.pids) == [r.pid for r in viper.query]
  assert list(s.gallery.camids) == [r.camid for r in viper.gallery]


def test_multi_source_combineall_and_target_outside_sources(tmp_path):
  _market(tmp_path)
  _prid(tmp_path)
  _ilids(tmp_path)
  data = _config(tmp_path, "ilids", sources=("prid2011", "market1501"), combineall=True,
                 split_index=2)
  s = splits.open_splits(data)
  prid = splits.open_splits(_config(tmp_path, "prid2011", combineall=True, split_index=2))
  market = splits.open_splits(_config(tmp_path, "market1501", combineall=True))
  assert len(s.train) == len(prid.train) + len(market.train)
  assert s.num_train_pids == prid.num_train_pids + market.num_train_pids
  _consistent(s.train)
  ilids = catalog.load("ilids", str(tmp_path), split_index=2)
  assert list(s.query.pids) == [r.pid for r in ilids.query]
  # Validation hold-out still works on the joined training split.
  data.val_fraction = 0.25
  v = splits.open_splits(data)
  assert v.val_query is not None and v.num_train_pids < s.num_train_pids


def test_multi_source_errors(tmp_path):
  _viper(tmp_path)
  with pytest.raises(DatasetError, match=f"none of config.data.sources .*found under "
                     f"{tmp_path} .*expected {tmp_path}/Market-1501-v15.09.15"):
    splits.open_splits(_config(tmp_path, sources=("market1501", "grid")))
  with pytest.raises(DatasetError, match="unknown name in config.data.sources 'vipr'"):
    splits.open_splits(_config(tmp_path, sources=("vipr",)))
  with pytest.raises(DatasetError, match="lists viper twice"):
    splits.open_splits(_config(tmp_path, sources=("viper", "viper")))
  with pytest.raises(DatasetError, match="config.data.root is required with"):
    splits.open_splits(_config("", sources=("viper",)))
  with pytest.raises(DatasetError, match="evaluation dataset cuhk01 not found: expected "
                     f"{tmp_path}/cuhk01/campus"):
    splits.open_splits(_config(tmp_path, "cuhk01", sources=("viper",)))
  # A source that is there but broken is an error, not skipped.
  os.remove(os.path.join(tmp_path, "viper", "VIPeR", "cam_b", "000_0.bmp"))
  with pytest.raises(DatasetError, match="000_45.bmp: person 0 has no image"):
    splits.open_splits(_config(tmp_path, sources=("viper",)))


def test_open_eval_splits(tmp_path):
  _viper(tmp_path)
  _cuhk01(tmp_path)
  market = _market(tmp_path)
  # Without sources: data.name itself is the training dataset's own splits...
  data = _config(market, "market1501")
  own = splits.open_eval_splits(data, "market1501")
  assert own.root == market and list(own.query.pids) == [5, 11]
  # ...and the others are found beside its folder, with data.split_index.
  data.split_index = 4
  v = splits.open_eval_splits(data, "viper")
  ds = catalog.load("viper", str(tmp_path), split_index=4)
  assert v.name == "viper" and list(v.query.pids) == [r.pid for r in ds.query]
  assert list(v.gallery.camids) == [r.camid for r in ds.gallery]
  # With sources: under data.root.
  data = _config(tmp_path, "viper", sources=("viper",))
  assert splits.open_eval_splits(data, "cuhk01").query.pids.size == 8
  with pytest.raises(DatasetError, match=f"evaluation dataset grid not found: expected "
                     f"{tmp_path}/grid/underground_reid$"):
    splits.open_eval_splits(data, "grid")
  with pytest.raises(DatasetError, match="unknown evaluation dataset 'duke'"):
    splits.open_eval_splits(data, "duke")


def test_hidden_files_do_not_make_synthetic_data_look_incomplete(tmp_path):
  from configs import synthetic as synthetic_config
  config = synthetic_config.get_config("tiny")
  config.data.root = str(tmp_path / "synth")
  first = splits.open_splits(config.data)
  for folder in ("bounding_box_train", "query", "bounding_box_test"):
    _touch(tmp_path / "synth" / folder, _HIDDEN)
  again = splits.open_splits(config.data)      # no "incomplete" error, same split
  assert [r.path for r in again.train.source] == [r.path for r in first.train.source]



@pytest.mark.parametrize("config_module", [anon_real_small, dual_real_small])
def test_method_configs_on_real_data_score_cuhk01_and_the_others_as_targets(tmp_path,
                                                                             config_module):
  _viper(tmp_path)
  _cuhk01(tmp_path)
  c = config_module.get_config("tiny")
  c.data.root = str(tmp_path)
  assert c.data.sources[0] == "cuhk01" and set(c.data.sources) == set(small_datasets.SMALL_DATASETS)
  assert c.evals.reid.enabled and c.evals.targets.skip_missing
  assert tuple(c.evals.targets.datasets) == tuple(c.data.sources[1:])
  s = splits.open_splits(c.data)
  cuhk01 = catalog.load("cuhk01", str(tmp_path))
  viper = catalog.load("viper", str(tmp_path))
  assert list(s.query.pids) == [r.pid for r in cuhk01.query]   # the run's own rows
  assert s.num_train_pids == cuhk01.num_train_pids + viper.num_train_pids
  # Without CUHK01 the first dataset found is the run's own test split.
  shutil.rmtree(os.path.join(tmp_path, "cuhk01"))
  s = splits.open_splits(c.data)
  assert list(s.query.pids) == [r.pid for r in viper.query]


def test_real_small_scores_every_dataset_as_a_target():
  c = real_small.get_config()
  assert tuple(c.data.sources) == tuple(c.evals.targets.datasets) == small_datasets.SMALL_DATASETS
  assert not c.evals.reid.enabled
  with pytest.raises(ValueError, match="targets='some'"):
    config_base.make_small_real(c, targets="some")
