"""Tests for the dataset parsers on tiny fake folders.

The image files are empty: parsing must never decode them.
"""

import os

import pytest

from privreid_jax.data import datasets
from privreid_jax.data.records import DatasetError

_TRAIN = ["0007_c3s1_000100_01.jpg", "0002_c2s1_000301_01.jpg",
          "0002_c1s1_000451_03.jpg"]
_QUERY = ["0005_c1s1_001051_00.jpg", "0009_c6s2_000001_00.jpg"]
_GALLERY = ["-1_c1s1_000001_00.jpg", "0000_c2s1_000002_00.jpg",
            "0005_c4s1_000003_00.jpg", "0009_c1s1_000004_00.jpg"]
_STRAY = ["Thumbs.db", "readme.txt"]


def _touch(folder, names):
  os.makedirs(folder, exist_ok=True)
  for name in names:
    open(os.path.join(folder, name), "wb").close()


def _market(base, train=_TRAIN, query=_QUERY, gallery=_GALLERY):
  _touch(os.path.join(base, "bounding_box_train"), list(train) + _STRAY)
  _touch(os.path.join(base, "query"), list(query) + _STRAY)
  _touch(os.path.join(base, "bounding_box_test"), list(gallery) + _STRAY)
  return str(base)


def _triples(records):
  return [(os.path.basename(r.path), r.pid, r.camid) for r in records]


def test_market_rules(tmp_path):
  root = _market(tmp_path / "m")
  ds = datasets.load_dataset("market1501", root)
  assert ds.name == "market1501" and ds.root == root
  # Sorted by file name; train pids 2, 7 -> 0, 1; cameras 0-based.
  assert _triples(ds.train) == [("0002_c1s1_000451_03.jpg", 0, 0),
                                ("0002_c2s1_000301_01.jpg", 0, 1),
                                ("0007_c3s1_000100_01.jpg", 1, 2)]
  assert _triples(ds.query) == [("0005_c1s1_001051_00.jpg", 5, 0),
                                ("0009_c6s2_000001_00.jpg", 9, 5)]
  # Junk (-1) dropped, distractor (0) kept, stray files ignored.
  assert _triples(ds.gallery) == [("0000_c2s1_000002_00.jpg", 0, 1),
                                  ("0005_c4s1_000003_00.jpg", 5, 3),
                                  ("0009_c1s1_000004_00.jpg", 9, 0)]
  for r in ds.train + ds.query + ds.gallery:
    assert os.path.isabs(r.path) and os.path.isfile(r.path)
  assert os.path.dirname(ds.gallery[0].path) == os.path.join(
      root, "bounding_box_test")
  assert ds.num_train_pids == 2 and ds.num_train_cams == 3
  assert datasets.load_dataset("market1501", root) == ds  # deterministic


def test_market_parent_folder_and_relative_root(tmp_path, monkeypatch):
  base = _market(tmp_path / "data" / "Market-1501-v15.09.15")
  ds = datasets.load_dataset("market1501", str(tmp_path / "data"))
  assert ds.root == base and len(ds.train) == 3
  monkeypatch.chdir(tmp_path)
  ds = datasets.load_dataset("market1501", "data")
  assert ds.root == base and os.path.isabs(ds.train[0].path)


def test_duke_eight_cameras_and_parent(tmp_path):
  _market(tmp_path / "DukeMTMC-reID", train=["0001_c8_f0046182.jpg",
                                              "0005_c7_f0000001.jpg"])
  ds = datasets.load_dataset("dukemtmcreid", str(tmp_path))
  assert _triples(ds.train) == [("0001_c8_f0046182.jpg", 0, 7),
                                ("0005_c7_f0000001.jpg", 1, 6)]


@pytest.mark.parametrize("name,bad,what", [
    ("market1501", "0003_c7s1_000001_00.jpg", "c7"),
    ("market1501", "1502_c1s1_000001_00.jpg", "1502"),
    ("market1501", "-2_c1s1_000001_00.jpg", "-2"),
    ("dukemtmcreid", "0003_c9_f0000001.jpg", "c9"),
    ("market1501", "0003_c0s1_000001_00.jpg", "c0"),
])
def test_out_of_range_names_the_file(tmp_path, name, bad, what):
  root = _market(tmp_path, query=_QUERY + [bad])
  with pytest.raises(DatasetError, match=bad) as e:
    datasets.load_dataset(name, root)
  assert what in str(e.value) and "\n" not in str(e.value)


def test_synthetic_uses_market_layout_without_pid_limit(tmp_path):
  root = _market(tmp_path, train=["2000_c9s1_000000_00.png",
                                  "0004_c1s1_000000_00.png"])
  ds = datasets.load_dataset("synthetic", root)
  assert _triples(ds.train) == [("0004_c1s1_000000_00.png", 0, 0),
                                ("2000_c9s1_000000_00.png", 1, 8)]


def test_unparseable_file_name(tmp_path):
  root = _market(tmp_path, gallery=_GALLERY + ["photo.jpg"])
  with pytest.raises(DatasetError, match=r"bounding_box_test/photo\.jpg"):
    datasets.load_dataset("market1501", root)
  root = _market(tmp_path / "b", train=_TRAIN + ["1-2_c1s1_0.jpg"])
  with pytest.raises(DatasetError, match=r"1-2_c1s1_0\.jpg"):
    datasets.load_dataset("market1501", root)


def test_missing_root_and_unknown_name(tmp_path):
  with pytest.raises(DatasetError, match="nowhere.*does not exist"):
    datasets.load_dataset("market1501", str(tmp_path / "nowhere"))
  with pytest.raises(DatasetError, match="data.root"):
    datasets.load_dataset("market1501", "")
  with pytest.raises(DatasetError, match="viper.*market1501.*msmt17.*cuhk03"):
    datasets.load_dataset("viper", str(tmp_path))


def test_missing_split_folder(tmp_path):
  root = _market(tmp_path)
  os.rename(os.path.join(root, "query"), os.path.join(root, "queries"))
  with pytest.raises(DatasetError) as e:
    datasets.load_dataset("market1501", root)
  msg = str(e.value)
  assert os.path.join(root, "query") in msg and "Market-1501 layout" in msg
  # Nothing of the layout at all: names the folder expected under the root.
  with pytest.raises(DatasetError, match="Market-1501-v15.09.15/bounding_box_train"):
    datasets.load_dataset("market1501", str(tmp_path / "queries"))


def test_empty_and_all_junk_folders(tmp_path):
  root = _market(tmp_path, query=[])
  with pytest.raises(DatasetError, match=f"no images .* in {root}/query$"):
    datasets.load_dataset("market1501", root)
  root = _market(tmp_path / "j", query=["-1_c1s1_000001_00.jpg"])
  with pytest.raises(DatasetError, match="all have pid -1"):
    datasets.load_dataset("market1501", root)


def test_cuhk03_subsets(tmp_path):
  np_dir = tmp_path / "cuhk03-np"
  _market(np_dir / "labeled", train=["0001_c1_1.png", "0001_c2_2.png"])
  _market(np_dir / "detected", train=["0003_c1_1.png", "0004_c2_1.png",
                                      "0008_c2_1.png"])
  labeled = datasets.load_dataset("cuhk03", str(np_dir))
  assert _triples(labeled.train) == [("0001_c1_1.png", 0, 0),
                                     ("0001_c2_2.png", 0, 1)]
  detected = datasets.load_dataset("cuhk03", str(np_dir),
                                   cuhk03_subset="detected")
  assert [r.pid for r in detected.train] == [0, 1, 2]
  assert detected.root == str(np_dir / "detected")
  # The parent of cuhk03-np, and the subset folder itself, also work.
  assert datasets.load_dataset("cuhk03", str(tmp_path)) == labeled
  assert datasets.load_dataset(
      "cuhk03", str(np_dir / "detected"), cuhk03_subset="detected") == detected
  with pytest.raises(DatasetError, match="'both'.*labeled, detected"):
    datasets.load_dataset("cuhk03", str(np_dir), cuhk03_subset="both")


def test_cuhk03_missing_subset(tmp_path):
  _market(tmp_path / "labeled")
  with pytest.raises(DatasetError, match="detected/bounding_box_train"):
    datasets.load_dataset("cuhk03", str(tmp_path), cuhk03_subset="detected")


def _msmt(base, train_dir="train", test_dir="test", lists=None):
  lists = lists or {
      "list_train.txt": ["0000/0000_000_01_0303morning_0015_0.jpg 0",
                         "0002/0002_011_15_0303noon_0001_1.jpg 2"],
      "list_val.txt": ["0001/0001_003_10_0303afternoon_0100_0.jpg 1", ""],
      "list_query.txt": ["0005/0005_000_02_0113morning_0001_0.jpg 5"],
      "list_gallery.txt": ["0005/0005_001_11_0113noon_0002_0.jpg 5",
                           "0006/0006_000_03_0113noon_0003_1.jpg 6"],
  }
  for sub in (train_dir, test_dir):
    os.makedirs(os.path.join(base, sub), exist_ok=True)
  for name, lines in lists.items():
    with open(os.path.join(base, name), "w") as f:
      f.write("\n".join(lines) + "\n")
  return str(base)


def test_msmt17_v1(tmp_path):
  base = _msmt(tmp_path / "MSMT17_V1")
  ds = datasets.load_dataset("msmt17", str(tmp_path))
  assert ds.root == base
  # Train = train list then val list; pids relabelled; two-digit cameras.
  assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (2, 14), (1, 9)]
  assert ds.train[1].path == os.path.join(
      base, "train", "0002/0002_011_15_0303noon_0001_1.jpg")
  assert [(r.pid, r.camid) for r in ds.query] == [(5, 1)]
  assert [(r.pid, r.camid) for r in ds.gallery] == [(5, 10), (6, 2)]
  assert ds.gallery[0].path.startswith(os.path.join(base, "test") + os.sep)
  assert datasets.load_dataset("msmt17", base) == ds


def test_msmt17_v2_folders(tmp_path):
  base = _msmt(tmp_path / "MSMT17_V2", "mask_train_v2", "mask_test_v2")
  ds = datasets.load_dataset("msmt17", str(tmp_path))
  assert ds.train[0].path.startswith(os.path.join(base, "mask_train_v2"))
  assert ds.query[0].path.startswith(os.path.join(base, "mask_test_v2"))


def test_msmt17_relabels_sparse_pids(tmp_path):
  lists = {"list_train.txt": ["0040/0040_000_01_a_0_0.jpg 40",
                              "0009/0009_000_02_a_0_0.jpg 9"],
           "list_val.txt": ["0013/0013_000_03_a_0_0.jpg 13"],
           "list_query.txt": ["0041/0041_000_01_a_0_0.jpg 41"],
           "list_gallery.txt": ["0041/0041_000_02_a_0_0.jpg 41"]}
  ds = datasets.load_dataset("msmt17", _msmt(tmp_path, lists=lists))
  assert [r.pid for r in ds.train] == [2, 0, 1]
  assert [r.pid for r in ds.query] == [41]


@pytest.mark.parametrize("line,match", [
    ("0000/0000_000_16_x_0_0.jpg 0", "camera 16"),
    ("0000/0000_000_01_x_0_0.jpg", r"list_query\.txt:2: expected"),
    ("0000/0000.jpg 0", r"list_query\.txt:2: cannot read"),
    ("0000/0000_000_01_x_0_0.jpg zero", r"list_query\.txt:2: cannot read"),
])
def test_msmt17_bad_lines(tmp_path, line, match):
  base = _msmt(tmp_path)
  with open(os.path.join(base, "list_query.txt"), "a") as f:
    f.write(line + "\n")
  with pytest.raises(DatasetError, match=match):
    datasets.load_dataset("msmt17", base)


def test_msmt17_missing_pieces(tmp_path):
  with pytest.raises(DatasetError, match="MSMT17_V1/list_train.txt"):
    datasets.load_dataset("msmt17", str(tmp_path))
  base = _msmt(tmp_path / "a")
  os.remove(os.path.join(base, "list_gallery.txt"))
  with pytest.raises(DatasetError, match=f"{base}/list_gallery.txt"):
    datasets.load_dataset("msmt17", base)
  base = _msmt(tmp_path / "b")
  os.rmdir(os.path.join(base, "test"))
  with pytest.raises(DatasetError, match=f"{base}/test .*mask_test_v2"):
    datasets.load_dataset("msmt17", base)
  base = _msmt(tmp_path / "c")
  open(os.path.join(base, "list_query.txt"), "w").close()
  with pytest.raises(DatasetError, match=f"no images listed in {base}/list_query"):
    datasets.load_dataset("msmt17", base)
