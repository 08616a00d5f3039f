"""Opening the configured dataset: errors name what is missing; synthetic is generated."""

import numpy as np
import pytest

from configs import market as market_config
from configs import synthetic as synthetic_config
from privreid_jax.data import splits
from privreid_jax.data.records import DatasetError


def test_real_dataset_without_root_names_the_flag():
  config = market_config.get_config()
  with pytest.raises(DatasetError, match=r"--config.data.root=/path/to/Market-1501"):
    splits.open_splits(config.data)


def test_real_dataset_with_missing_folder_names_it(tmp_path):
  config = market_config.get_config()
  config.data.root = str(tmp_path / "nowhere")
  with pytest.raises(DatasetError, match="nowhere"):
    splits.open_splits(config.data)


def test_tfds_source_without_prepared_dir_says_how_to_prepare(tmp_path):
  config = market_config.get_config()
  config.data.root = str(tmp_path)
  config.data.source = "tfds"
  with pytest.raises(DatasetError, match="python -m privreid_jax.data.tfds_market"):
    splits.open_splits(config.data)


def test_unknown_source_is_an_error(tmp_path):
  config = synthetic_config.get_config("tiny")
  config.data.root = str(tmp_path / "synth")
  config.data.source = "parquet"
  with pytest.raises(DatasetError, match="data.source='parquet'"):
    splits.open_splits(config.data)


def test_synthetic_is_generated_and_split_like_market(tmp_path):
  config = synthetic_config.get_config("tiny")
  config.data.root = str(tmp_path / "synth")
  s = splits.open_splits(config.data)
  assert (tmp_path / "synth" / "bounding_box_train").is_dir()
  # Train pids relabelled 0..N-1; the test split keeps raw pids and distractors (0).
  assert sorted(np.unique(s.train.pids)) == list(range(s.num_train_pids))
  assert 0 in set(s.gallery.pids) and -1 not in set(s.gallery.pids)
  assert set(s.query.pids) <= set(s.gallery.pids)
  assert len(s.train) == len(s.train.source) == len(s.train.camids)
  assert "train" in s.summary() and "gallery" in s.summary()
