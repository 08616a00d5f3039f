"""End-to-end trainer behaviour on a tiny synthetic dataset.

The runs use the `tiny` variant of configs/synthetic.py (16 ids, 32x16 images,
ResNet-18 of width 8), generated once per session into a temporary folder.
"""


import jax
import numpy as np
import pytest

from privreid_jax import checkpoint, errors, metric_writers, trainer
from privreid_jax.methods import baseline

from configs import synthetic as synthetic_config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return str(tmp_path_factory.mktemp("synth") / "data")


def tiny_config(data_root, **optim):
  c = synthetic_config.get_config("tiny")
  c.data.root = data_root
  for k, v in optim.items():
    setattr(c.optim, k, v)
  return c


def _latest_state(workdir):
  """(step, numpy leaves) of the latest checkpoint in a workdir."""
  state, _, step = checkpoint.restore_run(workdir, workdir)
  return step, [np.asarray(x) for x in jax.tree.leaves(state)]


def test_run_writes_eval_rows_and_checkpoints(tmp_path, data_root):
  config = tiny_config(data_root)
  results = trainer.run(config, str(tmp_path)).metrics
  rows = metric_writers.read_eval_rows(str(tmp_path))
  assert [r["epoch"] for r in rows] == [1, 2]
  for r in rows:
    assert set(r) == {"step", "epoch", "setting", *metric_writers.EVAL_KEYS}
    assert r["setting"] == "O->O"
    assert 0.0 <= r["rank1"] <= r["rank5"] <= r["rank10"] <= 1.0
    assert 0.0 < r["mAP"] <= 1.0
  assert results["O->O"]["mAP"] == pytest.approx(rows[-1]["mAP"])
  ckpt_dir = tmp_path / "checkpoints"
  assert sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) == [2, 4]
  assert any((tmp_path / "tensorboard").iterdir())


def test_interrupt_and_resume_reproduce_uninterrupted_run(tmp_path, data_root, monkeypatch):
  """Ctrl-C mid-epoch saves a checkpoint; the resumed run ends bit-identical."""
  config = tiny_config(data_root, epochs=2)
  full = trainer.run(config, str(tmp_path / "full")).metrics

  real_global_batch = trainer.sharding.global_batch
  calls = {"n": 0}

  def interrupting(mesh, local):
    if "mask" not in local:       # a training batch (eval batches carry a mask)
      calls["n"] += 1
      if calls["n"] == 4:         # the batch of step index 3 (mid second epoch)
        raise KeyboardInterrupt
    return real_global_batch(mesh, local)

  monkeypatch.setattr(trainer.sharding, "global_batch", interrupting)
  with pytest.raises(KeyboardInterrupt):
    trainer.run(config, str(tmp_path / "resumed"))
  monkeypatch.setattr(trainer.sharding, "global_batch", real_global_batch)
  step, _ = _latest_state(str(tmp_path / "resumed"))
  assert step == 3                   # saved at the interruption, not only at epochs

  resumed = trainer.run(config, str(tmp_path / "resumed")).metrics
  assert resumed["O->O"] == full["O->O"]
  rows_full = metric_writers.read_eval_rows(str(tmp_path / "full"))
  rows_res = metric_writers.read_eval_rows(str(tmp_path / "resumed"))
  assert rows_res[-1] == rows_full[-1]
  step_full, leaves_full = _latest_state(str(tmp_path / "full"))
  step_res, leaves_res = _latest_state(str(tmp_path / "resumed"))
  assert step_full == step_res == 4
  for a, b in zip(leaves_full, leaves_res, strict=True):
    np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_run_and_keeps_last_good_checkpoint(tmp_path, data_root,
                                                           monkeypatch):
  config = tiny_config(data_root, epochs=3)
  real_step = baseline.Method.train_step

  def nan_from_step_3(self, state, batch):
    new_state, metrics = real_step(self, state, batch)
    metrics["loss"] = jax.numpy.where(state.step >= 3, jax.numpy.nan, metrics["loss"])
    return new_state, metrics

  monkeypatch.setattr(baseline.Method, "train_step", nan_from_step_3)
  with pytest.raises(errors.NonFiniteLossError, match="at step 3"):
    trainer.run(config, str(tmp_path))
  step, leaves = _latest_state(str(tmp_path))
  assert step == 2                   # the epoch-1 checkpoint, written before the NaN
  assert all(np.all(np.isfinite(x)) for x in leaves if x.dtype.kind == "f")
