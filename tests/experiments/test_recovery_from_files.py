"""experiments/recovery_from_files.py: G_R's recovery after P is stored as files."""

import os

import numpy as np
import pytest
from PIL import Image

import privreid_jax
from experiments import recovery_from_files
from tests import anon_runs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A method-A workdir holding one checkpoint of a freshly initialised state."""
  workdir = tmp_path_factory.mktemp("anon_run")
  anon_runs.fresh_checkpoint(workdir, seed=5, step=3)
  return str(workdir)


def test_rows_and_the_lossless_row_equals_the_api_round_trip(run, tmp_path):
  photos = tmp_path / "photos"
  os.makedirs(photos)
  rng = np.random.default_rng(1)
  for i in range(7):
    Image.fromarray(rng.integers(0, 256, (48, 20 + i, 3), dtype=np.uint8)).save(
        photos / f"p{i}.png")
  (photos / "notes.txt").write_text("not an image")
  names = recovery_from_files.pick(str(photos), 5)
  assert names == ["p0.png", "p1.png", "p2.png", "p3.png", "p4.png"]
  assert recovery_from_files.pick(str(photos), 3) == ["p0.png", "p2.png", "p4.png"]
  scratch = tmp_path / "scratch"
  os.makedirs(scratch)
  rows = recovery_from_files.measure(run, str(photos), names, str(scratch))
  assert [r["stored"] for r in rows] == ["float", "png, model size", "jpeg, model size",
                                         "png, input size", "jpeg, input size"]
  assert all(r["images"] == 5 and np.isfinite(r["psnr_mean"]) for r in rows)
  assert sorted(os.listdir(photos)) == sorted([*(f"p{i}.png" for i in range(7)),
                                               "notes.txt"])     # read, never written
  # Independently: P at the model's size as uint8 (what a lossless PNG holds), then G_R.
  m = privreid_jax.load(run)
  paths = [str(photos / n) for n in names]
  original = np.stack([np.asarray(Image.open(p).convert("RGB").resize(
      (m.width, m.height), Image.BILINEAR)) for p in paths]) / 255.0
  back = m.recover(m.anonymize(paths, size="model"), size="model") / 255.0
  want = recovery_from_files.psnr(original, back)
  assert rows[1]["psnr_mean"] == pytest.approx(float(want.mean()), abs=1e-6)
  assert rows[1]["psnr_std"] == pytest.approx(float(want.std()), abs=1e-6)
  # Each row's P was stored as its name says (a fresh G's output is nearly flat, so the
  # rows' values cannot tell the storage forms apart here; the files can).
  sizes = {i: Image.open(photos / f"p{i}.png").size for i in range(5)}
  for folder, fmt, at_model_size in (("png_model_size", "PNG", True),
                                     ("jpeg_model_size", "JPEG", True),
                                     ("png_input_size", "PNG", False),
                                     ("jpeg_input_size", "JPEG", False)):
    stored = sorted(os.listdir(scratch / folder / "P"))
    assert len(stored) == 5, folder
    for i, name in enumerate(stored):
      with Image.open(scratch / folder / "P" / name) as img:
        assert img.format == fmt, (folder, name)
        assert img.size == ((m.width, m.height) if at_model_size else sizes[i]), folder


def test_over_seeds_groups_runs_by_setting_without_the_seed():
  rows = [{"run": f"full_{d}_s{s}", "stored": st, "psnr_mean": v}
          for d, s, st, v in [("mosaic", 0, "float", 25.0), ("mosaic", 1, "float", 26.0),
                              ("mosaic", 0, "png", 20.0), ("mosaic", 1, "png", 23.0),
                              ("blur", 2, "float", 24.0), ("blur_s1x", 0, "float", 1.0)]]
  rows.append({"run": "mosaic_s10", "stored": "float", "psnr_mean": 7.0})
  rows.append({"run": "mosaic_s11", "stored": "float", "psnr_mean": 9.0})
  got = recovery_from_files.over_seeds(rows)
  assert [(g["setting"], g["stored"], g["runs"]) for g in got] == [
      ("full_mosaic", "float", 2), ("full_mosaic", "png", 2), ("mosaic", "float", 2)]
  assert got[0]["mean"] == 25.5 and got[0]["std"] == 0.5       # population std
  assert got[1]["mean"] == 21.5 and got[1]["std"] == 1.5
  assert got[2]["mean"] == 8.0 and got[2]["std"] == 1.0


def test_psnr():
  a = np.zeros((2, 4, 4, 3))
  b = a.copy()
  b[0] += 0.1
  b[1] += 0.01
  assert recovery_from_files.psnr(a, b) == pytest.approx([20.0, 40.0])


def test_a_json_path_that_cannot_be_written_fails_before_the_measurement(tmp_path, capsys):
  """The measurement can take long: a --json under a file, or a folder, is one
  line before any run is read (it was a traceback after it, the rows lost)."""
  (tmp_path / "afile").write_text("x")
  for bad, said in ((tmp_path / "afile" / "x.json", "is a file, not a folder"),
                    (tmp_path, "is a folder; give a file name")):
    with pytest.raises(SystemExit) as info:
      recovery_from_files.main(["prog", f"--runs={tmp_path / 'no_run'}",
                                f"--images={tmp_path}", f"--json={bad}"])
    assert info.value.code == 1
    assert said in capsys.readouterr().err
