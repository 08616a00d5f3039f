"""The embedded default: the baseline on synthetic pedestrians, sized for a 2-core CPU.

  python -m privreid_jax.main --config=configs/synthetic.py --workdir=/tmp/synth
The dataset is generated on first use (see privreid_jax/data/synthetic.py).
Variant `tiny` shrinks everything for tests and smoke runs.
"""

from privreid_jax import config_base


def get_config(arg=None):
  c = config_base.base_config()
  c.data.name = "synthetic"
  c.data.height = 128
  c.data.width = 64
  c.data.batch_size = 32        # P=8 ids x K=4
  c.data.pad = 5                # scaled with the image (10 px at 256x128)
  c.data.eval_batch_size = 64
  c.model.backbone = "resnet18"
  c.model.width = 32
  c.optim.lr = 7e-4             # from scratch (no ImageNet weights here): 2x BoT
  c.optim.epochs = 30
  c.optim.warmup_epochs = 3
  c.optim.milestones = (20, 26)
  c.eval.every_epochs = 10
  c.checkpoint.every_epochs = 5
  c.log.every_steps = 20
  if arg == "tiny":
    config_base.make_tiny(c)
  elif arg:
    raise ValueError(f"configs/synthetic.py: unknown variant {arg!r} (expected 'tiny')")
  return c
