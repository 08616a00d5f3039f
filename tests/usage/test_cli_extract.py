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


def test_epsilon_writes_only_the_dp_release(runs, image_dir, tmp_path, capsys):
  """--epsilon: L2-normalised features plus OpenDP's Gaussian noise at the scale
  OpenDP's own map calibrates for (epsilon, delta); the clean features are not in
  the file; noise differs per run."""
  from privreid_jax.privacy import dp, dp_exact
  outs = [tmp_path / "r1.npz", tmp_path / "r2.npz"]
  for out in outs:
    extract.main(["prog", f"--checkpoint={runs.base}", f"--input={image_dir}",
                  f"--output={out}", "--epsilon=50", "--delta=1e-6"])
  std = capsys.readouterr().out
  assert "released 4 features" in std and "Per image: (50, 1e-06)-DP" in std
  assert "OpenDP's Gaussian mechanism" in std
  z1, z2 = np.load(outs[0]), np.load(outs[1])
  assert set(z1.files) == {"features", "names", "pids", "camids", "parsed", "skipped",
                           "kind", "step", "checkpoint", "epsilon", "delta", "sigma",
                           "k_max", "epsilon_per_identity", "mechanism", "guarantee"}
  dim = z1["features"].shape[1]
  scale = dp_exact.scale_for(50.0, 1e-6, dim)
  assert float(z1["sigma"]) == scale and float(z1["epsilon"]) == 50.0
  assert 1.0 < scale / dp.gaussian_sigma(50, 1e-6) < 1.1     # zCDP: a little more noise
  eps, delta = dp_exact._approx(dp_exact._measurement(dim, scale), 1e-6).map(2.0)
  assert eps <= 50.0 + 1e-9 and delta == 1e-6
  m = privreid_jax.load(runs.base)
  clean = m.embed([str(image_dir / n) for n in z1["names"]])
  unit = clean / np.linalg.norm(clean, axis=1, keepdims=True)
  noise = z1["features"] - unit
  assert abs(noise.std() / scale - 1) < 0.25, (noise.std(), scale)   # N*D draws
  assert abs(noise.mean()) < 4 * scale / np.sqrt(noise.size)
  assert not np.allclose(z1["features"], z2["features"])              # fresh noise
  assert not np.allclose(z1["features"], clean, atol=1e-3)
  k_max, _ = dp.gallery_k(np.where(z1["parsed"], z1["pids"], -1))
  assert int(z1["k_max"]) == k_max
  assert float(z1["epsilon_per_identity"]) == dp_exact.epsilon_of(scale, 1e-6, k_max, dim)
  if k_max > 1:
    assert 50.0 < float(z1["epsilon_per_identity"]) < 50.0 * k_max


def test_epsilon_user_errors(runs, image_dir, tmp_path, cli_error):
  ok = [f"--checkpoint={runs.base}", f"--input={image_dir}",
        f"--output={tmp_path / 'f.npz'}"]
  assert cli_error(extract.main, ok + ["--epsilon=0"], code=2) == (
      "error: --epsilon=0.0 --delta=1e-05: epsilon must be > 0, got epsilon=0.0")
  assert "delta must be in (0, 1)" in cli_error(extract.main,
                                                 ok + ["--epsilon=1", "--delta=1"], code=2)
  assert "no privacy" in cli_error(extract.main, ok + ["--epsilon=inf"], code=2)
  assert "OpenDP cannot calibrate the noise for epsilon=1e+06" in cli_error(
      extract.main, ok + ["--epsilon=1e6"], code=2)
  assert not os.path.exists(tmp_path / "f.npz")


def test_the_release_shuffles_rows_and_keeps_them_aligned(runs, image_dir):
  """Sorted names put one person's rows together, which the released features
  would show after the names are dropped; `release` permutes every per-row field
  together (the clean feature of names[i] is row i's, before the noise)."""
  import privreid_jax
  m = privreid_jax.load(runs.base)
  out = extract.extract_folder(m, str(image_dir), progress=False)
  n = len(out.names)
  order = np.random.default_rng(5).permutation(n)
  assert list(order) != list(range(n))
  got, info = extract.release(out, 1e4, 1e-5, rng=np.random.default_rng(5))
  assert got.names == [out.names[i] for i in order]
  for field in ("pids", "camids", "parsed"):
    np.testing.assert_array_equal(getattr(got, field), getattr(out, field)[order])
  unit = out.features / np.linalg.norm(out.features, axis=1, keepdims=True)
  noise = np.linalg.norm(got.features - unit[order], axis=1)     # ~ scale * sqrt(D)
  apart = np.linalg.norm(unit[:, None] - unit[None], axis=-1)[~np.eye(n, dtype=bool)]
  # a wrong row would be >= apart - noise away, above apart / 2 whenever this holds
  assert noise.max() < apart.min() / 2, (noise.max(), apart.min())


def test_a_delta_not_below_one_over_n_is_warned_about(runs, image_dir, tmp_path, capsys):
  """delta >= 1/N: (epsilon, delta)-DP then allows releasing one of the N images
  in the clear, so the release is written but the user is told (4 images here)."""
  ok = [f"--checkpoint={runs.base}", f"--input={image_dir}", "--epsilon=10", "--overwrite"]
  extract.main(["prog", *ok, f"--output={tmp_path / 'a.npz'}", "--delta=0.25"])
  err = capsys.readouterr().err
  assert "warning: --delta=0.25 is not below 1/N = 1/4: " in err and "e.g. 0.003" in err
  extract.main(["prog", *ok, f"--output={tmp_path / 'b.npz'}", "--delta=0.2"])
  assert "--delta" not in capsys.readouterr().err
  assert float(np.load(tmp_path / "a.npz")["delta"]) == 0.25


def test_existing_output_needs_overwrite_and_delta_needs_epsilon(runs, image_dir, tmp_path,
                                                                 cli_error, capsys):
  """A second release over the first (twice the privacy budget spent) or over a
  clean-features file was replaced without a word; --delta alone wrote clean
  features as if released."""
  out = tmp_path / "f.npz"
  ok = [f"--checkpoint={runs.base}", f"--input={image_dir}", f"--output={out}"]
  extract.main(["prog", *ok])
  capsys.readouterr()
  before = out.read_bytes()
  assert cli_error(extract.main, ok + ["--epsilon=10"]) == (
      f"error: --output={out} exists; pass --overwrite to replace it, or pick another name")
  assert out.read_bytes() == before
  extract.main(["prog", *ok, "--epsilon=10", "--overwrite"])
  assert float(np.load(out)["epsilon"]) == 10.0
  capsys.readouterr()
  assert cli_error(extract.main, [*ok[:2], f"--output={tmp_path / 'g.npz'}", "--delta=1e-3"],
                   code=2).startswith("error: --delta=0.001 without --epsilon")
  assert "--batch_size=0: must be >= 1" in cli_error(
      extract.main, [*ok[:2], f"--output={tmp_path / 'g.npz'}", "--batch_size=0"], code=2)
  assert not (tmp_path / "g.npz").exists()


def test_recovered_kind_of_a_base_mode_run_says_why(image_dir, tmp_path, cli_error):
  from tests import anon_runs
  anon_runs.fresh_checkpoint(tmp_path / "base", "base,mosaic,tiny")
  assert cli_error(extract.main, [f"--checkpoint={tmp_path / 'base'}", f"--input={image_dir}",
                                  f"--output={tmp_path / 'f.npz'}", "--kind=recovered"]) == (
      "error: --kind=recovered: a 'anonymization' run embeds raw | anon (Base mode, "
      "config.anon.mode='base': no G_R)")
