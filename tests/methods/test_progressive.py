"""Method A's progressive stages: check, teacher, stored targets, resumable driver.

One tiny staged run (configs/anon_synthetic.py:mosaic,stages,tiny, 32x16, 2 steps
per epoch, 2 epochs) with a permissive rule: stage 0 passes its check at epoch 1,
stage 1 trains epoch 2 on G_teacher(O) read back from ArrayRecord.
"""

import json
import os
import types

import jax
import numpy as np
import pytest

from configs import anon_synthetic
from privreid_jax import checkpoint, errors, metric_writers
from privreid_jax.data import pipeline, splits as data_splits, target_records, transforms
from privreid_jax.methods import anonymization
from privreid_jax.methods.anonymization import stages as progressive
from privreid_jax.methods.anonymization import upgrade_rule
from privreid_jax.ops import normalize


def staged_config(root, **stages):
  c = anon_synthetic.get_config("mosaic,stages,tiny")
  c.data.root = str(root)
  c.anon.stages.update({**dict(min_rank1=0.0, psnr_margin=1e6, ssim_margin=1e6,
                               max_stages=1), **stages})
  return c


def _events(workdir):
  with open(os.path.join(workdir, progressive.LOG_FILE)) as f:
    return [json.loads(line) for line in f]


def _decode(item):
  return transforms.decode_image(item["image"]) if isinstance(item, dict) else (
      transforms.decode_image(item.path))


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
  root = tmp_path_factory.mktemp("staged_data")
  workdir = str(tmp_path_factory.mktemp("staged_run"))
  config = staged_config(root)
  config.evals.reid.every_epochs = 0      # the test split's rows at the end only
  results = progressive.run(config, workdir).metrics
  return config, workdir, results


def test_rule_names_every_failed_condition():
  rule = upgrade_rule.Rule(min_rank1=0.5, psnr_margin=1.0, ssim_margin=0.05)
  good = {"rank1": 0.7, "psnr_P": 15.0, "psnr_M": 15.5, "ssim_P": 0.30, "ssim_M": 0.28}
  assert rule.failures(good, last_rank1=0.6) == []
  bad = {"rank1": 0.55, "psnr_P": 17.0, "psnr_M": 15.5, "ssim_P": 0.40, "ssim_M": 0.28}
  reasons = rule.failures(bad, last_rank1=0.6)
  assert len(reasons) == 3
  assert "PSNR(O,P)=17.00" in reasons[0] and "SSIM(O,P)=0.400" in reasons[1]
  assert "last upgrade" in reasons[2]
  assert "min_rank1" in rule.failures({**good, "rank1": 0.4}, -1.0)[0]


def test_stages_need_a_validation_split_and_the_learned_mode(tmp_path):
  config = staged_config(tmp_path)
  config.data.val_fraction = 0.0
  # ConfigErrors: main prints them in one line (ValueErrors were a traceback).
  with pytest.raises(errors.ConfigError, match="config.data.val_fraction > 0"):
    progressive.run(config, str(tmp_path / "run"))
  config = anon_synthetic.get_config("base,mosaic,stages,tiny")
  with pytest.raises(errors.ConfigError, match="config.anon.mode='learned'"):
    progressive.run(config, str(tmp_path / "run"))


def test_stage_zero_passes_saves_teacher_and_stops(staged):
  _, workdir, _ = staged
  s0 = progressive.stage_dir(workdir, 0)
  with open(os.path.join(s0, progressive.STAGE_FILE)) as f:
    info = json.load(f)
  assert info["status"] == "upgraded" and info["step"] == 2 and info["epoch"] == 1
  rows = metric_writers.read_eval_rows(s0)
  checks = [r for r in rows if r["setting"] == upgrade_rule.CHECK_SETTING]
  assert len(checks) == 1 and checks[0]["passed"] == 1.0 and checks[0]["stage"] == 0
  assert checks[0]["rank1"] == pytest.approx(info["rank1"])
  assert {r["step"] for r in rows} == {2}        # stopped after epoch 1 of 2
  # The upgrade stops the stage, not the training: end-of-training evaluators (here
  # the test split's rows) wait for the last stage; the validation rows do not.
  settings = {r["setting"] for r in rows}
  assert "O->O" not in settings and "val/O->O" in settings
  assert "O->O" in {r["setting"] for r in metric_writers.read_eval_rows(
      progressive.stage_dir(workdir, 1))}
  teacher = checkpoint.load_tree(info["teacher"])
  state = checkpoint.restore_run(s0, "stage 0")[0]
  np.testing.assert_array_equal(
      jax.tree.leaves(teacher["params"])[0], jax.tree.leaves(state["params"]["G"])[0])
  events = [(e["event"], e["stage"]) for e in _events(workdir)]
  assert events == [("start", 0), ("upgraded", 0), ("start", 1), ("finished", 1)]


def test_stored_targets_are_the_teachers_images(staged):
  config, workdir, _ = staged
  targets_dir = os.path.join(progressive.stage_dir(workdir, 1), progressive.TARGETS_DIR)
  source = target_records.open_targets(targets_dir, 32, 16)
  assert source.meta["teacher_stage"] == 0 and source.meta["teacher_step"] == 2
  splits = data_splits.open_splits(config.data)
  assert len(source) == len(splits.train) == source.meta["train_images"]
  # Independently: G_teacher(O) of a few training images, resized, unaugmented.
  teacher = checkpoint.load_tree(source.meta["teacher"])
  method = anonymization.Method(config, num_classes=splits.num_train_pids, steps_per_epoch=1)
  cfg = transforms.TransformConfig.from_config(config.data)
  picks = [0, 7, len(source) - 1]
  o = np.stack([transforms.eval_transform(_decode(splits.train.source[i]), cfg)
                for i in picks])
  p = method.gen.apply(teacher, o, train=False)
  p01 = np.asarray(normalize.to_unit(p, method.mean, method.std))
  stored = np.stack([transforms.to_unit(_decode(source[i])) for i in picks])
  np.testing.assert_allclose(stored, p01, atol=0.5 / 255 + 1e-4)
  assert not np.allclose(stored, transforms.to_unit(transforms.resize(
      _decode(splits.train.source[0]), 32, 16))[None], atol=0.05)


def test_stage_one_continues_on_the_stored_targets(staged):
  config, workdir, results = staged
  s1 = progressive.stage_dir(workdir, 1)
  with open(os.path.join(s1, progressive.STAGE_FILE)) as f:
    assert json.load(f) == {"status": "finished", "stage": 1, "step": 4}
  _, cfg, step = checkpoint.restore_run(s1, "stage 1")
  assert step == 4
  rows = metric_writers.read_eval_rows(s1)
  assert {r["step"] for r in rows} == {4} and "O->P" in results
  assert not [r for r in rows if r["setting"] == upgrade_rule.CHECK_SETTING]  # max_stages=1
  # The stage's batches: targets read from the stored set, augmented like the image.
  stage = upgrade_rule.Stage(index=1, targets_dir=os.path.join(s1, progressive.TARGETS_DIR))
  targets = anonymization.Method.train_targets(cfg, {"stage": stage})
  assert isinstance(targets, target_records.TargetSource)
  splits = data_splits.open_splits(cfg.data)
  loader = pipeline.train_loader(splits.train.source, splits.train.pids, cfg.data,
                                 seed=cfg.seed, targets=targets)
  batch = next(iter(loader))
  tcfg = transforms.TransformConfig.from_config(cfg.data)
  for j, idx in enumerate(batch["index"]):
    rng = pipeline.sample_rng(cfg.seed, j)
    x, t = transforms.train_transform(_decode(splits.train.source[int(idx)]), rng, tcfg,
                                      target_image=_decode(targets[int(idx)]))
    np.testing.assert_allclose(batch["image"][j], x, atol=1e-6)
    np.testing.assert_allclose(batch["target"][j], t, atol=1e-6)
  assert not np.allclose(batch["image"], batch["target"], atol=0.05)


def test_workdir_reads_as_one_run(staged):
  _, workdir, _ = staged
  rows = metric_writers.read_eval_rows(workdir)
  per_stage = [metric_writers.read_eval_rows(progressive.stage_dir(workdir, s))
               for s in (0, 1)]
  assert rows == per_stage[0] + per_stage[1]
  assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)
  _, _, step = checkpoint.restore_run(workdir, "workdir")
  assert step == 4


def test_rerun_skips_finished_stages(staged):
  config, workdir, results = staged
  targets_meta = os.path.join(progressive.stage_dir(workdir, 1), progressive.TARGETS_DIR,
                              target_records.META)
  mtime = os.path.getmtime(targets_meta)
  n_events = len(_events(workdir))
  again = progressive.run(config, workdir).metrics
  assert again["O->P"] == pytest.approx(results["O->P"])
  assert os.path.getmtime(targets_meta) == mtime                 # not regenerated
  assert len(_events(workdir)) == n_events                        # nothing re-ran
  assert checkpoint.restore_run(progressive.stage_dir(workdir, 0), "s0")[2] == 2


def test_crash_after_the_stop_finishes_the_upgrade_without_retraining(staged):
  """Lost stage.json, teacher and target meta: rebuilt from the stopped run's checkpoint."""
  import shutil
  config, workdir, _ = staged
  s0, s1 = (progressive.stage_dir(workdir, s) for s in (0, 1))
  targets_dir = os.path.join(s1, progressive.TARGETS_DIR)
  with open(os.path.join(targets_dir, target_records.RECORDS), "rb") as f:
    before = f.read()
  os.remove(os.path.join(s0, progressive.STAGE_FILE))
  shutil.rmtree(os.path.join(s0, progressive.TEACHER_DIR))
  os.remove(os.path.join(targets_dir, target_records.META))     # an incomplete target set
  progressive.run(config, workdir)
  events = [e["event"] for e in _events(workdir)]
  assert events[-1] == "upgraded" and events.count("start") == 2   # no stage re-trained
  assert {r["step"] for r in metric_writers.read_eval_rows(s0)} == {2}
  assert target_records.is_complete(targets_dir)
  with open(os.path.join(targets_dir, target_records.RECORDS), "rb") as f:
    assert f.read() == before                                  # regenerated identically


class _Context:
  """The part of the trainer's RunContext the check uses."""

  def __init__(self, writer):
    self.writer, self.stop_info = writer, None

  def request_stop(self, info):
    self.stop_info = dict(info)


class _Rows:
  def __init__(self):
    self.rows = []

  def eval_row(self, step, epoch, setting, metrics):
    self.rows.append({"step": step, "epoch": epoch, "setting": setting, **metrics})


@pytest.mark.parametrize("rank1,passes", [(0.3, False), (0.9, True)])
def test_check_failing_keeps_the_targets_and_passing_stops(tmp_path, monkeypatch,
                                                           rank1, passes):
  config = staged_config(tmp_path, min_rank1=0.5)
  config.optim.epochs = 10
  monitor = upgrade_rule.StageCheck(config, upgrade_rule.Stage(), quality=None)
  measured = {"rank1": rank1, "mAP": 0.5, "psnr_P": 15.0, "psnr_M": 15.5,
              "ssim_P": 0.3, "ssim_M": 0.28}
  monkeypatch.setattr(monitor, "measure", lambda *args: dict(measured))
  ctx = _Context(writer=_Rows())
  state = types.SimpleNamespace(step=6)
  # The messages themselves, not caplog: whether absl INFO records reach caplog depends
  # on the verbosity earlier tests left behind.
  logged = []
  monkeypatch.setattr(upgrade_rule.logging, "info",
                      lambda msg, *args: logged.append(msg % args if args else msg))
  monitor.on_epoch_end(None, state, 2, ctx)
  log_text = "\n".join(logged)
  [row] = ctx.writer.rows
  assert row["setting"] == upgrade_rule.CHECK_SETTING and row["passed"] == float(passes)
  assert (ctx.stop_info is not None) == passes
  if passes:
    assert ctx.stop_info["step"] == 6 and ctx.stop_info["rank1"] == 0.9
  else:
    assert "stage 0 check at epoch 2 failed (val Rank-1=0.300 < min_rank1=0.5)" in log_text
    assert "keeping the targets of the handcrafted desensitization" in log_text
  # No check at the last epoch, nor once max_stages upgrades are done.
  assert not monitor.due(10)
  assert not upgrade_rule.StageCheck(config, upgrade_rule.Stage(index=1), None).due(2)
