"""The Python API: privreid_jax.load -> embed / anonymize / recover / evaluate."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import privreid_jax
from privreid_jax import anonymize as anonymize_cli
from privreid_jax import api, metric_writers
from privreid_jax.data.records import DatasetError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _reference_features(model, paths):
  """Independent of the API: PIL decode + bilinear resize, (x/255 - mean)/std, embed."""
  cfg = model.config.data
  x = []
  for p in paths:
    img = Image.open(p).convert("RGB").resize((cfg.width, cfg.height), Image.BILINEAR)
    x.append((np.asarray(img) / 255.0 - np.asarray(cfg.mean)) / np.asarray(cfg.std))
  x = np.asarray(x, np.float32)
  return np.asarray(model.method.embed(model.state, x, "raw"))


def _training_rows(workdir):
  rows = metric_writers.read_eval_rows(workdir)
  last = max(r["step"] for r in rows)
  return {r["setting"]: r for r in rows if r["step"] == last}


def test_import_is_light():
  """`import privreid_jax` does not import JAX (the API is imported on first use)."""
  code = "import sys, privreid_jax; print('jax' in sys.modules, callable(privreid_jax.load))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT, check=True)
  assert out.stdout.split() == ["False", "True"]


def test_readme_example(runs, image_dir):
  a, b = sorted(str(image_dir / n) for n in os.listdir(image_dir)
                if n.endswith(".jpg") and n != "broken.jpg")[:2]
  # The README's three lines:
  m = privreid_jax.load(runs.base)
  f = m.embed([a, b])
  assert f.shape == (2, m.feature_dim) and f.dtype == np.float32
  assert isinstance(m, privreid_jax.Model) and m.step == 4 and m.epoch == 2
  assert m.config.method == "baseline" and m.kinds == ("raw",)
  np.testing.assert_allclose(f, _reference_features(m, [a, b]), rtol=1e-5, atol=1e-5)


def test_embed_inputs_arrays_paths_batches(runs, image_dir):
  m = privreid_jax.load(os.path.join(runs.base, "checkpoints"))   # the folder works too
  paths = [str(image_dir / "sub" / "odd.png")] + sorted(
      str(image_dir / n) for n in os.listdir(image_dir) if n[:4].isdigit())
  arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
  by_path = m.embed(paths)
  np.testing.assert_allclose(m.embed(arrays), by_path, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(m.embed(arrays, batch_size=1), by_path, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(m.embed(arrays[1]), by_path[1:2], rtol=1e-5, atol=1e-5)
  same = np.stack([arrays[1], arrays[1]])                         # a uint8 [N, H, W, 3]
  assert m.embed(same).shape == (2, m.feature_dim)
  # Preprocessing is the evaluation transform.
  from privreid_jax.data import transforms
  np.testing.assert_array_equal(m.preprocess(arrays[:1])[0], transforms.eval_transform(
      arrays[0], transforms.TransformConfig.from_config(m.config.data)))
  assert m.embed([]).shape == (0, m.feature_dim)


def test_user_errors_are_one_line(runs, image_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="no such folder"):
    privreid_jax.load(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    privreid_jax.load(str(image_dir))
  with pytest.raises(FileNotFoundError, match="a file, not a run"):
    privreid_jax.load(str(image_dir / "broken.jpg"))
  m = privreid_jax.load(runs.base)
  with pytest.raises(DatasetError, match="broken.jpg") as e:
    m.embed([str(image_dir / "broken.jpg")])
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="embeds raw"):
    m.embed([str(image_dir / "sub" / "odd.png")], kind="anon")
  with pytest.raises(ValueError, match="no anonymizer"):
    m.anonymize([str(image_dir / "sub" / "odd.png")])
  with pytest.raises(ValueError, match="setting 'P->P'"):
    m.evaluate(runs.root, settings=["P->P"])


def test_evaluate_repeats_the_training_rows(runs):
  m = privreid_jax.load(runs.base)
  rows = m.evaluate(runs.root)                # a data root: the run's own dataset
  want = _training_rows(runs.base)
  assert set(rows) == set(want) == {"O->O"}
  for k, v in rows["O->O"].items():
    assert v == pytest.approx(want["O->O"][k], abs=1e-6), k
  reranked = m.evaluate(runs.root, rerank=True)
  assert set(reranked["O->O"]) == set(rows["O->O"])


def test_method_a_anonymize_recover_and_settings(runs, image_dir, tmp_path):
  m = privreid_jax.load(runs.anon)
  assert m.is_anonymizer and set(m.settings) == {"O->O", "O->P", "P->O", "P->P", "R->O"}
  names = ["sub/odd.png"] + sorted(n for n in os.listdir(image_dir) if n.endswith(".jpg")
                                   and n != "broken.jpg")
  paths = [str(image_dir / n) for n in names]
  anon = m.anonymize(paths)                              # size="input": each its own size
  assert [a.shape[:2] for a in anon] == [Image.open(p).size[::-1] for p in paths]
  assert all(a.dtype == np.uint8 for a in anon)
  # The same images as the folder CLI (python -m privreid_jax.anonymize) writes.
  out = tmp_path / "cli"
  anonymize_cli.process_folder(anonymize_cli.Anonymizer(runs.anon), str(image_dir),
                               str(out), batch_size=4, progress=False)
  for name, a in zip(names, anon):
    cli = np.asarray(Image.open(out / name)).astype(int)
    if name.endswith(".png"):
      assert np.max(np.abs(cli - a)) <= 1, name
    else:                                                # the CLI wrote a JPEG (q95)
      assert np.mean(np.abs(cli - a)) < 4, name
  small = m.anonymize(paths, size="model")               # size="model": one array
  assert small.shape == (len(paths), m.height, m.width, 3) and small.dtype == np.uint8
  back = m.recover(small, size="model")
  assert back.shape == small.shape and back.dtype == np.uint8
  assert [r.shape for r in m.recover(anon)] == [a.shape for a in anon]
  # Features of G(O): the "anon" kind equals embedding G(O) in float (no uint8 round).
  x = m.preprocess(paths)
  want = np.asarray(m.method.embed(m.state, m.method.anonymize(m.state, x), "raw"))
  np.testing.assert_allclose(m.embed(paths, kind="anon"), want, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="size='thumb'"):
    m.anonymize(paths, size="thumb")


def test_method_a_evaluate_gives_every_setting_as_training(runs):
  m = privreid_jax.load(runs.anon)
  rows = m.evaluate(runs.root)
  want = _training_rows(runs.anon)
  assert list(rows) == ["O->O", "O->P", "P->O", "P->P", "R->O"]
  for setting, metrics in rows.items():
    for k, v in metrics.items():
      assert v == pytest.approx(want[setting][k], abs=1e-6), (setting, k)
  assert list(m.evaluate(runs.root, settings=["P->O"])) == ["P->O"]


def test_evaluate_takes_the_image_size_from_the_checkpoint(runs):
  """Another config's image size and normalisation are ignored: the model's own count."""
  from configs import synthetic
  m = privreid_jax.load(runs.base)
  c = synthetic.get_config("tiny")
  c.data.root = runs.root
  c.data.height, c.data.width, c.data.mean = 64, 32, (0.5, 0.5, 0.5)
  data, _ = m.eval_config(c)
  assert (data.height, data.width) == (m.height, m.width)
  assert tuple(data.mean) == tuple(m.config.data.mean)
  rows = m.evaluate(c)
  assert rows["O->O"]["mAP"] == pytest.approx(_training_rows(runs.base)["O->O"]["mAP"],
                                              abs=1e-6)
  assert api.one_line(ValueError("a\n  b\nlast")) == "a last"
