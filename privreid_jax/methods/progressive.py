"""Method A's progressive supervision as named, resumable stages (METHODS.md s.2).

The paper upgrades the supervision M of the anonymizer G during training: every
K epochs it checks, on a validation split of held-out training identities,
that G's images P are anonymous enough and that the Re-ID model still matches
them, and if so freezes G as the teacher, M = G_teacher(O) from then on.

Here each supervision is a **stage**, one trainer run in `WORKDIR/stage_<s>`:

* stage 0 trains on the handcrafted M (mosaic / blur / noise) from scratch;
* stage s > 0 continues stage s-1's training state (its last checkpoint,
  optimizer, schedule and data position are copied in) on the targets
  G_teacher(O) of stage s-1's teacher, stored once in
  `stage_<s>/targets` (ArrayRecord, `data/target_records.py`) and augmented at
  load time exactly like their images.

Inside a stage, `Monitor.on_epoch_end` (method A's epoch hook) runs the check
every `anon.stages.check_every_epochs` epochs and writes a `stage_check` row
(passed 0/1 with the measured values) to the stage's eval_metrics.jsonl. A
failed check keeps the current targets and says so in the log. A passing one
writes `upgrade_request.json` and asks the trainer to stop after this epoch;
the driver (`run`) then saves G as `stage_<s>/teacher`, marks the stage
`upgraded` in `stage_<s>/stage.json`, generates the next stage's targets and
starts it. The last stage (after `max_stages` upgrades) trains to the end.

The rule (with M the *handcrafted* desensitization of the validation images,
a fixed privacy anchor for every stage, [ours]):

  PSNR(O,P) < PSNR(O,M) + psnr_margin  and  SSIM(O,P) < SSIM(O,M) + ssim_margin
  and  val Rank-1 (raw val query vs G(O) val gallery) >= min_rank1
  and  val Rank-1 > the Rank-1 of the last upgrade.

Rerunning the driver skips upgraded stages, resumes an interrupted stage from
its checkpoints, and regenerates a stage's targets only when they are missing
or incomplete. `WORKDIR/stages.jsonl` logs every stage start and upgrade with
where its targets came from. When the last stage is done, `WORKDIR` also holds
every stage's evaluation rows and a `checkpoints` link to the last stage, so it
reads as one run (`python -m privreid_jax.anonymize --checkpoint WORKDIR`). Only the validation split is used for these
decisions, never the test split.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import time
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

STAGE_FILE = "stage.json"      # written when a stage is over: upgraded | finished
REQUEST_FILE = "upgrade_request.json"
TEACHER_DIR = "teacher"
TARGETS_DIR = "targets"
LOG_FILE = "stages.jsonl"
CHECK_SETTING = "stage_check"
VAL_SETTING = "val:O->P"


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


# --- the upgrade rule ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
  """The upgrade rule's thresholds (config.anon.stages)."""
  min_rank1: float
  psnr_margin: float
  ssim_margin: float

  @classmethod
  def from_config(cls, stages_cfg) -> Rule:
    return cls(float(stages_cfg.min_rank1), float(stages_cfg.psnr_margin),
               float(stages_cfg.ssim_margin))

  def failures(self, m: Mapping[str, float], last_rank1: float) -> list[str]:
    """Why measurement `m` does not allow an upgrade ([] = it does).

    `m` holds rank1 (validation O->P), psnr_P, psnr_M, ssim_P, ssim_M.
    """
    out = []
    if not m["psnr_P"] < m["psnr_M"] + self.psnr_margin:
      out.append(f"PSNR(O,P)={m['psnr_P']:.2f} >= PSNR(O,M)+{self.psnr_margin:g}="
                 f"{m['psnr_M'] + self.psnr_margin:.2f}")
    if not m["ssim_P"] < m["ssim_M"] + self.ssim_margin:
      out.append(f"SSIM(O,P)={m['ssim_P']:.3f} >= SSIM(O,M)+{self.ssim_margin:g}="
                 f"{m['ssim_M'] + self.ssim_margin:.3f}")
    if not m["rank1"] >= self.min_rank1:
      out.append(f"val Rank-1={m['rank1']:.3f} < min_rank1={self.min_rank1:g}")
    if not m["rank1"] > last_rank1:
      out.append(f"val Rank-1={m['rank1']:.3f} <= last upgrade's {last_rank1:.3f}")
    return out


def targets_origin(stage: int) -> str:
  """Where the targets of `stage` come from, for the logs."""
  return ("the handcrafted desensitization" if stage == 0
          else f"stage {stage - 1}'s teacher G")


class Monitor:
  """The check inside one stage's trainer run (called from method A's epoch hook)."""

  def __init__(self, config):
    st = config.anon.stages
    self.stage = int(st.index)
    self.every = int(st.check_every_epochs)
    self.max_stages = int(st.max_stages)
    self.last_rank1 = float(st.last_rank1)
    self.quality_images = int(st.quality_images)
    self.rule = Rule.from_config(st)
    self.epochs = int(config.optim.epochs)
    if self.every < 1:
      raise ValueError(f"config.anon.stages.check_every_epochs={self.every}: expected >= 1")
    self._evaluator = None

  def due(self, epoch: int) -> bool:
    """A check runs every `every` epochs, while upgrades are left, never at the end."""
    return (self.stage < self.max_stages and epoch % self.every == 0
            and epoch < self.epochs)

  def measure(self, method, state, ctx) -> dict[str, float]:
    """Validation Rank-1 (raw query vs G(O) gallery) and PSNR/SSIM of P and M."""
    from privreid_jax.evaluation.reid import ReidEvaluator
    if ctx.splits.val_query is None:
      raise ValueError("config.anon.stages.enabled needs a validation split: "
                       "set config.data.val_fraction > 0")
    if self._evaluator is None:
      self._evaluator = ReidEvaluator(method, ctx.splits.validation(), ctx.config.data,
                                      ctx.config.eval, ctx.mesh)
    val = self._evaluator.run(state, {VAL_SETTING: ("raw", "anon")})[VAL_SETTING]
    quality, _ = method.image_quality(state, ctx.splits.val_gallery.source,
                                      ctx.config.data, self.quality_images)
    return {"rank1": val["rank1"], "mAP": val["mAP"],
            **{k: quality[k] for k in ("psnr_P", "psnr_M", "ssim_P", "ssim_M")}}

  def on_epoch_end(self, method, state, epoch: int, ctx) -> None:
    if not self.due(epoch):
      return
    step = int(state.step)
    m = self.measure(method, state, ctx)
    reasons = self.rule.failures(m, self.last_rank1)
    ctx.writer.eval_row(step, epoch, CHECK_SETTING,
                        {**m, "stage": self.stage, "passed": float(not reasons),
                         "last_rank1": self.last_rank1})
    values = " ".join(f"{k}={v:.4f}" for k, v in m.items())
    if reasons:
      logging.info("stage %d check at epoch %d failed (%s): keeping the targets of %s "
                   "[%s]", self.stage, epoch, "; ".join(reasons),
                   targets_origin(self.stage), values)
      return
    logging.info("stage %d check at epoch %d passed: G becomes the teacher of stage %d "
                 "[%s]", self.stage, epoch, self.stage + 1, values)
    if jax.process_index() == 0:
      _write_json(os.path.join(ctx.workdir, REQUEST_FILE),
                  {"stage": self.stage, "step": step, "epoch": epoch, **m})
    ctx.stop = True


# --- teacher and targets ------------------------------------------------------------------


def save_teacher(sdir: str, step: int) -> str:
  """Saves G (params, batch stats) of stage `sdir`'s checkpoint at `step` as its teacher."""
  import orbax.checkpoint as ocp
  from privreid_jax import checkpoint
  path = os.path.join(sdir, TEACHER_DIR)
  if os.path.isdir(path):
    return path
  state, _, saved = checkpoint.restore_run(sdir, f"stage {sdir}")
  if saved != step:
    raise RuntimeError(f"{sdir}: latest checkpoint is step {saved}, the upgrade was "
                       f"requested at step {step}")
  teacher = {"params": state["params"]["G"], "batch_stats": state["batch_stats"]["G"]}
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, teacher)
  return path


def load_teacher(path: str) -> dict:
  import orbax.checkpoint as ocp
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(os.path.abspath(path))


def generate_targets(config, teacher_path: str, out_dir: str,
                     provenance: Mapping[str, Any]) -> dict:
  """Writes G_teacher(O) of every training image (resized, unaugmented) to `out_dir`.

  The images are those of the training split `config.data` opens (the
  validation identities held out), in source order, as uint8 PNGs in an
  ArrayRecord file. Returns the target set's meta.
  """
  from privreid_jax.data import pipeline, splits as data_splits, target_records
  from privreid_jax.methods import anonymization
  splits = data_splits.open_splits(config.data)
  method = anonymization.Method(config, num_classes=splits.num_train_pids,
                                steps_per_epoch=1)
  teacher = jax.tree.map(np.asarray, load_teacher(teacher_path))
  mean, std = method.mean, method.std
  fn = jax.jit(lambda v, x: anonymization._to_unit(method.gen.apply(v, x, train=False),
                                                   mean, std))
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


def _seed_checkpoint(prev_dir: str, sdir: str, step: int) -> None:
  """Copies stage s-1's checkpoint at `step` into stage s, which resumes from it."""
  from privreid_jax import checkpoint
  dst_root = os.path.join(sdir, "checkpoints")
  if os.path.isdir(dst_root):
    ckpts = checkpoint.Checkpoints(dst_root)
    latest = ckpts.latest_step()
    ckpts.close()
    if latest is not None:
      return
  src = os.path.join(prev_dir, "checkpoints", str(step))
  if not os.path.isdir(src):
    raise FileNotFoundError(f"{prev_dir}: no checkpoint at the upgrade step {step}")
  tmp = os.path.join(sdir, f".seed_{step}")
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(src, tmp)
  os.makedirs(dst_root, exist_ok=True)
  os.rename(tmp, os.path.join(dst_root, str(step)))


def _latest_step(sdir: str) -> int | None:
  from privreid_jax import checkpoint
  root = os.path.join(sdir, "checkpoints")
  if not os.path.isdir(root):
    return None
  ckpts = checkpoint.Checkpoints(root)
  latest = ckpts.latest_step()
  ckpts.close()
  return latest


def _publish(workdir: str, last: int) -> None:
  """Makes WORKDIR look like one finished run to the tools that read a workdir.

  WORKDIR/eval_metrics.jsonl = every stage's rows in stage order (steps keep
  counting across stages; stages.jsonl has the boundaries), and
  WORKDIR/checkpoints links to the last stage's checkpoints (the anonymize
  CLI, third-party runs and the sweep tools read it).
  """
  from privreid_jax import metric_writers
  lines = []
  for s in range(last + 1):
    lines += [json.dumps(r) for r in metric_writers.read_eval_rows(stage_dir(workdir, s))]
  path = os.path.join(workdir, metric_writers.EVAL_FILE)
  with open(path + ".tmp", "w") as f:
    f.write("".join(line + "\n" for line in lines))
  os.replace(path + ".tmp", path)
  link = os.path.join(workdir, "checkpoints")
  target = os.path.join(os.path.basename(stage_dir(workdir, last)), "checkpoints")
  if os.path.islink(link) and os.readlink(link) == target:
    return
  if os.path.islink(link):
    os.remove(link)
  elif os.path.exists(link):
    raise FileExistsError(f"{link} exists and is not the link to the last stage's "
                          "checkpoints: was this workdir used by a run without stages?")
  os.symlink(target, link)


# --- the driver ------------------------------------------------------------------------------


def _check_config(config) -> None:
  a = config.anon
  if a.mode != "learned":
    raise ValueError(f"config.anon.stages.enabled needs config.anon.mode='learned', "
                     f"got {a.mode!r}")
  if not float(config.data.val_fraction) > 0.0:
    raise ValueError("config.anon.stages.enabled needs a validation split: "
                     "set config.data.val_fraction > 0 (e.g. 0.2)")
  if a.targets_dir:
    raise ValueError(f"config.anon.targets_dir={a.targets_dir!r}: the stages set it "
                     "themselves; leave it empty with config.anon.stages.enabled")
  if int(a.stages.max_stages) < 0:
    raise ValueError(f"config.anon.stages.max_stages={a.stages.max_stages}: expected >= 0")
  if jax.process_count() > 1:
    raise ValueError("config.anon.stages.enabled: the stage driver runs on one process "
                     f"only, this run has {jax.process_count()}")


def stage_config(config, stage: int, last_rank1: float, targets_dir: str):
  """The config of one stage's trainer run (recorded in its checkpoints' meta)."""
  c = copy.deepcopy(config)
  c.anon.stages.index = stage
  c.anon.stages.last_rank1 = float(last_rank1)
  c.anon.targets_dir = targets_dir
  return c


def run(config, workdir: str) -> dict[str, dict[str, float]]:
  """Trains method A stage by stage (see the module docstring).

  Without `config.anon.stages.enabled` this is one plain trainer run (the "w/o
  upgrade" setting, and Base). Returns the last stage's final evaluation.
  """
  from privreid_jax import trainer
  from privreid_jax.data import target_records
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
    targets_dir = ""
    if s > 0:
      targets_dir = os.path.join(sdir, TARGETS_DIR)
      base_cfg = stage_config(config, s, last_rank1, "")
      if not target_records.is_complete(targets_dir):
        shutil.rmtree(targets_dir, ignore_errors=True)
        teacher = os.path.join(stage_dir(workdir, s - 1), TEACHER_DIR)  # workdir may move
        generate_targets(base_cfg, teacher, targets_dir, {
            "stage": s, "teacher_stage": s - 1, "teacher_step": prev["step"],
            "origin": targets_origin(s)})
      _seed_checkpoint(stage_dir(workdir, s - 1), sdir, int(prev["step"]))
    cfg = stage_config(config, s, last_rank1, targets_dir)
    request_path = os.path.join(sdir, REQUEST_FILE)
    request = _read_json(request_path)
    results: dict = {}
    if request is not None and _latest_step(sdir) == request["step"]:
      logging.info("stage %d: its run already stopped for an upgrade at step %d",
                   s, request["step"])
    else:
      if request is not None:       # from an interrupted run that did not save
        os.remove(request_path)
      if done is None:
        logging.info("stage %d: training on the targets of %s%s", s, targets_origin(s),
                     f" ({targets_dir})" if targets_dir else "")
        _log_event(workdir, {"event": "start", "stage": s, "targets": targets_dir or
                             cfg.anon.desensitize, "origin": targets_origin(s),
                             "resume_step": _latest_step(sdir)})
      else:                         # the trainer returns its last evaluation
        logging.info("stage %d: already trained to the end (step %s)", s, done["step"])
      results = trainer.run(cfg, sdir)
      request = _read_json(request_path)
    if request is None:
      end = {"status": "finished", "stage": s, "step": _latest_step(sdir)}
      if done != end:
        _write_json(os.path.join(sdir, STAGE_FILE), end)
        _log_event(workdir, {"event": "finished", **end})
        logging.info("stage %d: trained to the end (step %s)", s, end["step"])
      _publish(workdir, s)
      return results
    teacher = save_teacher(sdir, int(request["step"]))
    prev = {**request, "status": "upgraded", "teacher": teacher}
    _write_json(os.path.join(sdir, STAGE_FILE), prev)
    _log_event(workdir, {"event": "upgraded", **prev})
    last_rank1 = float(request["rank1"])
  raise AssertionError("unreachable: the last stage never requests an upgrade")
