"""How much of G_R's recovery survives storing the anonymized images as files.

  python -m experiments.recovery_from_files --runs=RUN[,RUN2] --images=DIR \
      [--limit=240] [--json=OUT.json]

Method A's R->O row and PSNR(O, R) are measured on P = G(O) held in float. A
released P is a file: 8-bit, often JPEG, and (the anonymize CLI's default)
resized back to the photo's size. This runs the anonymize CLI's own code
(`privreid_jax.anonymize.process_folder`) on `--limit` images of DIR (every k-th
file in name order), stores P in each of the ways below, recovers each stored
folder with the CLI (at the model's size, as lossless PNG) and prints
PSNR(O, R) per image, mean ± std, O being the image at the model's size as the
model sees it (and, for runs named alike but for a `_s<seed>` suffix, the mean ±
std over them, as the docs' tables):

  float            P kept in memory (the R->O row's case)
  png, model size  --size=model --format=png
  jpeg, model size --size=model on .jpg names (JPEG quality 95)
  png, input size  the default for PNG photos
  jpeg, input size the default for JPEG photos (Market-1501, DukeMTMC)

The photos are read through symbolic links, named .png or .jpg, so O is the same
lossless image in every row; only P's storage differs.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile

import numpy as np
from PIL import Image

from experiments import released_files

# (row name, --size, --format, the link's extension)
STORED = (("png, model size", "model", "png", ".png"),
          ("jpeg, model size", "model", "same", ".jpg"),
          ("png, input size", "input", "same", ".png"),
          ("jpeg, input size", "input", "same", ".jpg"))


def pick(folder: str, limit: int) -> list[str]:
  """Every k-th image file of `folder` (not recursive), `limit` of them."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"--images={folder}: no such folder")
  names = sorted(n for n in os.listdir(folder)
                 if n.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")))
  if not names:
    raise FileNotFoundError(f"--images={folder}: no image files")
  step = max(1, len(names) // max(1, limit))
  return names[::step][:limit]


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Per-image PSNR in dB of [N, H, W, 3] arrays in [0, 1]."""
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2, axis=(1, 2, 3))
  return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-12))


def measure(workdir: str, folder: str, names: list[str], scratch: str) -> list[dict]:
  """The rows of one run (see the module doc)."""
  from privreid_jax import anonymize
  with released_files.named_flag("runs", workdir):
    anonymizer = anonymize.Anonymizer(workdir)
    recoverer = anonymize.Anonymizer(workdir, recover=True)
  h, w = anonymizer.height, anonymizer.width
  small = np.stack([np.asarray(Image.open(os.path.join(folder, n)).convert("RGB")
                               .resize((w, h), Image.BILINEAR)) for n in names])
  original = small.astype(np.float32) / 255.0
  x = (original - anonymizer.mean) / anonymizer.std
  state, method = anonymizer.state, anonymizer.method
  r = np.asarray(method.recover(state, method.anonymize(state, x)))
  r = np.clip(r * anonymizer.std + anonymizer.mean, 0.0, 1.0)
  rows = [_row(workdir, "float", psnr(original, r))]
  photos = [os.path.join(folder, n) for n in names]
  for label, size, fmt, ext in STORED:
    base = os.path.join(scratch, f"{label.replace(', ', '_').replace(' ', '_')}")
    stored = released_files.write_anonymized(anonymizer, photos, base, size, fmt, ext)
    back = released_files.write_anonymized(recoverer, stored, os.path.join(base, "back"),
                                           "model", "png", ".png")
    back = np.stack([np.asarray(Image.open(f)) for f in back]).astype(np.float32) / 255.0
    rows.append(_row(workdir, label, psnr(original, back)))
  return rows


def over_seeds(rows: list[dict]) -> list[dict]:
  """The rows of runs that differ only in a `_s<seed>` suffix, as one row per
  setting and storage form: mean ± population std of psnr_mean over the runs
  (the docs' tables), for settings with at least two runs; in first-seen order."""
  groups: dict[tuple[str, str], list[float]] = {}
  for r in rows:
    groups.setdefault((re.sub(r"_s\d+$", "", r["run"]), r["stored"]), []).append(
        r["psnr_mean"])
  return [{"setting": setting, "stored": stored, "runs": len(v),
           "mean": statistics.fmean(v), "std": statistics.pstdev(v)}
          for (setting, stored), v in groups.items() if len(v) > 1]


def _row(workdir: str, stored: str, values: np.ndarray) -> dict:
  return {"run": os.path.basename(os.path.normpath(workdir)), "stored": stored,
          "images": int(values.size), "psnr_mean": float(values.mean()),
          "psnr_std": float(values.std())}


def main(argv=None) -> None:
  from absl import flags
  from privreid_jax import api
  fv = flags.FlagValues()      # its own flags: importing this module defines none
  flags.DEFINE_list("runs", None, "Method-A run workdirs (learned mode).", flag_values=fv)
  flags.DEFINE_string("images", None, "Folder of photos (read, never written).",
                      flag_values=fv)
  flags.DEFINE_integer("limit", 240, "How many photos (every k-th file).", flag_values=fv)
  flags.DEFINE_string("json", None, "Also write the rows to this JSON file.",
                      flag_values=fv)
  flags.mark_flags_as_required(["runs", "images"], flag_values=fv)
  api.parse_flags(fv, list(sys.argv if argv is None else argv), __doc__)
  if fv.limit < 1:
    api.fail(f"--limit={fv.limit}: must be >= 1", 2)
  if released_files.json_error(fv.json):
    api.fail(released_files.json_error(fv.json))
  try:
    names = pick(fv.images, fv.limit)
    rows = []
    for workdir in fv.runs:
      with tempfile.TemporaryDirectory(prefix="recovery_from_files_") as scratch:
        rows += measure(workdir, fv.images, names, scratch)
  except (FileNotFoundError, ValueError) as e:
    api.fail(api.one_line(e))
  print("| run | P stored as | images | PSNR(O, R) dB, mean ± std |")
  print("|---|---|---|---|")
  for r in rows:
    print(f"| {r['run']} | {r['stored']} | {r['images']} | "
          f"{r['psnr_mean']:.2f} ± {r['psnr_std']:.2f} |")
  summary = over_seeds(rows)
  if summary:
    print("\n| setting | P stored as | runs | PSNR(O, R) dB, mean ± std over the runs |")
    print("|---|---|---|---|")
    for r in summary:
      print(f"| {r['setting']} | {r['stored']} | {r['runs']} | "
            f"{r['mean']:.2f} ± {r['std']:.2f} |")
  if fv.json:
    released_files.write_rows(fv.json, rows)


if __name__ == "__main__":
  main()
