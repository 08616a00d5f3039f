"""Copies a sweep's finished results (not its checkpoints) into a folder to commit.

  python -m experiments.keep_results --root /tmp/sweep --out experiments/results/NAME
  python -m experiments.report --root experiments/results/NAME --noplots   # the tables again

A table's runs can take longer than one machine keeps its disk. For every run
under ROOT whose `run.json` says done, this copies the files the tables are
made of, `run.json`, `eval_metrics.jsonl` and (method A's staged runs)
`stages.jsonl`, a few kilobytes a run, to OUT/<run>/; checkpoints, logs and
event files stay behind. A run already kept is left as it is unless its copy
differs, which is an error naming the file (a result does not change by being
run again: the runs are deterministic by seed on one kind of machine). It
prints which runs of `--sweep` (if given) are not kept yet, as the `--only` list
for the next `experiments.ablate` (a run's outsider, `third_party_s<seed>`, must
be in the same ROOT, so it is listed whenever a row that needs it is).
"""

from __future__ import annotations

import filecmp
import os
import shutil
import sys
from typing import Sequence

from experiments import ablate_status, ablate_sweep

KEPT_FILES = (ablate_status.RUN_FILE, ablate_status.EVAL_FILE, "stages.jsonl")


def finished_runs(root: str) -> list[str]:
  """Names of ROOT's direct sub-folders whose run.json says done."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"--root: no folder {root}")
  return [name for name in sorted(os.listdir(root))
          if ablate_status.read_status(os.path.join(root, name)).get("status") == "done"
          and os.path.exists(os.path.join(root, name, ablate_status.EVAL_FILE))]


def keep(root: str, out: str) -> list[str]:
  """Copies KEPT_FILES of every finished run; returns the names newly kept."""
  new = []
  for name in finished_runs(root):
    src, dst = os.path.join(root, name), os.path.join(out, name)
    files = [f for f in KEPT_FILES if os.path.exists(os.path.join(src, f))]
    if os.path.isdir(dst):
      for f in files:
        if f != ablate_status.RUN_FILE and not filecmp.cmp(os.path.join(src, f),
                                                           os.path.join(dst, f), shallow=False):
          raise ValueError(f"{os.path.join(dst, f)} differs from {os.path.join(src, f)}: "
                           "the same run gave other results; keep neither until it is "
                           "understood")
      continue
    os.makedirs(out, exist_ok=True)
    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for f in files:
      shutil.copyfile(os.path.join(src, f), os.path.join(tmp, f))
    os.replace(tmp, dst)
    new.append(name)
  return new


def missing(spec: str, out: str) -> tuple[list[str], list[str]]:
  """(the sweep's runs not in OUT, those plus the outsider runs they point to:
  the next `--only`)."""
  runs = ablate_sweep.load_sweep(spec)
  kept = set(os.listdir(out)) if os.path.isdir(out) else set()
  left = [r["name"] for r in runs if r["name"] not in kept]
  needed = set(left)
  for r in runs:
    if r["name"] in left:
      for value in r.get("overrides", {}).values():
        if isinstance(value, str) and value.startswith("{root}/"):
          needed.add(value[len("{root}/"):])
  return left, [r["name"] for r in runs if r["name"] in needed]


def _define(fv):
  """The tool's flags (absl, snake_case) on `fv`."""
  from absl import flags
  flags.DEFINE_string("root", None, "A sweep's --root.", flag_values=fv)
  flags.DEFINE_string("out", None, "Where the results are kept (a folder to commit).",
                      flag_values=fv)
  flags.DEFINE_string("sweep", None, "FILE[:arg]: also print its runs not kept yet.",
                      flag_values=fv)
  flags.mark_flag_as_required("root", flag_values=fv)
  flags.mark_flag_as_required("out", flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Keeps ROOT's finished runs in OUT; argv without the program name."""
  from absl import flags
  from privreid_jax import cli
  argv = list(sys.argv[1:] if argv is None else argv)
  args = _define(flags.FlagValues())
  cli.parse_tool_flags(args, ["python -m experiments.keep_results", *argv], __doc__)
  try:
    new = keep(args.root, args.out)
    print(f"kept {len(new)} new run(s) in {args.out}" + (f": {', '.join(new)}" if new else ""))
    if args.sweep:
      left, only = missing(args.sweep, args.out)
      print(f"not kept yet: {len(left)} of {args.sweep}'s runs"
            + (f"; next: --only {','.join(only)}" if left else ""))
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
