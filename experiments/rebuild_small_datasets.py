"""Rebuilds the five small Re-ID datasets in torchreid's layouts from public GitHub copies.

  python -m experiments.rebuild_small_datasets --out /tmp/realdata \\
      --ml_data /work/.mirror/snake719+ML_data/repo \\
      --cuhk01 /work/.mirror/manideep2510+CUHK03_dataset/repo \\
      --trackviz /work/.mirror/ahangchen+TrackViz/repo/.git [--datasets viper,grid]

Writes OUT/viper, OUT/grid, OUT/prid2011, OUT/cuhk01 and OUT/ilids in the
layouts `privreid_jax/data/small_datasets.py` reads, then prints each one's
split-0 counts as that loader gives them. Each source is a git dir (a bare
repository or a `.git` folder: files are read at --rev with `git ls-tree` and
`git cat-file`, no work tree needed) or a plain folder holding the repository's
files (a checkout or an unpacked GitHub archive). Sources:

* --ml_data, snake719/ML_data: PETA's copies under `PETA dataset/<name>/archive`
  (PETA renamed the files; its `Label.txt` attribute files are skipped).
  - VIPeR: `NNN_<angle>_<c>.bmp` -> `viper/VIPeR/cam_a/NNN_<angle>.bmp` (c = 1)
    or `cam_b/` (c = 2).
  - PRID 2011: `PPPP_a.png` -> `prid2011/prid_2011/single_shot/cam_a/person_PPPP.png`;
    `PPPP_b.png` -> `cam_b/person_PPPP.png` for PPPP <= 1000 and
    `person_<PPPP - 1000>.png` above. PETA numbers each person once across the
    two cameras: cam_a's 0001-0385 and cam_b's 0001-0200 (the same people) and
    cam_b's 0386-0749 keep their numbers, and cam_b's own 0201-0385 (other people
    than cam_a's 0201-0385) are 1201-1385 in PETA. The offset 1000 is inferred:
    it is the one that fills cam_b's 0201-0385 exactly. The protocol pairs only
    pids 1-200 across cameras; cam_b's other pids are distractors, so the
    inference only names distractors.
  - i-LIDS (`PETA dataset/i-LID`): `PPPP_NNN.jpg` ->
    `ilids/i-LIDS_Pedestrian/Persons/PPPPNNN.jpg`. PETA's person 0120 (one
    image; i-LIDS has 119 people, the 476 images of 0001-0119) is dropped.
  - GRID: below.
* --cuhk01, manideep2510/CUHK03_dataset: only its `CUHK01/campus` folder
  (971 people x 4 images, `PPPPNNN.png`), copied unchanged to `cuhk01/campus/`.
  Nothing else of that repository is listed or read: a source path naming
  CUHK03 other than that folder (e.g. the repository given as --ml_data) is
  refused.
* --trackviz, ahangchen/TrackViz: `data/grid/grid-cv{k}-{probe,gallery,train}.txt`,
  GRID's 10 folds under GRID's original file names: the fold's 125 test probe
  images, its gallery (those people's 125 gallery images and the 775
  distractors, `0000_...`) and its training images (125 people x 2).

GRID. PETA's `GRID/archive` holds GRID's 1,275 images under their original
names `PPPP_C_<frame>_<box>.jpeg` except for the distractors' pid: 0001-0250
are the 250 paired people (their probe and gallery images), 0251-1025 the 775
gallery distractors (pid 0000 in GRID; PETA numbered them in sorted order of
the rest of the name, which is unique).
  - Distractors: PETA pid > 250 -> `grid/underground_reid/gallery/0000_<rest>`;
    checked: the 775 names are exactly TrackViz's `0000_` gallery names.
  - Probe or gallery, people 1-250: TrackViz's probe lists name the probe image
    of every person tested in some fold, 249 people; person 0090 trains in all
    ten folds and is never listed. In all 249 the probe image is the one with
    the lower camera number (probe camera C, gallery camera C + 1: 1-2, 2-3,
    4-5, 5-6), so 0090's probe is taken to be its camera-4 image, its gallery
    image the camera-5 one. TrackViz's choice is used where listed, that rule
    otherwise, and the rule is checked against every listed choice.
  - `features_and_partitions.mat` is a stand-in, not GRID's file (which is
    not among these sources): one variable `trainIdxAll`, a 1x10 cell of
    structs whose third field `personIdx` (the one torchreid and
    `read_grid_folds` read) is fold k's training people, the pids of
    TrackViz's `grid-cv{k-1}-train.txt`. It differs from the original in that
    it has no features nor any other variable, the structs' first two fields
    (`source`, `note`) are the stand-in's own, and it assumes TrackViz's cv0-cv9
    are the original's trainIdxAll{1}-{10} in that order (not checkable here).
    Split 0's counts do not depend on that assumption; which people train does.

Re-running on an existing OUT rebuilds each dataset in OUT/.<name>.partial and
keeps OUT/<name> if it is identical; if it differs, that is a one-line error
naming the first difference (remove OUT/<name> to rebuild it). Images are
never decoded. Real data belongs outside the repository (e.g. /tmp/realdata).
"""

from __future__ import annotations

import io
import os
import re
import sys
from typing import Sequence

from experiments.rebuild_small_datasets_io import (CUHK01_FOLDER, Plan, Source, SourceError,
                                                   refuse_cuhk03, write)

DATASETS = ("viper", "grid", "prid2011", "cuhk01", "ilids")
NEEDS = {"viper": ("ml_data",), "grid": ("ml_data", "trackviz"),
         "prid2011": ("ml_data",), "cuhk01": ("cuhk01",), "ilids": ("ml_data",)}
PETA = "PETA dataset"
PETA_FOLDERS = {"viper": "VIPeR", "grid": "GRID", "prid2011": "PRID", "ilids": "i-LID"}
PETA_SKIP = ("Label.txt",)           # PETA's attribute labels, not images
TRACKVIZ_FOLDER = "data/grid"
GRID_PAIRED = 250                    # GRID: pids 1-250 have a probe and a gallery image
GRID_FOLDS = 10
PRID_B_OFFSET = 1000                 # PETA's PRID cam_b 1201-1385 are cam_b's 201-385
ILIDS_PEOPLE = 119                   # PETA's i-LID has one more (0120, one image)
GRID_MAT = "features_and_partitions.mat"
MAT_HEADER = (b"MATLAB 5.0 MAT-file, written by experiments.rebuild_small_datasets: "
              b"a stand-in for GRID's partitions")


def _parse(src: Source, folder: str, pattern: str, form: str, skip=()) -> list[tuple]:
  """(name, groups) of each file in `folder`; a name not matching is an error."""
  out = []
  names = [n for n in src.files(folder) if n not in skip]
  if not names:
    raise SourceError(f"--{src.flag}: no files in {src.where(folder)}")
  for name in names:
    match = re.fullmatch(pattern, name)
    if match is None:
      raise SourceError(f"file {src.where(folder + '/' + name)} does not match {form}")
    out.append((name, match.groups()))
  return out


def _peta(name: str) -> str:
  return f"{PETA}/{PETA_FOLDERS[name]}/archive"


def plan_viper(ml: Source) -> Plan:
  plan, folder = Plan("viper"), _peta("viper")
  for name, (num, angle, cam) in _parse(ml, folder, r"(\d{3})_(\d+)_([12])\.bmp",
                                        "PETA's VIPeR naming NNN_<angle>_<1|2>.bmp",
                                        PETA_SKIP):
    plan.copy(f"VIPeR/cam_{'ab'[int(cam) - 1]}/{num}_{angle}.bmp", ml, folder, name)
  return plan


def plan_prid(ml: Source) -> Plan:
  plan, folder = Plan("prid2011"), _peta("prid2011")
  shifted = 0
  for name, (num, cam) in _parse(ml, folder, r"(\d{4})_([ab])\.png",
                                 "PETA's PRID naming PPPP_<a|b>.png", PETA_SKIP):
    pid = int(num)
    if cam == "b" and pid > PRID_B_OFFSET:
      pid -= PRID_B_OFFSET
      shifted += 1
    plan.copy(f"prid_2011/single_shot/cam_{cam}/person_{pid:04d}.png", ml, folder, name)
  plan.notes.append(f"PETA's cam_b {PRID_B_OFFSET + 1}+ renumbered - {PRID_B_OFFSET} "
                    f"({shifted} images)")
  return plan


def plan_ilids(ml: Source) -> Plan:
  plan, folder = Plan("ilids"), _peta("ilids")
  dropped = []
  for name, (pid, num) in _parse(ml, folder, r"(\d{4})_(\d{3})\.jpg",
                                 "PETA's i-LID naming PPPP_NNN.jpg", PETA_SKIP):
    if int(pid) > ILIDS_PEOPLE:
      dropped.append(name)
      continue
    plan.copy(f"i-LIDS_Pedestrian/Persons/{pid}{num}.jpg", ml, folder, name)
  if dropped:
    plan.notes.append(f"dropped {', '.join(dropped)} (i-LIDS has {ILIDS_PEOPLE} people)")
  return plan


def plan_cuhk01(cu: Source) -> Plan:
  plan = Plan("cuhk01")
  for name, _ in _parse(cu, CUHK01_FOLDER, r"(\d{4})(\d{3})\.png",
                        "CUHK01's naming PPPPNNN.png"):
    plan.copy(f"campus/{name}", cu, CUHK01_FOLDER, name)
  return plan


def _grid_name(name: str, where: str) -> tuple[int, int, str]:
  """(pid, camera, the rest) of a GRID name PPPP_C_<frame>_<box>.jpeg."""
  match = re.fullmatch(r"(\d{4})_(\d)_(\d+(?:_\d+)*)\.jpeg", name)
  if match is None:
    raise SourceError(f"file {where} does not match GRID's naming "
                      "PPPP_C_<frame>_<box>.jpeg")
  return int(match.group(1)), int(match.group(2)), match.group(3)


def grid_mat(folds: list[list[int]], sources: list[str]) -> bytes:
  """The stand-in features_and_partitions.mat (deterministic bytes)."""
  import numpy as np
  from scipy import io as sio  # a dependency of jax
  cell = np.empty((1, len(folds)), dtype=object)
  note = ("stand-in built by experiments.rebuild_small_datasets: personIdx = the "
          "training people of this TrackViz fold list; not GRID's original file")
  for k, (ids, source) in enumerate(zip(folds, sources)):
    struct = np.empty((1, 1), dtype=[("source", object), ("note", object),
                                     ("personIdx", object)])
    struct[0, 0] = (source, note, np.asarray([sorted(ids)], dtype=np.float64))
    cell[0, k] = struct
  buf = io.BytesIO()
  sio.savemat(buf, {"trainIdxAll": cell}, do_compression=False)
  raw = bytearray(buf.getvalue())
  raw[:116] = MAT_HEADER.ljust(116)      # savemat's header holds the time of writing
  return bytes(raw)


def plan_grid(ml: Source, tv: Source) -> Plan:
  plan, folder = Plan("grid"), _peta("grid")
  paired: dict[int, list[tuple[int, str]]] = {}
  distractors: dict[str, str] = {}            # the rest of the name -> PETA name
  for name in ml.files(folder):
    if name in PETA_SKIP:
      continue
    pid, cam, rest = _grid_name(name, ml.where(folder + "/" + name))
    if pid <= GRID_PAIRED:
      paired.setdefault(pid, []).append((cam, name))
    else:
      distractors[f"{cam}_{rest}"] = name
  for pid in range(1, GRID_PAIRED + 1):
    if len(paired.get(pid, ())) != 2:
      raise SourceError(f"{ml.where(folder)}: person {pid:04d} has "
                        f"{len(paired.get(pid, ()))} images (GRID: a probe and a gallery one)")
  if not distractors:
    raise SourceError(f"{ml.where(folder)}: no distractors (pids above {GRID_PAIRED})")

  lists = tv.files(TRACKVIZ_FOLDER)
  tv_probe: dict[int, str] = {}
  tv_distractors = None
  folds, fold_files = [], []
  for k in range(GRID_FOLDS):
    read = {}
    for part in ("probe", "gallery", "train"):
      fname = f"grid-cv{k}-{part}.txt"
      if fname not in lists:
        raise SourceError(f"--trackviz: no {tv.where(TRACKVIZ_FOLDER + '/' + fname)}")
      read[part] = tv.read(TRACKVIZ_FOLDER, fname).decode().split()
      for n in read[part]:
        _grid_name(n, tv.where(f"{TRACKVIZ_FOLDER}/{fname}") + f": {n}")
    for n in read["probe"]:
      pid = int(n[:4])
      if n not in {nm for _, nm in paired.get(pid, ())}:
        raise SourceError(f"{tv.where(TRACKVIZ_FOLDER)}/grid-cv{k}-probe.txt: {n} is not "
                          f"among PETA's GRID images")
      if tv_probe.setdefault(pid, n) != n:
        raise SourceError(f"--trackviz: two probe images of person {pid:04d}: "
                          f"{tv_probe[pid]} and {n}")
    dis = {"{1}_{2}".format(*_grid_name(n, "")) for n in read["gallery"]
           if n.startswith("0000_")}
    if tv_distractors is None:
      tv_distractors = dis
    elif dis != tv_distractors:
      raise SourceError(f"--trackviz: grid-cv{k}-gallery.txt has other distractors than "
                        "grid-cv0-gallery.txt")
    train = {}
    for n in read["train"]:
      train.setdefault(int(n[:4]), []).append(n)
    tested = {int(n[:4]) for n in read["probe"]}
    bad = sorted(p for p, ns in train.items() if len(ns) != 2 or p in tested
                 or not 1 <= p <= GRID_PAIRED)
    if bad or not train:
      raise SourceError(f"--trackviz: grid-cv{k}-train.txt: person "
                        f"{bad[0] if bad else '(none)'} is not a GRID person trained "
                        "on two images and untested in that fold")
    folds.append(sorted(train))
    fold_files.append(f"ahangchen/TrackViz {TRACKVIZ_FOLDER}/grid-cv{k}-train.txt")
  if tv_distractors != set(distractors):
    odd = sorted(tv_distractors ^ set(distractors))[0]
    raise SourceError(f"the 775 GRID distractors differ: 0000_{odd} is in only one of "
                      f"{ml.where(folder)} and --trackviz's gallery lists")

  by_rule = agree = 0
  for pid in range(1, GRID_PAIRED + 1):
    (cam_lo, lo), (cam_hi, hi) = sorted(paired[pid])
    if cam_lo == cam_hi:
      raise SourceError(f"{ml.where(folder)}: person {pid:04d}'s two images have one "
                        "camera; cannot tell probe from gallery")
    probe = tv_probe.get(pid)
    if probe is None:
      probe, by_rule = lo, by_rule + 1
    agree += probe == lo
    gallery = hi if probe == lo else lo
    plan.copy(f"underground_reid/probe/{probe}", ml, folder, probe)
    plan.copy(f"underground_reid/gallery/{gallery}", ml, folder, gallery)
  for rest, name in sorted(distractors.items()):
    plan.copy(f"underground_reid/gallery/0000_{rest}.jpeg", ml, folder, name)
  known = GRID_PAIRED - by_rule
  if agree != GRID_PAIRED:
    raise SourceError(f"--trackviz: the probe image is the lower-camera one for "
                      f"{agree - by_rule} of the {known} people it lists, not all: "
                      "the rule for the others does not hold")
  plan.data[f"underground_reid/{GRID_MAT}"] = grid_mat(folds, fold_files)
  unlisted = sorted(set(range(1, GRID_PAIRED + 1)) - set(tv_probe))
  plan.notes.append(
      f"probe/gallery: TrackViz's probe lists for {known} people, the lower camera "
      f"(agreeing with all {known}) for {', '.join(f'{p:04d}' for p in unlisted) or 'none'}; "
      f"{len(distractors)} distractors PETA {min(distractors.values())[:4]}-"
      f"{max(distractors.values())[:4]} -> 0000")
  plan.notes.append(
      f"{GRID_MAT} is a STAND-IN: trainIdxAll{{k}}.personIdx = the people of TrackViz's "
      f"grid-cv{{k-1}}-train.txt ({len(folds)} folds of "
      f"{'/'.join(sorted({str(len(f)) for f in folds}))}); no features or other "
      "variables, own first two struct fields, fold order assumed to be the original's")
  return plan


def split0_counts(name: str, out: str) -> str:
  """'train I ids / N images, query ..., gallery ...' of split 0, by the repository's loader."""
  from privreid_jax.data import small_datasets
  ds = small_datasets.load_small_dataset(name, out, split_index=0)
  line = ", ".join(f"{part} {len({r.pid for r in recs})} ids / {len(recs)} images"
                   for part, recs in (("train", ds.train), ("query", ds.query),
                                      ("gallery", ds.gallery)))
  junk = sum(r.pid == 0 for r in ds.gallery)
  return line + (f" ({junk} distractors with pid 0, one of the ids)" if junk else "")


def rebuild(out: str, datasets: Sequence[str], sources: dict[str, Source],
            log=print) -> dict[str, str]:
  """Rebuilds `datasets` into OUT; returns {name: split-0 counts}."""
  planners = {"viper": lambda: plan_viper(sources["ml_data"]),
              "grid": lambda: plan_grid(sources["ml_data"], sources["trackviz"]),
              "prid2011": lambda: plan_prid(sources["ml_data"]),
              "cuhk01": lambda: plan_cuhk01(sources["cuhk01"]),
              "ilids": lambda: plan_ilids(sources["ml_data"])}
  os.makedirs(out, exist_ok=True)
  counts = {}
  for name in datasets:
    plan = planners[name]()
    state = write(plan, out)
    log(f"{name}: {len(plan.copies) + len(plan.data)} files {state} in "
        f"{os.path.join(out, name)}")
    for note in plan.notes:
      log(f"  {name}: {note}")
  for name in datasets:
    counts[name] = split0_counts(name, out)
  return counts


def _define(fv):
  """The tool's flags (absl, snake_case) on `fv`."""
  from absl import flags
  flags.DEFINE_string("out", None, "Folder to write the datasets in (outside the "
                      "repository, e.g. /tmp/realdata).", flag_values=fv)
  flags.DEFINE_string("ml_data", None, "snake719/ML_data: git dir or folder (PETA).",
                      flag_values=fv)
  flags.DEFINE_string("cuhk01", None, "manideep2510/CUHK03_dataset: git dir or folder; "
                      f"only {CUHK01_FOLDER} is read.", flag_values=fv)
  flags.DEFINE_string("trackviz", None, "ahangchen/TrackViz: git dir or folder (GRID's "
                      "fold lists).", flag_values=fv)
  flags.DEFINE_list("datasets", list(DATASETS), "Which datasets to rebuild.",
                    flag_values=fv)
  flags.DEFINE_string("rev", "HEAD", "Revision read from git-dir sources.", flag_values=fv)
  flags.mark_flag_as_required("out", flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Rebuilds the datasets; argv without the program name."""
  from absl import flags
  from privreid_jax import cli
  from privreid_jax.data.records import DatasetError
  argv = list(sys.argv[1:] if argv is None else argv)
  args = _define(flags.FlagValues())
  cli.parse_tool_flags(args, ["python -m experiments.rebuild_small_datasets", *argv],
                       __doc__)
  unknown = [d for d in args.datasets if d not in DATASETS]
  if unknown:
    cli.fail(f"--datasets: unknown {unknown[0]!r}; known: {', '.join(DATASETS)}",
             cli.USAGE_EXIT)
  sources: dict[str, Source] = {}
  try:
    for name in args.datasets:
      for flag in NEEDS[name]:
        if not getattr(args, flag):
          cli.fail(f"--datasets {name} needs --{flag}", cli.USAGE_EXIT)
        if flag not in sources:
          path = getattr(args, flag)
          if flag != "cuhk01":
            refuse_cuhk03(os.path.abspath(os.path.expanduser(path)), "")
          sources[flag] = Source(flag, path, args.rev)
    counts = rebuild(os.path.abspath(os.path.expanduser(args.out)), args.datasets,
                     sources)
  except (SourceError, DatasetError, OSError) as e:
    cli.fail(str(e))
  finally:
    for src in sources.values():
      src.close()
  print("split 0 (privreid_jax.data.small_datasets.load_small_dataset):")
  for name, line in counts.items():
    print(f"  {name:<9} {line}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
