"""Method B figures: the t-SNE keeps clusters apart; the CLI writes its PNGs."""

import os
import sys

import numpy as np
import pytest
from PIL import Image

from experiments import figures_dual


def clustered(num_ids=5, per_id=12, dim=16, spread=0.2, seed=0):
  rng = np.random.default_rng(seed)
  pids = np.repeat(np.arange(num_ids), per_id)
  x = rng.normal(size=(num_ids, dim))[pids] + spread * rng.normal(size=(len(pids), dim))
  return x.astype(np.float32), pids


def embedding_agreement(y, pids):
  d = np.sum((y[:, None] - y[None]) ** 2, -1)
  np.fill_diagonal(d, np.inf)
  return np.mean(pids[np.argmin(d, 1)] == pids)


@pytest.mark.parametrize("backend", ["numpy", "opentsne", "sklearn"])
def test_tsne_keeps_identities_together_and_random_labels_are_not(backend):
  if backend != "numpy":
    pytest.importorskip(figures_dual.TSNE_LIBRARIES[backend])
  x, pids = clustered()
  y = figures_dual.tsne(x, backend=backend)
  assert y.shape == (len(x), 2) and np.all(np.isfinite(y))
  assert embedding_agreement(y, pids) > 0.95
  assert figures_dual.nn_identity_agreement(x, pids) == 1.0
  shuffled = np.random.default_rng(1).permutation(pids)
  assert figures_dual.nn_identity_agreement(x, shuffled) < 0.5


def test_tsne_rejects_bad_shapes_and_backends():
  with pytest.raises(ValueError, match="tsne: expected"):
    figures_dual.tsne(np.zeros((3, 4)))
  with pytest.raises(ValueError, match="unknown backend 'umap'"):
    figures_dual.tsne(np.zeros((6, 4)), backend="umap")


def test_tsne_backend_prefers_opentsne_then_sklearn_then_numpy(monkeypatch):
  # A None entry in sys.modules makes the import fail as if the package were missing.
  for module in ("openTSNE", "sklearn", "sklearn.manifold"):
    monkeypatch.setitem(sys.modules, module, None)
  assert figures_dual.tsne_backend() == "numpy"
  monkeypatch.setitem(sys.modules, "sklearn.manifold", object())
  assert figures_dual.tsne_backend() == "sklearn"
  monkeypatch.setitem(sys.modules, "openTSNE", object())
  assert figures_dual.tsne_backend() == "opentsne"


def test_cli_writes_tsne_and_grids(tmp_path):
  pytest.importorskip("matplotlib")
  for name, seed in (("baseline", 0), ("twostage", 1)):
    run = tmp_path / name
    run.mkdir()
    x, pids = clustered(seed=seed)
    np.savez(run / figures_dual.FEATURES_FILE, features=x, pids=pids)
    Image.fromarray(np.zeros((64, 48, 3), np.uint8)).save(run / "recon_grid.png")
  assert figures_dual.default_runs(str(tmp_path)) == ["baseline", "twostage"]
  out = tmp_path / "out"
  assert figures_dual.main(["--root", str(tmp_path), "--out", str(out)]) == 0
  for name in ("tsne_features.png", "recon_grids.png"):
    assert os.path.getsize(out / name) > 0
  assert figures_dual.main(["--root", str(tmp_path), "--runs", "nope"]) == 2


def test_misspelt_flag_is_one_line_with_exit_2(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    figures_dual.main(["--root", str(tmp_path), "--run", "baseline"])
  err = capsys.readouterr().err
  assert e.value.code == 2 and "run" in err and err.count("\n") == 1, err
