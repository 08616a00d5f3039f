"""Anonymize (or recover) a folder of images with a trained method-A run.

  python -m privreid_jax.anonymize --checkpoint=WORKDIR --input=IMAGES --output=OUT
  python -m privreid_jax.anonymize --checkpoint=WORKDIR --input=OUT --output=BACK --recover
  python -m privreid_jax.anonymize ... --size=model --format=png   # to be recovered later

Loads the latest checkpoint of WORKDIR (its config is the checkpoint's `meta`
item), runs G (or G_R with --recover) on every image under --input, and writes
the result under --output with the same relative path, file name and size
(each image is resized to the model's size and back, PIL bilinear; JPEG files at
quality 95). `--size=model` keeps the model's size instead, and `--format=png`
writes every image as PNG (the extension becomes .png): anonymized images meant
to be recovered need both, as the resizing and JPEG's loss cost G_R several dB
(docs/method_a.md). A Base-mode run (config.anon.mode='base') has no G: it
applies its fixed desensitization (mosaic / blur / noise, the seed of its
config) and has nothing to --recover. A run that fails before writing an image
removes the output folders it created.
Files that cannot be read as images are skipped with a warning and counted; an
input with no files, or with none that is a readable image, is an error. Nothing
is overwritten: the input is never written to (an output folder equal to, inside
or containing the input is refused, symbolic links resolved), and an output
folder that already holds a file of an input's name is refused unless
--overwrite is given (a folder named like an output file, or a file where an
output's folder goes, is refused even then). So are an output that is a file and
a folder that cannot be written, all before anything is loaded. Every such user error is one line on
stderr (exit code 1; 2 for a bad command line).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import numpy as np
from absl import app, flags, logging
from PIL import Image

from privreid_jax import paths

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Workdir of a method-A run (or its checkpoints/ folder).")
_INPUT = flags.DEFINE_string("input", None, "Folder of images to process (recursively).")
_OUTPUT = flags.DEFINE_string("output", None, "Folder to write to (created).")
_RECOVER = flags.DEFINE_bool("recover", False, "Run G_R (recover) instead of G (anonymize).")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Images per forward pass.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace files of the same names already in --output (refused "
    "otherwise).")
_SIZE = flags.DEFINE_enum(
    "size", "input", ["input", "model"], "Write each image at its input's size, or at "
    "the model's (no resizing back: keep it for images to be recovered).")
_FORMAT = flags.DEFINE_enum(
    "format", "same", ["same", "png"], "Write each image in its input's format (JPEG at "
    "quality 95), or as lossless PNG with the extension .png (for images to be recovered).")


@dataclasses.dataclass
class Summary:
  written: int
  skipped: list[str]


def _inside(path: str, folder: str) -> bool:
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return os.path.commonpath([path, folder]) == folder


def output_name(name: str, fmt: str = "same") -> str:
  """The output's relative path of input file `name` (`fmt` as --format)."""
  return os.path.splitext(name)[0] + ".png" if fmt == "png" else name


def check_folders(input_dir: str, output_dir: str, overwrite: bool = False,
                  fmt: str = "same") -> str | None:
  """One-line errors for a missing or empty input, an output that could touch
  it, two inputs that would write one output (`fmt="png"`: a.jpg and a.png), an
  output that already holds files of the outputs' names (unless `overwrite`) or
  a folder where an output file goes (or a file where its folder goes), an
  output that is a file or that cannot be created or written (it is created
  here, empty, when the checks pass). Returns the topmost folder it created
  (None when the output existed), which `remove_empty` takes away again when
  the run then fails before writing anything."""
  return _checked(input_dir, output_dir, overwrite, fmt)[0]


def _blocked(output_dir: str, out: str) -> str | None:
  """Why output file `out` (relative) cannot be written under `output_dir`, even
  with --overwrite: a folder of its name, or a file where one of its folders goes."""
  if os.path.isdir(os.path.join(output_dir, out)):
    return f"{out} is a folder"
  parent = os.path.dirname(out)
  while parent:
    if os.path.lexists(os.path.join(output_dir, parent)) and not os.path.isdir(
        os.path.join(output_dir, parent)):
      return f"{parent} is a file, where the folder of {out} goes"
    parent = os.path.dirname(parent)
  return None


def _checked(input_dir: str, output_dir: str, overwrite: bool,
             fmt: str) -> tuple[str | None, list[str]]:
  """`check_folders`, and the input's files (listed once)."""
  if not os.path.exists(input_dir):
    raise FileNotFoundError(f"--input={input_dir}: no such folder")
  if not os.path.isdir(input_dir):
    raise NotADirectoryError(f"--input={input_dir} is a file; pick a folder of images")
  files = _files(input_dir)
  if not files:
    raise FileNotFoundError(f"--input={input_dir}: no files")
  if _inside(output_dir, input_dir):
    raise ValueError(f"--output={output_dir} is inside (or equal to) --input="
                     f"{input_dir}; pick a folder outside the input")
  if _inside(input_dir, output_dir):
    raise ValueError(f"--output={output_dir} contains --input={input_dir}; pick a "
                     "folder that does not contain the input")
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise FileExistsError(f"--output={output_dir} is an existing file; pick a folder")
  outputs: dict[str, str] = {}
  for name in files:
    out = output_name(name, fmt)
    if out in outputs:
      raise ValueError(f"--input={input_dir}: {outputs[out]} and {name} would both be "
                       f"written as {out} (--format={fmt}); move one of them")
    outputs[out] = name
  if os.path.isdir(output_dir):
    for out in outputs:
      why = _blocked(output_dir, out)
      if why:
        raise FileExistsError(f"--output={output_dir}: cannot write {out} there: {why}; "
                              "move it or pick another folder")
  if not overwrite and os.path.isdir(output_dir):
    taken = [out for out in outputs if os.path.lexists(os.path.join(output_dir, out))]
    if taken:
      raise FileExistsError(
          f"--output={output_dir} already holds {len(taken)} of the {len(files)} output "
          f"files (first: {taken[0]}); pass --overwrite to replace them, or pick another "
          "folder")
  parent = paths.existing_ancestor(output_dir)
  if not os.path.isdir(parent):
    raise NotADirectoryError(f"--output={output_dir}: {parent} is a file, not a folder")
  created = None                       # the topmost folder makedirs will create
  if not os.path.exists(output_dir):
    created = os.path.abspath(output_dir)
    while os.path.dirname(created) != parent:
      created = os.path.dirname(created)
  try:
    os.makedirs(output_dir, exist_ok=True)
  except OSError as e:
    raise PermissionError(f"--output={output_dir}: cannot create it "
                          f"({e.strerror or e})") from None
  if not os.access(output_dir, os.W_OK | os.X_OK):
    raise PermissionError(f"--output={output_dir} is not writable")
  return created, files


def remove_empty(folder: str | None) -> None:
  """Removes `folder` and the folders under it if none holds a file."""
  if folder is None or not os.path.isdir(folder):
    return
  for root, dirs, names in os.walk(folder, topdown=False):
    if names or any(os.path.exists(os.path.join(root, d)) for d in dirs):
      return
    os.rmdir(root)


def _files(folder: str) -> list[str]:
  """Relative paths of the non-hidden files under `folder`, sorted."""
  out = []
  for root, dirs, names in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in names:
      if not name.startswith("."):
        out.append(os.path.relpath(os.path.join(root, name), folder))
  return sorted(out)


class Anonymizer:
  """G or G_R of a method-A checkpoint as a numpy image -> image function (a
  Base-mode run: its fixed desensitization, no G_R)."""

  def __init__(self, workdir: str, recover: bool = False):
    import jax
    from privreid_jax import checkpoint, train_state
    from privreid_jax.methods import anonymization
    from privreid_jax.ops import normalize

    where = f"--checkpoint={workdir}"
    state, config, step = checkpoint.restore_run(workdir, where)
    if config.get("method") != "anonymization":
      raise ValueError(f"{where}: a {config.get('method')!r} run, not method A "
                       "(config.method='anonymization')")
    if recover and config.anon.mode != "learned":
      raise ValueError(f"{where}: config.anon.mode={config.anon.mode!r} has no recovery "
                       "network G_R to --recover with (without --recover it applies its "
                       "fixed desensitization)")
    classifier = state["params"]["reid"].get("classifier", {}).get("kernel")
    num_classes = 0 if classifier is None else int(classifier.shape[-1])
    self.method = anonymization.Method(config, num_classes=num_classes, steps_per_epoch=1)
    self.state = train_state.TrainState(
        step=state["step"], params=state["params"], batch_stats=state["batch_stats"],
        opt_state={}, rng=state["rng"])
    self.height, self.width = int(config.data.height), int(config.data.width)
    self.mean = np.asarray(config.data.mean, np.float32)
    self.std = np.asarray(config.data.std, np.float32)
    self.step = int(step)
    net = self.method.recover if recover else self.method.anonymize
    self._fn = jax.jit(lambda s, x: normalize.to_unit(net(s, x), self.mean, self.std))

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """uint8 [B, H, W, 3] at the model's size -> uint8 [B, H, W, 3]."""
    x = (images.astype(np.float32) / 255.0 - self.mean) / self.std
    y = np.asarray(self._fn(self.state, x))
    return np.round(y * 255.0).astype(np.uint8)


def _read(path: str) -> np.ndarray:
  with Image.open(path) as img:
    return np.asarray(img.convert("RGB"))


def _batches(items: list, size: int) -> Iterator[list]:
  for i in range(0, len(items), size):
    yield items[i:i + size]


def _save(image: np.ndarray, dest: str) -> None:
  """Writes `image` at `dest` in the format its extension names (JPEG at quality
  95) through a hidden temporary file, so a killed run leaves no half-written
  image under an output's name. ValueError for an extension PIL cannot write."""
  folder, name = os.path.split(dest)
  kind = Image.registered_extensions().get(os.path.splitext(name)[1].lower())
  if kind is None or kind not in Image.SAVE:
    raise ValueError(f"no image format for the extension of {name!r}")
  os.makedirs(folder, exist_ok=True)
  tmp = os.path.join(folder, f".{name}.partial")
  try:
    Image.fromarray(image).save(tmp, format=kind,
                                **({"quality": 95} if kind == "JPEG" else {}))
    os.replace(tmp, dest)
  finally:
    if os.path.lexists(tmp):
      os.remove(tmp)


def process_folder(anonymizer: Anonymizer, input_dir: str, output_dir: str,
                   batch_size: int = 16, progress: bool = True,
                   overwrite: bool = False, size: str = "input",
                   fmt: str = "same", summary: Summary | None = None) -> Summary:
  """Runs `anonymizer` on every readable image under input_dir (see the module doc);
  `size` and `fmt` are --size and --format. `summary`, if given, is filled as the
  run goes (so an interrupted caller knows how many images were written)."""
  from tqdm import tqdm
  if size not in ("input", "model") or fmt not in ("same", "png"):
    raise ValueError(f"size={size!r}, fmt={fmt!r}: expected 'input' | 'model' and "
                     "'same' | 'png'")
  if batch_size < 1:
    raise ValueError(f"--batch_size={batch_size}: must be >= 1")
  files = _checked(input_dir, output_dir, overwrite, fmt)[1]
  h, w = anonymizer.height, anonymizer.width
  summary = Summary(0, []) if summary is None else summary
  with tqdm(total=len(files), unit="img", disable=not progress) as bar:
    for names in _batches(files, batch_size):
      loaded = []
      for name in names:
        try:
          loaded.append((name, _read(os.path.join(input_dir, name))))
        except (OSError, ValueError) as e:   # PIL: UnidentifiedImageError is an OSError
          logging.warning("skipping %s: not a readable image (%s)", name, e)
          summary.skipped.append(name)
      if loaded:
        batch = np.zeros((batch_size, h, w, 3), np.uint8)   # fixed shape: one compile
        for j, (_, img) in enumerate(loaded):
          batch[j] = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
        result = anonymizer(batch)
        for j, (name, img) in enumerate(loaded):
          out = result[j]
          if size == "input":
            out = np.asarray(Image.fromarray(out).resize((img.shape[1], img.shape[0]),
                                                         Image.BILINEAR))
          try:
            _save(out, os.path.join(output_dir, output_name(name, fmt)))
          except ValueError as e:            # e.g. a readable image named without a suffix
            logging.warning("skipping %s: %s; --format=png writes it as PNG", name, e)
            summary.skipped.append(name)
            continue
          summary.written += 1
      bar.update(len(names))
  if not summary.written:
    raise ValueError(f"--input={input_dir}: none of its {len(files)} files is a "
                     "readable image")
  return summary


def main(argv):
  from privreid_jax import cli, errors, interrupts
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}", cli.USAGE_EXIT)
  logging.set_verbosity(logging.WARNING)
  if _BATCH.value < 1:
    cli.fail(f"--batch_size={_BATCH.value}: must be >= 1", cli.USAGE_EXIT)
  created = None
  summary = Summary(0, [])
  try:
    with interrupts.handled():
      created = check_folders(_INPUT.value, _OUTPUT.value, _OVERWRITE.value, _FORMAT.value)
      try:
        anonymizer = Anonymizer(_CHECKPOINT.value, recover=_RECOVER.value)
        process_folder(anonymizer, _INPUT.value, _OUTPUT.value, _BATCH.value,
                       overwrite=_OVERWRITE.value, size=_SIZE.value, fmt=_FORMAT.value,
                       summary=summary)
      except BaseException:
        remove_empty(created)     # a failure before any image leaves no empty --output
        raise
  except KeyboardInterrupt as e:
    where = (f"the {summary.written} images written so far are in {_OUTPUT.value} (add "
             "--overwrite to run again into it)" if summary.written else "no image written")
    cli.fail(f"interrupted by {getattr(e, 'signal_name', 'SIGINT')}: {where}",
             128 + getattr(e, "signum", 2))
  except Exception as e:  # pylint: disable=broad-except
    if not (errors.is_user_error(e) or type(e) is ValueError):
      raise
    cli.fail(errors.describe(e))
  what = "recovered" if _RECOVER.value else "anonymized"
  sized = ("resized back" if _SIZE.value == "input" else "written at that size")
  print(f"{what} {summary.written} images into {_OUTPUT.value} (checkpoint step "
        f"{anonymizer.step}, run at the model's {anonymizer.height}x{anonymizer.width} and "
        f"{sized}); skipped {len(summary.skipped)} unreadable files")


if __name__ == "__main__":
  from privreid_jax import cli as _cli
  flags.mark_flags_as_required(["checkpoint", "input", "output"])
  app.run(main, flags_parser=_cli.parse_flags)
