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
import glob
import json
import math
import os
import re
import struct
import sys
from typing import Any, Iterable, Mapping, Sequence

from experiments import ablate

EVAL_FILE = ablate.EVAL_FILE
ROW_KEYS = ("step", "epoch", "setting")
RANK_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP")
METHOD_A_SETTINGS = ("O->O", "O->P", "P->O", "P->P", "R->O")
ACCURACY_KEYS = ("id_acc", "accuracy", "acc", "top1", "rank1")   # preferred, in order
PERCENT_KEYS = {"rank1", "rank5", "rank10", "mAP", "mINP", "id_acc", "accuracy", "acc",
                "top1", "chance", "probe_acc", "classifier_acc", "people_id_acc",
                "people_chance"}
MISSING = "–"
LINKAGE = "attack:linkage@eps="
METHOD_B_EXTRA = (("attack:inversion", "people_id_acc"), ("attack:inversion", "probe_acc"), ("recon:quality", "psnr_input"),
                  ("recon:quality", "ssim_input"), ("attack:inversion", "psnr_input"),
                  ("attack:inversion", "ssim_input"))


class Run:
  """One workdir's evaluation rows and its run.json."""

  def __init__(self, name: str, workdir: str, rows: list[dict], meta: Mapping[str, Any]):
    self.name = name
    self.workdir = workdir
    self.rows = rows
    self.meta = dict(meta)
    self.last = last_rows(rows)

  def value(self, setting: str, key: str) -> float | None:
    v = self.last.get(setting, {}).get(key)
    return None if v is None else float(v)

  def settings(self, prefix: str) -> list[str]:
    return [s for s in self.last if s.startswith(prefix)]


def read_rows(path: str) -> list[dict]:
  rows = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{n}: not a JSON line ({e.msg})") from None
      missing = [k for k in ROW_KEYS if k not in row]
      if missing:
        raise ValueError(f"{path}:{n}: row lacks {missing}")
      rows.append(row)
  return rows


def last_rows(rows: Iterable[dict]) -> dict[str, dict]:
  """{setting: the row of its largest step}; a repeated step keeps the later line."""
  out: dict[str, dict] = {}
  for row in rows:
    old = out.get(row["setting"])
    if old is None or row["step"] >= old["step"]:
      out[row["setting"]] = row
  return out


def find_runs(root: str) -> list[Run]:
  """Every workdir under `root` (or `root` itself) with an eval_metrics.jsonl."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"--root: no folder {root}")
  runs = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                         and d not in ("checkpoints", "tensorboard"))
    if EVAL_FILE not in filenames:
      if ablate.RUN_FILE in filenames:
        dirnames[:] = []   # a sweep run still training: its stage_<s> folders are not runs
      continue
    dirnames[:] = []       # a run's own subfolders (method A's stage_<s>) are part of it
    rel = os.path.relpath(dirpath, root)
    name = os.path.basename(os.path.abspath(root)) if rel == "." else rel
    try:
      meta = ablate.read_status(dirpath)
    except ablate.SweepError:
      meta = {}
    runs.append(Run(name, dirpath, read_rows(os.path.join(dirpath, EVAL_FILE)), meta))
  runs.sort(key=lambda r: (r.meta.get("sweep_index", math.inf), r.name))
  return runs


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


# --- Markdown tables ---------------------------------------------------------------


def fmt(key: str, value: float | None, std: float | None = None) -> str:
  """Papers' formatting: fractions in % with 1 decimal, PSNR 2 decimals, SSIM 3."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return MISSING
  base = key.split(":")[-1]
  if base in PERCENT_KEYS:
    text, scale = f"{100 * value:.1f}", 100
  elif base.startswith("psnr"):
    text, scale = f"{value:.2f}", 1
  elif base.startswith("ssim"):
    text, scale = f"{value:.3f}", 1
  else:
    text, scale = f"{value:.4g}", 1
  if std:
    text += f" ± {scale * std:.1f}" if scale == 100 else f" ± {std:.2g}"
  return text


def markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(headers) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def generic_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
  """Run x setting (every setting with a Rank-1 but "dp:*"): Rank-1, mAP, step."""
  rows = []
  for run in runs:
    for setting, row in run.last.items():
      if "rank1" in row and not setting.startswith("dp:"):   # dp: has its own table
        rows.append([run.name, setting, fmt("rank1", row["rank1"]),
                     fmt("mAP", row.get("mAP")), str(row["step"])])
  return ["run", "setting", "Rank-1", "mAP", "step"], rows


def seed_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]] | None:
  """Runs named NAME_s<seed> grouped by NAME (2+ seeds): mean ± std per setting."""
  rows = []
  for label, members in seed_groups(runs):
    if len(members) < 2:
      continue
    group = label.rsplit(" (", 1)[0]
    settings = [s for s in members[0].last if "rank1" in members[0].last[s]
                and not s.startswith("dp:")]
    for setting in settings:
      rows.append([group, setting] + [cell(members, setting, k) for k in ("rank1", "mAP")]
                  + [str(len(members))])
  return (["runs", "setting", "Rank-1", "mAP", "seeds"], rows) if rows else None


def seed_groups(runs: Sequence[Run]) -> list[tuple[str, list[Run]]]:
  """[(label, runs)]: runs named NAME_s<seed> joined under "NAME (N seeds)" (in the
  order of their first member); a run without another seed stays under its name."""
  groups: dict[str, list[Run]] = {}
  for run in runs:
    match = re.fullmatch(r"(.+)_s\d+", run.name)
    groups.setdefault(match.group(1) if match else run.name, []).append(run)
  return [(members[0].name if len(members) == 1 else f"{name} ({len(members)} seeds)",
           members) for name, members in groups.items()]


def cell(members: Sequence[Run], setting: str, key: str) -> str:
  """One table cell: the value, or mean ± std (population) over seeds."""
  values = [v for v in (r.value(setting, key) for r in members) if v is not None]
  if not values:
    return MISSING
  mean = sum(values) / len(values)
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
  return fmt(key, mean, std if len(values) > 1 else None)


NOT_DATASETS = ("val", "dp", "attack", "recon", "id_probe")   # prefixes that are not datasets


def target_datasets(runs: Sequence[Run]) -> list[str]:
  """The datasets of rows "DATASET/O->O" (evals.targets), in order of appearance."""
  names: list[str] = []
  for run in runs:
    for setting in run.last:
      prefix, sep, rest = setting.partition("/")
      if sep and rest == "O->O" and prefix not in NOT_DATASETS and prefix not in names:
        names.append(prefix)
  return names


def dataset_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]] | None:
  """Per target dataset (rows "DATASET/O->O"): Rank-1 / mAP of each run or seed group,
  with the run's own test split ("O->O") first where it has one."""
  names = target_datasets(runs)
  if not names:
    return None
  own = any("O->O" in r.last for r in runs)
  header = ["runs"] + (["own test split"] if own else []) + names
  rows = []
  for label, members in seed_groups(runs):
    if not any(f"{n}/O->O" in m.last for m in members for n in names):
      continue
    settings = (["O->O"] if own else []) + [f"{n}/O->O" for n in names]
    pairs = [(cell(members, s, "rank1"), cell(members, s, "mAP")) for s in settings]
    rows.append([label] + [MISSING if r == MISSING else f"{r} / {m}" for r, m in pairs])
  return header, rows


def ranks(values: Sequence[float]) -> list[float]:
  """1-based ranks, ties sharing their mean rank (as Spearman's rho needs)."""
  order = sorted(range(len(values)), key=lambda i: values[i])
  out = [0.0] * len(values)
  i = 0
  while i < len(order):
    j = i
    while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
      j += 1
    for k in order[i:j + 1]:
      out[k] = (i + j) / 2 + 1
    i = j + 1
  return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
  """Spearman's rank correlation (Pearson's on tie-averaged ranks); None if a side is flat."""
  rx, ry = ranks(x), ranks(y)
  mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
  sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
  sxx = sum((a - mx) ** 2 for a in rx)
  syy = sum((b - my) ** 2 for b in ry)
  return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


MIN_AGREEMENT_RUNS = 4


def agreement_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]] | None:
  """How validation ranks the runs against how the test split does: per setting S with
  "val/S" rows, Spearman's rho over the runs that have both (at least
  MIN_AGREEMENT_RUNS), for Rank-1 and mAP. A choice made on validation is only as
  good as this agreement."""
  settings: list[str] = []
  for run in runs:
    for s in run.last:
      if s.startswith("val/") and s[4:] not in settings and "rank1" in run.last[s]:
        settings.append(s[4:])
  rows = []
  for s in settings:
    cells = []
    for key in ("rank1", "mAP"):
      pairs = [(r.value(f"val/{s}", key), r.value(s, key)) for r in runs]
      pairs = [(v, t) for v, t in pairs if v is not None and t is not None]
      rho = spearman(*zip(*pairs)) if len(pairs) >= MIN_AGREEMENT_RUNS else None
      cells.append(MISSING if rho is None else f"{rho:.2f}")
    n = sum(1 for r in runs if r.value(f"val/{s}", "rank1") is not None
            and r.value(s, "rank1") is not None)
    if n >= MIN_AGREEMENT_RUNS:
      rows.append([s] + cells + [str(n)])
  return (["setting", "Spearman Rank-1", "Spearman mAP", "runs"], rows) if rows else None


def _quality_header(key: str) -> str:
  kind, _, what = key.partition("_")
  return f"{kind.upper()} {what}".strip()


def method_a_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]] | None:
  """Rows = runs with anonymized settings; Rank-1 per setting, then PSNR/SSIM."""
  chosen = [r for r in runs if any(s in r.last for s in ("O->P", "P->O", "P->P"))]
  if not chosen:
    return None
  settings = [s for s in METHOD_A_SETTINGS[:4]]
  settings += [s for s in METHOD_A_SETTINGS[4:] if any(s in r.last for r in chosen)]
  third = sorted({s for r in chosen for s in r.settings("3rd:")})
  third += sorted({s for r in chosen for s in r.settings("3rd-ft:") if "->" in s})
  quality = sorted({k for r in chosen for k in r.last.get("image_quality", {})
                    if k not in ROW_KEYS},
                   key=lambda k: (not k.startswith("psnr"), k))
  headers = (["run"] + [f"{s} R1" for s in settings + third]
             + [_quality_header(k) for k in quality])
  rows = []
  for label, members in seed_groups(chosen):
    rows.append([label] + [cell(members, s, "rank1") for s in settings + third]
                + [cell(members, "image_quality", k) for k in quality])
  return headers, rows


def _accuracy_columns(runs: Sequence[Run], prefix: str) -> list[tuple[str, str]]:
  """(setting, key) for each `prefix*` setting: its accuracy, or every metric."""
  columns = []
  for setting in sorted({s for r in runs for s in r.settings(prefix)}):
    keys = {k for r in runs for k in r.last.get(setting, {}) if k not in ROW_KEYS}
    preferred = [k for k in ACCURACY_KEYS if k in keys]
    columns += [(setting, k) for k in (preferred[:1] or sorted(keys))]
  return columns


def method_b_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]] | None:
  """Rows = runs with privacy probes: Rank-1, mAP, ID accuracy, attacker accuracy."""
  chosen = [r for r in runs if r.settings("id_probe:") or r.settings("attack:")]
  if not chosen:
    return None
  columns = _accuracy_columns(chosen, "id_probe:") + [
      c for c in _accuracy_columns(chosen, "attack:")
      if not c[0].startswith(LINKAGE)]          # linkage: in the epsilon table
  # Image quality of the decoder's and the inversion attacker's reconstructions
  # (vs the input), and the clean ID probe on the attacker's reconstructions.
  columns += [(s, k) for s, k in METHOD_B_EXTRA if any(r.value(s, k) is not None
                                                       for r in chosen)]

  def header(setting: str, key: str) -> str:
    kind, _, what = setting.partition(":")
    label = {"id_probe": "ID acc", "recon": "decoder"}.get(kind, kind)
    return f"{label} ({what})" if key in ACCURACY_KEYS else f"{label} ({what}) {key}"

  headers = ["run", "Rank-1", "mAP", "mINP"] + [header(s, k) for s, k in columns]
  rows = []
  for label, members in seed_groups(chosen):
    rows.append([label] + [cell(members, "O->O", k) for k in ("rank1", "mAP", "mINP")]
                + [cell(members, s, k) for s, k in columns])
  return headers, rows


def epsilon_of(setting: str) -> float:
  return float(setting.split("=", 1)[1])


def epsilon_points(run: Run) -> list[tuple[float, dict]]:
  """(epsilon, last row) of a run's "dp:eps=*" settings, by epsilon (inf last)."""
  return sorted(((epsilon_of(s), run.last[s]) for s in run.settings("dp:eps=")),
                key=lambda p: p[0])


def epsilon_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]] | None:
  chosen = [r for r in runs if r.settings("dp:eps=")]
  if not chosen:
    return None
  rows = []
  linkage = any(r.settings(LINKAGE) for r in chosen)
  for label, members in seed_groups(chosen):
    for eps, row in epsilon_points(members[0]):
      name = "inf" if math.isinf(eps) else f"{eps:g}"
      dp_setting, attack = f"dp:eps={name}", f"{LINKAGE}{name}"
      if len(members) > 1:   # mean ± std over seeds of each seed's mean over draws
        utility = [cell(members, dp_setting, k) for k in ("rank1", "mAP")]
      else:                  # mean ± std over noise draws
        utility = [fmt("rank1", row.get("rank1"), row.get("rank1_std")),
                   fmt("mAP", row.get("mAP"), row.get("mAP_std"))]
      out = [label, name, fmt("eps_identity", row.get("eps_identity")),
             fmt("eps_identity_median", row.get("eps_identity_median")),
             fmt("sigma", row.get("sigma"))] + utility
      if linkage:
        out += [cell(members, attack, k) for k in ("rank1", "mAP", "classifier_acc", "chance")]
      rows.append(out)
  headers = ["run", "epsilon (image)", "epsilon (identity, largest k)",
             "epsilon (identity, median k)", "sigma", "Rank-1", "mAP"]
  if linkage:
    headers += ["attack: linkage Rank-1", "attack: linkage mAP",
                "attack: classifier on released", "chance"]
  return headers, rows


def tables_markdown(runs: Sequence[Run]) -> str:
  parts = ["# Results", "",
           "Last evaluation of every run; Rank-1, mAP and accuracies in %.", ""]
  sections = (("All runs", generic_table(runs)),
              ("Mean ± std over seeds (runs named NAME_s<seed>)", seed_table(runs)),
              ("Per dataset: Rank-1 / mAP on each dataset's own test split",
               dataset_table(runs)),
              ("Method A: reversible anonymization (Rank-1 per setting, image quality)",
               method_a_table(runs)),
              ("Method B: dual-stage (utility and identity leakage)", method_b_table(runs)),
              ("Method B stage 2: gallery released with DP (Rank-1 / mAP vs epsilon)",
               epsilon_table(runs)),
              ("Validation against the test split: do they rank the runs alike?",
               agreement_table(runs)))
  for title, table in sections:
    if table is not None and table[1]:
      parts += [f"## {title}", "", markdown(*table), ""]
  return "\n".join(parts)


# --- TensorBoard scalars -------------------------------------------------------------


def read_tb_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} from the event files in `logdir` (later files win a step)."""
  from tensorboardX.proto import event_pb2   # tensorboardX is a dependency; no TF needed
  values: dict[str, dict[int, float]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos + 12 <= len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      start, pos = pos + 12, pos + 12 + length + 4   # length, crc, payload, crc
      if pos > len(data):
        break                                        # a record still being written
      event = event_pb2.Event()
      event.ParseFromString(data[start:start + length])
      for v in event.summary.value:
        if v.WhichOneof("value") == "simple_value":
          values.setdefault(v.tag, {})[int(event.step)] = float(v.simple_value)
  return {tag: sorted(points.items()) for tag, points in values.items()}


def train_scalar_rows(runs: Sequence[Run]) -> list[dict]:
  out = []
  for run in runs:
    scalars = read_tb_scalars(os.path.join(run.workdir, "tensorboard"))
    for tag, points in sorted(scalars.items()):
      if not tag.startswith("eval/"):
        out += [{"run": run.name, "tag": tag, "step": s, "value": v} for s, v in points]
  return out


# --- plots ---------------------------------------------------------------------------


def _privacy_measures(runs: Sequence[Run]) -> list[tuple[str, str, str]]:
  """(setting, key, axis label) of every privacy figure some run reports."""
  out = [(s, k, f"{s} {k} (%)") for s, k in _accuracy_columns(runs, "id_probe:")
         + _accuracy_columns(runs, "attack:")]
  if any("image_quality" in r.last for r in runs):
    keys = {k for r in runs for k in r.last.get("image_quality", {})}
    out += [("image_quality", k, f"{_quality_header(k)} of P vs O")
            for k in ("psnr_P", "ssim_P") if k in keys]
  return out


def plot_all(runs: Sequence[Run], out_dir: str, scalars: Sequence[dict]) -> list[str]:
  """Writes the figures; returns their paths. Needs matplotlib."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  written = []

  def save(fig, name):
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)

  measures = _privacy_measures(runs)
  if measures:
    fig, axes = plt.subplots(1, len(measures), figsize=(4.5 * len(measures), 4), squeeze=False)
    for ax, (setting, key, label) in zip(axes[0], measures):
      for r in runs:
        x = r.value(setting, key)
        utility = "P->P" if setting == "image_quality" else "O->O"
        y = r.value(utility, "rank1")
        if x is None or y is None:
          continue
        x = 100 * x if key in PERCENT_KEYS else x
        ax.scatter(x, 100 * y)
        ax.annotate(r.name, (x, 100 * y), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
      utility = "P->P" if setting == "image_quality" else "O->O"
      ax.set(xlabel=label, ylabel=f"{utility} Rank-1 (%)", title="privacy vs utility")
      ax.grid(alpha=0.3)
    save(fig, "privacy_utility.png")

  dp_runs = [r for r in runs if r.settings("dp:eps=")]
  if dp_runs:
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for r in dp_runs:
      points = epsilon_points(r)
      finite = [(e, row) for e, row in points if math.isfinite(e)]
      clean = [row for e, row in points if not math.isfinite(e)]
      for ax, key in zip(axes, ("rank1", "mAP")):
        line = ax.errorbar([e for e, _ in finite], [100 * row[key] for _, row in finite],
                           yerr=[100 * row.get(f"{key}_std", 0.0) for _, row in finite],
                           marker="o", capsize=3, label=r.name)
        if clean:
          ax.axhline(100 * clean[0][key], ls="--", color=line[0].get_color(), alpha=0.6)
    for ax, key in zip(axes, ("Rank-1", "mAP")):
      ax.set(xscale="log", xlabel="epsilon per gallery image", ylabel=f"{key} (%)",
             title=f"{key} vs epsilon (dashed: no noise)")
      ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    save(fig, "epsilon_curve.png")

  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  losses = {}
  for row in scalars:
    if row["tag"] == "loss":
      losses.setdefault(row["run"], []).append((row["step"], row["value"]))
  for name, points in losses.items():
    axes[0].plot(*zip(*points), label=name)
  axes[0].set(xlabel="step", ylabel="training loss", title="training loss")
  for r in runs:
    for setting in [s for s in r.last if "rank1" in r.last[s] and not s.startswith("dp:")][:4]:
      points = sorted((row["step"], 100 * row["rank1"]) for row in r.rows
                      if row["setting"] == setting and "rank1" in row)
      axes[1].plot(*zip(*points), marker=".", label=f"{r.name} {setting}")
  axes[1].set(xlabel="step", ylabel="Rank-1 (%)", title="evaluations")
  for ax in axes:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=6)
  save(fig, "training_curves.png")
  return written


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
