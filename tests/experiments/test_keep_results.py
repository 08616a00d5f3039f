"""Keeping a sweep's results across machines: finished runs only, no checkpoints,
a changed result refused, the next `--only` list with the outsiders it needs."""

import json
import os

import pytest

from experiments import ablate_status
from experiments import keep_results
from experiments import report_runs


def make_run(root, name, status, rank1=50.0):
  workdir = root / name
  (workdir / "checkpoints" / "8").mkdir(parents=True)
  (workdir / "checkpoints" / "8" / "state").write_bytes(b"\0" * 64)
  ablate_status.write_status(str(workdir), {"name": name, "status": status})
  row = {"step": 8, "epoch": 8, "setting": "O->O", "rank1": rank1, "mAP": rank1 - 2}
  (workdir / ablate_status.EVAL_FILE).write_text(json.dumps(row) + "\n")
  return workdir


def test_only_finished_runs_are_kept_without_their_checkpoints(tmp_path):
  root, out = tmp_path / "root", tmp_path / "kept"
  make_run(root, "a_s0", "done", 61.0)
  make_run(root, "b_s0", "running")
  make_run(root, "c_s0", "failed")
  (root / "a_s0" / "stages.jsonl").write_text('{"stage": 0}\n')
  assert keep_results.keep(str(root), str(out)) == ["a_s0"]
  assert sorted(os.listdir(out)) == ["a_s0"]
  assert sorted(os.listdir(out / "a_s0")) == sorted(
      [ablate_status.RUN_FILE, ablate_status.EVAL_FILE, "stages.jsonl"])
  # the report reads the kept folder as it reads the sweep's
  runs = report_runs.find_runs(str(out))
  assert [r.name for r in runs] == ["a_s0"] and runs[0].value("O->O", "rank1") == 61.0
  # b finishes later: only it is new
  ablate_status.write_status(str(root / "b_s0"), {"name": "b_s0", "status": "done"})
  assert keep_results.keep(str(root), str(out)) == ["b_s0"]
  assert keep_results.keep(str(root), str(out)) == []


def test_a_kept_result_that_changes_is_refused(tmp_path):
  root, out = tmp_path / "root", tmp_path / "kept"
  make_run(root, "a_s0", "done", 61.0)
  keep_results.keep(str(root), str(out))
  make_run(tmp_path / "other", "a_s0", "done", 60.0)
  with pytest.raises(ValueError, match=r"kept/a_s0/eval_metrics.jsonl differs"):
    keep_results.keep(str(tmp_path / "other"), str(out))
  assert report_runs.find_runs(str(out))[0].value("O->O", "rank1") == 61.0


def test_the_next_only_list_brings_the_outsider_a_missing_row_needs(tmp_path):
  runs = [{"name": f"third_party_s{s}", "config": "configs/synthetic.py:tiny", "overrides": {}}
          for s in (0, 1)]
  runs += [{"name": f"row_s{s}", "config": "configs/synthetic.py:tiny",
            "overrides": {"evals.outsider.workdir": "{root}/third_party_s" + str(s)}}
           for s in (0, 1)]
  sweep = tmp_path / "sweep.py"
  sweep.write_text(f"def get_sweep(arg=None):\n  return {runs!r}\n")
  root, out = tmp_path / "root", tmp_path / "kept"
  for name in ("third_party_s0", "row_s0", "third_party_s1"):
    make_run(root, name, "done")
  keep_results.keep(str(root), str(out))
  left, only = keep_results.missing(str(sweep), str(out))
  assert left == ["row_s1"]
  assert only == ["third_party_s1", "row_s1"]


def test_the_command_line_names_a_missing_root(tmp_path, capsys):
  code = keep_results.main(["--root", str(tmp_path / "nope"), "--out", str(tmp_path / "k")])
  assert code == 1 and "nope" in capsys.readouterr().err
