"""A run's evaluation rounds: when one is due, running it, and whether it completed.

A round evaluates one state at an epoch boundary with every evaluator the config
enables whose schedule is due then (`evaluation/base.py`'s `Schedule`); they
share the run's Re-ID evaluator, whose cached features are cleared before and
after. Its rows go to eval_metrics.jsonl, then `round_done` records the step as
evaluated, so a round cut short is run again on resume (`EvalRounds.completed`).
Non-finite features or distances stop the run with `errors.NonFiniteLossError`,
naming the step; the trainer saved its checkpoint before the round.
"""

from __future__ import annotations

import time

import numpy as np
from absl import logging

from privreid_jax import errors, metric_writers
from privreid_jax.evaluation import base as eval_base
from privreid_jax.evaluation.reid import ReidEvaluator
from privreid_jax.methods.base import RunContext


class FiniteFeatures(ReidEvaluator):
  """The run's Re-ID evaluator, refusing non-finite features (named by step)."""

  step: int = -1

  def features(self, state, split: str, kind: str) -> np.ndarray:
    out = super().features(state, split, kind)
    if not np.all(np.isfinite(out)):
      raise errors.NonFiniteLossError(
          f"the {split} features ({kind} images) hold NaN or inf at step {self.step}: "
          f"stopping; the checkpoint of step {self.step} was written before this "
          "evaluation")
    return out


def enabled_evaluators(method, ctx: RunContext):
  """[(name, evaluator, schedule)] of the method's evaluators enabled in config.evals."""
  config = ctx.config
  offered = method.evaluators(ctx)
  unknown = [name for name in config.evals.keys() if name not in offered]
  if unknown:
    raise ValueError(f"config.evals.{unknown[0]}: method {config.method!r} offers "
                     f"{', '.join(offered)}")
  out = []
  for name, factory in offered.items():
    ev_cfg = config.evals.get(name)
    if ev_cfg is None or not ev_cfg.enabled:
      continue
    schedule = eval_base.Schedule.from_config(ev_cfg, config.eval.every_epochs, name)
    evaluator = factory(ev_cfg)        # None: nothing to evaluate with these options
    if evaluator is not None:
      out.append((name, evaluator, schedule))
  return out


def rows_at(workdir: str, step: int) -> dict[str, dict[str, float]]:
  """The evaluation rows eval_metrics.jsonl holds for `step`."""
  return {r["setting"]: {k: v for k, v in r.items() if k not in ("step", "epoch", "setting")}
          for r in metric_writers.read_eval_rows(workdir) if r["step"] == step}


class EvalRounds:
  """The evaluation rounds of one run.

  Args:
    evaluators: [(name, evaluator, schedule)], as `enabled_evaluators` returns.
    evaluator: the run's `FiniteFeatures` (the features the evaluators share).
    writer: the run's `metric_writers.MetricWriter`.
    workdir: the run's workdir (where earlier processes recorded their rounds).
    steps_per_epoch: the run's steps per epoch (rounds fall on epoch boundaries).
  """

  def __init__(self, evaluators, evaluator: FiniteFeatures,
               writer: metric_writers.MetricWriter, workdir: str, steps_per_epoch: int):
    self.evaluators = evaluators
    self.evaluator = evaluator
    self.writer = writer
    self.workdir = workdir
    self.steps_per_epoch = steps_per_epoch

  def due(self, step: int, last: bool) -> bool:
    """Does a round fall on `step` (`last`: the end of training)?"""
    return step > 0 and step % self.steps_per_epoch == 0 and any(
        schedule.due(step // self.steps_per_epoch, last)
        for _, _, schedule in self.evaluators)

  def completed(self, step: int) -> bool:
    """Did the evaluation round of `step` complete (in an earlier process)?"""
    done = metric_writers.evaluated_steps(self.workdir)
    return step in done if done is not None else bool(rows_at(self.workdir, step))

  def run(self, state, step: int, last: bool) -> dict:
    """Evaluates `state` with the evaluators due at `step`: {setting: metrics}
    (empty when none is due)."""
    t0 = time.time()
    epoch = step // self.steps_per_epoch
    self.evaluator.clear()
    self.evaluator.step = step
    results = {}
    ran = False
    for name, ev, schedule in self.evaluators:
      if not schedule.due(epoch, last):
        continue
      ran = True
      try:
        rows = ev.run(state, step)
      except ValueError as e:     # NaN distances or features met outside FiniteFeatures
        if "nan" not in str(e).lower() and "infinite" not in str(e).lower():
          raise
        raise errors.NonFiniteLossError(
            f"evaluation {name!r} at step {step}: {errors.describe(e)}: stopping; the "
            f"checkpoint of step {step} was written before it") from None
      for setting, metrics in rows.items():
        self.writer.eval_row(step, epoch, setting, metrics)
        logging.info("eval step %d %s: %s", step, setting,
                     " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
      results.update(rows)
    self.evaluator.clear()
    if ran:
      self.writer.round_done(step)
    if results:
      logging.info("evaluation took %.1fs", time.time() - t0)
    return results
