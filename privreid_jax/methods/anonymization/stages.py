"""Method A's progressive supervision as named, resumable stages (the driver).

The paper upgrades the supervision M of the anonymizer G during training:
every K epochs it checks, on held-out training identities, that G's images P
are anonymous enough and that the Re-ID model still matches them, and if so
freezes G as the teacher, M = G_teacher(O) from then on (`upgrade_rule.py`).

Here each supervision is a **stage**, one trainer run in `WORKDIR/stage_<s>`:

* stage 0 trains on the handcrafted M (mosaic / blur / noise) from scratch;
* stage s > 0 continues stage s-1's training state (its checkpoint at the
  upgrade: networks, optimizer, schedule and data position) on the targets
  G_teacher(O) of stage s-1's teacher, stored once in `stage_<s>/targets`
  (ArrayRecord, `data/target_records.py`) and augmented like their images.

A passing check stops the stage's run (`ctx.request_stop`); the trainer saves
the stop with the checkpoint and returns it, and the driver saves G as
`stage_<s>/teacher`, marks the stage `upgraded` in `stage_<s>/stage.json`,
generates the next stage's targets and starts it. The last stage (after
`max_stages` upgrades) trains to the end. Stage state reaches each run as
`options["stage"]`, never through the config.

Rerunning skips upgraded stages, resumes an interrupted stage from its
checkpoints, and regenerates a stage's targets only when they are missing or
incomplete. `WORKDIR/stages.jsonl` logs every stage start and upgrade with
where its targets came from. When the last stage is done, `WORKDIR` also holds
every stage's evaluation rows and reads as the last stage's run
(`python -m privreid_jax.anonymize --checkpoint WORKDIR`). Only the validation
split is used for these decisions, never the test split.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

from privreid_jax import checkpoint, errors, metric_writers, trainer
from privreid_jax.data import pipeline, splits as data_splits, target_records
from privreid_jax.methods.anonymization import networks
from privreid_jax.methods.anonymization.upgrade_rule import Stage, origin
from privreid_jax.ops import normalize

STAGE_FILE = "stage.json"      # written when a stage is over: upgraded | finished
TEACHER_DIR = "teacher"
TARGETS_DIR = "targets"
LOG_FILE = "stages.jsonl"


def stage_dir(workdir: str, stage: int) -> str:
  return os.path.join(workdir, f"stage_{stage}")


def _read_json(path: str) -> dict | None:
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, value: Mapping[str, Any]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(dict(value), f, indent=1)
  os.replace(tmp, path)


def _log_event(workdir: str, event: Mapping[str, Any]) -> None:
  with open(os.path.join(workdir, LOG_FILE), "a") as f:
    f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **event}) + "\n")


# --- teacher and targets -------------------------------------------------------------


def save_teacher(sdir: str, step: int) -> str:
  """Saves G (params, batch stats) of stage `sdir`'s checkpoint at `step` as its teacher."""
  path = os.path.join(sdir, TEACHER_DIR)
  if os.path.isdir(path):
    return path
  state, _, saved = checkpoint.restore_run(sdir, f"stage {sdir}")
  if saved != step:
    raise RuntimeError(f"{sdir}: latest checkpoint is step {saved}, the upgrade was "
                       f"requested at step {step}")
  checkpoint.save_tree(path, {"params": state["params"]["G"],
                              "batch_stats": state["batch_stats"]["G"]})
  return path


def generate_targets(config, teacher_path: str, out_dir: str,
                     provenance: Mapping[str, Any]) -> dict:
  """Writes G_teacher(O) of every training image (resized, unaugmented) to `out_dir`.

  The images are those of the training split `config.data` opens (the
  validation identities held out), in source order, as uint8 PNGs in an
  ArrayRecord file. Returns the target set's meta.
  """
  splits = data_splits.open_splits(config.data)
  gen = networks.generator(config)
  teacher = jax.tree.map(np.asarray, checkpoint.load_tree(teacher_path))
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  fn = jax.jit(lambda v, x: normalize.to_unit(gen.apply(v, x, train=False), mean, std))
  source = splits.train.source

  def images():
    expected = 0
    for batch in pipeline.eval_loader(source, config.data):
      p01 = np.asarray(fn(teacher, batch["image"]))
      for row in np.flatnonzero(batch["mask"]):
        if int(batch["index"][row]) != expected:
          raise RuntimeError(f"target generation: got item {batch['index'][row]}, "
                             f"expected {expected}")
        expected += 1
        yield np.round(np.clip(p01[row], 0.0, 1.0) * 255.0).astype(np.uint8)

  t0 = time.time()
  meta = target_records.write(out_dir, images(), {
      **provenance, "teacher": os.path.abspath(teacher_path),
      "train_images": len(source), "num_train_pids": splits.num_train_pids})
  logging.info("wrote %d targets of %s to %s in %.1fs", meta["num_images"],
               provenance.get("origin", "the teacher"), out_dir, time.time() - t0)
  return meta


def _publish(workdir: str, last: int) -> None:
  """Makes WORKDIR read as one finished run: every stage's rows in stage order
  (steps keep counting across stages; stages.jsonl has the boundaries) and the
  last stage's checkpoints."""
  metric_writers.merge_eval_rows(workdir, [stage_dir(workdir, s) for s in range(last + 1)])
  checkpoint.alias_run(workdir, stage_dir(workdir, last))


# --- the driver ------------------------------------------------------------------------


def _check_config(config) -> None:
  """ConfigErrors (one line from main) for the stage driver's needs."""
  a = config.anon
  if a.mode != "learned":
    raise errors.ConfigError("config.anon.stages.enabled needs config.anon.mode="
                             f"'learned', got {a.mode!r}")
  if not (float(config.data.val_fraction) > 0.0
          or int(config.data.get("val_people_seed", -1)) >= 0):
    raise errors.ConfigError("config.anon.stages.enabled needs a validation split: "
                             "set config.data.val_fraction > 0 (e.g. 0.2), or "
                             "config.data.val_people_seed >= 0 on synthetic data")
  if int(a.stages.max_stages) < 0:
    raise errors.ConfigError(f"config.anon.stages.max_stages={a.stages.max_stages}: "
                             "expected >= 0")
  if jax.process_count() > 1:
    raise errors.ConfigError("config.anon.stages.enabled: the stage driver runs on one "
                             f"process only, this run has {jax.process_count()}")


def run(config, workdir: str) -> trainer.RunResult:
  """Trains method A stage by stage (see the module docstring).

  Without `config.anon.stages.enabled` this is one plain trainer run (the "w/o
  upgrade" setting, and Base). Returns the last stage's result.
  """
  if not config.anon.stages.enabled:
    return trainer.run(config, workdir)
  _check_config(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  prev: dict | None = None
  last_rank1 = -1.0
  for s in range(int(config.anon.stages.max_stages) + 1):
    sdir = stage_dir(workdir, s)
    os.makedirs(sdir, exist_ok=True)
    done = _read_json(os.path.join(sdir, STAGE_FILE))
    if done is not None and done["status"] == "upgraded":
      logging.info("stage %d: already upgraded at step %d (val Rank-1 %.4f), skipping",
                   s, done["step"], done["rank1"])
      prev, last_rank1 = done, float(done["rank1"])
      continue
    targets_dir, resume_from = "", None
    if s > 0:
      targets_dir = os.path.join(sdir, TARGETS_DIR)
      if not target_records.is_complete(targets_dir):
        shutil.rmtree(targets_dir, ignore_errors=True)
        teacher = os.path.join(stage_dir(workdir, s - 1), TEACHER_DIR)  # workdir may move
        generate_targets(config, teacher, targets_dir, {
            "stage": s, "teacher_stage": s - 1, "teacher_step": prev["step"],
            "origin": origin(s)})
      resume_from = (stage_dir(workdir, s - 1), int(prev["step"]))
    if done is None and checkpoint.latest_step(sdir) is None:
      logging.info("stage %d: training on the targets of %s%s", s, origin(s),
                   f" ({targets_dir})" if targets_dir else "")
      _log_event(workdir, {"event": "start", "stage": s, "targets": targets_dir or
                           config.anon.desensitize, "origin": origin(s),
                           "resume_step": resume_from[1] if resume_from else None})
    stage = Stage(index=s, last_rank1=last_rank1, targets_dir=targets_dir)
    result = trainer.run(config, sdir, options={"stage": stage}, resume_from=resume_from)
    if result.stop_info is None:
      end = {"status": "finished", "stage": s, "step": result.step}
      if done != end:
        _write_json(os.path.join(sdir, STAGE_FILE), end)
        _log_event(workdir, {"event": "finished", **end})
        logging.info("stage %d: trained to the end (step %s)", s, end["step"])
      _publish(workdir, s)
      return result
    request = result.stop_info
    teacher = save_teacher(sdir, int(request["step"]))
    prev = {**request, "status": "upgraded", "teacher": teacher}
    _write_json(os.path.join(sdir, STAGE_FILE), prev)
    _log_event(workdir, {"event": "upgraded", **prev})
    last_rank1 = float(request["rank1"])
  raise AssertionError("unreachable: the last stage never requests an upgrade")
