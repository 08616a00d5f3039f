"""Evaluator objects and their schedules (as big_vision's `config.evals`).

An evaluator is an object with `run(state, step) -> {setting: {metric: value}}`;
every row it returns goes to eval_metrics.jsonl and TensorBoard. A method
offers evaluators by name (`Method.evaluators`); `config.evals.<name>`
switches each on or off and gives its schedule:

  config.evals.<name>.enabled       False skips it
  config.evals.<name>.every_epochs  -1: with config.eval.every_epochs;
                                     0: only at the end of training;
                                     k: every k epochs and at the end

plus the evaluator's own options. Expensive evaluators (the attackers) run
only at the end by default.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Protocol

import ml_collections

Rows = dict[str, dict[str, float]]


class Evaluator(Protocol):
  def run(self, state: Any, step: int) -> Rows:
    ...


def section(enabled: bool = True, every_epochs: int = -1,
            **options: Any) -> ml_collections.ConfigDict:
  """One `config.evals.<name>` entry."""
  return ml_collections.ConfigDict(dict(enabled=enabled, every_epochs=every_epochs,
                                        **options))


@dataclasses.dataclass(frozen=True)
class Schedule:
  every_epochs: int          # 0: only at the end

  @classmethod
  def from_config(cls, ev_cfg, default_every: int, name: str) -> Schedule:
    every = int(ev_cfg.every_epochs)
    if every < -1:
      raise ValueError(f"config.evals.{name}.every_epochs={every}: expected -1 "
                       "(with config.eval.every_epochs), 0 (at the end) or > 0")
    return cls(int(default_every) if every == -1 else every)

  def due(self, epoch: int, last: bool) -> bool:
    return last or (self.every_epochs > 0 and epoch % self.every_epochs == 0)


class Ranking:
  """Re-ID ranking rows (CMC, mAP, mINP) of named (query kind, gallery kind)
  settings, with the features of a `ReidEvaluator`."""

  def __init__(self, reid_evaluator, settings: Mapping[str, tuple[str, str]],
               state_fn=None):
    self.reid, self.settings = reid_evaluator, dict(settings)
    self.state_fn = state_fn or (lambda state: state)

  def run(self, state: Any, step: int) -> Rows:
    del step
    return self.reid.run(self.state_fn(state), self.settings)
