"""python -m privreid_jax.extract: features of a folder into an .npz."""

import os
import subprocess
import sys

import numpy as np

import privreid_jax
from privreid_jax import extract

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_extract_folder_skips_unreadable_files(runs, image_dir, tmp_path, capsys):
  out = tmp_path / "deep" / "feats.npz"
  extract.main(["prog", f"--checkpoint={runs.base}", f"--input={image_dir}",
                f"--output={out}", "--batch_size=2"])
  std = capsys.readouterr()
  assert "extracted 4 features" in std.out and "skipped 1 unreadable" in std.out
  assert "skipping broken.jpg" in std.err
  z = np.load(out)
  names = list(z["names"])
  assert names == sorted(names) and "sub/odd.png" in names and len(names) == 4
  assert list(z["skipped"]) == ["broken.jpg"] and str(z["kind"]) == "raw"
  m = privreid_jax.load(runs.base)
  assert int(z["step"]) == m.step and z["features"].dtype == np.float32
  want = m.embed([str(image_dir / n) for n in names])
  np.testing.assert_allclose(z["features"], want, rtol=1e-5, atol=1e-5)
  odd = names.index("sub/odd.png")
  assert not z["parsed"][odd] and z["pids"][odd] == -1 and z["camids"][odd] == -1
  for i, name in enumerate(names):
    if i != odd:                       # Market names: 0003_c4s1_... -> pid 3, camera 3
      assert z["parsed"][i] and z["pids"][i] == int(name[:4])
      assert z["camids"][i] == int(name.split("_c")[1][0]) - 1


def test_user_errors(runs, image_dir, tmp_path, cli_error):
  main = extract.main
  ok = [f"--input={image_dir}", f"--output={tmp_path / 'f.npz'}"]
  assert "no such folder" in cli_error(main, [f"--checkpoint={tmp_path / 'x'}"] + ok)
  assert "no checkpoint" in cli_error(main, [f"--checkpoint={image_dir}"] + ok)
  assert "--input=" in cli_error(main, [f"--checkpoint={runs.base}",
                                        f"--input={tmp_path / 'none'}", ok[1]])
  assert "is a folder" in cli_error(main, [f"--checkpoint={runs.base}", ok[0],
                                           f"--output={tmp_path}"])
  (tmp_path / "a_file").write_text("x")      # refused before the features are computed
  assert cli_error(main, [f"--checkpoint={runs.base}", ok[0],
                          f"--output={tmp_path / 'a_file' / 'f.npz'}"]) == (
      f"error: --output={tmp_path / 'a_file' / 'f.npz'}: {tmp_path / 'a_file'} is a "
      "file, not a folder")
  assert "embeds raw" in cli_error(main, [f"--checkpoint={runs.base}", "--kind=anon"] + ok)
  assert "--checkpoint is required" in cli_error(main, ok, code=2)
  assert "checkpont" in cli_error(main, ["--checkpont=x"] + ok, code=2)   # misspelt flag
  assert "unexpected arguments" in cli_error(main, ["--checkpoint=x", "stray"] + ok, code=2)
  assert not os.path.exists(tmp_path / "f.npz")


def test_command_line_method_a_anon_kind(runs, image_dir, tmp_path):
  """One subprocess: the module runs as a program (exit 0, the .npz written)."""
  out = tmp_path / "anon.npz"
  done = subprocess.run(
      [sys.executable, "-m", "privreid_jax.extract", "--checkpoint", runs.anon,
       "--input", str(image_dir), "--output", str(out), "--kind", "anon"],
      capture_output=True, text=True, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert done.returncode == 0, done.stderr
  assert "extracted 4 features" in done.stdout and "broken.jpg" in done.stderr
  z = np.load(out)
  m = privreid_jax.load(runs.anon)
  want = m.embed([str(image_dir / n) for n in z["names"]], kind="anon")
  np.testing.assert_allclose(z["features"], want, rtol=1e-4, atol=1e-4)
