"""python -m privreid_jax.export: jax.export artifacts and a torchvision state dict."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import privreid_jax
from privreid_jax import export
from privreid_jax.models import pretrained, reid

pytest.importorskip("flatbuffers", reason="jax.export serialization needs flatbuffers")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs the artifacts with JAX alone: no privreid_jax module is imported.
RELOAD = """
import sys, jax, numpy as np
x = np.load(sys.argv[2])["images"]
out = {}
for name in ("reid", "anonymizer"):
  with open(f"{sys.argv[1]}/{name}.jax_export", "rb") as f:
    out[name] = np.asarray(jax.export.deserialize(bytearray(f.read())).call(x))
assert not any(m.startswith("privreid_jax") for m in sys.modules)
np.savez(sys.argv[3], **out)
"""


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
  out = tmp_path_factory.mktemp("export")
  export.main(["prog", f"--checkpoint={runs.anon}", f"--output={out}"])
  return out


def test_artifacts_reload_without_the_model_code(runs, exported, tmp_path):
  model = privreid_jax.load(runs.anon)
  manifest = json.loads((exported / "export.json").read_text())
  assert set(manifest["files"]) == {"reid", "anonymizer", "torchvision"}
  h, w = manifest["height"], manifest["width"]
  assert (h, w) == (model.height, model.width)
  # A batch size (5) that no test used before: the artifacts are batch-polymorphic.
  images = np.random.default_rng(5).integers(0, 256, (5, h, w, 3), dtype=np.uint8)
  np.savez(tmp_path / "in.npz", images=images)
  done = subprocess.run([sys.executable, "-c", RELOAD, str(exported),
                         str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                        capture_output=True, text=True, cwd=str(tmp_path),
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert done.returncode == 0, done.stderr
  got = np.load(tmp_path / "out.npz")
  live_reid = np.asarray(jax.jit(export.reid_function(model))(images))
  np.testing.assert_allclose(got["reid"], live_reid, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got["reid"], model.embed(images), rtol=1e-4, atol=1e-4)
  live_anon = np.asarray(jax.jit(export.image_function(model, "anonymize"))(images))
  assert got["anonymizer"].dtype == np.uint8 and got["anonymizer"].shape == images.shape
  assert np.max(np.abs(got["anonymizer"].astype(int) - live_anon)) <= 1
  assert np.max(np.abs(got["anonymizer"].astype(int) -
                       model.anonymize(images, size="model"))) <= 1
  # In-process too, at yet another batch size.
  art = export.load_exported(str(exported / "reid.jax_export"))
  seven = np.concatenate([images, images[:2]])
  np.testing.assert_allclose(np.asarray(art.call(seven)),
                             np.asarray(jax.jit(export.reid_function(model))(seven)),
                             rtol=1e-5, atol=1e-5)


def test_torchvision_state_dict_round_trips(runs, exported):
  model = privreid_jax.load(runs.anon)
  sd = pretrained.read_state_dict(str(exported / "backbone.safetensors"))
  assert "conv1.weight" in sd and "layer4.1.bn2.running_var" in sd
  assert not any(k.startswith("fc.") for k in sd)
  fresh = reid.build_reid_model(model.config.model, 0).init(
      jax.random.PRNGKey(0), np.zeros((1, model.height, model.width, 3), np.float32),
      train=False)
  loaded = pretrained.load_torchvision_resnet(str(exported / "backbone.safetensors"), fresh)
  want = {"params": model.state.params["reid"]["backbone"],
          "batch_stats": model.state.batch_stats["reid"]["backbone"]}
  got = {"params": loaded["params"]["backbone"],
         "batch_stats": loaded["batch_stats"]["backbone"]}
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_baseline_export_and_errors(runs, tmp_path, cli_error, capsys):
  out = tmp_path / "base"
  export.main(["prog", f"--checkpoint={runs.base}", f"--output={out}", "--what=reid"])
  assert "reid:" in capsys.readouterr().out
  assert sorted(os.listdir(out)) == ["export.json", "reid.jax_export"]
  main = export.main
  assert "no anonymizer" in cli_error(main, [f"--checkpoint={runs.base}",
                                             f"--output={out}", "--what=anonymizer"])
  assert "expected some of" in cli_error(main, [f"--checkpoint={runs.base}",
                                                f"--output={out}", "--what=onnx"])
  assert "no checkpoint" in cli_error(main, [f"--checkpoint={out}", f"--output={out}"])
  # jax.export lowers for any platform name: a typo would give an artifact no machine runs.
  assert cli_error(main, [f"--checkpoint={runs.base}", f"--output={tmp_path / 'p'}",
                          "--platforms=cpu,gpuu"]) == (
      "error: --platforms=gpuu: expected some of cpu, cuda, rocm, tpu")
  assert not (tmp_path / "p").exists()
  assert "is a file" in cli_error(main, [f"--checkpoint={runs.base}",
                                         f"--output={out / 'export.json'}"])
  assert cli_error(main, [f"--checkpoint={runs.base}",
                          f"--output={out / 'export.json' / 'x'}"]) == (
      f"error: --output={out / 'export.json' / 'x'}: {out / 'export.json'} is a file, "
      "not a folder")
