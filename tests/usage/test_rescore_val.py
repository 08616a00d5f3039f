"""experiments/rescore_val.py: finished runs scored on new synthetic people."""

import json
import os

import pytest

from configs import synthetic
from experiments import rescore_val
from privreid_jax import api


def test_scores_equal_evaluating_that_people_split_as_a_test_split(runs, tmp_path, capsys):
  top = tmp_path / "runs"
  os.makedirs(top)
  os.symlink(runs.base, top / "base")
  out = tmp_path / "scores.json"
  rescore_val.main(["prog", f"--root={top}", "--val_people_seed=5", f"--out={out}"])
  scores = json.loads(out.read_text())
  assert list(scores) == ["base"] and list(scores["base"]) == ["val5/O->O"]
  row = scores["base"]["val5/O->O"]
  assert "base: val5/O->O R1 " in capsys.readouterr().out
  # The new people's folder sits beside the run's dataset; read as a test split
  # (data.synthetic.test_seed=5) it ranks to the same numbers.
  people = runs.root.rstrip(os.sep) + "-people5"
  assert os.path.isdir(os.path.join(people, "bounding_box_test"))
  config = synthetic.get_config("tiny")
  config.data.root = people
  config.data.synthetic.test_seed = 5
  direct = api.load(runs.base).evaluate(config)["O->O"]
  for k in ("rank1", "rank5", "mAP", "mINP"):
    assert row[k] == pytest.approx(direct[k], abs=1e-6), k
  # Other people, other numbers: the seed reaches the data.
  other = rescore_val.score_run(runs.base, 6)["val6/O->O"]
  assert (other["mAP"], other["rank1"]) != (row["mAP"], row["rank1"])


def test_a_bad_root_fails_in_one_line(runs, tmp_path, cli_error):
  assert "no such folder" in cli_error(rescore_val.main,
                                        [f"--root={tmp_path}/none", "--val_people_seed=5"])
  empty = tmp_path / "empty"
  os.makedirs(empty)
  assert "no run folder with checkpoints" in cli_error(
      rescore_val.main, [f"--root={empty}", "--val_people_seed=5"])


def test_a_run_validating_on_new_people_trains_as_without_and_rescores_equal(runs, tmp_path):
  from privreid_jax import metric_writers, trainer
  config = synthetic.get_config("tiny")
  config.data.root = runs.root
  config.data.val_people_seed = 5
  workdir = str(tmp_path / "val_people")
  trainer.run(config, workdir)
  rows = {r["setting"]: r for r in metric_writers.read_eval_rows(workdir)}
  assert set(rows) == {"O->O", "val/O->O"}
  # Every training identity trained, as in the run without validation: the same
  # test-split rows.
  base = {r["setting"]: r for r in metric_writers.read_eval_rows(runs.base)}
  for k in ("rank1", "mAP", "mINP"):
    assert rows["O->O"][k] == pytest.approx(base["O->O"][k], abs=1e-6), k
  # The trainer's validation rows are what rescore_val gives its last checkpoint.
  again = rescore_val.score_run(workdir, 5)["val5/O->O"]
  for k in ("rank1", "mAP", "mINP"):
    assert rows["val/O->O"][k] == pytest.approx(again[k], abs=1e-6), k
