"""The folder CLI of method A: anonymize / recover a folder with a checkpoint."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from privreid_jax import anonymize, checkpoint
from tests import anon_runs

SIZES = {"a.png": (40, 20), "sub/b.png": (64, 30), "c.png": (32, 16)}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args):
  """`python -m privreid_jax.anonymize ARGS` from the repository root, on the CPU."""
  return subprocess.run([sys.executable, "-m", "privreid_jax.anonymize", *map(str, args)],
                        capture_output=True, text=True, cwd=ROOT,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A method-A workdir holding one checkpoint of a freshly initialised state."""
  workdir = tmp_path_factory.mktemp("anon_ckpt")
  method, state, config = anon_runs.fresh_checkpoint(workdir)
  return str(workdir), method, state, config


@pytest.fixture
def images(tmp_path):
  folder = tmp_path / "in"
  rng = np.random.default_rng(0)
  for name, (h, w) in SIZES.items():
    os.makedirs(folder / os.path.dirname(name), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
  (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
  return folder


def _digest(folder):
  return {os.path.relpath(os.path.join(r, p), folder):
          hashlib.sha256(open(os.path.join(r, p), "rb").read()).hexdigest()
          for r, _, ps in os.walk(folder) for p in ps}


def _expected(run, path, net):
  """Independent reference: resize -> normalise -> net -> [0,1] -> uint8 -> resize back."""
  _, method, state, config = run
  img = np.asarray(Image.open(path).convert("RGB"))
  small = np.asarray(Image.fromarray(img).resize((16, 32), Image.BILINEAR))
  mean, std = np.asarray(config.data.mean), np.asarray(config.data.std)
  x = ((small / 255.0 - mean) / std).astype(np.float32)[None]
  y = np.asarray(getattr(method, net)(state, x))[0]
  y = np.clip(y * std + mean, 0, 1)
  out = Image.fromarray(np.round(y * 255).astype(np.uint8))
  return np.asarray(out.resize((img.shape[1], img.shape[0]), Image.BILINEAR)).astype(int)


@pytest.mark.parametrize("recover", [False, True])
def test_folder_keeps_names_and_sizes_skips_corrupt_files(run, images, tmp_path, recover):
  before = _digest(images)
  assert "sub/b.png" in before
  out = tmp_path / "out"
  anonymizer = anonymize.Anonymizer(run[0], recover=recover)
  assert anonymizer.step == 7
  summary = anonymize.process_folder(anonymizer, str(images), str(out), batch_size=2,
                                     progress=False)
  assert summary.written == 3 and summary.skipped == ["broken.jpg"]
  assert _digest(images) == before                    # input untouched
  assert sorted(_digest(out)) == sorted(SIZES)
  for name, (h, w) in SIZES.items():
    result = np.asarray(Image.open(out / name)).astype(int)
    assert result.shape == (h, w, 3)
    expected = _expected(run, images / name, "recover" if recover else "anonymize")
    assert np.max(np.abs(result - expected)) <= 1, name


def test_refuses_output_inside_or_around_the_input(run, images):
  anonymizer = anonymize.Anonymizer(run[0])
  for out in (images, images / "sub" / "x"):
    with pytest.raises(ValueError, match="is inside"):
      anonymize.process_folder(anonymizer, str(images), str(out), progress=False)
  with pytest.raises(ValueError, match="contains --input"):
    anonymize.process_folder(anonymizer, str(images), str(images.parent), progress=False)


def test_an_empty_input_or_one_without_a_readable_image_is_an_error(run, tmp_path):
  """Not exit 0 with 'anonymized 0 images': the message names the folder."""
  empty = tmp_path / "empty"
  os.makedirs(empty / ".hidden")
  (empty / ".DS_Store").write_bytes(b"x")
  cmd = [f"--checkpoint={run[0]}",
         f"--input={empty}", f"--output={tmp_path / 'o1'}"]
  done = _cli(*cmd)
  assert done.returncode == 1
  assert done.stderr.strip().splitlines() == [f"error: --input={empty}: no files"]
  assert not (tmp_path / "o1").exists()          # refused before anything is created
  unreadable = tmp_path / "unreadable"
  os.makedirs(unreadable)
  (unreadable / "a.jpg").write_bytes(b"")
  (unreadable / "notes.txt").write_text("not an image")
  with pytest.raises(ValueError, match=f"--input={unreadable}: none of its 2 files is a "
                                       "readable image"):
    anonymize.process_folder(anonymize.Anonymizer(run[0]), str(unreadable),
                             str(tmp_path / "o2"), progress=False)


def test_rejects_a_non_method_a_checkpoint(tmp_path, run):
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    anonymize.Anonymizer(str(tmp_path))
  (tmp_path / "w.npz").write_bytes(b"x")       # was: "no such folder"
  with pytest.raises(FileNotFoundError, match="w.npz: a file, not a run's workdir"):
    anonymize.Anonymizer(str(tmp_path / "w.npz"))
  from configs import synthetic
  config = synthetic.get_config("tiny")
  ckpts = checkpoint.Checkpoints(str(tmp_path / "b" / "checkpoints"))
  ckpts.save(1, {"params": {"reid": {}}}, {"next_batch": 1}, checkpoint.config_meta(config))
  ckpts.close()
  with pytest.raises(ValueError, match="a 'baseline' run, not method A"):
    anonymize.Anonymizer(str(tmp_path / "b"))


def test_command_line(run, images, tmp_path):
  out = tmp_path / "cli_out"
  cmd = [f"--checkpoint={run[0]}", f"--input={images}", f"--output={out}"]
  done = _cli(*cmd)
  assert done.returncode == 0, done.stderr
  assert "anonymized 3 images" in done.stdout and "skipped 1 unreadable" in done.stdout
  model = anonymize.Anonymizer(run[0])
  assert f"run at the model's {model.height}x{model.width} and resized" in done.stdout
  assert "broken.jpg" in done.stderr
  assert sorted(_digest(out)) == sorted(SIZES)
  bad = _cli(*cmd[:-1], f"--output={images / 'x'}")
  assert bad.returncode == 1 and "is inside" in bad.stderr
  assert len(bad.stderr.strip().splitlines()) == 1


def test_files_already_in_the_output_are_kept_unless_overwrite(run, images, tmp_path):
  """Nothing is lost: an output folder that holds a file of an input's name is
  refused before anything is written (the file keeps its bytes); --overwrite
  replaces it. Other files in the output are never touched."""
  out = tmp_path / "out"
  os.makedirs(out / "sub")
  (out / "sub" / "b.png").write_bytes(b"an earlier result")
  (out / "notes.txt").write_text("mine")
  anonymizer = anonymize.Anonymizer(run[0])
  with pytest.raises(FileExistsError,
                     match=rf"^--output={out} already holds 1 of the 4 output files "
                           r"\(first: sub/b\.png\); pass --overwrite"):
    anonymize.process_folder(anonymizer, str(images), str(out), progress=False)
  assert sorted(_digest(out)) == ["notes.txt", "sub/b.png"]
  assert (out / "sub" / "b.png").read_bytes() == b"an earlier result"
  cmd = [f"--checkpoint={run[0]}", f"--input={images}", f"--output={out}"]
  done = _cli(*cmd)
  assert done.returncode == 1
  assert done.stderr.strip().splitlines()[-1].startswith(
      f"error: --output={out} already holds 1 of the 4 output files")
  assert (out / "sub" / "b.png").read_bytes() == b"an earlier result"
  done = _cli(*cmd, "--overwrite")
  assert done.returncode == 0, done.stderr
  assert sorted(_digest(out)) == sorted([*SIZES, "notes.txt"])
  assert (out / "notes.txt").read_text() == "mine"
  b = np.asarray(Image.open(out / "sub" / "b.png")).astype(int)
  assert np.max(np.abs(b - _expected(run, images / "sub" / "b.png", "anonymize"))) <= 1


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("in_the_way,why", [
    ("sub/b.png/", "sub/b.png is a folder"),
    ("sub", "sub is a file, where the folder of sub/b.png goes")])
def test_a_folder_or_file_in_an_outputs_way_is_refused_even_with_overwrite(
    run, images, tmp_path, overwrite, in_the_way, why):
  """An output folder holding a folder named like an output file (or a file
  where an output's folder goes) cannot take the run's images: refused before
  anything is written, with or without --overwrite, naming the path."""
  out = tmp_path / "out"
  if in_the_way.endswith("/"):
    os.makedirs(out / in_the_way / "kept")
  else:
    os.makedirs(out)
    (out / in_the_way).write_text("mine")
  before = _digest(out)
  with pytest.raises(FileExistsError,
                     match=rf"^--output={out}: cannot write sub/b\.png there: {why}; "):
    anonymize.process_folder(anonymize.Anonymizer(run[0]), str(images), str(out),
                             progress=False, overwrite=overwrite)
  assert _digest(out) == before and not (out / "a.png").exists()


def test_a_base_mode_run_applies_its_desensitization(tmp_path, images):
  """Base mode has no G: the folder gets the run's fixed mosaic, as the API's
  anonymize gives it; --recover is refused (no G_R) in one line."""
  import privreid_jax
  workdir = tmp_path / "base"
  anon_runs.fresh_checkpoint(workdir, "base,mosaic,tiny", step=2)
  out = tmp_path / "out"
  summary = anonymize.process_folder(anonymize.Anonymizer(str(workdir)), str(images),
                                     str(out), batch_size=4, progress=False)
  assert summary.written == 3
  names = sorted(SIZES)
  api = privreid_jax.load(str(workdir)).anonymize([str(images / n) for n in names],
                                                  batch_size=4, fixed_batch=True)
  for name, want in zip(names, api):
    got = np.asarray(Image.open(out / name)).astype(int)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1, name
    original = np.asarray(Image.open(images / name)).astype(int)
    assert np.mean(np.abs(got - original)) > 10, name      # a mosaic, not a copy
  with pytest.raises(ValueError, match=r"config\.anon\.mode='base' has no recovery "
                                       r"network G_R to --recover with"):
    anonymize.Anonymizer(str(workdir), recover=True)


def test_model_size_and_png_keep_what_recovery_needs(run, images, tmp_path):
  """--size=model writes G's output as it is (no resizing back) and --format=png
  writes it losslessly under a .png name: reading it back gives the uint8 image
  the model made, bit for bit."""
  Image.fromarray(np.full((50, 24, 3), 90, np.uint8)).save(images / "d.jpg", quality=90)
  out = tmp_path / "out"
  anonymizer = anonymize.Anonymizer(run[0])
  summary = anonymize.process_folder(anonymizer, str(images), str(out), batch_size=2,
                                     progress=False, size="model", fmt="png")
  assert summary.written == 4 and summary.skipped == ["broken.jpg"]
  assert sorted(_digest(out)) == ["a.png", "c.png", "d.png", "sub/b.png"]
  for name in ("a.png", "d.jpg", "sub/b.png"):
    img = np.asarray(Image.open(images / name).convert("RGB"))
    small = np.asarray(Image.fromarray(img).resize((16, 32), Image.BILINEAR))
    want = anonymizer(small[None])[0]
    got = np.asarray(Image.open(out / anonymize.output_name(name, "png")))
    assert got.shape == (32, 16, 3) and np.array_equal(got, want), name
  # Two inputs that would both become d.png are refused before anything is written.
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "d.png")
  with pytest.raises(ValueError, match=rf"--input={images}: d\.jpg and d\.png would both "
                                       r"be written as d\.png \(--format=png\)"):
    anonymize.process_folder(anonymizer, str(images), str(tmp_path / "o2"), fmt="png",
                             progress=False)
  assert not (tmp_path / "o2").exists()


def test_size_and_format_flags(run, images, tmp_path):
  out = tmp_path / "cli_small"
  cmd = [f"--checkpoint={run[0]}",
         f"--input={images}", f"--output={out}", "--size=model", "--format=png"]
  done = _cli(*cmd)
  assert done.returncode == 0, done.stderr
  assert "run at the model's 32x16 and written at that size" in done.stdout
  assert {Image.open(out / n).size for n in SIZES} == {(16, 32)}
  bad = _cli(*cmd[:-1], "--format=webp")
  assert bad.returncode == 2 and "--format" in bad.stderr
  assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_a_failed_run_leaves_no_empty_output_folder_it_made(run, images, tmp_path):
  """The output is created before the (slow) load so that path errors come first;
  when the load or the run then fails before any image is written, the folders
  it made are removed again. A folder that existed before stays."""
  out = tmp_path / "new" / "deeper" / "out"
  cmd = [f"--checkpoint={tmp_path / 'nope'}", f"--input={images}", f"--output={out}"]
  done = _cli(*cmd)
  assert done.returncode == 1 and "no such folder" in done.stderr, done.stderr
  assert not (tmp_path / "new").exists()
  os.makedirs(tmp_path / "kept")
  done = _cli(*cmd[:-1], f"--output={tmp_path / 'kept'}")
  assert done.returncode == 1 and (tmp_path / "kept").is_dir()
  unreadable = tmp_path / "unreadable"
  os.makedirs(unreadable)
  (unreadable / "a.jpg").write_bytes(b"not an image")
  done = _cli(f"--checkpoint={run[0]}", f"--input={unreadable}", f"--output={tmp_path / 'o3'}")
  assert done.returncode == 1 and "none of its 1 files" in done.stderr, done.stderr
  assert not (tmp_path / "o3").exists()
  assert anonymize.check_folders(str(images), str(tmp_path / "kept")) is None
  assert anonymize.check_folders(str(images), str(tmp_path / "n1" / "n2")) == str(
      tmp_path / "n1")


def test_an_image_named_without_a_format_is_skipped_not_a_crash(run, images, tmp_path):
  """A readable PNG named `noext` has no format to be written in with
  --format=same: it is skipped with a warning (it was PIL's 'unknown file
  extension' error half way through the folder); --format=png writes it."""
  Image.fromarray(np.full((40, 20, 3), 7, np.uint8)).save(images / "noext", format="PNG")
  anonymizer = anonymize.Anonymizer(run[0])
  summary = anonymize.process_folder(anonymizer, str(images), str(tmp_path / "o1"),
                                     progress=False)
  assert summary.written == 3 and sorted(summary.skipped) == ["broken.jpg", "noext"]
  summary = anonymize.process_folder(anonymizer, str(images), str(tmp_path / "o2"),
                                     progress=False, fmt="png")
  assert summary.written == 4 and (tmp_path / "o2" / "noext.png").is_file()


def test_outputs_are_written_whole_or_not_at_all(run, images, tmp_path, monkeypatch):
  """An image is written to a hidden temporary name and renamed: a write that
  fails (or a killed run) leaves no half-written file under an output's name."""
  real_save = Image.Image.save

  def failing_save(self, fp, *args, **kwargs):
    real_save(self, fp, *args, **kwargs)
    with open(fp, "r+b") as f:      # half the bytes on disk, then the disk fills up
      f.truncate(os.path.getsize(fp) // 2)
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(Image.Image, "save", failing_save)
  with pytest.raises(OSError, match="No space left"):
    anonymize.process_folder(anonymize.Anonymizer(run[0]), str(images),
                             str(tmp_path / "out"), progress=False)
  assert [n for _, _, ns in os.walk(tmp_path / "out") for n in ns] == []


def test_batch_size_below_one_is_a_command_line_error(run, images, tmp_path):
  done = _cli(f"--checkpoint={run[0]}", f"--input={images}", f"--output={tmp_path / 'o'}",
              "--batch_size=0")
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == ["error: --batch_size=0: must be >= 1"]
  assert not (tmp_path / "o").exists()
