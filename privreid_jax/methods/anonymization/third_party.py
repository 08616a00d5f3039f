"""The outsider: a Re-ID model trained only on raw images, matching method A's images.

A finished baseline run (`config.evals.outsider.workdir`, same image size) is
loaded once; its C3 embeds our raw, anonymized and recovered images (in its
own normalisation) and the rows "3rd:O->O", "3rd:P->O", "3rd:O->P" and
"3rd:P->P" say how well someone without our Re-ID model links anonymized
images to people.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from absl import logging

from privreid_jax import checkpoint, errors
from privreid_jax.evaluation import base as eval_base
from privreid_jax.evaluation.reid import ReidEvaluator
from privreid_jax.models import reid
from privreid_jax.ops import normalize

SETTINGS = {"3rd:O->O": ("raw", "raw"), "3rd:P->O": ("anon", "raw"),
            "3rd:O->P": ("raw", "anon"), "3rd:P->P": ("anon", "anon")}


def check_run(workdir: str) -> None:
  """One-line error unless `workdir` holds a finished run's checkpoint."""
  folder = checkpoint.run_folder(workdir)
  if not os.path.isdir(folder) or not any(n.isdigit() for n in os.listdir(folder)):
    raise FileNotFoundError(
        f"config.evals.outsider.workdir={workdir!r}: no checkpoint there; train a "
        "baseline on raw images into that folder first (configs/synthetic.py or "
        "configs/market.py at the same image size)")


class ThirdParty:
  """A finished baseline run's C3 seeing our images: embed((ours, C3 vars), x, kind)."""

  eval_settings = SETTINGS

  def __init__(self, method, model, variables, mean, std, config=None):
    self.method, self.model, self.variables = method, model, variables
    self.mean, self.std = tuple(mean), tuple(std)
    self.config = config          # the outsider run's config, when loaded from a run

  @classmethod
  def load(cls, workdir: str, method, data_cfg) -> ThirdParty:
    where = f"config.evals.outsider.workdir={workdir!r}"
    check_run(workdir)
    state, cfg, step = checkpoint.restore_run(workdir, where)
    if cfg.get("method", "baseline") != "baseline":   # trained on more than raw images
      raise errors.ConfigError(f"{where}: a {cfg.method!r} run; the outsider is a "
                               "baseline run trained on raw images only "
                               "(config.method='baseline')")
    if (int(cfg.data.height), int(cfg.data.width)) != (int(data_cfg.height),
                                                       int(data_cfg.width)):
      raise errors.ConfigError(f"{where}: that run uses {cfg.data.height}x"
                               f"{cfg.data.width} images, this one {data_cfg.height}x"
                               f"{data_cfg.width}")
    if "reid" not in state["params"]:
      raise errors.ConfigError(f"{where}: its checkpoint has no 'reid' network "
                               f"(networks: {sorted(state['params'])})")
    variables = {"params": state["params"]["reid"],
                 "batch_stats": state["batch_stats"]["reid"]}
    variables["params"] = {k: v for k, v in variables["params"].items()
                           if k != "classifier"}
    model = reid.build_reid_model(cfg.model, 0)
    logging.info("third-party Re-ID model: %s step %d (%s)", workdir, step,
                 cfg.model.backbone)
    variables = jax.tree.map(jnp.asarray, variables)
    return cls(method, model, variables, cfg.data.mean, cfg.data.std, cfg)

  def embed(self, states, images, kind):
    ours, variables = states
    x = self.method.images_of_kind(ours, images, kind)
    x = normalize.renormalize(x, self.method.mean, self.method.std, self.mean, self.std)
    _, out = self.model.apply(variables, x, train=False)
    return out["feat"].astype(jnp.float32)


def evaluator(method, ctx, ev_cfg) -> eval_base.Ranking | None:
  """The outsider's ranking rows on the test splits (None when no workdir is set)."""
  if not ev_cfg.workdir:
    return None
  tp = ThirdParty.load(ev_cfg.workdir, method, ctx.config.data)
  reid_eval = ReidEvaluator(tp, ctx.splits, ctx.config.data, ctx.config.eval, ctx.mesh)
  return eval_base.Ranking(reid_eval, SETTINGS, state_fn=lambda s: (s, tp.variables))
