"""The shared trainer: data, mesh, jit, checkpoints, logging, evaluation schedule.

`run(config, workdir)` trains `config.method` (a method under methods/) and
never branches on its name; it calls only the hooks `methods/base.py`
declares. Resume order (big_vision's, `_initial_state`): a checkpoint in the
workdir, else the driver's `resume_from` (another run's checkpoint), else
`config.checkpoint.init_file`, else from scratch. At each checkpoint boundary
the state is saved (`_Saver`) before the evaluators run (`eval_rounds.py`), so
a failing evaluation never costs the training before it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import multiprocessing
import os
import signal
import sys
import time

import jax
import numpy as np
from absl import logging
from clu import parameter_overview

from privreid_jax import (checkpoint, config_checks, errors, eval_rounds, interrupts,
                          metric_writers, sharding, train_state, workdir_lock)
from privreid_jax.data import (device_finish, image_check, pipeline, preresized,
                               splits as data_splits, transforms)
from privreid_jax.data.records import DatasetError
from privreid_jax.methods import base as methods_base
from privreid_jax.methods.base import RunContext, RunResult


IMAGE_CHECK_FILE = "image_check.json"   # cache of the startup image check


def example_batch(data_cfg, paired: bool, size: int = 2) -> dict[str, np.ndarray]:
  """A zero batch with the training shapes (network init needs only shapes)."""
  image = np.zeros((size, data_cfg.height, data_cfg.width, 3), np.float32)
  batch = {"image": image, "pid": np.zeros((size,), np.int32)}
  if paired:
    batch["target"] = image
  return batch


class _Loss:
  """Checks step losses one step late, so the host never waits on the device."""

  def __init__(self):
    self.pending = None
    self.sums: dict[str, float] = {}
    self.count = 0

  def push(self, step: int, metrics) -> None:
    self.flush()
    self.pending = (step, metrics)

  def flush(self) -> None:
    if self.pending is None:
      return
    step, metrics = self.pending
    self.pending = None
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    loss = values.get("loss", 0.0)
    if not np.isfinite(loss):
      raise errors.NonFiniteLossError(f"loss is {loss} at step {step}: stopping; the "
                                      "last checkpoint was written before it and is intact")
    for k, v in values.items():
      self.sums[k] = self.sums.get(k, 0.0) + v
    self.count += 1

  def means(self) -> dict[str, float]:
    self.flush()
    out = {k: v / max(self.count, 1) for k, v in self.sums.items()}
    self.sums, self.count = {}, 0
    return out


class _QuietLibraries:
  """Drops INFO records from orbax (dozens per save) from the absl log."""

  def filter(self, record) -> bool:
    return record.levelno > 20 or "/orbax/" not in record.pathname


# --- resume: the same run, or a one-line error ------------------------------------

# Keys that may differ on resume (a warning lists them): they change what is logged,
# when evaluations and checkpoints happen, or how fast data loads, never the
# trained weights or the value of an evaluation row.
RESUMABLE_KEYS = ("log.*", "eval.every_epochs", "evals.*.every_epochs",
                  "evals.*.enabled", "checkpoint.every_epochs", "checkpoint.keep",
                  "data.num_workers", "data.eval_num_workers", "data.preresize")


def _flatten(tree, prefix: str = "") -> dict[str, object]:
  out = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(_flatten(value, path + "."))
    else:
      out[path] = value
  return out


def _short(value) -> str:
  text = json.dumps(value)
  return text if len(text) <= 40 else text[:37] + "..."


def config_differences(saved: dict, config) -> tuple[list[str], list[str]]:
  """(blocking, tolerated) differences between a checkpoint's saved config (its
  JSON) and `config`, each as "key old -> new"; keys present on one side only
  (added or removed by a code change) are tolerated."""
  new = _flatten(json.loads(config.to_json_best_effort()))
  old = _flatten(saved)
  blocking, tolerated = [], []
  for key in sorted(set(old) | set(new)):
    if key not in old or key not in new:
      where = "new key" if key not in old else "no longer in the config"
      tolerated.append(f"{key} ({where})")
      continue
    if old[key] == new[key]:
      continue
    text = f"{key} {_short(old[key])} -> {_short(new[key])}"
    if any(fnmatch.fnmatchcase(key, pattern) for pattern in RESUMABLE_KEYS):
      tolerated.append(text)
    else:
      blocking.append(text)
  return blocking, tolerated


def _check_resume(meta: dict, config, workdir: str, step: int) -> None:
  saved = meta.get("config")
  if not isinstance(saved, dict):
    logging.warning("the checkpoint of step %d in %s records no config: cannot check "
                    "that this run continues it", step, workdir)
    return
  blocking, tolerated = config_differences(saved, config)
  if blocking:
    raise errors.ResumeMismatchError(
        f"--workdir={workdir} holds a run (checkpoint step {step}) with a different "
        f"config: {'; '.join(blocking)}; rerun with its values or use a new --workdir")
  if tolerated:
    logging.warning("resuming step %d with config changes that do not change the run: "
                    "%s", step, "; ".join(tolerated))


def _check_identities(config, splits) -> None:
  batch, k = int(config.data.batch_size), int(config.data.num_instances)
  have = len(np.unique(splits.train.pids))
  if have < batch // k:
    raise errors.ConfigError(
        f"config.data.batch_size={batch}: with config.data.num_instances={k} a batch "
        f"holds {batch // k} identities, but the training split has only {have}; "
        f"use at most {have * k}")


def _check_not_reimported_main() -> None:
  """Refuses a run started while a worker process imports the main script.

  grain starts its data workers with multiprocessing's spawn, which imports the
  `__main__` script again in each worker; a script that calls `run` at import time
  (no `if __name__ == "__main__":` guard) would start a second run there, which
  fails on the workdir lock with a confusing message. Python's own check is the
  same flag (`multiprocessing.spawn._check_not_importing_main`).
  """
  if getattr(multiprocessing.current_process(), "_inheriting", False):
    script = sys.argv[0] if sys.argv and sys.argv[0] else "the main script"
    raise errors.UserError(
        f"{script} starts a training run when it is imported, and data worker processes "
        "import it again: put the call under `if __name__ == \"__main__\":`")


# --- the state: built or restored, and saved ---------------------------------------


def _initial_state(config, method, paired: bool, repl, ckpts: checkpoint.Checkpoints,
                   latest: int | None, resume_from: tuple[str, int] | None):
  """The state a run starts from, in the resume order of the module docstring.

  Args:
    paired: whether training batches carry target images (network init needs
      the batch's shapes only).
    repl: the replicated sharding the state lives in.
    latest: the latest step of the workdir's own checkpoints `ckpts`, or None.
    resume_from: `run`'s argument of that name.

  Returns (state, data_state, resumed_meta): `data_state` is the data iterator
  position saved with a restored state (None for a new state), `resumed_meta`
  the meta of the workdir's own checkpoint ({} when there is none).
  """
  template = example_batch(config.data, paired)
  rng = jax.random.PRNGKey(config.seed)
  init_fn = jax.jit(method.init, out_shardings=repl)
  abstract = checkpoint.abstract_like(jax.eval_shape(init_fn, rng, template), repl)
  if latest is not None:
    state, data_state, resumed_meta = ckpts.restore(abstract)
    logging.info("resumed from %s at step %d", ckpts.directory, int(state.step))
    return state, data_state, resumed_meta
  if resume_from is not None:
    state, data_state, _ = checkpoint.restore_from_run(*resume_from, abstract)
    logging.info("continuing %s from step %d", resume_from[0], int(state.step))
    return state, data_state, {}
  if config.checkpoint.init_file:
    init = checkpoint.restore_init(config.checkpoint.init_file, abstract)
    state = init_fn(rng, template).replace(params=init.params,
                                           batch_stats=init.batch_stats)
    logging.info("initialised from %s", config.checkpoint.init_file)
    return state, None, {}
  return init_fn(rng, template), None, {}


class _Saver:
  """Writes the run's checkpoints, never one with non-finite parameters.

  `step` is the step of the last checkpoint written (or found in the workdir
  when the run started; None before the first).
  """

  def __init__(self, ckpts: checkpoint.Checkpoints, config, steps_per_epoch: int,
               step: int | None):
    self.ckpts = ckpts
    self.config = config
    self.steps_per_epoch = steps_per_epoch
    self.step = step
    self._finite = jax.jit(lambda s: train_state.all_finite((s.params, s.batch_stats)))

  def save(self, step: int, state, data_state: dict, stop_info: dict | None) -> None:
    """Saves `state` after `step` steps with the data iterator position
    `data_state` and a method's stop request `stop_info` (in the meta)."""
    with interrupts.deferred():   # a signal waits for the save to be complete
      if not bool(self._finite(state)):
        raise errors.NonFiniteLossError(
            f"parameters are not finite at step {step}: not saving; the last good "
            f"checkpoint in {self.ckpts.directory} is intact")
      self.ckpts.save(step, state, data_state,
                      checkpoint.config_meta(self.config, step=step,
                                             epoch=step // self.steps_per_epoch,
                                             stop=stop_info))
      self.step = step


# --- the run -----------------------------------------------------------------------


def run(config, workdir: str, *, options=None,
        resume_from: tuple[str, int] | None = None) -> RunResult:
  """Trains and evaluates `config.method` in `workdir`.

  Args:
    options: passed to the method (`Method(..., options=)`, `train_targets`):
      what a driver tells one run (method A's stage), never written to config.
    resume_from: (workdir, step) of another run's checkpoint to continue from
      when `workdir` has none yet (state, optimizer, schedule, data position).

  Returns the run's last evaluation, its workdir and last checkpointed step,
  and the stop request of a hook that ended it early.

  Before anything is compiled: every config value is checked
  (`config_checks`), the workdir is locked (`workdir_lock`), a checkpoint there
  must have been written with the same config (up to RESUMABLE_KEYS), and every
  query and gallery image must decode (`data/image_check.py`). SIGINT and
  SIGTERM save a checkpoint and raise `interrupts.Interrupted`. From a script,
  call it under `if __name__ == "__main__":` (the data workers are spawned
  processes that import the script again; a run started there is refused).
  """
  _check_not_reimported_main()
  options = dict(options or {})
  config_checks.check(config)
  workdir = os.path.abspath(workdir)
  lock = workdir_lock.acquire(workdir)
  if lock.took_over:
    logging.warning("took over the stale lock of process %s on %s (no longer running)",
                    lock.took_over.get("pid"), lock.took_over.get("host"))
  try:
    with interrupts.handled():
      try:
        return _run(config, workdir, options, resume_from)
      except interrupts.Interrupted as e:
        if e.detail is None:
          e.detail = "before training started: nothing new to save"
        raise
  finally:
    lock.release()


def _run(config, workdir: str, options: dict,
         resume_from: tuple[str, int] | None) -> RunResult:
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
    handler.addFilter(_QuietLibraries())
  with contextlib.ExitStack() as cleanup:
    # Closed however the run ends (worker processes must not outlive it).
    cleanup.callback(pipeline.close_workers)
    ckpts = checkpoint.Checkpoints.of_run(workdir, keep=config.checkpoint.keep, writer=True)
    cleanup.callback(ckpts.close)
    latest = ckpts.latest_step()
    if latest is not None:
      _check_resume(ckpts.read_meta(latest), config, workdir, latest)

    mesh = sharding.make_mesh()
    logging.info("devices: %d x %s, processes: %d", jax.device_count(),
                 jax.devices()[0].platform, jax.process_count())
    splits = data_splits.open_splits(config.data)
    logging.info("dataset\n%s", splits.summary())
    image_check.check_splits(splits, cache_file=os.path.join(workdir, IMAGE_CHECK_FILE))
    _check_identities(config, splits)

    method_cls = methods_base.load(config.method)
    targets = method_cls.train_targets(config, options)
    train_source = preresized.train_source(workdir, splits.train.source, config.data,
                                           jax.process_count())
    loader = pipeline.train_loader(
        train_source, splits.train.pids, config.data, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
        targets=targets, finish="device")
    cleanup.callback(loader.close)
    steps_per_epoch = config.optim.steps_per_epoch or loader.steps_per_epoch
    if steps_per_epoch < 1:
      raise errors.ConfigError("config.optim.steps_per_epoch=0: the sampler makes no "
                               "batch of this training split; set it > 0")
    total_steps = config.optim.epochs * steps_per_epoch
    method = method_cls(config, num_classes=splits.num_train_pids,
                        steps_per_epoch=steps_per_epoch, options=options)

    repl = sharding.replicated(mesh)
    state, data_state, resumed_meta = _initial_state(
        config, method, targets is not None, repl, ckpts, latest, resume_from)
    if data_state is not None:
      loader.set_state(data_state)
    logging.info("parameters\n%s", parameter_overview.get_parameter_overview(
        jax.device_get(state.params)))

    start = int(state.step)
    if resumed_meta.get("stop") is not None:     # stopped by a hook before a crash
      logging.info("this run stopped at step %d at its method's request", start)
      return RunResult(eval_rounds.rows_at(workdir, start), workdir, start,
                       resumed_meta["stop"])

    writer = metric_writers.MetricWriter(workdir, config.log.tensorboard)
    cleanup.callback(writer.close)
    evaluator = eval_rounds.FiniteFeatures(method, splits, config.data, config.eval, mesh,
                                           cache=True)
    ctx = RunContext(config, workdir, splits, evaluator, writer, mesh)
    rounds = eval_rounds.EvalRounds(eval_rounds.enabled_evaluators(method, ctx),
                                    evaluator, writer, workdir, steps_per_epoch)
    # The batch arrives as the workers built it (uint8 + erasing rectangles): the
    # step normalises and erases it on the devices (device_finish.py).
    finish = device_finish.finisher(transforms.TransformConfig.from_config(config.data))

    def train_step(s, batch):
      return method.train_step(s, finish(batch))

    step_fn = jax.jit(train_step,
                      in_shardings=(repl, sharding.data_sharded(mesh)),
                      out_shardings=(repl, repl), donate_argnums=0)
    saver = _Saver(ckpts, config, steps_per_epoch, latest)
    data_state = loader.get_state()  # iterator position matching `state`

    results: dict = {}
    losses = _Loss()
    try:
      if start >= total_steps:
        logging.info("already trained to step %d of %d", start, total_steps)
        if not rounds.completed(start):
          rounds.run(state, start, last=True)
        return RunResult(eval_rounds.rows_at(workdir, start), workdir, start)
      if latest is not None and rounds.due(start, last=False) and not rounds.completed(start):
        # The evaluation after this checkpoint was cut short or failed: redo it.
        logging.info("the evaluation of step %d did not complete: running it again",
                     start)
        results = rounds.run(state, start, last=False)

      from tqdm import tqdm
      bar = tqdm(total=total_steps, initial=start, unit="step", dynamic_ncols=True,
                 disable=not config.log.progress or jax.process_index() != 0)
      cleanup.callback(bar.close)
      it = iter(loader)
      t_window, n_window = time.time(), 0
      t_start = time.time()
      for step in range(start, total_steps):
        local = next(it)
        # From the donated step to the epoch's checkpoint, a signal waits: the state
        # saved on an interrupt is always a whole step, its epoch hook run or not due.
        with interrupts.deferred():
          batch = sharding.global_batch(mesh, local)
          state, metrics = step_fn(state, batch)
          data_state = loader.get_state()
          losses.push(step, metrics)
          n_window += 1
          bar.update(1)
          done_steps = step + 1
          if done_steps % config.log.every_steps == 0 or done_steps == total_steps:
            means = losses.means()
            rate = n_window * config.data.batch_size / max(time.time() - t_window, 1e-9)
            means["images_per_sec"] = rate
            writer.scalars(done_steps, means)
            bar.set_postfix(loss=f"{means.get('loss', float('nan')):.3f}",
                            img_s=f"{rate:.1f}")
            t_window, n_window = time.time(), 0
          boundary = done_steps % steps_per_epoch == 0
          if boundary:
            losses.flush()
            epoch = done_steps // steps_per_epoch
            state = method.on_epoch_end(state, epoch, ctx)
            stop = ctx.stop_info is not None
            last = done_steps == total_steps or stop
            if last or epoch % config.checkpoint.every_epochs == 0:
              saver.save(done_steps, state, data_state, ctx.stop_info)
        if boundary:
          # A stop the method requested (method A's stage upgrade) ends this run but
          # not the training: end-of-training evaluators (every_epochs=0, the test
          # split's rows in a reported run) wait for the real end.
          results = rounds.run(state, done_steps, last and not stop) or results
          if stop:
            logging.info("stopping after epoch %d at the method's request", epoch)
            break
    except (KeyboardInterrupt, DatasetError) as e:
      # The state is a whole step here (see above): keep it, unless it diverged.
      losses.flush()
      step = int(state.step)
      if saver.step != step:
        logging.warning("%s at step %d: saving a checkpoint",
                        "interrupted" if isinstance(e, KeyboardInterrupt) else
                        "data error", step)
        saver.save(step, state, data_state, ctx.stop_info)
        with interrupts.deferred():
          ckpts.wait()
      detail = (f"at step {step} of {total_steps}: the checkpoint of step {step} is in "
                f"{ckpts.directory}; run the same command again to resume")
      if isinstance(e, KeyboardInterrupt):
        raise interrupts.Interrupted(getattr(e, "signum", signal.SIGINT),
                                     detail) from None
      logging.error("stopped %s", detail)
      raise
    elapsed = time.time() - t_start
    end = int(state.step)
    logging.info("trained steps %d..%d in %.1fs (%.2f img/s)", start, end,
                 elapsed, (end - start) * config.data.batch_size / max(elapsed, 1e-9))
    return RunResult(results, workdir, end, ctx.stop_info)
