"""Tests for the tfds ArrayRecord builder: a tiny Market folder round-trips without TF."""

import os
import pickle
import socket
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from privreid_jax.data import datasets
from privreid_jax.data import tfds_market
from privreid_jax.data.records import DatasetError

_FILES = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg",
                           "0007_c3s1_000100_01.jpg", "0011_c6s1_000001_00.jpg"],
    "query": ["0005_c1s1_001051_00.jpg", "0009_c6s2_000001_00.jpg"],
    "bounding_box_test": ["-1_c1s1_000001_00.jpg", "0000_c2s1_000002_00.jpg",
                          "0005_c4s1_000003_00.jpg", "0009_c5s1_000004_00.jpg"],
}


def _market(base, seed=0):
  rng = np.random.default_rng(seed)
  for folder, names in _FILES.items():
    os.makedirs(os.path.join(base, folder))
    for i, name in enumerate(names):
      pixels = rng.integers(0, 256, (16 + 2 * i, 8, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(os.path.join(base, folder, name), quality=90)
    open(os.path.join(base, folder, "Thumbs.db"), "wb").close()
  return str(base)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """(root, data_dir, path) of a prepared tiny Market-1501, built with sockets off."""
  tmp = tmp_path_factory.mktemp("tfds")
  root = _market(tmp / "Market-1501-v15.09.15")
  data_dir = str(tmp / "out")

  def no_network(*args, **kwargs):
    raise AssertionError(f"network access during prepare: {args}")

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(socket.socket, "connect", no_network)
    mp.setattr(socket, "create_connection", no_network)
    path = tfds_market.prepare("market1501", str(tmp), data_dir)
  return root, data_dir, path


def test_every_split_round_trips(prepared):
  root, data_dir, path = prepared
  assert path == os.path.join(data_dir, "reid_folder", "market1501", "1.0.0")
  assert any(f.endswith(".array_record-00000-of-00001")
             for f in os.listdir(path))
  expected = datasets.load_dataset("market1501", root)
  for split in tfds_market.SPLITS:
    records = getattr(expected, split)
    source = tfds_market.data_source(data_dir, "market1501", split)
    assert len(source) == len(records)
    for i, r in enumerate(records):
      item = source[i]
      assert item["pid"] == r.pid and item["camid"] == r.camid
      assert type(item["pid"]) is int and type(item["camid"]) is int
      assert item["filename"] == os.path.basename(r.path)
      with open(r.path, "rb") as f:
        assert item["image"] == f.read()  # stored as-is, not re-encoded
  # The junk image is not there, the distractor is; train pids relabelled.
  gallery = tfds_market.data_source(data_dir, "market1501", "gallery")
  assert [gallery[i]["pid"] for i in range(len(gallery))] == [0, 5, 9]
  train = tfds_market.data_source(data_dir, "market1501", "train")
  assert [train[i]["pid"] for i in range(len(train))] == [0, 0, 1, 2]
  assert "tensorflow" not in sys.modules


def test_batch_access_and_pickling(prepared):
  _, data_dir, _ = prepared
  source = tfds_market.data_source(data_dir, "market1501", "query")
  batch = source.__getitems__([1, 0])
  assert [b["filename"] for b in batch] == [source[1]["filename"],
                                            source[0]["filename"]]
  clone = pickle.loads(pickle.dumps(source))  # grain workers pickle sources
  assert len(clone) == 2 and clone[1]["image"] == source[1]["image"]
  assert "market1501/query" in repr(source)


def test_prepare_again_reuses(prepared, tmp_path):
  _, data_dir, path = prepared
  # The root is not even read when the dataset is already prepared.
  assert tfds_market.prepare("market1501", str(tmp_path / "gone"),
                             data_dir) == path


def test_data_source_errors(prepared, tmp_path):
  _, data_dir, _ = prepared
  with pytest.raises(DatasetError, match="no prepared dukemtmcreid .*--name "
                     "dukemtmcreid"):
    tfds_market.data_source(data_dir, "dukemtmcreid", "train")
  with pytest.raises(DatasetError, match="'test'.*train, query, gallery"):
    tfds_market.data_source(data_dir, "market1501", "test")
  with pytest.raises(DatasetError, match="'viper'.*market1501"):
    tfds_market.data_source(data_dir, "viper", "train")


def test_prepare_bad_folder_fails_with_parser_error(tmp_path):
  root = _market(tmp_path / "m")
  os.remove(os.path.join(root, "query", "0005_c1s1_001051_00.jpg"))
  os.remove(os.path.join(root, "query", "0009_c6s2_000001_00.jpg"))
  data_dir = str(tmp_path / "out")
  with pytest.raises(DatasetError, match=f"no images .* in {root}/query"):
    tfds_market.prepare("market1501", root, data_dir)
  with pytest.raises(DatasetError, match="no prepared"):
    tfds_market.data_source(data_dir, "market1501", "train")


@pytest.mark.parametrize("damage", [b"", b"\xff\xd8\xff\xe0 not really a jpeg"])
def test_prepare_stops_at_an_image_that_does_not_decode(tmp_path, damage):
  """Stored as-is, an empty or garbage file used to fail only in training, as
  'source item 0' without its name."""
  root = _market(tmp_path / "m")
  bad = os.path.join(root, "bounding_box_test", "0009_c5s1_000004_00.jpg")
  with open(bad, "wb") as f:
    f.write(damage)
  data_dir = str(tmp_path / "out")
  with pytest.raises(DatasetError, match=f"cannot decode image {bad}"):
    tfds_market.prepare("market1501", root, data_dir)
  with pytest.raises(DatasetError, match="no prepared"):
    tfds_market.data_source(data_dir, "market1501", "train")


def test_cli_data_dir_that_is_a_file_is_one_line(tmp_path, capsys):
  root = _market(tmp_path / "m", seed=4)
  (tmp_path / "a_file").write_text("x")
  for data_dir in (tmp_path / "a_file", tmp_path / "a_file" / "sub"):
    assert tfds_market.main(["--name", "market1501", "--root", root,
                             "--data_dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: data_dir {data_dir}: {tmp_path / 'a_file'} is a file, "
                   "not a folder\n")
  assert (tmp_path / "a_file").read_text() == "x"


def test_cuhk03_config_per_subset(tmp_path):
  np_dir = tmp_path / "cuhk03-np"
  _market(np_dir / "detected", seed=1)
  data_dir = str(tmp_path / "out")
  path = tfds_market.prepare("cuhk03", str(tmp_path), data_dir,
                             cuhk03_subset="detected")
  assert path.endswith(os.path.join("reid_folder", "cuhk03_detected", "1.0.0"))
  source = tfds_market.data_source(data_dir, "cuhk03", "query",
                                   cuhk03_subset="detected")
  with open(np_dir / "detected" / "query" / "0005_c1s1_001051_00.jpg", "rb") as f:
    assert source[0]["image"] == f.read()
  with pytest.raises(DatasetError, match="no prepared cuhk03_labeled"):
    tfds_market.data_source(data_dir, "cuhk03", "query")
  with pytest.raises(DatasetError, match="'both'"):
    tfds_market.config_name("cuhk03", "both")


def test_cli(tmp_path, capsys):
  root = _market(tmp_path / "m", seed=2)
  data_dir = str(tmp_path / "out")
  assert tfds_market.main(["--name", "market1501", "--root", root,
                           "--data_dir", data_dir]) == 0
  out = capsys.readouterr().out
  assert "market1501/gallery" in out and "3 images" in out
  assert len(tfds_market.data_source(data_dir, "market1501", "train")) == 4
  assert tfds_market.main(["--name", "market1501", "--root",
                           str(tmp_path / "nope"), "--data_dir",
                           str(tmp_path / "out2")]) == 1
  assert "nope does not exist" in capsys.readouterr().err


def test_cli_misspelt_flag_is_one_line_with_exit_2(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    tfds_market.main(["--name", "market1501", "--root", str(tmp_path),
                      "--data-dir", str(tmp_path / "out")])
  err = capsys.readouterr().err
  assert e.value.code == 2 and "data-dir" in err and err.count("\n") == 1, err


def test_cli_empty_data_dir_is_one_line_with_exit_2(tmp_path, capsys, monkeypatch):
  """`--data_dir=$UNSET` wrote the dataset into the current folder (exit 0)."""
  root = _market(tmp_path / "m", seed=5)
  monkeypatch.chdir(tmp_path)
  with pytest.raises(SystemExit) as e:
    tfds_market.main(["--name", "market1501", "--root", root, "--data_dir="])
  err = capsys.readouterr().err
  assert e.value.code == 2 and err == ("error: --data_dir= is empty: give a value (an "
                                       "unset shell variable?)\n")
  assert os.listdir(tmp_path) == ["m"]


def test_cli_as_module(tmp_path):
  """`python -m` runs the file as __main__: the builder must still register once."""
  root = _market(tmp_path / "m", seed=3)
  data_dir = str(tmp_path / "out")
  repo = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
  proc = subprocess.run(
      [sys.executable, "-m", "privreid_jax.data.tfds_market", "--name",
       "market1501", "--root", root, "--data_dir", data_dir],
      cwd=repo, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "market1501/train" in proc.stdout
  assert len(tfds_market.data_source(data_dir, "market1501", "gallery")) == 3
