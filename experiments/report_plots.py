"""The report's matplotlib figures (experiments/report.py): privacy against utility,
Rank-1 / mAP against epsilon and the training curves, written as PNG files; matplotlib
is imported only to draw them (method B's t-SNE and reconstruction grids are
experiments/figures_dual.py's)."""

from __future__ import annotations

import math
import os
from typing import Sequence

from experiments.report_runs import Run
from experiments.report_tables import (PERCENT_KEYS, accuracy_columns, quality_header,
                                       epsilon_points)


def _privacy_measures(runs: Sequence[Run]) -> list[tuple[str, str, str]]:
  """(setting, key, axis label) of every privacy figure some run reports."""
  out = [(s, k, f"{s} {k} (%)") for s, k in accuracy_columns(runs, "id_probe:")
         + accuracy_columns(runs, "attack:")]
  if any("image_quality" in r.last for r in runs):
    keys = {k for r in runs for k in r.last.get("image_quality", {})}
    out += [("image_quality", k, f"{quality_header(k)} of P vs O")
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
