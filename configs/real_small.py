"""The CPU-sized real-data setting: the baseline from scratch on small public Re-ID datasets.

  python -m privreid_jax.main --config=configs/real_small.py --config.data.root=PARENT --workdir=W

PARENT holds any of VIPeR, GRID, PRID 2011, CUHK01 and i-LIDS in torchreid's layouts
(PARENT/viper/VIPeR/cam_a, PARENT/grid/underground_reid, PARENT/prid2011/prid_2011,
PARENT/cuhk01/campus, PARENT/ilids/i-LIDS_Pedestrian; see privreid_jax/data/small_datasets.py).
Their training splits (split `data.split_index`) are combined, identities and cameras kept
apart; missing datasets are skipped with a line saying so. Each dataset present is evaluated
on its own test split: rows "viper/O->O", "cuhk01/O->O", ...

Variants: `val` holds out 20% of the training identities for choosing hyper-parameters
(rows "val/O->O"; the reported sweeps hold out the same ones); `tiny` shrinks everything
for smoke runs.

Chosen on validation identities (experiments/sweeps/real_small_select.py, one change at
a time from a first guess): a width-32 ResNet-18 from scratch at 128x64, P16 x K2 (most
of these datasets have two images per person), lr 7e-4, 40 epochs, no random erasing
(val Rank-1 44.7 against 41.1 with erasing, 44.1 at width 48, 42.6 at lr 1.4e-3); then,
in a second round, the soft-margin triplet instead of BoT's margin-0.3 one (mean val
Rank-1 / mAP over two seeds 50.6 / 61.1 against 44.9 / 55.5).
"""

from privreid_jax import config_base

VARIANTS = ("val", "tiny")


def get_config(arg=None):
  names = config_base.variants(arg, VARIANTS, "configs/real_small.py")
  c = config_base.base_config()
  # Every dataset present trains together and is scored on its own test split.
  config_base.make_small_real(c, primary="viper", targets="all")
  c.data.height, c.data.width, c.data.pad = 128, 64, 5
  c.data.eval_batch_size = 64
  c.model.backbone = "resnet18"
  c.model.width = 32
  c.optim.lr = 7e-4             # from scratch (configs/synthetic.py's until 8967b58)
  c.loss.triplet = "soft_margin"   # chosen on validation (real_small_select.py:triplet)
  c.optim.epochs = 40
  c.optim.warmup_epochs = 2
  c.optim.milestones = (25, 35)
  c.eval.every_epochs = 40
  c.checkpoint.every_epochs = 5
  c.log.every_steps = 20
  if "val" in names:
    c.data.val_fraction = 0.2
  if "tiny" in names:
    config_base.make_tiny(c)
    c.data.batch_size, c.data.num_instances = 8, 2
  return c
