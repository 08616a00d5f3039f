"""The shared trainer: data, mesh, jit, checkpoints, logging, evaluation schedule.

`run(config, workdir)` trains `config.method` (a module under methods/) and
never branches on its name. Resume order (big_vision's): a checkpoint in the
workdir, else `config.checkpoint.init_file`, else from scratch.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from clu import parameter_overview

from privreid_jax import checkpoint, metric_writers, sharding, train_state
from privreid_jax.data import pipeline, splits as data_splits
from privreid_jax.evaluation.reid import ReidEvaluator
from privreid_jax.methods import base as methods_base


class NonFiniteLossError(FloatingPointError):
  """Raised when a training loss turns NaN or inf (nothing is saved after it)."""


@dataclasses.dataclass
class Context:
  """What the trainer hands to a method's on_epoch_end hook.

  A hook sets `stop = True` to end the run cleanly after this epoch: it is
  evaluated and checkpointed as a last epoch would be (e.g. method A's
  progressive stages stop a stage when its teacher is upgraded).
  """
  config: Any
  workdir: str
  splits: Any
  evaluator: ReidEvaluator
  writer: metric_writers.MetricWriter
  mesh: Any
  stop: bool = False


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


def run(config, workdir: str) -> dict[str, dict[str, float]]:
  """Trains and evaluates; returns the last evaluation {setting: metrics}."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.data.batch_size)
  logging.info("devices: %d x %s, processes: %d", jax.device_count(),
               jax.devices()[0].platform, jax.process_count())

  splits = data_splits.open_splits(config.data)
  logging.info("dataset\n%s", splits.summary())
  method_mod = methods_base.load(config.method)
  targets_fn = getattr(method_mod, "train_targets", None)
  targets = targets_fn(config) if targets_fn else None
  loader = pipeline.train_loader(
      splits.train.source, splits.train.pids, config.data, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      targets=targets)
  steps_per_epoch = config.optim.steps_per_epoch or loader.steps_per_epoch
  total_steps = config.optim.epochs * steps_per_epoch
  method = method_mod.Method(config, num_classes=splits.num_train_pids,
                             steps_per_epoch=steps_per_epoch)

  repl = sharding.replicated(mesh)
  template = example_batch(config.data, targets is not None)
  rng = jax.random.PRNGKey(config.seed)
  init_fn = jax.jit(method.init, out_shardings=repl)
  abstract = checkpoint.abstract_like(jax.eval_shape(init_fn, rng, template), repl)
  ckpts = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"),
                                 keep=config.checkpoint.keep)
  if ckpts.latest_step() is not None:
    state, data_state, _ = ckpts.restore(abstract)
    loader.set_state(data_state)
    logging.info("resumed from %s at step %d", ckpts.directory, int(state.step))
  elif config.checkpoint.init_file:
    init = checkpoint.restore_init(config.checkpoint.init_file, abstract)
    state = init_fn(rng, template).replace(params=init.params,
                                           batch_stats=init.batch_stats)
    logging.info("initialised from %s", config.checkpoint.init_file)
  else:
    state = init_fn(rng, template)
  logging.info("parameters\n%s", parameter_overview.get_parameter_overview(
      jax.device_get(state.params)))

  writer = metric_writers.MetricWriter(workdir, config.log.tensorboard)
  evaluator = ReidEvaluator(method, splits, config.data, config.eval, mesh)
  ctx = Context(config, workdir, splits, evaluator, writer, mesh)
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
               checkpoint.config_meta(config, step=step, epoch=step // steps_per_epoch))

  def evaluate(step: int) -> dict:
    t0 = time.time()
    results = evaluator.run(state)
    extra = getattr(method, "extra_metrics", None)
    if extra is not None:     # e.g. PSNR/SSIM, DP sweeps, attacks: {setting: {k: v}}
      results.update(extra(state, ctx))
    for name, metrics in results.items():
      writer.eval_row(step, step // steps_per_epoch, name, metrics)
      logging.info("eval step %d %s: %s", step, name,
                   " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    logging.info("evaluation took %.1fs", time.time() - t0)
    return results

  start = int(state.step)
  results: dict = {}
  if start >= total_steps:
    logging.info("already trained to step %d of %d", start, total_steps)
    done = [r for r in metric_writers.read_eval_rows(workdir) if r["step"] == start]
    results = ({r["setting"]: {k: v for k, v in r.items()
                               if k not in ("step", "epoch", "setting")} for r in done}
               or evaluate(start))
    ckpts.close()
    writer.close()
    return results

  from tqdm import tqdm
  bar = tqdm(total=total_steps, initial=start, unit="step", dynamic_ncols=True,
             disable=not config.log.progress or jax.process_index() != 0)
  losses = _Loss()
  it = iter(loader)
  t_window, n_window = time.time(), 0
  t_start = time.time()
  step = start
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
        last = done_steps == total_steps or ctx.stop
        if last or epoch % config.eval.every_epochs == 0:
          results = evaluate(done_steps)
        if last or epoch % config.checkpoint.every_epochs == 0:
          save(done_steps)
        if ctx.stop:
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
  return results
