"""Rebuilding the small datasets from fake source trees named as PETA, CUHK03_dataset's
CUHK01/campus and TrackViz name them: the loader reads the result with the expected
ids, cameras and GRID folds; CUHK03 is refused; a malformed name is a clear error."""

import os
import subprocess

import pytest

from experiments import rebuild_small_datasets as rebuild
from privreid_jax.data import small_datasets

PETA = "PETA dataset"
# GRID: 4 paired people (probe camera, gallery camera), 2 distractors, 2 folds
GRID_PEOPLE = {1: (1, 2), 2: (4, 5), 3: (2, 3), 4: (1, 2)}
GRID_DISTRACTORS = ("0005_1_100_1_2_3_4.jpeg", "0006_5_200_5_6_7_8.jpeg")


def grid_name(pid, cam):
  return f"{pid:04d}_{cam}_{1000 + 10 * pid + cam}_1_2_3_4.jpeg"


def ml_data_files():
  files = {f"{PETA}/VIPeR/archive/{n}": b"v" for n in (
      "000_45_1.bmp", "000_90_2.bmp", "002_0_1.bmp", "002_180_2.bmp",
      "005_0_1.bmp", "005_135_2.bmp", "007_45_1.bmp", "007_90_2.bmp")}
  files[f"{PETA}/VIPeR/archive/Label.txt"] = b"000 upperBodyBlack\n"
  files.update({f"{PETA}/PRID/archive/{n}": b"p" for n in (
      "0001_a.png", "0002_a.png", "0201_a.png",
      "0001_b.png", "0002_b.png", "0386_b.png", "1201_b.png")})
  files.update({f"{PETA}/i-LID/archive/{n}": b"i" for n in (
      "0001_001.jpg", "0001_002.jpg", "0002_001.jpg", "0002_002.jpg", "0002_003.jpg",
      "0120_001.jpg")})
  for pid, cams in GRID_PEOPLE.items():
    for cam in cams:
      files[f"{PETA}/GRID/archive/{grid_name(pid, cam)}"] = b"g"
  for name in GRID_DISTRACTORS:
    files[f"{PETA}/GRID/archive/{name}"] = b"d"
  return files


def trackviz_files():
  """Fold 0 trains on 1, 2 and tests 3, 4; fold 1 trains on 1, 3 and tests 2, 4: person 1
  is never a listed probe, as GRID's 0090 in TrackViz."""
  distractors = ["0000_" + n[5:] for n in GRID_DISTRACTORS]
  files = {}
  for k, train in enumerate(((1, 2), (1, 3))):
    test = [p for p in GRID_PEOPLE if p not in train]
    lines = {
        "probe": [grid_name(p, GRID_PEOPLE[p][0]) for p in test],
        "gallery": distractors + [grid_name(p, GRID_PEOPLE[p][1]) for p in test],
        "train": [grid_name(p, c) for p in train for c in GRID_PEOPLE[p]],
        "test": [],
    }
    for part, names in lines.items():
      files[f"data/grid/grid-cv{k}-{part}.txt"] = "".join(n + "\n" for n in names).encode()
  return files


def cuhk_files():
  files = {f"CUHK01/campus/{p:04d}{n:03d}.png": b"c" for p in (1, 2) for n in (1, 2, 3, 4)}
  files["labeled/0001_01.png"] = b"cuhk03, never to be read"
  files["README.md"] = b"readme\n"
  return files


def make_tree(root, files):
  for rel, data in files.items():
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
  return root


def make_git(root, files):
  """A git repository holding `files`; returns its .git dir."""
  make_tree(root, files)
  git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com"]
  subprocess.run(["git", "init", "-q", str(root)], check=True)
  subprocess.run(git + ["add", "-A"], check=True)
  subprocess.run(git + ["commit", "-q", "-m", "fake"], check=True)
  return root / ".git"


@pytest.fixture
def small_grid(monkeypatch):
  monkeypatch.setattr(rebuild, "GRID_PAIRED", 4)
  monkeypatch.setattr(rebuild, "GRID_FOLDS", 2)


@pytest.fixture
def git_sources(tmp_path, small_grid):
  return {"ml_data": make_git(tmp_path / "ML_data", ml_data_files()),
          "cuhk01": make_git(tmp_path / "CUHK03_dataset", cuhk_files()),
          "trackviz": make_git(tmp_path / "TrackViz", trackviz_files())}


def args(out, sources, *extra):
  return ["--out", str(out)] + [f"--{k}={v}" for k, v in sources.items()] + list(extra)


def names(folder):
  return sorted(os.listdir(folder))


def test_git_sources_rebuild_layouts_the_loader_reads(tmp_path, git_sources, capsys):
  out = tmp_path / "out"
  assert rebuild.main(args(out, git_sources)) == 0
  printed = capsys.readouterr().out
  assert names(out) == ["cuhk01", "grid", "ilids", "prid2011", "viper"]

  assert names(out / "viper/VIPeR/cam_a") == ["000_45.bmp", "002_0.bmp", "005_0.bmp",
                                              "007_45.bmp"]
  assert names(out / "viper/VIPeR/cam_b") == ["000_90.bmp", "002_180.bmp", "005_135.bmp",
                                              "007_90.bmp"]
  viper = small_datasets.load_small_dataset("viper", str(out), split_index=0)
  query = [r.pid for r in viper.query]
  assert len(query) == 2 and set(query) < {1, 3, 6, 8}         # pid = NNN + 1
  assert [r.pid for r in viper.gallery] == query and len(viper.train) == 4
  assert {r.camid for r in viper.query} == {0} and {r.camid for r in viper.gallery} == {1}

  single = out / "prid2011/prid_2011/single_shot"
  assert names(single / "cam_a") == ["person_0001.png", "person_0002.png", "person_0201.png"]
  assert names(single / "cam_b") == ["person_0001.png", "person_0002.png", "person_0201.png",
                                     "person_0386.png"]
  prid = small_datasets.load_small_dataset("prid2011", str(out), split_index=0)
  assert [r.pid for r in prid.gallery][-2:] == [201, 386]      # cam_b-only distractors
  assert {r.camid for r in prid.query} == {0} and len(prid.train) == 2

  assert names(out / "ilids/i-LIDS_Pedestrian/Persons") == [
      "0001001.jpg", "0001002.jpg", "0002001.jpg", "0002002.jpg", "0002003.jpg"]
  ilids = small_datasets.load_small_dataset("ilids", str(out), split_index=0)
  (tested,) = {r.pid for r in ilids.query}
  assert len(ilids.train) == {1: 3, 2: 2}[tested]            # the other person's images
  assert {r.camid for r in ilids.query + ilids.gallery} <= {0, 1, 2}

  # CUHK01: the campus folder only, nothing else of the CUHK03 repository
  assert names(out / "cuhk01") == ["campus"]
  assert names(out / "cuhk01/campus") == [f"{p:04d}{n:03d}.png" for p in (1, 2)
                                          for n in (1, 2, 3, 4)]
  cuhk01 = small_datasets.load_small_dataset("cuhk01", str(out), split_index=0)
  assert [r.camid for r in cuhk01.query] == [0, 0] and [r.camid for r in cuhk01.gallery] == [1, 1]

  under = out / "grid/underground_reid"
  assert names(under / "probe") == sorted(grid_name(p, c[0]) for p, c in GRID_PEOPLE.items())
  assert names(under / "gallery") == sorted(
      [grid_name(p, c[1]) for p, c in GRID_PEOPLE.items()]
      + ["0000_1_100_1_2_3_4.jpeg", "0000_5_200_5_6_7_8.jpeg"])
  mat = str(under / "features_and_partitions.mat")
  assert small_datasets.read_grid_folds(mat) == [[1, 2], [1, 3]]
  from scipy.io import loadmat
  cell = loadmat(mat)["trainIdxAll"][0]                 # torchreid's reading
  assert cell[1][0][0][2][0].tolist() == [1.0, 3.0]
  grid = small_datasets.load_small_dataset("grid", str(out), split_index=0)
  assert sorted((r.pid, r.camid) for r in grid.query) == [(3, 1), (4, 0)]
  assert sorted((r.pid, r.camid) for r in grid.gallery) == [(0, 0), (0, 4), (3, 2), (4, 1)]
  grid1 = small_datasets.load_small_dataset("grid", str(out), split_index=1)
  assert sorted(r.pid for r in grid1.query) == [2, 4]

  assert "STAND-IN" in printed and "lower camera (agreeing with all 3) for 0001" in printed
  assert "dropped 0120_001.jpg" in printed
  assert "grid      train 2 ids / 4 images, query 2 ids / 2 images, gallery 3 ids / 4 images" \
      in printed
  assert "cuhk01    train 1 ids / 4 images, query 1 ids / 2 images" in printed


def test_a_rerun_keeps_an_identical_copy_and_refuses_a_changed_one(tmp_path, git_sources,
                                                                   capsys):
  out = tmp_path / "out"
  assert rebuild.main(args(out, git_sources, "--datasets=grid,cuhk01")) == 0
  mat = out / "grid/underground_reid/features_and_partitions.mat"
  before = mat.read_bytes()
  capsys.readouterr()
  assert rebuild.main(args(out, git_sources, "--datasets=grid,cuhk01")) == 0
  assert mat.read_bytes() == before
  assert before[:116] == rebuild.MAT_HEADER.ljust(116)   # not savemat's, with the time
  assert "grid: 11 files unchanged" in capsys.readouterr().out
  (out / "cuhk01/campus/0001001.png").write_bytes(b"edited")
  with pytest.raises(SystemExit) as e:
    rebuild.main(args(out, git_sources, "--datasets=cuhk01"))
  assert e.value.code == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "cuhk01/campus/0001001.png differs from the rebuild" in err
  assert not [n for n in os.listdir(out) if n.startswith(".")]   # no partial copy left


def test_only_the_campus_folder_of_the_cuhk_repository_is_read(tmp_path, small_grid,
                                                              capsys):
  # (no "cuhk03" in this test's name: its tmp_path would contain it)
  cuhk = make_git(tmp_path / "CUHK03_dataset", cuhk_files())
  with pytest.raises(SystemExit) as e:
    rebuild.main(["--out", str(tmp_path / "out"), f"--ml_data={cuhk}", "--datasets=viper"])
  assert e.value.code == 1
  err = capsys.readouterr().err
  assert err.startswith(f"error: refusing {cuhk}") and err.count("\n") == 1
  assert not (tmp_path / "out").exists()
  plain = rebuild.Source("cuhk01", str(make_tree(tmp_path / "cuhk03_copy", cuhk_files())))
  with pytest.raises(rebuild.SourceError, match=r"refusing .*cuhk03_copy/labeled"):
    plain.files("labeled")
  with pytest.raises(rebuild.SourceError, match="refusing"):
    plain.read("labeled", "0001_01.png")
  assert len(plain.files(rebuild.CUHK01_FOLDER)) == 8       # the one folder allowed
  git = rebuild.Source("cuhk01", str(cuhk))                   # the git dir form
  assert git.is_git and len(git.files(rebuild.CUHK01_FOLDER)) == 8
  with pytest.raises(rebuild.SourceError, match=r"refusing .*CUHK03_dataset/.git:HEAD:CUHK01: "):
    git.files("CUHK01")


def test_malformed_names_are_one_line_errors_naming_the_file(tmp_path, small_grid, capsys):
  files = ml_data_files()
  files[f"{PETA}/VIPeR/archive/003_45.bmp"] = b"v"            # no camera
  ml = make_tree(tmp_path / "ML_data", files)
  with pytest.raises(SystemExit) as e:
    rebuild.main(["--out", str(tmp_path / "out"), f"--ml_data={ml}", "--datasets=viper"])
  assert e.value.code == 1
  err = capsys.readouterr().err
  assert err == (f"error: file {ml}/{PETA}/VIPeR/archive/003_45.bmp does not match PETA's "
                 "VIPeR naming NNN_<angle>_<1|2>.bmp\n")

  files = ml_data_files()
  files[f"{PETA}/PRID/archive/0201_b.png"] = b"p"             # clashes with 1201_b
  ml = make_tree(tmp_path / "ML_data2", files)
  with pytest.raises(rebuild.SourceError, match=r"1201_b.png and .*0201_b.png would both be "
                     r"prid2011/prid_2011/single_shot/cam_b/person_0201.png"):
    rebuild.plan_prid(rebuild.Source("ml_data", str(ml)))


def test_grid_probe_rule_and_distractors_are_checked_against_trackviz(tmp_path, small_grid):
  ml = rebuild.Source("ml_data", str(make_tree(tmp_path / "ML_data", ml_data_files())))
  plan = rebuild.plan_grid(ml, rebuild.Source(
      "trackviz", str(make_tree(tmp_path / "tv", trackviz_files()))))
  assert sorted(d for d in plan.copies if "/probe/" in d) == sorted(
      f"underground_reid/probe/{grid_name(p, c[0])}" for p, c in GRID_PEOPLE.items())

  swapped = trackviz_files()                  # fold 0 lists person 3's higher camera
  swapped["data/grid/grid-cv0-probe.txt"] = (grid_name(3, 3) + "\n"
                                             + grid_name(4, 1) + "\n").encode()
  tv = rebuild.Source("trackviz", str(make_tree(tmp_path / "tv2", swapped)))
  with pytest.raises(rebuild.SourceError, match="lower-camera one for 2 of the 3 people"):
    rebuild.plan_grid(ml, tv)

  other = trackviz_files()
  for k in (0, 1):
    text = other[f"data/grid/grid-cv{k}-gallery.txt"].decode()
    other[f"data/grid/grid-cv{k}-gallery.txt"] = text.replace(
        "0000_5_200", "0000_5_201").encode()
  tv = rebuild.Source("trackviz", str(make_tree(tmp_path / "tv3", other)))
  with pytest.raises(rebuild.SourceError, match=r"distractors differ: 0000_5_200"):
    rebuild.plan_grid(ml, tv)
