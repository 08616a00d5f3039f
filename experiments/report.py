"""Collects a sweep's evaluations into a CSV, Markdown tables laid out like the papers', plots.

  python -m experiments.report --root /tmp/sweep            # writes /tmp/sweep/report/
  python -m experiments.report --root /tmp/sweep --out DIR --noplots

Every folder under ROOT holding an `eval_metrics.jsonl` is a run (named by its
path under ROOT; ROOT itself if it is a single workdir), ordered as in the
sweep (`run.json`), then by name. Tables use each run's last evaluation (the
largest step) of every setting; curves use all rows.

Outputs in `--out` (default ROOT/report):
- `results.csv`: one row per run x setting (last evaluation), every metric;
  `evaluations.csv`: every evaluation row; `train_scalars.csv`: the training
  scalars read from the TensorBoard event files.
- `tables.md`: a generic table (run x setting: Rank-1 / mAP); mean ± std over
  seeds of runs named NAME_s<seed> (also in the method tables, one row per NAME); the method-A
  table (O->O, O->P, P->O, P->P Rank-1 and PSNR/SSIM from "image_quality");
  the method-B table (Rank-1, mAP, mINP, ID accuracy from "id_probe:*",
  attacker accuracy from "attack:*", PSNR/SSIM of the decoder's and the
  inversion attacker's reconstructions); the epsilon table (from "dp:eps=*"). A table
  appears when some run has its rows. Rank-1, mAP and accuracies are in %. Where runs
  have validation rows ("val/S") and test rows ("S"), Spearman's rank correlation of the
  two over the runs says whether validation ranks them as the test split does.
- with matplotlib: `privacy_utility.png`, `epsilon_curve.png`,
  `training_curves.png`, and for method B runs `tsne_features.png` and
  `recon_grids.png` (experiments/figures_dual.py) (matplotlib is optional: without it the plots are
  skipped with a message).
"""

from __future__ import annotations

import csv
import os
import sys
from typing import Any, Sequence

from experiments.report_plots import plot_all
from experiments.report_runs import EVAL_FILE, ROW_KEYS, Run, find_runs, train_scalar_rows
from experiments.report_tables import tables_markdown

RANK_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP")


# --- CSV -------------------------------------------------------------------------


def _metric_columns(rows: Sequence[dict]) -> list[str]:
  keys = {k for r in rows for k in r} - set(ROW_KEYS) - {"run"}
  return [k for k in RANK_KEYS if k in keys] + sorted(keys - set(RANK_KEYS))


def result_rows(runs: Sequence[Run], every: bool = False) -> list[dict]:
  """CSV rows: run, setting, step, epoch, metrics (last evaluation unless `every`)."""
  out = []
  for run in runs:
    rows = run.rows if every else list(run.last.values())
    for row in rows:
      out.append({"run": run.name, **row})
  return out


def write_csv(path: str, rows: Sequence[dict], first: Sequence[str]) -> None:
  columns = list(first) + [c for c in _metric_columns(rows) if c not in first]
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns, restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


# --- command line ----------------------------------------------------------------------


def write_report(root: str, out_dir: str | None = None, plots: bool = True) -> dict[str, Any]:
  """Writes every output; returns {"runs", "files", "plots_skipped"}."""
  runs = find_runs(root)
  if not runs:
    raise FileNotFoundError(f"--root {root}: no {EVAL_FILE} in it or its sub-folders")
  out_dir = out_dir or os.path.join(root, "report")
  os.makedirs(out_dir, exist_ok=True)
  files = []

  def path(name):
    files.append(os.path.join(out_dir, name))
    return files[-1]

  write_csv(path("results.csv"), result_rows(runs), ("run", "setting", "step", "epoch"))
  write_csv(path("evaluations.csv"), result_rows(runs, every=True),
            ("run", "setting", "step", "epoch"))
  scalars = train_scalar_rows(runs)
  write_csv(path("train_scalars.csv"), scalars, ("run", "tag", "step", "value"))
  with open(path("tables.md"), "w") as f:
    f.write(tables_markdown(runs))
  skipped = None
  if plots:
    try:
      import matplotlib  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
    except ImportError:
      skipped = ("plots skipped: matplotlib is not installed (pip install matplotlib); "
                 "the CSV files hold the same data")
    else:
      files += plot_all(runs, out_dir, scalars)
      from experiments import figures_dual   # method B: t-SNE, reconstruction grids
      files += figures_dual.write_figures(root, out_dir)
  return {"runs": runs, "files": files, "plots_skipped": skipped}


def _define(fv):
  """The tool's flags (absl, snake_case) on `fv`."""
  from absl import flags
  flags.DEFINE_string("root", None, "A sweep root (or a single workdir).", flag_values=fv)
  flags.DEFINE_string("out", None, "Output folder (default ROOT/report).", flag_values=fv)
  flags.DEFINE_boolean("plots", True, "Draw the matplotlib figures (--noplots or "
                       "--plots=false skips them).", flag_values=fv)
  flags.mark_flag_as_required("root", flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Writes the report; argv without the program name (default sys.argv[1:])."""
  from absl import flags
  from privreid_jax import cli
  argv = list(sys.argv[1:] if argv is None else argv)
  args = _define(flags.FlagValues())
  cli.parse_tool_flags(args, ["python -m experiments.report", *argv], __doc__)
  try:
    result = write_report(os.path.abspath(args.root), args.out, plots=args.plots)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"{len(result['runs'])} runs")
  print(tables_markdown(result["runs"]))
  if result["plots_skipped"]:
    print(result["plots_skipped"], file=sys.stderr)
  for f in result["files"]:
    print(f"wrote {f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
