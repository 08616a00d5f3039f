"""docs/results_real.md prints the kept runs' numbers, to its last digit.

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
DOC = os.path.join(REPO, "docs", "results_real.md")
OTHERS = ("viper", "grid", "prid2011", "ilids")

# Column specs: (setting, key, scale); a cell "a / b" takes two specs.
R1 = lambda s: (s, "rank1", 100)          # noqa: E731
MAP = lambda s: (s, "mAP", 100)           # noqa: E731
QUALITY = [("image_quality", "psnr_P", 1), ("image_quality", "ssim_P", 1),
           ("image_quality", "psnr_R", 1), ("image_quality", "ssim_R", 1)]
METHOD_A = [R1(s) for s in ("O->O", "O->P", "P->O", "P->P", "R->O", "3rd:P->O",
                            "3rd-ft:P->O", "3rd-ft:P->P")] + QUALITY
DATASETS = lambda names: [[R1(f"{d}/O->O"), MAP(f"{d}/O->O")] for d in names]  # noqa: E731

# (row prefix in the doc, kept folder, run group, cells after the prefix)
ROWS = [
    ("| width-32 ResNet-18 from scratch, 128x64, no erasing, 40 epochs, **soft-margin "
     "triplet** (the config) |", "real_small_table", "w32_noerase",
     DATASETS(("viper", "grid", "prid2011", "cuhk01", "ilids", "val"))),
    *[(f"| {d} | {row} | 3 |", "anon_real_table", f"{group}_{d}", [[c] for c in METHOD_A])
      for d in ("mosaic", "blur")
      for row, group in (("Base", "base"), ("w/o upgrade", "wo"),
                         ("full (progressive upgrade)", "full"))],
    ("| – | outsider: raw images only | 3 |", "anon_real_table", "third_party",
     [[R1("O->O")]] + [[None]] * (len(METHOD_A) - 1)),
    ("| outsider: raw images only |", "anon_real_table", "third_party", DATASETS(OTHERS)),
    *[(f"| {d} {row} |", "anon_real_table", f"{group}_{d}", DATASETS(OTHERS))
      for d in ("mosaic", "blur")
      for row, group in (("Base", "base"), ("w/o upgrade", "wo"), ("full", "full"))],
    *[(f"| {row} | 3 |", "dual_real_table", group,
       [[R1("O->O"), MAP("O->O")], *DATASETS(OTHERS),
        [("id_probe:clean", "id_acc", 100), ("id_probe:recon", "id_acc", 100)],
        [("attack:feature_classifier", "id_acc", 100)],
        [("attack:inversion", "id_acc", 100)], [("attack:inversion", "people_id_acc", 100)]])
      for row, group in (("baseline", "baseline"),
                         ("1-stage (pixelation + Adv-ID)", "twostage"))],
    *[(f"| {row} | {label} | ", "dual_real_table", group,
       [[(f"dp:eps={eps}", "eps_identity", 1)], [(f"dp:eps={eps}", "rank1", 100)],
        [(f"attack:linkage@eps={eps}", "rank1", 100)],
        [(f"attack:linkage@eps={eps}", "classifier_acc", 100)]])
      for row, group in (("baseline", "baseline"), ("2-stage", "twostage"))
      for label, eps in (("10", "10"), ("30", "30"), ("100", "100"), ("300", "300"),
                         ("1000", "1000"), ("no noise", "inf"))],
]

NUMBER = r"-?\d+(?:\.\d+)?"


def _doc_line(prefix: str) -> str:
  with open(DOC) as f:
    lines = [line.rstrip("\n") for line in f if line.startswith(prefix)]
  assert len(lines) == 1, f"{len(lines)} lines of {DOC} start with {prefix!r}"
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


@pytest.mark.parametrize("prefix,folder,group,specs", ROWS, ids=[r[0][:60] for r in ROWS])
def test_a_table_row_of_results_real_is_its_kept_runs(prefix, folder, group, specs):
  runs = _members(folder, group)
  cells = _cells(_doc_line(prefix), prefix)
  assert len(cells) >= len(specs), (prefix, cells)
  for cell, parts in zip(cells, specs):
    if parts == [None]:
      continue
    texts = [t.strip() for t in cell.split(" / ")]
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
