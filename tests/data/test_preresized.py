"""data.preresize: training images stored once at the input size give the same batches."""

import os

import numpy as np
from PIL import Image
import pytest

from privreid_jax import config_base
from privreid_jax.data import pipeline, preresized, target_records
from privreid_jax.data.records import DatasetError, Record


def _folder(tmp_path, size=(40, 18)):
  """Generated JPEGs of 6 people x 4 images, at a size the loader must resize."""
  tmp_path = tmp_path / "images"
  os.makedirs(tmp_path)
  rng = np.random.default_rng(0)
  records = []
  for pid in range(6):
    for j in range(4):
      path = tmp_path / f"{pid + 1:04d}_c{j % 3 + 1}s1_{j:06d}_00.jpg"
      Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(path)
      records.append(Record(str(path), pid, j % 3))
  return records


def _cfg(**kw):
  c = config_base.base_config().data
  c.height, c.width, c.pad = 16, 8, 2
  c.batch_size, c.num_instances, c.num_workers = 8, 2, 0
  c.erasing_prob = 0.5
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def _batches(source, pids, cfg, n=4, **kw):
  with pipeline.train_loader(source, pids, cfg, seed=1, **kw) as loader:
    return [next(loader) for _ in range(n)]


@pytest.mark.parametrize("targets", [None, "mosaic_like"])
def test_preresized_source_gives_the_same_batches(tmp_path, targets):
  records = _folder(tmp_path)
  pids = [r.pid for r in records]
  cfg = _cfg(preresize=True)
  fn = None if targets is None else (lambda x: np.floor(x * 4) / 4)
  source = preresized.train_source(str(tmp_path / "w"), records, cfg)
  assert isinstance(source, preresized.PreresizedSource) and len(source) == len(records)
  item = source[5]
  assert item["image"].shape == (16, 8, 3) and item["image"].dtype == np.uint8
  assert (item["pid"], item["camid"]) == (records[5].pid, records[5].camid)
  for a, b in zip(_batches(records, pids, cfg, targets=fn),
                  _batches(source, pids, cfg, targets=fn)):
    assert sorted(a) == sorted(b)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  # Off: the source itself.
  assert preresized.train_source(str(tmp_path / "w"), records, _cfg()) is records


def test_complete_copy_is_reused_and_a_cut_one_rewritten(tmp_path):
  records = _folder(tmp_path)
  directory = str(tmp_path / preresized.DIRNAME)
  preresized.open_or_write(directory, records, 16, 8)
  records_file = os.path.join(directory, target_records.RECORDS)
  stamp = os.stat(records_file).st_mtime_ns
  preresized.open_or_write(directory, records, 16, 8)
  assert os.stat(records_file).st_mtime_ns == stamp          # reused
  os.remove(os.path.join(directory, target_records.META))   # a write cut short
  source = preresized.open_or_write(directory, records, 16, 8)
  assert target_records.is_complete(directory) and len(source) == len(records)
  source = preresized.open_or_write(directory, records, 32, 16)   # another size
  assert source[0]["image"].shape == (32, 16, 3)


def test_preresize_errors(tmp_path):
  records = _folder(tmp_path)
  with pytest.raises(DatasetError, match="single process"):
    preresized.train_source(str(tmp_path), records, _cfg(preresize=True), process_count=2)
  missing = records + [Record(str(tmp_path / "images" / "0099_c1s1_000000_00.jpg"), 6, 0)]
  with pytest.raises(DatasetError, match="0099_c1s1_000000_00.jpg"):
    preresized.open_or_write(str(tmp_path / "p"), missing, 16, 8)
  assert not target_records.is_complete(str(tmp_path / "p"))
