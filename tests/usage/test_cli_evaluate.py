"""python -m privreid_jax.evaluate: evaluation only, on any dataset config."""

import json
import os
import subprocess
import sys

import pytest

from privreid_jax import evaluate, metric_writers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _last_rows(workdir):
  rows = metric_writers.read_eval_rows(workdir)
  last = max(r["step"] for r in rows)
  return [r for r in rows if r["step"] == last and r["setting"] != "image_quality"]


def _same(got, want):
  assert [r["setting"] for r in got] == [r["setting"] for r in want]
  for g, w in zip(got, want):
    assert set(g) == set(w)
    for k in w:
      assert g[k] == pytest.approx(w[k], abs=1e-6), (w["setting"], k)


def test_rows_equal_training_and_another_image_size_is_ignored(runs, tmp_path, capsys):
  out = tmp_path / "eval"
  evaluate.main(["prog", f"--checkpoint={runs.base}", "--config=configs/synthetic.py:tiny",
                 f"--config.data.root={runs.root}", "--config.data.height=64",
                 "--config.data.width=32", f"--output={out}"])
  printed = capsys.readouterr().out
  assert "O->O: rank1=" in printed
  _same(metric_writers.read_eval_rows(str(out)), _last_rows(runs.base))
  info = json.loads((out / "eval_info.json").read_text())
  assert info["image_size"] == [32, 16] and info["rerank"] is False
  assert info["dataset"] == "synthetic" and info["step"] == 4


def test_method_a_all_settings_and_rerank(runs, tmp_path, capsys):
  out = tmp_path / "eval_a"
  evaluate.main(["prog", f"--checkpoint={runs.anon}"])      # the run's own config
  _, want = capsys.readouterr(), _last_rows(runs.anon)
  evaluate.main(["prog", f"--checkpoint={runs.anon}", f"--output={out}"])
  _same(metric_writers.read_eval_rows(str(out)), want)
  assert [r["setting"] for r in want] == ["O->O", "O->P", "P->O", "P->P", "R->O"]
  evaluate.main(["prog", f"--checkpoint={runs.anon}", "--config=configs/anon_synthetic.py:tiny",
                 f"--config.data.root={runs.root}", "--config.eval.rerank=True",
                 "--settings=O->O,P->O", f"--output={out}"])         # replaces the file
  rows = metric_writers.read_eval_rows(str(out))
  assert [r["setting"] for r in rows] == ["O->O", "P->O"]
  assert json.loads((out / "eval_info.json").read_text())["rerank"] is True
  assert "re-ranked" in capsys.readouterr().out


def test_user_errors(runs, tmp_path, cli_error):
  main = evaluate.main
  assert "no such folder" in cli_error(main, [f"--checkpoint={tmp_path / 'x'}"])
  assert "no checkpoint" in cli_error(main, [f"--checkpoint={tmp_path}"])
  assert "run's own folder" in cli_error(main, [f"--checkpoint={runs.base}",
                                                f"--output={runs.base}"])
  (tmp_path / "a_file").write_text("x")      # refused before the evaluation runs
  assert cli_error(main, [f"--checkpoint={runs.base}",
                          f"--output={tmp_path / 'a_file' / 'out'}"]) == (
      f"error: --output={tmp_path / 'a_file' / 'out'}: {tmp_path / 'a_file'} is a file, "
      "not a folder")
  assert "did you mean --config.data.root" in cli_error(
      main, [f"--checkpoint={runs.base}", "--config=configs/synthetic.py:tiny",
             "--config.data.rot=x"], code=2)
  assert "unknown variant" in cli_error(main, [f"--checkpoint={runs.base}",
                                               "--config=configs/synthetic.py:tny"], code=2)
  assert "setting 'P->P'" in cli_error(main, [f"--checkpoint={runs.base}",
                                              "--settings=P->P"])
  assert "missing split folder" in cli_error(main, [f"--checkpoint={runs.base}",
                                                    "--config=configs/market.py",
                                                    f"--config.data.root={tmp_path}"])


def test_command_line(runs, tmp_path):
  """One subprocess: the module runs as a program and prints the rows."""
  done = subprocess.run(
      [sys.executable, "-m", "privreid_jax.evaluate", f"--checkpoint={runs.base}",
       "--config=configs/synthetic.py:tiny", f"--config.data.root={runs.root}",
       f"--output={tmp_path / 'e'}"],
      capture_output=True, text=True, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert done.returncode == 0, done.stderr
  assert "O->O: rank1=" in done.stdout
  assert os.path.exists(tmp_path / "e" / "eval_metrics.jsonl")
