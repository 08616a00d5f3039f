"""Anonymize (or recover) a folder of images with a trained method-A run.

  python -m privreid_jax.anonymize --checkpoint=WORKDIR --input=IMAGES --output=OUT
  python -m privreid_jax.anonymize --checkpoint=WORKDIR --input=OUT --output=BACK --recover

Loads the latest checkpoint of WORKDIR (its config is the checkpoint's `meta`
item), runs G (or G_R with --recover) on every image under --input, and writes
the result under --output with the same relative path, file name and size
(each image is resized to the model's size and back, PIL bilinear). Files that
cannot be read as images are skipped with a warning and counted. The input is
never written to: an output folder equal to, inside or containing the input is
refused.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Iterator

import numpy as np
from absl import app, flags, logging
from PIL import Image

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Workdir of a method-A run (or its checkpoints/ folder).")
_INPUT = flags.DEFINE_string("input", None, "Folder of images to process (recursively).")
_OUTPUT = flags.DEFINE_string("output", None, "Folder to write to (created).")
_RECOVER = flags.DEFINE_bool("recover", False, "Run G_R (recover) instead of G (anonymize).")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Images per forward pass.")


@dataclasses.dataclass
class Summary:
  written: int
  skipped: list[str]


def _inside(path: str, folder: str) -> bool:
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return os.path.commonpath([path, folder]) == folder


def check_folders(input_dir: str, output_dir: str) -> None:
  """One-line errors for a missing input or an output that could touch it."""
  if not os.path.isdir(input_dir):
    raise FileNotFoundError(f"--input={input_dir}: no such folder")
  if _inside(output_dir, input_dir):
    raise ValueError(f"--output={output_dir} is inside (or equal to) --input="
                     f"{input_dir}; pick a folder outside the input")
  if _inside(input_dir, output_dir):
    raise ValueError(f"--output={output_dir} contains --input={input_dir}; pick a "
                     "folder that does not contain the input")


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
  """G or G_R of a method-A checkpoint as a numpy image -> image function."""

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
    if config.anon.mode != "learned":
      raise ValueError(f"{where}: config.anon.mode={config.anon.mode!r} has no "
                       "generators to run")
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


def process_folder(anonymizer: Anonymizer, input_dir: str, output_dir: str,
                   batch_size: int = 16, progress: bool = True) -> Summary:
  """Runs `anonymizer` on every readable image under input_dir (see the module doc)."""
  from tqdm import tqdm
  check_folders(input_dir, output_dir)
  if batch_size < 1:
    raise ValueError(f"--batch_size={batch_size}: must be >= 1")
  files = _files(input_dir)
  h, w = anonymizer.height, anonymizer.width
  summary = Summary(0, [])
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
          out = Image.fromarray(result[j]).resize((img.shape[1], img.shape[0]),
                                                  Image.BILINEAR)
          dest = os.path.join(output_dir, name)
          os.makedirs(os.path.dirname(dest), exist_ok=True)
          out.save(dest, **({"quality": 95} if name.lower().endswith((".jpg", ".jpeg"))
                            else {}))
          summary.written += 1
      bar.update(len(names))
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    check_folders(_INPUT.value, _OUTPUT.value)
    anonymizer = Anonymizer(_CHECKPOINT.value, recover=_RECOVER.value)
    summary = process_folder(anonymizer, _INPUT.value, _OUTPUT.value, _BATCH.value)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  what = "recovered" if _RECOVER.value else "anonymized"
  print(f"{what} {summary.written} images into {_OUTPUT.value} (checkpoint step "
        f"{anonymizer.step}); skipped {len(summary.skipped)} unreadable files")


if __name__ == "__main__":
  flags.mark_flags_as_required(["checkpoint", "input", "output"])
  app.run(main)
