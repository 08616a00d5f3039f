"""Shared by the usage tests (API, extract, evaluate, visrank, export): one tiny
baseline run and one tiny method-A run, trained once per session in-process on a
tiny synthetic dataset, and a folder of images to feed the tools."""

import dataclasses
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from configs import anon_synthetic, synthetic
from privreid_jax import trainer
from privreid_jax.methods import base as methods_base


@dataclasses.dataclass(frozen=True)
class Runs:
  root: str        # the synthetic dataset both runs trained on
  base: str        # workdir of the baseline run (configs/synthetic.py:tiny)
  anon: str        # workdir of the method-A run (configs/anon_synthetic.py:tiny)


def _train(config, workdir):
  run = methods_base.load(config.method).driver or trainer.run
  return run(config, workdir)


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
  top = tmp_path_factory.mktemp("usage_runs")
  root = str(top / "data")
  base_cfg = synthetic.get_config("tiny")
  base_cfg.data.root = root
  _train(base_cfg, str(top / "base"))
  anon_cfg = anon_synthetic.get_config("tiny")
  anon_cfg.data.root = root
  anon_cfg.optim.epochs = 1          # one epoch is enough to have every network
  anon_cfg.evals.image_quality.enabled = False
  _train(anon_cfg, str(top / "anon"))
  return Runs(root, str(top / "base"), str(top / "anon"))


QUERY_FILES = 3      # Market-named query images copied into the folder
ODD_SIZE = (50, 23)  # an image of another size and name pattern, in a subfolder


@pytest.fixture(scope="session")
def image_dir(runs, tmp_path_factory):
  """Query images (Market names), one odd-size PNG in sub/, one unreadable file."""
  folder = tmp_path_factory.mktemp("usage_images")
  names = sorted(os.listdir(os.path.join(runs.root, "query")))[:QUERY_FILES]
  for name in names:
    shutil.copy(os.path.join(runs.root, "query", name), folder / name)
  os.makedirs(folder / "sub")
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, ODD_SIZE + (3,), dtype=np.uint8)).save(
      folder / "sub" / "odd.png")
  (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
  return folder


@pytest.fixture
def cli_error(capsys):
  """Runs a CLI's main(argv) expecting a user error; returns its one stderr line.

  Exit status 1 for an error met while running, 2 for a bad command line (as
  main.py and anonymize.py, through privreid_jax.cli)."""
  def check(main, argv, code=1):
    with pytest.raises(SystemExit) as excinfo:
      main(["prog"] + list(argv))
    assert excinfo.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: "), err
    return err[0]
  return check
