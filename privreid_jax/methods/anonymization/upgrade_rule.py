"""When method A's supervision is upgraded: the stage a run is in, the rule, the check.

The check runs inside one stage's trainer run (method A's epoch hook) every
`anon.stages.check_every_epochs` epochs, on the validation split (held-out
training identities, never the test split), and writes a `stage_check` row
(passed 0/1 with the measured values). PSNR and SSIM are measured as the
reference code does (`anon.stages.metrics`, evaluators.py) on the whole val
gallery (`anon.stages.quality_images = 0`). The rule, with M the *handcrafted*
desensitization of the validation images (a fixed privacy anchor for every
stage, [ours]):

  PSNR(O,P) < PSNR(O,M) + psnr_margin  and  SSIM(O,P) < SSIM(O,M) + ssim_margin
  and  val Rank-1 (raw val query vs G(O) val gallery) >= min_rank1
  and  val Rank-1 > the Rank-1 of the last upgrade.

A passing check asks the trainer to stop (`ctx.request_stop`) with the
measurement; the stage driver (`stages.py`) takes it from there.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from absl import logging

from privreid_jax import errors
from privreid_jax.evaluation.reid import ReidEvaluator

CHECK_SETTING = "stage_check"
VAL_SETTING = "val:O->P"


@dataclasses.dataclass(frozen=True)
class Stage:
  """Which supervision one trainer run uses (passed as `options["stage"]`)."""
  index: int = 0                 # 0: the handcrafted M; s > 0: stage s-1's teacher
  last_rank1: float = -1.0       # val Rank-1 of the last upgrade
  targets_dir: str = ""          # stored G_teacher(O) targets (stage s > 0)


def origin(stage: int) -> str:
  """Where the targets of `stage` come from, for the logs."""
  return ("the handcrafted desensitization" if stage == 0
          else f"stage {stage - 1}'s teacher G")


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


class StageCheck:
  """The upgrade check of one stage's run (called from method A's epoch hook)."""

  def __init__(self, config, stage: Stage, quality):
    st = config.anon.stages
    self.stage = stage
    self.every = int(st.check_every_epochs)
    self.max_stages = int(st.max_stages)
    self.quality_images = int(st.quality_images)
    self.metrics = str(st.metrics)
    self.rule = Rule.from_config(st)
    self.epochs = int(config.optim.epochs)
    self.quality = quality        # evaluators.ImageQuality of the method
    if self.every < 1:
      raise errors.ConfigError(f"config.anon.stages.check_every_epochs={self.every}: "
                               "expected >= 1")
    self._evaluator = None

  def due(self, epoch: int) -> bool:
    """A check runs every `every` epochs, while upgrades are left, never at the end."""
    return (self.stage.index < self.max_stages and epoch % self.every == 0
            and epoch < self.epochs)

  def measure(self, method, state, ctx) -> dict[str, float]:
    """Validation Rank-1 (raw query vs G(O) gallery) and PSNR/SSIM of P and M."""
    if ctx.splits.val_query is None:
      raise errors.ConfigError("config.anon.stages.enabled needs a validation split: "
                               "set config.data.val_fraction > 0, or "
                               "config.data.val_people_seed >= 0 on synthetic data")
    if self._evaluator is None:
      self._evaluator = ReidEvaluator(method, ctx.splits.validation(), ctx.config.data,
                                      ctx.config.eval, ctx.mesh)
    val = self._evaluator.run(state, {VAL_SETTING: ("raw", "anon")})[VAL_SETTING]
    quality, _ = self.quality.measure(state, ctx.splits.val_gallery.source,
                                      self.quality_images, self.metrics)
    return {"rank1": val["rank1"], "mAP": val["mAP"],
            **{k: quality[k] for k in ("psnr_P", "psnr_M", "ssim_P", "ssim_M")}}

  def on_epoch_end(self, method, state, epoch: int, ctx) -> None:
    if not self.due(epoch):
      return
    step = int(state.step)
    index, last_rank1 = self.stage.index, self.stage.last_rank1
    m = self.measure(method, state, ctx)
    reasons = self.rule.failures(m, last_rank1)
    ctx.writer.eval_row(step, epoch, CHECK_SETTING,
                        {**m, "stage": index, "passed": float(not reasons),
                         "last_rank1": last_rank1})
    values = " ".join(f"{k}={v:.4f}" for k, v in m.items())
    if reasons:
      logging.info("stage %d check at epoch %d failed (%s): keeping the targets of %s "
                   "[%s]", index, epoch, "; ".join(reasons), origin(index), values)
      return
    logging.info("stage %d check at epoch %d passed: G becomes the teacher of stage %d "
                 "[%s]", index, epoch, index + 1, values)
    ctx.request_stop({"stage": index, "step": step, "epoch": epoch, **m})
