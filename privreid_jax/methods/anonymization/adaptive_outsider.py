"""The adaptive outsider: the raw-only Re-ID model fine-tuned with the released anonymizer.

When G is public, an outsider can do better than apply its raw-only model to
anonymized images (the "3rd:*" rows): it runs G on labelled photos of its own
and fine-tunes its model on (raw, G(raw)) pairs of the same people, learning to
match anonymized images to raw ones. This is the strongest realistic attacker
on method A's released images when the anonymizer is released with them.

Here the attacker's labelled photos are the run's training identities (with
their training augmentation): a generous attacker, since it holds the data C
was trained on, but never the test people. It starts from the outsider's
weights (`config.evals.outsider.workdir`), adds an identity classifier for the
training identities, and trains with the outsider's own losses (ID, triplet,
center loss if it used one) on batches of raw images and their anonymized
versions from our frozen G, for `epochs` epochs at `lr` (its Adam, constant). In Base mode the
"anonymizer" is the public desensitization itself. Rows
"3rd-ft:O->O", "3rd-ft:P->O", "3rd-ft:O->P", "3rd-ft:P->P" on the test split, and
"3rd-ft:fit" with the fine-tuning's steps and its first and last epochs' mean loss.
It runs at the end of training only by default (config.evals.adaptive_outsider).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from privreid_jax import errors
from privreid_jax.data import pipeline
from privreid_jax.evaluation import base as eval_base
from privreid_jax.evaluation.reid import ReidEvaluator
from privreid_jax.methods import reid_learner
from privreid_jax.methods.anonymization import third_party
from privreid_jax.ops import normalize

SETTINGS = {f"3rd-ft:{k[4:]}": v for k, v in third_party.SETTINGS.items()}
FIT_ROW = "3rd-ft:fit"   # the attacker's fine-tuning: steps, mean loss of its first / last epoch


def _finetune_config(cfg, ev_cfg, steps_per_epoch: int):
  """The outsider's config with the attacker's optimizer: its Adam at a constant lr."""
  cfg = cfg.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.optim.lr = float(ev_cfg.lr)
    cfg.optim.epochs = int(ev_cfg.epochs)
    cfg.optim.warmup_epochs = 0
    cfg.optim.milestones = ()
    cfg.optim.steps_per_epoch = steps_per_epoch
  return cfg


class AdaptiveOutsider:
  """Fine-tunes the outsider on (raw, G(raw)) pairs at each run; ranking rows."""

  def __init__(self, method, ctx, ev_cfg):
    if int(ev_cfg.epochs) < 1:
      raise errors.ConfigError(f"config.evals.adaptive_outsider.epochs={ev_cfg.epochs}: "
                               "expected >= 1")
    if not float(ev_cfg.lr) > 0:
      raise errors.ConfigError(f"config.evals.adaptive_outsider.lr={ev_cfg.lr}: "
                               "expected > 0")
    self.method, self.ctx, self.ev_cfg = method, ctx, ev_cfg
    workdir = ctx.config.evals.outsider.workdir
    self.base = third_party.ThirdParty.load(workdir, method, ctx.config.data)
    self.train = ctx.splits.train

  def _finetuned(self, state):
    """(learner, params, batch_stats) after fine-tuning from the outsider's weights."""
    data_cfg, ev = self.ctx.config.data, self.ev_cfg
    seed = int(self.ctx.config.seed) + 7919
    loader = pipeline.train_loader(self.train.source, self.train.pids, data_cfg, seed=seed)
    spe = int(self.ctx.config.optim.steps_per_epoch) or loader.steps_per_epoch  # as the trainer
    cfg = _finetune_config(self.base.config, ev, spe)
    learner = reid_learner.ReidLearner(cfg, int(self.train.pids.max()) + 1, spe,
                                       name="reid")
    m = self.method
    tp_mean, tp_std = self.base.mean, self.base.std
    first = next(iter(loader))
    x0 = jnp.asarray(first["image"][:2])
    params, stats = learner.init(jax.random.PRNGKey(seed), x0)
    # The outsider's trained weights everywhere but the new classifier.
    params["reid"] = {**params["reid"], **self.base.variables["params"]}
    stats["reid"] = self.base.variables["batch_stats"]
    tx = learner.txs
    opt = {k: tx[k].init(params[k]) for k in tx}

    @jax.jit
    def step(params, stats, opt, ours, images, pids):
      anon = jax.lax.stop_gradient(m.anonymize(ours, images))
      x = jnp.concatenate([images, anon], 0)
      x = normalize.renormalize(x, m.mean, m.std, tp_mean, tp_std)
      y = jnp.concatenate([pids, pids], 0)
      (loss, (new_stats, _)), grads = jax.value_and_grad(learner.loss, has_aux=True)(
          params, stats, x, y)
      new_params, new_opt = {}, {}
      for k in tx:
        upd, new_opt[k] = tx[k].update(grads[k], opt[k], params[k])
        new_params[k] = optax.apply_updates(params[k], upd)
      return new_params, {**stats, **new_stats}, new_opt, loss

    steps = int(ev.epochs) * spe
    batches = iter(loader)
    losses = []
    for _ in range(steps):
      b = next(batches)
      params, stats, opt, loss = step(params, stats, opt, state,
                                      jnp.asarray(b["image"]), jnp.asarray(b["pid"]))
      losses.append(loss)
    losses = np.asarray(jax.device_get(losses))
    fit = {"steps": float(steps), "loss_first_epoch": float(losses[:spe].mean()),
           "loss_last_epoch": float(losses[-spe:].mean())}
    logging.info("adaptive outsider: %d fine-tuning steps, loss %.3f -> %.3f", steps,
                 fit["loss_first_epoch"], fit["loss_last_epoch"])
    if not np.all(np.isfinite(losses)):
      raise FloatingPointError("adaptive outsider: non-finite fine-tuning loss")
    return learner, params, stats, fit

  def run(self, state, step: int):
    del step
    learner, params, stats, fit = self._finetuned(state)
    variables = {"params": params["reid"], "batch_stats": stats["reid"]}
    tp = third_party.ThirdParty(self.method, learner.model, variables, self.base.mean,
                                self.base.std)
    reid_eval = ReidEvaluator(tp, self.ctx.splits, self.ctx.config.data,
                              self.ctx.config.eval, self.ctx.mesh)
    rows = eval_base.Ranking(reid_eval, SETTINGS,
                             state_fn=lambda s: (s, variables)).run(state, 0)
    return {**rows, FIT_ROW: fit}


def evaluator(method, ctx, ev_cfg) -> AdaptiveOutsider | None:
  """None unless the outsider is configured (config.evals.outsider.workdir)."""
  if not ctx.config.evals.outsider.workdir:
    return None
  return AdaptiveOutsider(method, ctx, ev_cfg)
