"""Evaluation only: a trained run's Re-ID rows on any dataset config.

  python -m privreid_jax.evaluate --checkpoint=WORKDIR --config=configs/market.py \\
      --config.data.root=/data/Market-1501-v15.09.15 --output=OUT

Loads the latest checkpoint of WORKDIR and ranks the query split against the
gallery split of the dataset that --config describes, for every setting of
the run's method ("O->O"; method A: "O->O", "O->P", "P->O", "P->P", "R->O"),
exactly as training evaluates. Train on one dataset, test on another: the
model's image size and normalisation come from the checkpoint's config, the
dataset (data.name, data.root, ...) and the protocol (eval.distance,
eval.rerank, eval.max_rank) from --config. Without --config the run's own
config (its test split) is used.

The rows are printed and, with --output, written to OUT/eval_metrics.jsonl in
training's format (step, epoch, setting, rank1, rank5, rank10, mAP, mINP;
replacing an earlier file there) beside OUT/eval_info.json (checkpoint,
dataset, protocol). --config.eval.rerank=True switches on k-reciprocal
re-ranking (Zhong et al. 2017; memory O((Q+G)^2)). --settings=O->O,P->O
picks some settings.
"""

from __future__ import annotations

import json
import os

from privreid_jax import api


def _define(fv, argv):
  from absl import flags
  from privreid_jax import cli
  cli.define_run_flags(fv, argv, "Folder for eval_metrics.jsonl and eval_info.json "
                      "(created; not the run's own workdir).")
  flags.DEFINE_list("settings", [], "Settings to evaluate (default: all of the method's).",
                    flag_values=fv)
  flags.mark_flag_as_required("checkpoint", flag_values=fv)
  return fv


def run_folders(model: api.Model) -> set[str]:
  """The real paths of the folders whose eval_metrics.jsonl belongs to the run."""
  from privreid_jax import checkpoint
  out = set()
  for p in (model.path, checkpoint.run_folder(model.path)):
    real = os.path.realpath(p)
    out.add(real)
    if os.path.basename(real) == checkpoint.CHECKPOINT_DIR:
      out.add(os.path.dirname(real))
  return out


def check_output(output: str | None, model: api.Model | None = None) -> None:
  from privreid_jax import cli
  if not output:
    return
  problem = cli.output_folder_error("output", output)
  if problem:
    raise ValueError(problem)
  if model is not None and os.path.realpath(output) in run_folders(model):
    raise ValueError(f"--output={output} is the run's own folder: its training "
                     "eval_metrics.jsonl would be replaced; pick another folder")


def write_rows(output: str, model: api.Model, rows, info: dict) -> str:
  """OUT/eval_metrics.jsonl (training's row format, replaced) and OUT/eval_info.json."""
  from privreid_jax import metric_writers
  os.makedirs(output, exist_ok=True)
  path = os.path.join(output, metric_writers.EVAL_FILE)
  if os.path.exists(path):
    os.remove(path)
  writer = metric_writers.MetricWriter(output, tensorboard=False)
  for setting, metrics in rows.items():
    writer.eval_row(model.step, model.epoch, setting, metrics)
  writer.close()
  with open(os.path.join(output, "eval_info.json"), "w") as f:
    json.dump(info, f, indent=2)
    f.write("\n")
  return path


def evaluate(model: api.Model, config=None, settings=None):
  """(rows, info) of `model` on `config` (None: the run's own config)."""
  target = model.config if config is None else config
  chosen = model._settings(settings or None)  # pylint: disable=protected-access
  evaluator, splits, eval_cfg = model.evaluator(target)
  rows = evaluator.run(model.state, chosen)
  info = {"checkpoint": model.path, "step": model.step, "epoch": model.epoch,
          "method": model.config.method, "dataset": splits.name, "root": splits.root,
          "queries": len(splits.query), "gallery": len(splits.gallery),
          "distance": eval_cfg.distance, "rerank": bool(eval_cfg.rerank),
          "image_size": [model.height, model.width]}
  return rows, info


def main(argv=None) -> None:
  import sys
  from absl import flags
  argv = list(sys.argv if argv is None else argv)
  fv = _define(flags.FlagValues(), argv)
  api.parse_flags(fv, argv, __doc__)
  try:
    check_output(fv.output)
  except ValueError as e:
    api.fail(api.one_line(e))
  model = api.load_for_cli(fv.checkpoint)
  try:
    check_output(fv.output, model)
    rows, info = evaluate(model, fv.config, fv.settings)
    if fv.output:
      write_rows(fv.output, model, rows, info)
  except (FileNotFoundError, ValueError, OSError) as e:   # DatasetError is a ValueError
    api.fail(api.one_line(e))
  print(f"{info['dataset']} ({info['queries']} queries, {info['gallery']} gallery; "
        f"{info['distance']}{', re-ranked' if info['rerank'] else ''}), checkpoint "
        f"step {model.step}:")
  for setting, metrics in rows.items():
    print(f"{setting}: " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
  if fv.output:
    print(f"wrote {os.path.join(fv.output, 'eval_metrics.jsonl')}")


if __name__ == "__main__":
  main()
