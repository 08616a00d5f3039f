"""Stored paired targets: ArrayRecord round trip, completeness, size checks."""

import pickle

import numpy as np
import pytest

from privreid_jax.data import target_records, transforms
from privreid_jax.data.records import DatasetError


def _images(n=5, h=8, w=4):
  rng = np.random.default_rng(0)
  return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_round_trip_is_lossless_and_picklable(tmp_path):
  images = _images()
  meta = target_records.write(str(tmp_path), iter(images), {"stage": 1})
  assert meta == {"stage": 1, "num_images": 5, "height": 8, "width": 4, "encoding": "png"}
  source = pickle.loads(pickle.dumps(target_records.open_targets(str(tmp_path), 8, 4)))
  assert len(source) == 5 and source.meta["stage"] == 1
  for i in (0, 4, 2):
    assert isinstance(source[i]["image"], bytes)
    np.testing.assert_array_equal(transforms.decode_image(source[i]["image"]), images[i])
  # Raw pixels: arrays back, no decoding; a meta without "encoding" (older sets) is PNG.
  target_records.write(str(tmp_path / "raw"), iter(images), {}, encoding="raw")
  raw = pickle.loads(pickle.dumps(target_records.open_targets(str(tmp_path / "raw"), 8, 4)))
  for i in (0, 4, 2):
    np.testing.assert_array_equal(raw[i]["image"], images[i])
  with pytest.raises(ValueError, match="encoding='jpeg'"):
    target_records.write(str(tmp_path / "j"), iter(images), {}, encoding="jpeg")


def test_incomplete_or_mismatched_sets_are_errors(tmp_path):
  with pytest.raises(DatasetError, match="is not a folder"):
    target_records.open_targets(str(tmp_path / "none"), 8, 4)
  (tmp_path / "half").mkdir()
  assert not target_records.is_complete(str(tmp_path / "half"))
  with pytest.raises(DatasetError, match="missing meta.json"):
    target_records.open_targets(str(tmp_path / "half"), 8, 4)
  target_records.write(str(tmp_path / "t"), _images(2), {})
  with pytest.raises(DatasetError, match="targets are 8x4, the training images 16x8"):
    target_records.open_targets(str(tmp_path / "t"), 16, 8)
  with pytest.raises(ValueError, match="image 1 is"):
    target_records.write(str(tmp_path / "bad"), _images(1) + _images(1, 6, 4), {})
  assert not target_records.is_complete(str(tmp_path / "bad"))
