"""The contract between a method and the shared trainer.

A method is a module under `privreid_jax/methods/` exporting `Method`, a class
built as `Method(config, num_classes=..., steps_per_epoch=...)` with:

- `init(rng, batch) -> TrainState`: networks, optimizer states (pure; jitted).
- `train_step(state, batch) -> (state, metrics)`: pure; the trainer jits,
  shards and donates it. Randomness comes from `state.step_rng()`.
- `embed(state, images, kind) -> features [B, D]`: pure retrieval features of
  `images` seen as `kind` (e.g. "raw", or "anon" for method A's G(O)).
- `eval_settings`: {setting name: (query kind, gallery kind)}, e.g. "O->P".
- `on_epoch_end(state, epoch, ctx) -> state` (optional host-side hook).
- `extra_metrics(state, ctx) -> {setting: {metric: value}}` (optional): more
  rows for eval_metrics.jsonl at every evaluation (PSNR/SSIM, DP sweeps,
  attacks); every privacy figure names its attack in the setting name.

and optionally a module-level `train_targets(config)` returning what the
pipeline's paired mode needs (a target function or a source), or None, and a
module-level `run(config, workdir)` that `main.py` calls instead of
`trainer.run` (a method running several trainer runs, e.g. method A's stages).
The trainer never branches on the method's name.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

import jax

from privreid_jax.train_state import TrainState


class Method:
  """Base class with the defaults; subclasses fill in the pure steps."""

  eval_settings: Mapping[str, tuple[str, str]] = {"O->O": ("raw", "raw")}

  def init(self, rng: jax.Array, batch: Mapping[str, Any]) -> TrainState:
    raise NotImplementedError

  def train_step(self, state: TrainState, batch: Mapping[str, Any]):
    raise NotImplementedError

  def embed(self, state: TrainState, images: jax.Array, kind: str) -> jax.Array:
    raise NotImplementedError

  def on_epoch_end(self, state: TrainState, epoch: int, ctx: Any) -> TrainState:
    del epoch, ctx
    return state


def load(name: str):
  """Imports `privreid_jax.methods.<name>` with a one-line error if unknown."""
  try:
    return importlib.import_module(f"privreid_jax.methods.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"privreid_jax.methods.{name}":
      raise
    raise ValueError(f"config.method={name!r}: no module privreid_jax/methods/{name}.py"
                     ) from None
