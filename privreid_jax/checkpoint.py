"""Orbax checkpoints: state, data-iterator state and run metadata, written atomically.

Orbax writes each step into a temporary folder and renames it when complete,
so a crash mid-save never corrupts the last good checkpoint. This module is the
only one that knows where a run keeps its checkpoints (`WORKDIR/checkpoints`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp

from privreid_jax import errors


CHECKPOINT_DIR = "checkpoints"


PARTIAL_MARK = ".orbax-checkpoint-tmp"     # orbax's name for a save in progress


def _remove_partial_saves(directory: str) -> None:
  """Deletes the temporary folders of saves that never completed (process 0)."""
  if jax.process_index() != 0 or not os.path.isdir(directory):
    return
  for name in os.listdir(directory):
    if PARTIAL_MARK in name:
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def _quiet_closed_loop_callbacks() -> None:
  """After a failed restore, tensorstore reads still in flight complete into
  orbax's event loop, already closed, and each prints an unraisable "Event loop
  is closed" traceback: noise after the one-line error, dropped from then on."""
  previous = sys.unraisablehook
  if getattr(previous, "_privreid_quiet", False):
    return

  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and "Event loop is closed" in str(unraisable.exc_value)):
      previous(unraisable)
  hook._privreid_quiet = True     # pylint: disable=protected-access
  sys.unraisablehook = hook


def _restore(manager, directory: str, step: int, args, where: str | None = None):
  """`manager.restore`, with a damaged or foreign checkpoint as one CheckpointError
  naming the step's folder (and `where`, the flag that pointed here)."""
  try:
    return manager.restore(step, args=args)
  except (KeyError, ValueError, OSError) as e:  # orbax, tensorstore, json
    _quiet_closed_loop_callbacks()
    reason = " ".join(str(e).split())
    reason = reason if len(reason) <= 200 else reason[:200] + "..."
    raise errors.CheckpointError(
        f"{where + ': ' if where else ''}checkpoint {os.path.join(directory, str(step))} "
        f"cannot be read ({reason}); move that folder away to use an earlier "
        "checkpoint") from None


class Checkpoints:
  """Keeps the last `keep` checkpoints under `directory`."""

  @classmethod
  def of_run(cls, workdir: str, keep: int = 3, writer: bool = False) -> Checkpoints:
    """The checkpoints of the run in `workdir` (`writer`: the run that saves there)."""
    return cls(os.path.join(workdir, CHECKPOINT_DIR), keep=keep, writer=writer)

  def __init__(self, directory: str, keep: int = 3, writer: bool = False):
    self.directory = os.path.abspath(directory)
    # A save cut short (kill -9 mid-checkpoint) leaves only a temporary folder,
    # never listed as a step. The run that writes here removes it, once and
    # synchronously; readers (anonymize, load, a driver) never touch it, as the
    # folder may be a save in progress. (orbax's own cleanup ran in the
    # background of every manager, and two managers on one folder raced.)
    if writer:
      _remove_partial_saves(self.directory)
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

  def read_meta(self, step: int | None = None) -> dict:
    """The run metadata (config, step, ...) of `step` (default: the latest)."""
    step = self.latest_step() if step is None else step
    out = _restore(self.manager, self.directory, step,
                   ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out["meta"] or {})

  def restore(self, abstract_state: Any, step: int | None = None):
    """Returns (state, data_state, meta) of `step` (default: the latest)."""
    step = self.latest_step() if step is None else step
    out = _restore(self.manager, self.directory, step, ocp.args.Composite(
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
  folder = os.path.join(workdir, CHECKPOINT_DIR)
  return folder if os.path.isdir(folder) else workdir


def latest_step(workdir: str) -> int | None:
  """The latest checkpointed step of the run in `workdir` (None: none yet)."""
  if not os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
    return None
  ckpts = Checkpoints.of_run(workdir)
  step = ckpts.latest_step()
  ckpts.close()
  return step


def restore_from_run(workdir: str, step: int, abstract_state: Any):
  """(state, data_state, meta) of another run's checkpoint at `step` (a driver
  continuing one run's training in a new workdir, e.g. method A's next stage)."""
  if not os.path.isdir(os.path.join(run_folder(workdir), str(step))):
    raise FileNotFoundError(f"{workdir}: no checkpoint at step {step}")
  ckpts = Checkpoints(run_folder(workdir))
  out = ckpts.restore(abstract_state, step)
  ckpts.close()
  return out


def alias_run(workdir: str, target_workdir: str) -> None:
  """Makes `workdir` read as the run in `target_workdir` (a relative link to its
  checkpoints), for the tools that open a workdir (anonymize, third party)."""
  link = os.path.join(workdir, CHECKPOINT_DIR)
  target = os.path.join(os.path.relpath(target_workdir, workdir), CHECKPOINT_DIR)
  if os.path.islink(link) and os.readlink(link) == target:
    return
  if os.path.islink(link):
    os.remove(link)
  elif os.path.exists(link):
    raise FileExistsError(f"{link} exists and is not a link to {target}: was this "
                          "workdir used by another run?")
  os.symlink(target, link)


def save_tree(path: str, tree: Any) -> None:
  """Saves a pytree of arrays on its own (e.g. a frozen teacher network)."""
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.abspath(path), tree)


def load_tree(path: str) -> Any:
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(os.path.abspath(path))


def restore_run(workdir: str, where: str):
  """(state tree as saved, config ConfigDict, step) of a run's latest checkpoint.

  `workdir` is a run's workdir (or its checkpoints folder); `where` names the
  flag or key that pointed here, for the one-line errors.
  """
  import ml_collections
  folder = run_folder(workdir)
  if os.path.isfile(folder):
    raise FileNotFoundError(f"{where}: a file, not a run's workdir (or its checkpoints/ "
                            "folder)")
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{where}: no such folder")
  ckpts = Checkpoints(folder)
  step = ckpts.latest_step()
  if step is None:
    ckpts.close()
    raise FileNotFoundError(f"{where}: no checkpoint in {folder}")
  try:
    out = _restore(ckpts.manager, folder, step, ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()), where)
  finally:
    ckpts.close()
  meta = out["meta"]
  if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
    raise errors.CheckpointError(f"{where}: checkpoint {os.path.join(folder, str(step))} "
                                 "holds no run config (not a privreid_jax checkpoint)")
  return out["state"], ml_collections.ConfigDict(meta["config"]), step


def abstract_like(tree: Any, sharding) -> Any:
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def config_meta(config, **extra) -> dict:
  meta = {"config": json.loads(config.to_json_best_effort())}
  meta.update(extra)
  return meta
