"""The contract between a method and the shared trainer: every hook it calls.

A method is a package or module under `privreid_jax/methods/` exporting a
`Method` class (a subclass of `Method` below). The trainer and `main.py` call
exactly the hooks declared here and never branch on the method's name:

- `Method.train_targets(config, options)` (classmethod): what the pipeline's
  paired mode needs (a picklable target function or a target source), or None.
- `Method.driver`: None, or a function `(config, workdir) -> RunResult` that
  `main.py` calls instead of `trainer.run` (method A's progressive stages run
  several trainer runs).
- `Method(config, num_classes=..., steps_per_epoch=..., options=...)`.
- `init(rng, batch) -> TrainState` and `train_step(state, batch) -> (state,
  metrics)`: pure; the trainer jits, shards and donates them. Randomness comes
  from `state.step_rng()`.
- `embed(state, images, kind) -> [B, D]`: retrieval features of `images` seen
  as `kind` ("raw", or "anon" for method A's G(O)).
- `eval_settings`: {setting: (query kind, gallery kind)}, e.g. "O->P".
- `evaluators(ctx) -> {name: factory}`: the evaluators this method offers;
  `config.evals.<name>` enables and schedules each (see evaluation/base.py).
- `on_epoch_end(state, epoch, ctx) -> state`: host-side hook; it may call
  `ctx.request_stop(info)` to end the run after this epoch.

`options` carries what a driver passes to one trainer run (method A: its
stage); plain runs get an empty mapping. Nothing about a run is written into
its config.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping

import jax

from privreid_jax.evaluation import base as eval_base
from privreid_jax.evaluation.reid import ReidEvaluator
from privreid_jax.train_state import TrainState


@dataclasses.dataclass
class RunContext:
  """What the trainer hands to a method's hooks and evaluators.

  `evaluator` is the run's Re-ID evaluator on the test splits; its cached
  features are shared by every evaluator of one evaluation round.
  """
  config: Any
  workdir: str
  splits: Any
  evaluator: ReidEvaluator
  writer: Any
  mesh: Any
  stop_info: dict | None = None

  def request_stop(self, info: Mapping[str, Any]) -> None:
    """Ends the run after this epoch: it is checkpointed (with `info` in the
    checkpoint's meta) and `trainer.run` returns a result with `stop_info`."""
    self.stop_info = dict(info)


@dataclasses.dataclass
class RunResult:
  """What a finished (or stopped) trainer run produced."""
  metrics: dict[str, dict[str, float]]   # the last evaluation {setting: metrics}
  workdir: str
  step: int                              # the step of the last checkpoint
  stop_info: dict | None = None          # set when a hook requested the stop


Factory = Callable[[Any], eval_base.Evaluator]   # config.evals.<name> -> evaluator


class Method:
  """Base class with the defaults; subclasses fill in the pure steps."""

  eval_settings: Mapping[str, tuple[str, str]] = {"O->O": ("raw", "raw")}
  driver: Callable[[Any, str], RunResult] | None = None

  def __init__(self, config, *, num_classes: int, steps_per_epoch: int,
               options: Mapping[str, Any] | None = None):
    del config, num_classes, steps_per_epoch, options

  @classmethod
  def train_targets(cls, config, options: Mapping[str, Any] | None = None):
    del config, options
    return None

  def init(self, rng: jax.Array, batch: Mapping[str, Any]) -> TrainState:
    raise NotImplementedError

  def train_step(self, state: TrainState, batch: Mapping[str, Any]):
    raise NotImplementedError

  def embed(self, state: TrainState, images: jax.Array, kind: str) -> jax.Array:
    raise NotImplementedError

  def evaluators(self, ctx: RunContext) -> dict[str, Factory]:
    """The Re-ID ranking of `eval_settings` on the test splits and other datasets."""
    return shared_evaluators(self, ctx)

  def on_epoch_end(self, state: TrainState, epoch: int, ctx: RunContext) -> TrainState:
    del epoch, ctx
    return state


def shared_evaluators(method: Method, ctx: RunContext) -> dict[str, Factory]:
  """What every method offers: `reid` (its settings on the test split), `val`
  (the same on the validation identities, when data.val_fraction > 0) and
  `targets` (the same on the datasets of config.evals.targets.datasets)."""
  return {
      "reid": lambda cfg: eval_base.Ranking(ctx.evaluator, method.eval_settings),
      "val": lambda cfg: (eval_base.Validation(method, ctx, method.eval_settings)
                          if ctx.splits.val_query is not None else None),
      "targets": lambda cfg: (eval_base.CrossDataset(method, ctx, cfg.datasets,
                                                     method.eval_settings,
                                                     cfg.skip_missing)
                              if cfg.datasets else None),
  }


def load(name: str) -> type[Method]:
  """The `Method` class of `privreid_jax.methods.<name>` (one-line error if unknown)."""
  try:
    module = importlib.import_module(f"privreid_jax.methods.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"privreid_jax.methods.{name}":
      raise
    raise ValueError(f"config.method={name!r}: no method privreid_jax/methods/{name}"
                     ) from None
  return module.Method
