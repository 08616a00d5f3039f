"""The shared trainer: data, mesh, jit, checkpoints, logging, evaluation schedule.

`run(config, workdir)` trains `config.method` (a method under methods/) and
never branches on its name; it calls only the hooks `methods/base.py`
declares. Resume order (big_vision's): a checkpoint in the workdir, else the
driver's `resume_from` (another run's checkpoint), else
`config.checkpoint.init_file`, else from scratch. At each checkpoint boundary
the state is saved before the evaluators run, so a failing evaluation never
costs the training before it.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import logging
from clu import parameter_overview

from privreid_jax import checkpoint, metric_writers, sharding, train_state
from privreid_jax.data import pipeline, splits as data_splits
from privreid_jax.evaluation import base as eval_base
from privreid_jax.evaluation.reid import ReidEvaluator
from privreid_jax.methods import base as methods_base
from privreid_jax.methods.base import RunContext, RunResult


class NonFiniteLossError(FloatingPointError):
  """Raised when a training loss turns NaN or inf (nothing is saved after it)."""


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
      raise NonFiniteLossError(f"loss is {loss} at step {step}: stopping; "
                               "the last checkpoint was written before it and is intact")
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


def _evaluators(method, ctx: RunContext):
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


def _rows_at(workdir: str, step: int) -> dict[str, dict[str, float]]:
  """The evaluation rows eval_metrics.jsonl holds for `step`."""
  return {r["setting"]: {k: v for k, v in r.items() if k not in ("step", "epoch", "setting")}
          for r in metric_writers.read_eval_rows(workdir) if r["step"] == step}


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
  """
  options = dict(options or {})
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.data.batch_size)
  logging.info("devices: %d x %s, processes: %d", jax.device_count(),
               jax.devices()[0].platform, jax.process_count())

  splits = data_splits.open_splits(config.data)
  logging.info("dataset\n%s", splits.summary())
  method_cls = methods_base.load(config.method)
  targets = method_cls.train_targets(config, options)
  loader = pipeline.train_loader(
      splits.train.source, splits.train.pids, config.data, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      targets=targets)
  steps_per_epoch = config.optim.steps_per_epoch or loader.steps_per_epoch
  total_steps = config.optim.epochs * steps_per_epoch
  method = method_cls(config, num_classes=splits.num_train_pids,
                      steps_per_epoch=steps_per_epoch, options=options)

  repl = sharding.replicated(mesh)
  template = example_batch(config.data, targets is not None)
  rng = jax.random.PRNGKey(config.seed)
  init_fn = jax.jit(method.init, out_shardings=repl)
  abstract = checkpoint.abstract_like(jax.eval_shape(init_fn, rng, template), repl)
  ckpts = checkpoint.Checkpoints.of_run(workdir, keep=config.checkpoint.keep)
  resumed_meta: dict = {}
  if ckpts.latest_step() is not None:
    state, data_state, resumed_meta = ckpts.restore(abstract)
    loader.set_state(data_state)
    logging.info("resumed from %s at step %d", ckpts.directory, int(state.step))
  elif resume_from is not None:
    state, data_state, _ = checkpoint.restore_from_run(*resume_from, abstract)
    loader.set_state(data_state)
    logging.info("continuing %s from step %d", resume_from[0], int(state.step))
  elif config.checkpoint.init_file:
    init = checkpoint.restore_init(config.checkpoint.init_file, abstract)
    state = init_fn(rng, template).replace(params=init.params,
                                           batch_stats=init.batch_stats)
    logging.info("initialised from %s", config.checkpoint.init_file)
  else:
    state = init_fn(rng, template)
  logging.info("parameters\n%s", parameter_overview.get_parameter_overview(
      jax.device_get(state.params)))

  start = int(state.step)
  if resumed_meta.get("stop") is not None:     # stopped by a hook before a crash
    logging.info("this run stopped at step %d at its method's request", start)
    ckpts.close()
    return RunResult(_rows_at(workdir, start), workdir, start, resumed_meta["stop"])

  writer = metric_writers.MetricWriter(workdir, config.log.tensorboard)
  evaluator = ReidEvaluator(method, splits, config.data, config.eval, mesh, cache=True)
  ctx = RunContext(config, workdir, splits, evaluator, writer, mesh)
  evaluators = _evaluators(method, ctx)
  step_fn = jax.jit(method.train_step,
                    in_shardings=(repl, sharding.data_sharded(mesh)),
                    out_shardings=(repl, repl), donate_argnums=0)
  finite_fn = jax.jit(lambda s: train_state.all_finite((s.params, s.batch_stats)))

  data_state = loader.get_state()  # iterator position matching `state`

  def save(step: int) -> None:
    if not bool(finite_fn(state)):
      raise NonFiniteLossError(f"parameters are not finite at step {step}: not saving; "
                               f"the last good checkpoint in {ckpts.directory} is intact")
    ckpts.save(step, state, data_state,
               checkpoint.config_meta(config, step=step, epoch=step // steps_per_epoch,
                                      stop=ctx.stop_info))

  def evaluate(step: int, last: bool) -> dict:
    t0 = time.time()
    epoch = step // steps_per_epoch
    evaluator.clear()
    results = {}
    for name, ev, schedule in evaluators:
      if not schedule.due(epoch, last):
        continue
      rows = ev.run(state, step)
      for setting, metrics in rows.items():
        writer.eval_row(step, epoch, setting, metrics)
        logging.info("eval step %d %s: %s", step, setting,
                     " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
      results.update(rows)
    evaluator.clear()
    if results:
      logging.info("evaluation took %.1fs", time.time() - t0)
    return results

  results: dict = {}
  if start >= total_steps:
    logging.info("already trained to step %d of %d", start, total_steps)
    results = _rows_at(workdir, start) or evaluate(start, last=True)
    ckpts.close()
    writer.close()
    return RunResult(results, workdir, start)

  from tqdm import tqdm
  bar = tqdm(total=total_steps, initial=start, unit="step", dynamic_ncols=True,
             disable=not config.log.progress or jax.process_index() != 0)
  losses = _Loss()
  it = iter(loader)
  t_window, n_window = time.time(), 0
  t_start = time.time()
  try:
    for step in range(start, total_steps):
      batch = sharding.global_batch(mesh, next(it))
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
      if done_steps % steps_per_epoch == 0:
        losses.flush()
        epoch = done_steps // steps_per_epoch
        state = method.on_epoch_end(state, epoch, ctx)
        stop = ctx.stop_info is not None
        last = done_steps == total_steps or stop
        if last or epoch % config.checkpoint.every_epochs == 0:
          save(done_steps)
        results = evaluate(done_steps, last) or results
        if stop:
          logging.info("stopping after epoch %d at the method's request", epoch)
          break
  except KeyboardInterrupt:
    losses.flush()
    logging.warning("interrupted at step %d: saving a checkpoint", int(state.step))
    save(int(state.step))
    ckpts.wait()
    raise
  finally:
    bar.close()
    ckpts.close()
    writer.close()
  elapsed = time.time() - t_start
  end = int(state.step)
  logging.info("trained steps %d..%d in %.1fs (%.2f img/s)", start, end,
               elapsed, (end - start) * config.data.batch_size / elapsed)
  return RunResult(results, workdir, end, ctx.stop_info)
