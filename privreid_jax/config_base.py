"""Defaults shared by every experiment config: the BoT/AGW strong baseline (docs/baseline.md).

Experiment files under `configs/` start from `base_config()` and change what differs.
Every field can be overridden on the command line (`--config.optim.lr=1e-4`); the
configs are locked, so a misspelt key is an error.
"""

import ml_collections

from privreid_jax.data import records
from privreid_jax.evaluation import base as eval_base


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "baseline"      # module name under privreid_jax/methods/
  c.seed = 0

  # --- data -----------------------------------------------------------------
  c.data = ml_collections.ConfigDict()
  c.data.name = "market1501"  # market1501 | dukemtmcreid | msmt17 | cuhk03 | synthetic
  c.data.root = ""            # dataset folder; required for real datasets
  c.data.source = "folder"    # folder (image files) | tfds (prepared ArrayRecord)
  c.data.tfds_dir = ""        # where the tfds builder wrote the prepared dataset
  c.data.cuhk03_subset = "labeled"  # labeled | detected (CUHK03-NP)
  # data.name may also be viper | grid | prid2011 | cuhk01 | ilids (torchreid's
  # layouts and test protocols, data/small_datasets.py; folder source only),
  # which have 10 train/test splits: split_index picks one (0..9). The other
  # datasets have one fixed split and ignore it.
  c.data.split_index = 0
  # Train on several datasets at once (data/multi_source.py): names as for
  # data.name, each found in its usual folder under data.root (viper/VIPeR,
  # Market-1501-v15.09.15, ...; missing ones skipped), pids and cameras offset
  # per source; () trains on data.name alone. data.name stays the test dataset.
  c.data.sources = ()
  c.data.combineall = False   # also train on the test identities (torchreid's combineall)
  # Hold out this fraction of the training identities (seeded by val_seed) as a
  # validation split for model selection; 0 keeps every training identity.
  c.data.val_fraction = 0.0
  c.data.val_seed = 0
  # Synthetic data only, instead of val_fraction: >= 0 validates on new people drawn
  # from this seed, split into query / gallery with distractors and junk exactly as
  # the test split is (the same difficulty: whole groups of look-alikes), while every
  # training identity trains. -1: none. Must differ from data.synthetic.test_seed.
  c.data.val_people_seed = -1
  c.data.height = 256
  c.data.width = 128
  c.data.batch_size = 64      # global P x K batch, split over all devices
  c.data.num_instances = 4    # K images per identity
  c.data.num_workers = 2      # grain worker processes (0 = in-process)
  # Evaluation batches' worker processes (-1: data.num_workers). Each evaluation
  # starts its own workers: on a small CPU host and split, 0 is faster.
  c.data.eval_num_workers = -1
  c.data.preresize = False    # train from WORKDIR/preresized_train (raw pixels at HxW)
  c.data.eval_batch_size = 128
  c.data.mean = (0.485, 0.456, 0.406)
  c.data.std = (0.229, 0.224, 0.225)
  c.data.flip_prob = 0.5
  c.data.pad = 10
  c.data.erasing_prob = 0.5
  c.data.erasing_area = (0.02, 0.4)
  c.data.erasing_aspect = 0.3  # aspect ratio drawn from [0.3, 1/0.3]
  # Synthetic pedestrians (used when data.name == "synthetic"): generated into
  # data.root, or a cache folder named after these values when root is "".
  c.data.synthetic = ml_collections.ConfigDict()
  c.data.synthetic.num_ids = 200     # half train, half test (like Market's 751/750)
  c.data.synthetic.num_cameras = 6
  c.data.synthetic.height = 128
  c.data.synthetic.width = 64
  c.data.synthetic.seed = 0
  c.data.synthetic.test_seed = -1   # >= 0: fresh test people from this seed (same world)

  # --- model ----------------------------------------------------------------
  c.model = ml_collections.ConfigDict()
  c.model.backbone = "resnet50"  # resnet18 | resnet34 | resnet50
  c.model.width = 64             # stem width; 64 is torchvision's
  c.model.last_stride = 1
  # torchvision's ReLU after the stem BN; BoT's ResNet has it commented out (its
  # "add missed relu"), so the paper-scale configs set False (experiments/parity.py).
  c.model.stem_relu = True
  c.model.pooling = "avg"        # avg (BoT) | gem (AGW, learnable p)
  c.model.gem_p = 3.0
  c.model.non_local = False      # AGW non-local blocks after layer2/layer3 blocks
  # Their embedding width: 0 = half the channels (the non-local paper), 1 = AGW's
  # released code (`reduc_ratio // reduc_ratio`), which make_agw follows.
  c.model.non_local_inter_channels = 0
  c.model.dtype = "float32"      # compute dtype; bfloat16 keeps float32 params
  c.model.conv_impl = "auto"     # auto (CPU: matmul, else XLA) | xla | matmul | matmul_flat
  c.model.pretrained = ""        # local torchvision ResNet weights (.safetensors/.npz/.pth)

  # --- losses ---------------------------------------------------------------
  c.loss = ml_collections.ConfigDict()
  c.loss.id_weight = 1.0
  c.loss.label_smoothing = 0.1
  c.loss.triplet = "batch_hard"  # batch_hard | soft_margin | weighted (AGW) | none
  c.loss.triplet_weight = 1.0
  c.loss.triplet_margin = 0.3
  c.loss.center_weight = 0.0     # 5e-4 enables the center loss
  c.loss.center_lr = 0.5         # centers have their own SGD optimizer

  # --- optimisation ---------------------------------------------------------
  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 3.5e-4
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 5e-4    # coupled (added to the gradient), as torch Adam
  c.optim.epochs = 120
  c.optim.warmup_epochs = 10
  c.optim.warmup_factor = 0.01
  c.optim.milestones = (40, 70)
  c.optim.gamma = 0.1
  # BoT's scheduler is stepped once when built and at every epoch start, so 0-based
  # epoch e trains at the factor of epoch e + 1 (measured by experiments/parity.py).
  c.optim.epoch_offset = 1
  c.optim.steps_per_epoch = 0    # 0: derived from the sampler (torchreid's epoch)

  # --- evaluation -----------------------------------------------------------
  c.eval = ml_collections.ConfigDict()
  c.eval.every_epochs = 40
  c.eval.distance = "euclidean"  # euclidean (squared, on L2-normalised feats) | cosine
  c.eval.rerank = False
  c.eval.max_rank = 50
  # Evaluator objects by name (evaluation/base.py): enabled, every_epochs (-1: with
  # eval.every_epochs, 0: at the end only, k: every k epochs) and their options.
  c.evals = ml_collections.ConfigDict()
  c.evals.reid = eval_base.section()   # Re-ID ranking of the method's settings
  c.evals.val = eval_base.section()    # the same on validation ids (data.val_fraction > 0)
  # The same rows on other datasets' test splits (cross-dataset), "<name>/<setting>".
  c.evals.targets = eval_base.section(datasets=(), skip_missing=False)

  # --- checkpoints and logging ------------------------------------------------
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_epochs = 5
  c.checkpoint.keep = 3
  c.checkpoint.init_file = ""    # a checkpoint dir to start from when the workdir has none
  c.log = ml_collections.ConfigDict()
  c.log.every_steps = 50
  c.log.tensorboard = True
  c.log.progress = True
  return c


def variants(arg, allowed, where: str) -> list[str]:
  """The comma-separated variant names of `--config=FILE:a,b` (one-line error if unknown).

  Args:
    arg: the text after the colon (None or "" for none).
    allowed: the valid names.
    where: the config file, for the error.
  """
  names = [n.strip() for n in (arg or "").split(",") if n.strip()]
  for n in names:
    if n not in allowed:
      raise ValueError(f"{where}: unknown variant {n!r}; valid variants (comma-separated): "
                       f"{', '.join(allowed)}")
  return names


def make_agw(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """AGW instead of BoT: GeM pooling, non-local blocks, weighted-regularization
  triplet, milestones 40/80."""
  c.model.pooling = "gem"
  c.model.non_local = True
  c.model.non_local_inter_channels = 1   # AGW's code (and privacy-reid's C): 1 channel
  c.loss.triplet = "weighted"
  c.optim.milestones = (40, 80)
  return c


def make_small_synthetic(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The CPU-sized synthetic setting shared by the privacy methods' configs.

  The 128x64 synthetic images read at 64x32, P8xK4 batches, a width-16 ResNet-18
  from scratch at lr 7e-4 for 16 epochs (warmup 2, milestone 12), one evaluation
  at the end, checkpoints every 4 epochs.
  """
  c.data.name = "synthetic"
  c.data.height, c.data.width, c.data.pad = 64, 32, 3
  c.data.batch_size = 32        # P=8 ids x K=4
  c.data.eval_batch_size = 64
  c.model.backbone = "resnet18"
  c.model.width = 16
  c.optim.lr = 7e-4
  c.optim.epochs = 16
  c.optim.warmup_epochs = 2
  c.optim.milestones = (12,)
  c.eval.every_epochs = 16
  c.checkpoint.every_epochs = 4
  c.log.every_steps = 20
  return c


def make_small_real(c: ml_collections.ConfigDict, *, primary: str = "cuhk01",
                    targets: str = "others") -> ml_collections.ConfigDict:
  """Real pedestrians: the joined training splits of the small public datasets.

  Whichever of VIPeR, GRID, PRID 2011, CUHK01 and i-LIDS are under
  `--config.data.root=PARENT` (missing ones skipped with a line saying so) train
  together, identities and cameras kept apart, in P16 x K2 batches (most of them
  hold two images per person). `primary` is listed first, so its test split is the
  run's own query/gallery when present (the rows "O->O", ... and the privacy
  evaluators'); `targets="others"` evaluates every other dataset on its own test
  split ("viper/O->O", ...), `"all"` every dataset with the run's own rows off
  (configs/real_small.py).
  """
  c.data.name = ""               # the first source found
  c.data.sources = (primary,) + tuple(n for n in records.SMALL_DATASETS if n != primary)
  c.data.batch_size = 32
  c.data.num_instances = 2
  # No random erasing: chosen on validation identities for the baseline at 128x64
  # (experiments/sweeps/real_small_select.py: val Rank-1 44.7 without, 41.1 with).
  c.data.erasing_prob = 0.0
  c.evals.targets.skip_missing = True
  if targets == "all":
    c.evals.targets.datasets = c.data.sources
    c.evals.reid.enabled = False
  elif targets == "others":
    c.evals.targets.datasets = c.data.sources[1:]
  else:
    raise ValueError(f"make_small_real: targets={targets!r}: expected 'others' or 'all'")
  return c


def make_tiny(c: ml_collections.ConfigDict, *, steps_per_epoch: int = 2,
              every_epochs: int = 1) -> ml_collections.ConfigDict:
  """Shrinks a synthetic config for tests and smoke runs (the `tiny` variants).

  16 synthetic ids at 32x16, a width-8 backbone, batches of 2 ids x 4, two
  short epochs, in-process data loading, no progress bar.
  """
  c.data.synthetic.num_ids = 16
  c.data.synthetic.height = 32
  c.data.synthetic.width = 16
  c.data.height, c.data.width, c.data.pad = 32, 16, 2
  c.data.batch_size = 8
  c.data.num_workers = 0
  c.data.eval_batch_size = 16
  c.model.width = 8
  c.optim.epochs = 2
  c.optim.warmup_epochs = 1
  c.optim.milestones = (1,)
  c.optim.steps_per_epoch = steps_per_epoch
  c.eval.every_epochs = every_epochs
  c.checkpoint.every_epochs = every_epochs
  c.log.every_steps = 1
  c.log.progress = False
  return c
