"""What experiments/device_check.py makes of its parts' output: `error_line`, the line
a part that failed is recorded with; the parsers that turn a part's output into rows
{setting, img_s, step_ms, compile_s, memory_gb, mfu, note} (`parse_train` from
bench_train's --json file or, when it was killed early, from its per-round lines;
`parse_tests`, `parse_eval`, `parse_input`; `mfu` from XLA's FLOPs per step and
--peak_tflops); and the report: `markdown`, the table device_check.md holds and the run
prints, and `jsonable`, which writes NaN and infinities as null in device_check.json."""

from __future__ import annotations

import json
import math
import os
import re

_ERROR = re.compile(r"(Error|Exception|error:|FAILED|Killed|Traceback|RESOURCE_EXHAUSTED)")


def error_line(output: str) -> str:
  """The last line that names an error, else the last non-empty line."""
  lines = [l.strip() for l in output.splitlines() if l.strip()]
  for line in reversed(lines):
    if _ERROR.search(line) and not line.startswith("Traceback"):
      return line[:500]
  return lines[-1][:500] if lines else ""


def num(x) -> float | None:
  try:
    x = float(x)
  except (TypeError, ValueError):
    return None
  return None if math.isnan(x) or math.isinf(x) else x


def mfu(gflop_per_step, step_ms, peak_tflops: float) -> float | None:
  gflop, ms = num(gflop_per_step), num(step_ms)
  if not gflop or not ms or not peak_tflops or peak_tflops <= 0:
    return None
  return gflop / (ms / 1e3) / (peak_tflops * 1e3)


_ROUND = re.compile(r"round (\d+): (\S+) b(\d+): ([\d.]+) img/s")


def parse_train(output: str, json_path: str, peak_tflops: float) -> list[dict]:
  """bench_train's --json rows; else (killed early) its per-round lines."""
  rows = []
  if os.path.isfile(json_path):
    with open(json_path) as f:
      data = json.load(f)
    for r in data.get("rows", []):
      gflop = num(r.get("gflop_per_step"))
      rows.append({
          "setting": f"{r['label']} b{r['batch']}", "img_s": num(r.get("img_s")),
          "step_ms": num(r.get("step_ms")), "compile_s": num(r.get("compile_s")),
          "memory_gb": num(r.get("xla_peak_gb")),
          "mfu": mfu(gflop, r.get("step_ms"), peak_tflops),
          "gflop_per_step": gflop, "gflop_s": num(r.get("gflop_s")),
          "rss_hwm_gb": num(r.get("rss_hwm_gb")), "note": ""})
    return rows
  seen = {}
  for rnd, label, batch, img_s in _ROUND.findall(output):
    seen[(label, int(batch))] = float(img_s)   # the last round's
  for (label, batch), img_s in seen.items():
    rows.append({"setting": f"{label} b{batch}", "img_s": img_s,
                 "step_ms": 1e3 * batch / img_s if img_s else None,
                 "compile_s": None, "memory_gb": None, "mfu": None,
                 "note": "partial: from the round lines"})
  return rows


_PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)")


def parse_tests(output: str) -> dict[str, int]:
  """Counts from pytest's last summary line (e.g. '5 passed, 1 failed in 9s')."""
  counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
  for line in reversed(output.splitlines()):
    found = _PYTEST_COUNT.findall(line)
    if found and (" in " in line or line.startswith("=")):
      for n, kind in found:
        kind = "error" if kind.startswith("error") else kind
        counts[kind] = counts.get(kind, 0) + int(n)
      break
  return counts


_EVAL_DATA = re.compile(r"data: (\d+) queries x (\d+) gallery x (\d+)-d")
_EVAL_OURS = re.compile(r"evaluate_features \(all (\d+) queries.*?: ([\d.]+) s, "
                        r"peak RSS \+([\d.]+) GiB; Rank-1 ([\d.]+) mAP ([\d.]+)")
_EVAL_BASE = re.compile(r"torchreid loop\s+([\d.]+) s")


def parse_eval(output: str) -> list[dict]:
  data, ours = _EVAL_DATA.search(output), _EVAL_OURS.search(output)
  if not ours:
    return []
  n_q, seconds = int(ours.group(1)), float(ours.group(2))
  setting = (f"{data.group(1)} q x {data.group(2)} g x {data.group(3)}-d"
             if data else f"{n_q} queries")
  note = (f"evaluate_features {seconds:.1f} s incl. compile (img/s: queries/s), "
          f"host RSS +{float(ours.group(3)):.2f} GiB")
  base = _EVAL_BASE.search(output)
  if base:
    note += f"; torchreid NumPy loop {float(base.group(1)):.0f} s (extrapolated)"
  return [{"setting": setting, "img_s": n_q / seconds if seconds else None,
           "step_ms": None, "compile_s": None, "memory_gb": None, "mfu": None,
           "seconds": seconds, "note": note}]


_INPUT_ROW = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s", re.M)
_INPUT_HEAD = re.compile(r"output (\d+)x(\d+), batch (\d+)")


def parse_input(output: str) -> list[dict]:
  head = _INPUT_HEAD.search(output)
  size = f" {head.group(1)}x{head.group(2)} b{head.group(3)}" if head else ""
  return [{"setting": f"workers={w}{size}", "img_s": float(img_s),
           "step_ms": float(ms), "compile_s": None, "memory_gb": None, "mfu": None,
           "note": f"first batch {float(first):.2f} s (ms: per batch)"}
          for w, first, ms, img_s in _INPUT_ROW.findall(output)]


def _cell(x, fmt: str) -> str:
  x = num(x)
  return "" if x is None else format(x, fmt)


def markdown(parts: list[dict], meta: dict) -> str:
  head = ("| part | setting | status | img/s | step ms | compile s | "
          "device memory GB | MFU | note |")
  lines = [head, "|" + "---|" * 9]
  for p in parts:
    rows = p.get("rows") or [{"setting": "", "note": ""}]
    for i, r in enumerate(rows):
      note = r.get("note", "")
      if i == 0 and p.get("error"):
        note = (note + "; " if note else "") + p["error"]
      note = note.replace("|", "\\|").replace("\n", " ")
      lines.append(
          f"| {p['part']} | {r.get('setting', '')} | {p['status']} | "
          f"{_cell(r.get('img_s'), '.1f')} | {_cell(r.get('step_ms'), '.1f')} | "
          f"{_cell(r.get('compile_s'), '.1f')} | {_cell(r.get('memory_gb'), '.3g')} | "
          f"{_cell(r.get('mfu'), '.1%')} | {note} |")
  title = (f"# Device check{' (smoke)' if meta['smoke'] else ''}\n\n"
           f"{meta['when']}, platform {meta.get('platform') or 'unknown'}, "
           f"peak {meta['peak_tflops'] or 'unknown'} TFLOP/s, "
           f"{meta['wall_s']:.0f} s in all.\n\n")
  return title + "\n".join(lines) + "\n"


def jsonable(x):
  if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
    return None
  if isinstance(x, dict):
    return {k: jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  return x
