"""Issue 17 in the trainer: nothing trained is lost, nothing wrong is silent.

In-process runs of `configs/synthetic.py:tiny` (16 ids, 32x16 images) plus the
units they rely on: the image check, the workdir lock, eval rows after a
resume, signals, non-finite evaluation features, a data error mid-training.
The subprocess cases (SIGTERM, kill -9, exit codes) are in test_reliability_cli.py.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from privreid_jax import (checkpoint, errors, interrupts, metric_writers, trainer,
                          workdir_lock)
from privreid_jax.data import image_check, pipeline
from privreid_jax.data.records import DatasetError
from privreid_jax.methods import baseline

from configs import synthetic as synthetic_config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return str(tmp_path_factory.mktemp("synth") / "data")


def tiny(data_root, **overrides):
  c = synthetic_config.get_config("tiny")
  c.data.root = data_root
  for key, value in overrides.items():
    section, leaf = key.split("__")
    c[section][leaf] = value
  return c


def _leaves(workdir, step=None):
  ck = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"))
  step = ck.latest_step() if step is None else step
  out = ck.manager.restore(step, args=checkpoint.ocp.args.Composite(
      state=checkpoint.ocp.args.StandardRestore()))
  ck.close()
  return step, [np.asarray(x) for x in jax.tree.leaves(out["state"])]


# --- 1. a broken test image fails before training, naming the file -------------------


def _write_png(path, size=(32, 16)):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_image_check_names_the_bad_file(tmp_path, damage):
  good, bad = tmp_path / "good.png", tmp_path / "0001_c1s1_000001_00.jpg"
  _write_png(good)
  _write_png(tmp_path / "full.png")
  data = (tmp_path / "full.png").read_bytes()
  bad.write_bytes({"truncated": data[:len(data) // 2], "garbage": b"\x00garbage" * 9,
                   "empty": b""}[damage])
  with pytest.raises(DatasetError, match=f"{bad}") as info:
    image_check.check_files([str(good), str(bad)], str(tmp_path / "cache.json"))
  assert "\n" not in str(info.value)
  # The good file was remembered; the bad one is checked again next time.
  cache = json.loads((tmp_path / "cache.json").read_text())["ok"]
  assert list(cache) == [str(good)]


def test_image_check_cache_by_path_size_mtime(tmp_path):
  paths = []
  for i in range(5):
    paths.append(str(tmp_path / f"{i}.png"))
    _write_png(paths[-1])
  cache = str(tmp_path / "cache.json")
  assert image_check.check_files(paths, cache) == 5
  assert image_check.check_files(paths, cache) == 0          # all cached: only stat
  os.utime(paths[2], ns=(1, 1))                              # touched: checked again
  assert image_check.check_files(paths, cache) == 1
  (tmp_path / "3.png").write_bytes(b"")                      # changed: fails again
  with pytest.raises(DatasetError, match="3.png"):
    image_check.check_files(paths, cache)


def test_broken_gallery_image_fails_before_training(tmp_path, data_root):
  # Generate the tiny dataset once, then break a gallery image in a copy of it.
  trainer.run(tiny(data_root, optim__epochs=1), str(tmp_path / "gen"))
  root = tmp_path / "data"
  shutil.copytree(data_root, root)
  victim = sorted(p for p in root.rglob("bounding_box_test/*.jpg")
                  if not p.name.startswith("-1"))[3]      # -1: junk, never read
  victim.write_bytes(victim.read_bytes()[:100])
  workdir = tmp_path / "w"
  with pytest.raises(DatasetError, match=os.path.basename(victim)):
    trainer.run(tiny(str(root)), str(workdir))
  assert not os.listdir(workdir / "checkpoints")          # nothing trained, nothing lost
  assert not (workdir / ".lock").exists()                 # released on the error


# --- 3. resume only what it was -------------------------------------------------------


def test_resume_with_another_config_stops_listing_the_keys(tmp_path, data_root):
  workdir = str(tmp_path)
  first = tiny(data_root, optim__epochs=1)
  trainer.run(first, workdir)
  changed = tiny(data_root, optim__epochs=1, data__height=64, data__pad=4,
                 data__batch_size=12, optim__lr=0.01)
  with pytest.raises(errors.ResumeMismatchError) as info:
    trainer.run(changed, workdir)
  message = str(info.value)
  assert "\n" not in message
  for key in ("data.height 32 -> 64", "data.pad 2 -> 4", "data.batch_size 8 -> 12",
              f"optim.lr {first.optim.lr} -> 0.01"):
    assert key in message
  # A different width (the campaign's 878-line orbax traceback) is refused the same way.
  with pytest.raises(errors.ResumeMismatchError, match="model.width 8 -> 16"):
    trainer.run(tiny(data_root, optim__epochs=1, model__width=16), workdir)
  # Logging and the evaluation schedule may change: a warning, and the run goes on.
  rows = metric_writers.read_eval_rows(workdir)
  relaxed = tiny(data_root, optim__epochs=1, log__every_steps=5, log__tensorboard=False)
  relaxed.evals.reid.every_epochs = 3
  trainer.run(relaxed, workdir)
  assert metric_writers.read_eval_rows(workdir) == rows


def test_resume_after_lost_checkpoints_replaces_eval_rows(tmp_path, data_root):
  """The campaign's case: checkpoints removed, the resume re-trains and re-evaluates
  steps already in eval_metrics.jsonl: one row per (step, setting), same values."""
  workdir = str(tmp_path)
  config = tiny(data_root, optim__epochs=3)     # evaluated and saved every epoch
  trainer.run(config, workdir)
  rows = metric_writers.read_eval_rows(workdir)
  assert [r["step"] for r in rows] == [2, 4, 6]
  for step in (4, 6):
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(step)))
  trainer.run(config, workdir)
  assert metric_writers.read_eval_rows(workdir) == rows


def test_eval_row_of_a_step_again_replaces_it(tmp_path):
  writer = metric_writers.MetricWriter(str(tmp_path), tensorboard=False)
  writer.eval_row(2, 1, "O->O", {"mAP": 0.1})
  writer.eval_row(2, 1, "O->P", {"mAP": 0.2})
  writer.eval_row(4, 2, "O->O", {"mAP": 0.3})
  writer.eval_row(2, 1, "O->O", {"mAP": 0.4})
  writer.close()
  # A line cut short by a crash mid-append is dropped, and the next row starts afresh.
  with open(tmp_path / metric_writers.EVAL_FILE, "a") as f:
    f.write('{"step": 6, "epo')
  writer = metric_writers.MetricWriter(str(tmp_path), tensorboard=False)
  writer.eval_row(6, 3, "O->O", {"mAP": 0.5})
  rows = metric_writers.read_eval_rows(str(tmp_path))
  assert [(r["step"], r["setting"], r["mAP"]) for r in rows] == [
      (2, "O->O", 0.4), (2, "O->P", 0.2), (4, "O->O", 0.3), (6, "O->O", 0.5)]


def test_an_infinite_label_stays_in_the_rows_and_out_of_tensorboard(tmp_path, caplog):
  """Method B's clean gallery row carries eps_image=inf: the JSON row keeps it, the
  event file gets the finite metrics only (tensorboardX warned "NaN or Inf found")."""
  from experiments.report_runs import read_tb_scalars
  writer = metric_writers.MetricWriter(str(tmp_path))
  with caplog.at_level("WARNING"):
    writer.eval_row(8, 2, "dp:eps=inf", {"rank1": 0.25, "eps_image": float("inf")})
  writer.close()
  assert not [r for r in caplog.records if "Inf" in r.getMessage()]
  (row,) = metric_writers.read_eval_rows(str(tmp_path))
  assert row["eps_image"] == float("inf") and row["rank1"] == 0.25
  scalars = read_tb_scalars(str(tmp_path / "tensorboard"))
  assert scalars == {"eval/dp_eps_inf/rank1": [(8, 0.25)]}


def test_failed_evaluation_is_rerun_on_resume(tmp_path, data_root, monkeypatch):
  """An evaluation that fails costs no training, and the rerun evaluates that step."""
  workdir = str(tmp_path)
  config = tiny(data_root, optim__epochs=2)
  real_embed = baseline.Method.embed
  monkeypatch.setattr(baseline.Method, "embed",
                      lambda self, s, x, k: real_embed(self, s, x, k) * jax.numpy.nan)
  with pytest.raises(errors.NonFiniteLossError,
                     match=r"query features \(raw images\) hold NaN or inf at step 2"):
    trainer.run(config, workdir)
  assert checkpoint.latest_step(workdir) == 2          # saved before the evaluation
  assert metric_writers.read_eval_rows(workdir) == []
  monkeypatch.setattr(baseline.Method, "embed", real_embed)
  trainer.run(config, workdir)
  assert [r["step"] for r in metric_writers.read_eval_rows(workdir)] == [2, 4]


def test_final_evaluation_cut_short_is_completed_on_resume(tmp_path, data_root,
                                                          monkeypatch):
  """A run whose only evaluation (the last) is killed after its first row: the resume
  evaluates the whole round again instead of taking the partial rows as the result."""
  config = tiny(data_root, optim__epochs=1, data__val_fraction=0.25)   # + val rows
  real_row = metric_writers.MetricWriter.eval_row
  def killed_after_first(self, *args, **kwargs):
    real_row(self, *args, **kwargs)
    raise KeyboardInterrupt("killed mid-evaluation")
  monkeypatch.setattr(metric_writers.MetricWriter, "eval_row", killed_after_first)
  workdir = str(tmp_path / "cut")
  with pytest.raises(KeyboardInterrupt):
    trainer.run(config, workdir)
  first = metric_writers.read_eval_rows(workdir)
  assert len(first) == 1
  monkeypatch.setattr(metric_writers.MetricWriter, "eval_row", real_row)
  trainer.run(config, workdir)
  rows = metric_writers.read_eval_rows(workdir)
  assert [r["setting"] for r in rows] == ["O->O", "val/O->O"]   # the whole round
  assert rows[0] == first[0]                  # evaluated again, the same values
  assert metric_writers.evaluated_steps(workdir) == [first[0]["step"]]


# --- the workdir lock -------------------------------------------------------------------


def test_lock_stops_a_second_process_and_takes_over_a_stale_one(tmp_path, data_root):
  workdir = str(tmp_path / "w")
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    os.makedirs(workdir)
    lock_file = os.path.join(workdir, workdir_lock.LOCK_FILE)
    with open(lock_file, "w") as f:
      json.dump({"host": socket.gethostname(), "pid": holder.pid,
                 "start_time": workdir_lock._start_time(holder.pid)}, f)
    with pytest.raises(workdir_lock.WorkdirLockedError,
                       match=f"in use by process {holder.pid} on host"):
      trainer.run(tiny(data_root, optim__epochs=1), workdir)
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))
    # Another host: cannot be checked from here, so never taken over.
    with open(lock_file, "w") as f:
      json.dump({"host": "elsewhere", "pid": 1}, f)
    with pytest.raises(workdir_lock.WorkdirLockedError, match="delete"):
      workdir_lock.acquire(workdir)
  finally:
    holder.kill()
    holder.wait()
  # The holder is dead now (and a reused PID would have another start time).
  with open(lock_file, "w") as f:
    json.dump({"host": socket.gethostname(), "pid": holder.pid, "start_time": 1}, f)
  lock = workdir_lock.acquire(workdir)
  assert lock.took_over["pid"] == holder.pid
  assert json.load(open(lock_file))["pid"] == os.getpid()
  lock.release()
  assert not os.path.exists(lock_file)


def test_unwritable_workdir_is_one_line(tmp_path):
  if os.geteuid() == 0:
    workdir = "/sys/privreid_jax_reliability_test"      # not creatable, even by root
  else:
    os.chmod(tmp_path, 0o555)
    workdir = str(tmp_path / "w")
  with pytest.raises(PermissionError, match="--workdir=") as info:
    workdir_lock.acquire(workdir)
  assert errors.is_user_error(info.value) and "\n" not in errors.describe(info.value)


# --- signals ----------------------------------------------------------------------------


def test_sigterm_raises_interrupted_and_deferred_holds_it():
  with interrupts.handled():
    with pytest.raises(interrupts.Interrupted) as info:
      os.kill(os.getpid(), signal.SIGTERM)
      for _ in range(10 ** 7):      # the handler runs between bytecodes
        pass
    assert info.value.exit_code == 143 and isinstance(info.value, KeyboardInterrupt)
    interrupts.reset()
    done = []
    with pytest.raises(interrupts.Interrupted):
      with interrupts.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10 ** 6):
          pass
        done.append(True)           # the block finished before the signal was raised
    assert done == [True]
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_data_error_mid_training_saves_the_steps_before_it(tmp_path, data_root,
                                                           monkeypatch):
  config = tiny(data_root, optim__epochs=3)
  real_call = pipeline._TrainBatchFn.__call__

  def failing(self, b):
    if int(b) == 3:                  # the batch of step index 3
      raise DatasetError("cannot decode image /data/x.jpg: broken")
    return real_call(self, b)

  monkeypatch.setattr(pipeline._TrainBatchFn, "__call__", failing)
  with pytest.raises(DatasetError, match="broken"):
    trainer.run(config, str(tmp_path))
  assert checkpoint.latest_step(str(tmp_path)) == 3


def test_tensorboard_tags_are_legal_without_a_warning_per_scalar(tmp_path, caplog):
  import logging as std_logging
  from tensorboardX import summary as tbx_summary
  settings = ["O->O", "val/P->O", "3rd:P->O", "3rd-ft:O->P", "val/R->O"]
  # The same tags tensorboardX makes of the old "->"-only form, so TensorBoard's
  # curves keep their names.
  for setting in settings:
    assert metric_writers.tensorboard_tag(setting) == tbx_summary._clean_tag(
        "eval/" + setting.replace("->", "_to_"))[len("eval/"):]
  writer = metric_writers.MetricWriter(str(tmp_path), tensorboard=True)
  with caplog.at_level(std_logging.INFO):
    for setting in settings:
      writer.eval_row(2, 1, setting, {"mAP": 0.5})
  writer.close()
  assert not [r for r in caplog.records if "illegal" in r.getMessage()]
  assert len(metric_writers.read_eval_rows(str(tmp_path))) == len(settings)
