"""experiments/released_files.py: method A's rows on anonymized images stored as files."""

import os

import pytest
from PIL import Image

from experiments import released_files
from tests import anon_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A tiny outsider (raw images only) and a tiny method-A run scored by it."""
  outsider, _, run, _ = anon_runs.trained_with_outsider(tmp_path_factory)
  return run, outsider


def test_float_rows_are_the_runs_own_and_files_are_stored_as_named(runs, tmp_path):
  run, outsider = runs
  rows = released_files.measure(run, outsider, ["float", "png_model", "jpeg_input"],
                                str(tmp_path))
  got = {(r["store"], r["row"]): r for r in rows}
  assert sorted(r for s, r in got if s == "float") == sorted(
      ["O->O", "O->P", "P->O", "P->P", "3rd:O->O", "3rd:O->P", "3rd:P->O", "3rd:P->P"])
  assert sorted(r for s, r in got if s == "png_model") == sorted(
      ["O->P", "P->O", "P->P", "3rd:O->P", "3rd:P->O", "3rd:P->P"])
  # The float rows go through the same evaluator as the run: its reported rows exactly.
  reported = released_files.reported_rows(run)
  for (store, row), metrics in got.items():
    if store == "float":
      for key in ("rank1", "mAP", "mINP"):
        assert metrics[key] == pytest.approx(reported[row][key], abs=1e-6), (row, key)
  # What was scored is what the anonymize CLI writes in each form.
  for form, fmt, model_size in (("png_model", "PNG", True), ("jpeg_input", "JPEG", False)):
    for side in ("q", "g"):
      folder = tmp_path / form / side / "P"
      names = sorted(os.listdir(folder))
      assert names, folder
      with Image.open(folder / names[0]) as img:
        assert img.format == fmt
        if model_size:
          assert img.size == (16, 32)
  with pytest.raises(Exception, match="--store=webp"):
    released_files.measure(run, outsider, ["webp"], str(tmp_path / "x"))


def test_load_errors_name_this_tools_flags(runs, tmp_path):
  """The library words these as --checkpoint=... or config.evals.outsider.workdir=...;
  the tool's flags are --run and --outsider."""
  run, outsider = runs
  with pytest.raises(FileNotFoundError, match=rf"^--run={tmp_path / 'nope'}: no such folder$"):
    released_files.measure(str(tmp_path / "nope"), outsider, ["float"], str(tmp_path / "a"))
  with pytest.raises(ValueError, match=rf"^--run={outsider}: a 'baseline' run, not method A"):
    released_files.measure(outsider, outsider, ["float"], str(tmp_path / "b"))
  with pytest.raises(FileNotFoundError, match=rf"^--outsider={tmp_path}: no checkpoint there"):
    released_files.measure(run, str(tmp_path), ["float"], str(tmp_path / "c"))
