"""Stored paired targets: one PNG per training image in an ArrayRecord file, read by grain.

Method A's progressive stages regenerate the supervision M = G_teacher(O) of
every training image into such a folder between stages (docs/method_a.md,
[ours]); the pipeline's paired mode then reads it as a source aligned by index
with the training source, and applies the image's own flip, crop and erasing
to it at load time, as it does for the handcrafted targets.

A folder holds `targets.array_record` (record i = PNG bytes of the target of
training item i, lossless at the training resolution; or its raw uint8 pixels,
`encoding="raw"`, as `preresized.py` stores training images) and `meta.json`
(written last, so a folder without it is incomplete): the number of images,
their size and free-form provenance (which stage's teacher produced them).
"""

from __future__ import annotations

import io
import json
import os
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image

from privreid_jax.data.records import DatasetError

RECORDS = "targets.array_record"
META = "meta.json"


def encode_png(image: np.ndarray) -> bytes:
  """uint8 HxWx3 -> PNG bytes (lossless)."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
  return buf.getvalue()


def is_complete(directory: str) -> bool:
  """True when `directory` holds a finished target set (its meta.json exists)."""
  return os.path.isfile(os.path.join(directory, META))


def write(directory: str, images: Iterable[np.ndarray], meta: Mapping[str, Any],
          encoding: str = "png") -> dict:
  """Writes `images` (uint8 HxWx3, in training-source order) as a target set.

  encoding: "png" (lossless, small) or "raw" (the pixels; no decoding to read).
  `meta` is read only after `images` is exhausted, so a generator may fill it in
  as it goes (preresized.py stores the labels that way).
  Returns the meta written: `meta` plus `num_images`, `height`, `width`, `encoding`.
  """
  if encoding not in ("png", "raw"):
    raise ValueError(f"target_records.write: encoding={encoding!r}; expected 'png' or 'raw'")
  from array_record.python.array_record_module import ArrayRecordWriter
  os.makedirs(directory, exist_ok=True)
  if is_complete(directory):
    os.remove(os.path.join(directory, META))
  writer = ArrayRecordWriter(os.path.join(directory, RECORDS), "group_size:1")
  count, shape = 0, None
  try:
    for image in images:
      image = np.asarray(image)
      if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"target_records.write: image {count} is {image.dtype} "
                         f"{image.shape}; expected uint8 HxWx3")
      if shape is None:
        shape = image.shape
      elif image.shape != shape:
        raise ValueError(f"target_records.write: image {count} is {image.shape}, "
                         f"the first was {shape}")
      writer.write(encode_png(image) if encoding == "png"
                   else np.ascontiguousarray(image).tobytes())
      count += 1
  finally:
    writer.close()
  out = {**dict(meta), "num_images": count, "encoding": encoding,
         "height": int(shape[0]) if shape else 0, "width": int(shape[1]) if shape else 0}
  tmp = os.path.join(directory, META + ".tmp")
  with open(tmp, "w") as f:
    json.dump(out, f, indent=1)
  os.replace(tmp, os.path.join(directory, META))
  return out


def read_meta(directory: str) -> dict:
  if not is_complete(directory):
    raise DatasetError(f"no complete target set in {directory} (missing {META})")
  with open(os.path.join(directory, META)) as f:
    return json.load(f)


class TargetSource:
  """Random access to a target set: item i = {"image": PNG bytes, or a uint8
  HxWx3 array for raw records} (picklable)."""

  def __init__(self, directory: str):
    from grain.sources import ArrayRecordDataSource
    self.directory = os.path.abspath(directory)
    self.meta = read_meta(self.directory)
    self._source = ArrayRecordDataSource([os.path.join(self.directory, RECORDS)])
    if len(self._source) != self.meta["num_images"]:
      raise DatasetError(f"{self.directory}: {RECORDS} holds {len(self._source)} "
                         f"images, {META} says {self.meta['num_images']}")

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = self._source[int(index)]
    if self.meta.get("encoding", "png") == "raw":
      shape = (self.meta["height"], self.meta["width"], 3)
      return {"image": np.frombuffer(record, np.uint8).reshape(shape)}
    return {"image": record}

  def __repr__(self) -> str:
    return f"TargetSource({self.directory}, {len(self)} images)"


def open_targets(directory: str, height: int, width: int,
                 where: str = "config.anon.targets_dir") -> TargetSource:
  """The target set in `directory`, checked against the training image size."""
  if not os.path.isdir(directory):
    raise DatasetError(f"{where}={directory!r} is not a folder")
  source = TargetSource(directory)
  size = (source.meta["height"], source.meta["width"])
  if size != (int(height), int(width)):
    raise DatasetError(f"{where}={directory!r}: targets are {size[0]}x{size[1]}, the "
                       f"training images {height}x{width}")
  return source
