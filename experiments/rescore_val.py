"""Scores finished runs' last checkpoints on a validation split of new synthetic people.

  python -m experiments.rescore_val --root /tmp/schedule_select --val_people_seed 7 \
      [--runs e14_s0,e12_s0] [--out scores.json]

For selection runs on synthetic data whose validation split was identities held
out of training (`data.val_fraction`): those identities rarely bring their
group of look-alikes with them, so that split can sit near its ceiling while the
test split differs by points. Here the same checkpoints are scored on the query
and gallery of new people drawn from `--val_people_seed` with the test split's
protocol, distractors and junk included (`splits.fresh_people_validation`, what
`config.data.val_people_seed` gives a training run): still no test split read.
A seed equal to a run's `data.synthetic.test_seed` is refused.

Prints one line per run (val Rank-1 / Rank-5 / mAP / mINP of every setting of
its method, in percent) and, with --out, writes them as JSON.
"""

from __future__ import annotations

import json
import os
import sys


def score_run(run_dir: str, seed: int) -> dict[str, dict[str, float]]:
  """{setting: metrics} of the run's last checkpoint on new people from `seed`."""
  from privreid_jax import api, sharding
  from privreid_jax.data import splits as data_splits
  from privreid_jax.evaluation.reid import ReidEvaluator
  model = api.load(run_dir)
  data, eval_cfg = model.eval_config(model.config)
  data.val_fraction = 0.0
  data.val_people_seed = int(seed)
  val = data_splits.open_splits(data).validation()
  evaluator = ReidEvaluator(model.method, val, data, eval_cfg, sharding.make_mesh(),
                            cache=False)
  return {f"val{seed}/{k}": v for k, v in evaluator.run(model.state, model.settings).items()}


def main(argv=None) -> None:
  from absl import flags
  from privreid_jax import api
  fv = flags.FlagValues()
  flags.DEFINE_string("root", None, "Folder of the runs (experiments.ablate's --root).",
                      flag_values=fv)
  flags.DEFINE_list("runs", [], "Run folders under --root (default: every folder there "
                    "with a checkpoint).", flag_values=fv)
  flags.DEFINE_integer("val_people_seed", None, "Seed of the new people (>= 0).",
                       flag_values=fv)
  flags.DEFINE_string("out", None, "Write the scores here as JSON.", flag_values=fv)
  flags.mark_flags_as_required(["root", "val_people_seed"], flag_values=fv)
  api.parse_flags(fv, list(sys.argv if argv is None else argv), __doc__)
  if not os.path.isdir(fv.root):
    api.fail(f"--root={fv.root}: no such folder")
  runs = fv.runs or sorted(r for r in os.listdir(fv.root)
                           if os.path.isdir(os.path.join(fv.root, r, "checkpoints")))
  if not runs:
    api.fail(f"--root={fv.root}: no run folder with checkpoints")
  scores = {}
  for run in runs:
    try:
      rows = score_run(os.path.join(fv.root, run), fv.val_people_seed)
    except (FileNotFoundError, ValueError, OSError) as e:
      api.fail(f"{run}: {api.one_line(e)}")
    scores[run] = rows
    print(f"{run}: " + "; ".join(
        f"{k} R1 {100 * m['rank1']:.2f} R5 {100 * m['rank5']:.2f} mAP {100 * m['mAP']:.2f} "
        f"mINP {100 * m['mINP']:.2f}" for k, m in rows.items()), flush=True)
  if fv.out:
    with open(fv.out, "w") as f:
      json.dump(scores, f, indent=2)
      f.write("\n")


if __name__ == "__main__":
  main()
