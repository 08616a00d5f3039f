"""Orbax checkpoints: state, data-iterator state and run metadata, written atomically.

Orbax writes each step into a temporary folder and renames it when complete,
so a crash mid-save never corrupts the last good checkpoint.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpoints:
  """Keeps the last `keep` checkpoints under `directory`."""

  def __init__(self, directory: str, keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_names=("state", "data", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_state: dict, meta: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        meta=ocp.args.JsonSave(meta)))

  def restore(self, abstract_state: Any, step: int | None = None):
    """Returns (state, data_state, meta) of `step` (default: the latest)."""
    step = self.latest_step() if step is None else step
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))
    return out["state"], out["data"], out["meta"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_init(path: str, abstract_state: Any):
  """Params and batch stats from another run's latest checkpoint (config.checkpoint.init_file)."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"config.checkpoint.init_file: no checkpoint folder at {path}")
  ckpts = Checkpoints(path)
  if ckpts.latest_step() is None:
    raise FileNotFoundError(f"config.checkpoint.init_file: {path} holds no checkpoint")
  state, _, _ = ckpts.restore(abstract_state)
  ckpts.close()
  return state


def run_folder(workdir: str) -> str:
  """The checkpoint folder of a run's workdir (its `checkpoints/`), or the folder itself."""
  folder = os.path.join(workdir, "checkpoints")
  return folder if os.path.isdir(folder) else workdir


def restore_run(workdir: str, where: str):
  """(state tree as saved, config ConfigDict, step) of a run's latest checkpoint.

  `workdir` is a run's workdir (or its checkpoints folder); `where` names the
  flag or key that pointed here, for the one-line errors.
  """
  import ml_collections
  folder = run_folder(workdir)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{where}: no such folder")
  ckpts = Checkpoints(folder)
  step = ckpts.latest_step()
  if step is None:
    ckpts.close()
    raise FileNotFoundError(f"{where}: no checkpoint in {folder}")
  out = ckpts.manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  ckpts.close()
  return out["state"], ml_collections.ConfigDict(out["meta"]["config"]), step


def abstract_like(tree: Any, sharding) -> Any:
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def config_meta(config, **extra) -> dict:
  meta = {"config": json.loads(config.to_json_best_effort())}
  meta.update(extra)
  return meta
