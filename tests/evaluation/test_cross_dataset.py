"""Cross-dataset evaluation (config.evals.targets): one tiny run, rows per dataset."""

import shutil

import pytest

from configs import synthetic as synthetic_config
from privreid_jax import checkpoint, metric_writers, trainer
from privreid_jax.data.records import DatasetError


def tiny(root, **targets):
  c = synthetic_config.get_config("tiny")
  c.data.root = str(root)
  c.optim.epochs = 1
  for k, v in targets.items():
    setattr(c.evals.targets, k, v)
  return c


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A baseline trained on synthetic data, evaluated on a Market-layout copy of it
  found beside its data folder, and on VIPeR, which is not there (skipped)."""
  parent = tmp_path_factory.mktemp("parent")
  config = tiny(parent / "synth")
  from privreid_jax.data import splits as data_splits
  data_splits.open_splits(config.data)           # generates the synthetic folder
  shutil.copytree(parent / "synth", parent / "Market-1501-v15.09.15")
  config = tiny(parent / "synth", datasets=("market1501", "viper"), skip_missing=True)
  workdir = str(tmp_path_factory.mktemp("run"))
  result = trainer.run(config, workdir)
  return parent, config, workdir, result


def test_another_dataset_gets_its_own_rows(run):
  _, _, workdir, result = run
  rows = {r["setting"]: r for r in metric_writers.read_eval_rows(workdir)}
  assert set(rows) == {"O->O", "market1501/O->O"}        # viper skipped
  # The Market-layout folder holds the same images: the same ranking.
  for key in ("rank1", "rank5", "mAP", "mINP"):
    assert rows["market1501/O->O"][key] == pytest.approx(rows["O->O"][key], abs=1e-6)
  assert result.metrics["market1501/O->O"]["mAP"] == rows["market1501/O->O"]["mAP"]


def test_a_missing_target_fails_before_training_unless_skipped(run, tmp_path):
  parent, _, _, _ = run
  config = tiny(parent / "synth", datasets=("viper",))
  with pytest.raises(DatasetError, match="viper"):
    trainer.run(config, str(tmp_path / "w"))
  assert checkpoint.latest_step(str(tmp_path / "w")) is None
