"""The docs' results tables print the kept runs' numbers, to the last digit.

Each table row below is recomputed from the runs kept in experiments/results/
(the last evaluation row of every seed's run; mean ± population std over the
seeds, as `experiments.report` does) and compared with the doc's cells, each to
half a unit of the last digit the doc prints. A table re-run without updating
the doc, or a doc edited by hand, fails here.
"""

import os
import re
import statistics

import pytest

from experiments import report_runs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(REPO, "experiments", "results")
REAL = os.path.join(REPO, "docs", "results_real.md")
SYNTHETIC = os.path.join(REPO, "docs", "results_synthetic.md")
OTHERS = ("viper", "grid", "prid2011", "ilids")
# The header of the noise rows' L1 table on new people (its rows read like the selection's).
NOISE_L1_TABLE = "| L1 weight (GAN 1) | PSNR(O,P) dB | SSIM(O,P) | authorized O->O |"


# Column specs: (setting, key, scale); a cell "a / b" takes two specs.
def R1(setting: str) -> tuple:   # noqa: N802 (reads like the column it names)
  return setting, "rank1", 100


def MAP(setting: str) -> tuple:  # noqa: N802
  return setting, "mAP", 100


def DATASETS(names) -> list:     # noqa: N802
  """Cells "Rank-1 / mAP" of each dataset's own test split."""
  return [[R1(f"{d}/O->O"), MAP(f"{d}/O->O")] for d in names]


QUALITY = [("image_quality", "psnr_P", 1), ("image_quality", "ssim_P", 1),
           ("image_quality", "psnr_R", 1), ("image_quality", "ssim_R", 1)]
METHOD_A = [R1(s) for s in ("O->O", "O->P", "P->O", "P->P", "R->O", "3rd:P->O",
                            "3rd-ft:P->O", "3rd-ft:P->P")] + QUALITY
ROWS_A = (("Base", "base"), ("w/o upgrade", "wo"), ("full (progressive upgrade)", "full"))
EPSILONS = (("10", "10"), ("30", "30"), ("100", "100"), ("300", "300"), ("1000", "1000"),
            ("no noise", "inf"))
ATTACKS_B = [[("attack:feature_classifier", "id_acc", 100)],
             [("attack:inversion", "id_acc", 100)],
             [("attack:inversion", "people_id_acc", 100)]]


def _epsilon_cells(eps: str, identity: list) -> list:
  return [identity, [(f"dp:eps={eps}", "rank1", 100)],
          [(f"attack:linkage@eps={eps}", "rank1", 100)],
          [(f"attack:linkage@eps={eps}", "classifier_acc", 100)]]



# (doc, row prefix, kept folder, run group, cells after the prefix)
ROWS = [
    # docs/results_real.md
    (REAL, "| width-32 ResNet-18 from scratch, 128x64, no erasing, 40 epochs, **soft-margin "
     "triplet** (the config) |", "real_small_table", "w32_noerase",
     DATASETS(("viper", "grid", "prid2011", "cuhk01", "ilids", "val"))),
    *[(REAL, f"| {d} | {row} | 3 |", "anon_real_table", f"{group}_{d}", [[c] for c in METHOD_A])
      for d in ("mosaic", "blur") for row, group in ROWS_A],
    (REAL, "| – | outsider: raw images only | 3 |", "anon_real_table", "third_party",
     [[R1("O->O")]] + [[None]] * (len(METHOD_A) - 1)),
    (REAL, "| outsider: raw images only |", "anon_real_table", "third_party", DATASETS(OTHERS)),
    *[(REAL, f"| {d} {row.split(' (')[0]} |", "anon_real_table", f"{group}_{d}",
       DATASETS(OTHERS)) for d in ("mosaic", "blur") for row, group in ROWS_A],
    *[(REAL, f"| {row} | 3 |", "dual_real_table", group,
       [[R1("O->O"), MAP("O->O")], *DATASETS(OTHERS),
        [("id_probe:clean", "id_acc", 100), ("id_probe:recon", "id_acc", 100)], *ATTACKS_B])
      for row, group in (("baseline", "baseline"),
                         ("1-stage (pixelation + Adv-ID)", "twostage"))],
    *[(REAL, f"| {row} | {label} | ", "dual_real_table", group,
       _epsilon_cells(eps, [(f"dp:eps={eps}", "eps_identity", 1)]))
      for row, group in (("baseline", "baseline"), ("2-stage", "twostage"))
      for label, eps in EPSILONS],
    # docs/results_synthetic.md
    *[(SYNTHETIC, f"| {row} | {seeds} |", "base_people_table", group,
       [[R1("O->O")], [("O->O", "rank5", 100)], [MAP("O->O")], [("O->O", "mINP", 100)],
        [R1("val/O->O")], [MAP("val/O->O")]])
      for row, seeds, group in (
          ("BoT (command 1's config)", 3, "bot"),
          ("BoT read at 128x64 (`bot_128x64`)", 3, "bot_128x64"),
          ("BoT, 12 epochs at 1e-3, 128x64 (`bot_e12`)", 3, "bot_e12"),
          ("soft-margin triplet (`soft_margin`)", 3, "soft_margin"),
          ("weighted triplet, AGW's (`wrt`)", 3, "wrt"), ("ID loss only (`id_only`)", 1, "id_only"),
          ("GeM pooling (`gem`)", 1, "gem"), ("+ center loss (`center`)", 1, "center"))],
    *[(SYNTHETIC, f"| {row} | {seeds} |", "dual_people_table", group,
       [[R1("O->O")], [MAP("O->O")], [("id_probe:recon", "id_acc", 100)], *ATTACKS_B])
      for row, seeds, group in (
          ("baseline", 3, "baseline"), ("+ clean decoder", 1, "clean"),
          ("+ De-ID decoder, pixelation", 1, "mosaic"), ("+ De-ID decoder, blur", 1, "blur"),
          ("+ De-ID decoder, noise", 1, "noise"), ("+ Adv-ID", 1, "advid"),
          ("1-stage (pixelation + Adv-ID)", 3, "twostage"))],
    *[(SYNTHETIC, f"| {row} | {label} | ", "dual_people_table", group,
       _epsilon_cells(eps, [(f"dp:eps={eps}", "eps_identity", 1),
                            (f"dp:eps={eps}", "eps_identity_median", 1)]))
      for row, group in (("baseline", "baseline"), ("2-stage", "twostage"))
      for label, eps in EPSILONS],
    *[(SYNTHETIC, f"| {d} | {row} | {1 if d == 'noise' else 3} |", "anon_people_table",
       f"{group}_{d}", [[c] for c in METHOD_A[:-1]])
      for d in ("mosaic", "blur", "noise") for row, group in ROWS_A],
    (SYNTHETIC, "| – | outsider: raw images only | 3 |", "anon_people_table", "third_party",
     [[R1("O->O")]] + [[None]] * (len(METHOD_A) - 2)),
    *[((SYNTHETIC, NOISE_L1_TABLE), f"| {weight} |", "anon_people_table", group,
       [[QUALITY[0]], [QUALITY[1]], [R1("O->O")], [R1("P->O")], [R1("P->P")], [R1("3rd:P->O")],
        [R1("3rd-ft:P->O")], [QUALITY[2]]])
      for weight, group in (("100 (the reference's)", "wo_noise"), ("25", "wo_noise_l1w25"),
                            ("6.25", "wo_noise_l1w6.25"))],
]

NUMBER = r"-?\d+(?:\.\d+)?"


def _path(doc) -> str:
  return doc if isinstance(doc, str) else doc[0]


def _doc_line(doc, prefix: str) -> str:
  """The one line of `doc` starting with `prefix`; doc = path or (path, the table's
  header), the latter searching that table only."""
  path, header = _path(doc), (None if isinstance(doc, str) else doc[1])
  with open(path) as f:
    lines = [line.rstrip("\n") for line in f]
  if header is not None:
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    end = next((i for i in range(start + 2, len(lines)) if not lines[i].startswith("|")),
               len(lines))
    lines = lines[start:end]
  lines = [line for line in lines if line.startswith(prefix)]
  assert len(lines) == 1, f"{len(lines)} lines of {path} start with {prefix!r}"
  return lines[0]


def _cells(line: str, prefix: str) -> list[str]:
  return [c.strip() for c in line[len(prefix):].strip().strip("|").split("|")]


def _members(folder: str, group: str) -> list[report_runs.Run]:
  runs = [r for r in report_runs.find_runs(os.path.join(RESULTS, folder))
          if re.fullmatch(re.escape(group) + r"_s\d+", r.name)]
  assert runs, f"no run {group}_s<seed> in experiments/results/{folder}"
  return runs


def _close(printed: str, value: float) -> bool:
  decimals = len(printed.split(".")[1]) if "." in printed else 0
  return abs(float(printed) - value) <= 0.5 * 10 ** -decimals + 1e-9


@pytest.mark.parametrize("doc,prefix,folder,group,specs", ROWS,
                         ids=[f"{os.path.basename(_path(r[0]))}:{r[1][:50]}" for r in ROWS])
def test_a_results_table_row_is_its_kept_runs(doc, prefix, folder, group, specs):
  runs = _members(folder, group)
  cells = _cells(_doc_line(doc, prefix), prefix)
  assert len(cells) >= len(specs), (prefix, cells)
  for cell, parts in zip(cells, specs):
    if parts == [None]:
      continue
    texts = [t.strip() for t in cell.split(" / ")]
    if texts == ["–"]:    # one dash stands for every part of the cell
      texts = texts * len(parts)
    assert len(texts) == len(parts), (prefix, cell)
    for text, (setting, key, scale) in zip(texts, parts):
      values = [r.value(setting, key) for r in runs]
      if text == "–":
        assert all(v is None for v in values), (prefix, setting, key)
        continue
      assert all(v is not None for v in values), (prefix, setting, key, values)
      numbers = re.findall(NUMBER, text)
      mean = statistics.fmean(values) * scale
      assert _close(numbers[0], mean), (prefix, setting, key, text, mean)
      if "±" in text:
        std = statistics.pstdev(values) * scale
        assert _close(numbers[1], std), (prefix, setting, key, text, std)


# Method A's images stored as files (experiments.released_files / recovery_from_files):
# their rows are kept as JSON in experiments/results/anon_real_files.
FILES = os.path.join(RESULTS, "anon_real_files")
METHOD_A_DOC = os.path.join(REPO, "docs", "method_a.md")
RELEASED_TABLE = "| desensitization | P stored as | O->P | P->O |"
RELEASED_ROWS = ("O->P", "P->O", "P->P", "3rd:O->P", "3rd:P->O", "3rd:P->P")
STORES = (("float (the table above)", "float"), ("PNG at the photo's size", "png_input"),
          ("JPEG q95 at the photo's size", "jpeg_input"),
          ("PNG at the model's size", "png_model"))
RECOVERY_TABLE = "| P stored as | mosaic | blur |"
RECOVERY_ROWS = (("float (the `R->O` case)", "float"),
                 ("PNG at the model's size (`--size=model --format=png`)", "png, model size"),
                 ("PNG at the photo's size (the default for PNG photos)", "png, input size"),
                 ("JPEG q95 at the model's size (`--size=model`, JPEG photos)",
                  "jpeg, model size"),
                 ("JPEG q95 at the photo's size (the default for JPEG photos, e.g. "
                  "Market-1501)", "jpeg, input size"))


def _assert_cell(cell: str, values: list[float], where) -> None:
  numbers = re.findall(NUMBER, cell)
  assert len(numbers) == 2 and "±" in cell, (where, cell)
  assert _close(numbers[0], statistics.fmean(values)), (where, cell, values)
  assert _close(numbers[1], statistics.pstdev(values)), (where, cell, values)


def _load(name: str):
  import json
  with open(os.path.join(FILES, name)) as f:
    return json.load(f)


@pytest.mark.parametrize("desensitization", ["mosaic", "blur"])
@pytest.mark.parametrize("label,store", STORES)
def test_released_files_row_is_its_kept_rows(desensitization, label, store):
  seeds = [_load(f"released_full_{desensitization}_s{s}.json") for s in range(3)]
  prefix = f"| {desensitization} | {label} |"
  cells = _cells(_doc_line((REAL, RELEASED_TABLE), prefix), prefix)
  assert len(cells) == len(RELEASED_ROWS), cells
  for cell, row in zip(cells, RELEASED_ROWS):
    values = [100 * next(r["rank1"] for r in rows if r["store"] == store and r["row"] == row)
              for rows in seeds]
    _assert_cell(cell, values, (prefix, row))


def test_released_files_float_rows_are_the_tables_runs():
  """The float rows were scored again by experiments.released_files: they must be the
  kept runs' own last evaluation rows (the table above it in the doc)."""
  for d in ("mosaic", "blur"):
    for seed in range(3):
      rows = _load(f"released_full_{d}_s{seed}.json")
      (run,) = [r for r in report_runs.find_runs(os.path.join(RESULTS, "anon_real_table"))
                if r.name == f"full_{d}_s{seed}"]
      for r in rows:
        if r["store"] == "float":
          assert r["rank1"] == pytest.approx(run.value(r["row"], "rank1"), abs=1e-9), r


@pytest.mark.parametrize("label,stored", RECOVERY_ROWS)
def test_recovery_from_files_row_is_its_kept_rows(label, stored):
  rows = _load("recovery.json")
  prefix = f"| {label} |"
  cells = _cells(_doc_line((METHOD_A_DOC, RECOVERY_TABLE), prefix), prefix)
  for cell, d in zip(cells, ("mosaic", "blur")):
    values = [r["psnr_mean"] for r in rows
              if r["stored"] == stored and re.fullmatch(rf"full_{d}_s\d", r["run"])]
    assert len(values) == 3, (label, d)
    _assert_cell(cell, values, (prefix, d))
