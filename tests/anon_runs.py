"""Method-A workdirs for tests: a fresh checkpoint, or a tiny trained run with its outsider."""

import jax
import numpy as np

from configs import anon_synthetic, synthetic
from privreid_jax import checkpoint, trainer
from privreid_jax.methods import anonymization


def fresh_checkpoint(workdir, variant: str = "tiny", seed: int = 3, step: int = 7):
  """Writes one checkpoint of a freshly initialised method-A state (32x16 images, 5
  classes) into `workdir`; returns (method, state, config)."""
  config = anon_synthetic.get_config(variant)
  method = anonymization.Method(config, num_classes=5, steps_per_epoch=1)
  batch = {"image": np.zeros((2, 32, 16, 3), np.float32),
           "target": np.zeros((2, 32, 16, 3), np.float32), "pid": np.zeros(2, np.int32)}
  state = jax.jit(method.init)(jax.random.PRNGKey(seed), batch)
  ckpts = checkpoint.Checkpoints(str(workdir / "checkpoints"))
  ckpts.save(step, state, {"next_batch": step}, checkpoint.config_meta(config, step=step))
  ckpts.close()
  return method, state, config


def trained_with_outsider(tmp_path_factory):
  """A tiny baseline on raw images (the outsider) and a tiny method-A run scored by
  it, one epoch each on one synthetic dataset: (outsider dir, its metrics, method-A
  dir, its metrics)."""
  data_root = str(tmp_path_factory.mktemp("data"))
  base = synthetic.get_config("tiny")
  base.data.root = data_root
  base.optim.epochs = 1
  base_dir = str(tmp_path_factory.mktemp("outsider"))
  base_results = trainer.run(base, base_dir).metrics
  config = anon_synthetic.get_config("tiny")
  config.data.root = data_root
  config.optim.epochs = 1
  config.evals.outsider.workdir = base_dir
  anon_dir = str(tmp_path_factory.mktemp("anon"))
  results = trainer.run(config, anon_dir).metrics
  return base_dir, base_results, anon_dir, results
