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
only at the end by default. Every method offers `reid` (its settings on the
test split), `val` (the same on the validation identities when
config.data.val_fraction > 0; rows "val/O->O") and `targets` (the same settings
on other datasets: `config.evals.targets.datasets = ("viper", "market1501")`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Protocol

import ml_collections
from absl import logging

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


def _present(catalog, data_cfg, name: str) -> bool:
  """Whether dataset `name` is in its usual folder under data.root (or is data.name)."""
  if name == data_cfg.name:
    return True
  root = os.path.abspath(os.path.expanduser(data_cfg.root)) if data_cfg.root else ""
  subset = data_cfg.get("cuhk03_subset", "labeled")
  return any(catalog.usual_location(name, p, cuhk03_subset=subset) is not None
             for p in (root, os.path.dirname(root)) if p)


class CrossDataset:
  """The same ranking rows on other datasets' test splits (config.evals.targets):
  rows "<dataset>/<setting>", e.g. "viper/O->O". The datasets are opened when the
  evaluator is built (before training), so a missing one fails early."""

  def __init__(self, method, ctx, datasets, settings: Mapping[str, tuple[str, str]],
               skip_missing: bool = False):
    from privreid_jax.data import catalog, splits as data_splits
    from privreid_jax.evaluation.reid import ReidEvaluator
    self.settings = dict(settings)
    self.targets = {}
    data = ctx.config.data
    for name in datasets:
      if skip_missing and not _present(catalog, data, name):
        logging.warning("config.evals.targets: %s not found under %s: skipped", name,
                        data.root)
        continue
      splits = data_splits.open_eval_splits(data, name)
      self.targets[name] = ReidEvaluator(method, splits, ctx.config.data, ctx.config.eval,
                                         ctx.mesh)

  def run(self, state: Any, step: int) -> Rows:
    del step
    rows = {}
    for name, reid in self.targets.items():
      rows.update({f"{name}/{k}": v for k, v in reid.run(state, self.settings).items()})
    return rows


class Validation:
  """The same ranking rows on the validation identities held out of training
  (config.data.val_fraction > 0), or on new synthetic people drawn like the test
  split's (config.data.val_people_seed >= 0): rows "val/<setting>", e.g. "val/O->O". Choose
  epochs and hyper-parameters on these rows; the test split's rows (`reid`) can
  then be read once, at the end (config.evals.reid.every_epochs=0)."""

  def __init__(self, method, ctx, settings: Mapping[str, tuple[str, str]]):
    from privreid_jax.evaluation.reid import ReidEvaluator
    splits = ctx.splits
    val = dataclasses.replace(splits, query=splits.val_query, gallery=splits.val_gallery)
    self.settings = dict(settings)
    self.reid = ReidEvaluator(method, val, ctx.config.data, ctx.config.eval, ctx.mesh)

  def run(self, state: Any, step: int) -> Rows:
    del step
    return {f"val/{k}": v for k, v in self.reid.run(state, self.settings).items()}


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
