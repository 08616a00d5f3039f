"""The report's Markdown tables (`tables.md` of experiments/report.py), laid out like
the papers': their number formatting, a generic run x setting table, mean ± std over
seeds, one column per target dataset, the method-A, method-B and epsilon tables, and
how validation ranks the runs against the test split (Spearman's rho), each built from
the runs' last evaluations."""

from __future__ import annotations

import math
from typing import Sequence

from experiments.report_runs import ROW_KEYS, Run, seed_groups

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


def quality_header(key: str) -> str:
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
             + [quality_header(k) for k in quality])
  rows = []
  for label, members in seed_groups(chosen):
    rows.append([label] + [cell(members, s, "rank1") for s in settings + third]
                + [cell(members, "image_quality", k) for k in quality])
  return headers, rows


def accuracy_columns(runs: Sequence[Run], prefix: str) -> list[tuple[str, str]]:
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
  columns = accuracy_columns(chosen, "id_probe:") + [
      c for c in accuracy_columns(chosen, "attack:")
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
