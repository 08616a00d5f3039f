"""The `bot` reference of experiments/parity.py: michuanhaohao/reid-strong-baseline.

Everything that trains comes from the checkout's own code: `config.cfg` merged
with `configs/softmax_triplet_with_center.yml`, `modeling.build_model`
(Baseline: ResNet-50, last stride 1, BNNeck), `layers.make_loss_with_center`
(CrossEntropyLabelSmooth + TripletLoss(SOLVER.MARGIN) + CenterLoss),
`solver.make_optimizer_with_center` (Adam per-parameter groups + SGD for the
centers), `solver.WarmupMultiStepLR`, and the step itself is the `_update`
function of `engine.trainer.create_supervised_trainer_with_center` (zero_grad,
forward, loss, backward, Adam step, center grads * 1/CENTER_LOSS_WEIGHT, SGD
step). `do_train_with_center` steps the scheduler on EPOCH_STARTED; we do the
same every `steps_per_epoch` steps (this loop replaces ignite's Engine.run and
the logging/checkpoint/evaluation handlers, which do not touch the weights).

CPU shims (no change to any formula):
  * `torch.Tensor.cuda` is the identity while the reference builds and steps:
    its CenterLoss and CrossEntropyLabelSmooth are created with use_gpu=True
    by make_loss_with_center.
  * `utils.reid_metric` (the evaluation metric R1_mAP, imported by
    engine/trainer.py only for the evaluator) is replaced by a stub module when
    it cannot be imported: its import chain pulls in the data package
    (torchvision transforms, h5py, scipy.misc.imsave) that the step never uses.
  * MODEL.PRETRAIN_CHOICE is set to 'self' so that build_model does not read an
    ImageNet file (there are none here); the backbone gets the reference's own
    `ResNet.random_init()` (normal(0, sqrt(2 / (k*k*out)))), the BNNeck and
    classifier their `weights_init_kaiming` / `weights_init_classifier`, the
    centers CenterLoss's torch.randn.

Config mapping (reference -> ours, asserted at build time):
  SOLVER.BASE_LR -> optim.lr; Adam betas (torch defaults) -> optim.b1/b2;
  SOLVER.WEIGHT_DECAY (= WEIGHT_DECAY_BIAS here; BIAS_LR_FACTOR 1) -> optim.weight_decay;
  WARMUP_ITERS / WARMUP_FACTOR / STEPS / GAMMA (in epochs) -> optim.warmup_epochs /
  warmup_factor / milestones / gamma; CrossEntropyLabelSmooth epsilon 0.1 ->
  loss.label_smoothing; SOLVER.MARGIN -> loss.triplet_margin; CENTER_LOSS_WEIGHT
  -> loss.center_weight; CENTER_LR -> loss.center_lr; MODEL.NAME / LAST_STRIDE ->
  model.backbone / last_stride; IMS_PER_BATCH / NUM_INSTANCE -> data.batch_size /
  num_instances; INPUT.SIZE_TRAIN -> data.height/width.

`align` (diagnosis only; the default run is the faithful comparison):
  schedule   shift OUR schedule by one epoch (warmup_epochs W-1, warmup_factor
             f + (1-f)/W, milestones m-1), which equals BoT's: its scheduler is
             stepped once in its constructor and again at the start of the first
             epoch, so epoch e (0-based) trains at BoT's factor for e+1.
  stem_relu  add the ReLU after the reference ResNet's stem BN (BoT comments it
             out: "# add missed relu"), which our torchvision-layout ResNet has,
             with a forward hook on `base.bn1`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
import warnings
from typing import Sequence

import numpy as np

from experiments.parity_batches import Batch
from experiments.parity_jax import load_config
from experiments.parity_layout import Layout
from experiments.parity_reference import (ReferenceSide, bn_counter, torch_grads, torch_load,
                                          torch_named, torch_snapshot)
from experiments.parity_verdict import Snapshot

CONFIG_FILE = "configs/softmax_triplet_with_center.yml"
ALIGNMENTS = ("schedule", "stem_relu")


@contextlib.contextmanager
def cpu_cuda_shim():
  """`Tensor.cuda()` returns the tensor itself (the reference calls it unconditionally)."""
  import torch  # pylint: disable=import-outside-toplevel
  old = torch.Tensor.cuda
  torch.Tensor.cuda = lambda self, *a, **k: self
  try:
    yield
  finally:
    torch.Tensor.cuda = old


def _import_reference(ref_dir: str):
  ref_dir = os.path.abspath(ref_dir)
  for sub in ("modeling", "layers", "solver", "engine", "config"):
    if not os.path.isdir(os.path.join(ref_dir, sub)):
      raise SystemExit(f"{ref_dir}: no {sub}/ folder; expected a checkout of "
                       "michuanhaohao/reid-strong-baseline")
  if ref_dir not in sys.path:
    sys.path.insert(0, ref_dir)
  try:
    import utils.reid_metric  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except Exception:  # pylint: disable=broad-except
    # The evaluation metric's import chain (data transforms, dataset readers)
    # is not needed by the training step; see the module docstring.
    import utils  # pylint: disable=import-outside-toplevel
    stub = types.ModuleType("utils.reid_metric")
    stub.R1_mAP = None
    stub.__doc__ = "parity_bot stub: evaluation metric not used by the training step"
    sys.modules["utils.reid_metric"] = stub
    utils.reid_metric = stub
  import config as ref_config  # pylint: disable=import-outside-toplevel
  import engine.trainer as ref_trainer  # pylint: disable=import-outside-toplevel
  import layers as ref_layers  # pylint: disable=import-outside-toplevel
  import modeling as ref_modeling  # pylint: disable=import-outside-toplevel
  import solver as ref_solver  # pylint: disable=import-outside-toplevel
  return types.SimpleNamespace(config=ref_config, trainer=ref_trainer, layers=ref_layers,
                               modeling=ref_modeling, solver=ref_solver)


class _Recorder:
  """Wraps a loss callable inside the reference's loss closure and records its value."""

  def __init__(self, fn, name: str, store: dict, pick: int | None = None):
    self.fn, self.name, self.store, self.pick = fn, name, store, pick

  def __call__(self, *args, **kwargs):
    out = self.fn(*args, **kwargs)
    value = out[self.pick] if self.pick is not None else out
    self.store[self.name] = float(value.detach())
    return out

  def __getattr__(self, item):
    return getattr(self.fn, item)


def _closure(fn) -> dict:
  return {name: cell for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ())}


def map_config(cfg, num_classes_unused: int = 0):
  """Our config (configs/market.py) with the reference cfg's values mapped in."""
  del num_classes_unused
  c = load_config("configs/market.py")
  s = cfg.SOLVER
  if cfg.SOLVER.OPTIMIZER_NAME != "Adam":
    raise ValueError(f"SOLVER.OPTIMIZER_NAME={s.OPTIMIZER_NAME}: only Adam is mapped")
  if s.WEIGHT_DECAY_BIAS != s.WEIGHT_DECAY or s.BIAS_LR_FACTOR != 1:
    raise ValueError("biases have their own lr/weight decay in this reference config; "
                     "ours has one value for every parameter")
  if cfg.MODEL.NECK != "bnneck" or cfg.MODEL.IF_LABELSMOOTH != "on":
    raise ValueError("only the BNNeck + label smoothing setting is mapped")
  if cfg.MODEL.METRIC_LOSS_TYPE != "triplet_center" or cfg.MODEL.IF_WITH_CENTER != "yes":
    raise ValueError("only METRIC_LOSS_TYPE triplet_center with center is mapped")
  if s.WARMUP_METHOD != "linear":
    raise ValueError("only the linear warm-up is mapped")
  c.model.backbone = cfg.MODEL.NAME
  c.model.last_stride = int(cfg.MODEL.LAST_STRIDE)
  c.model.pooling = "avg"
  c.model.non_local = False
  c.optim.lr = float(s.BASE_LR)
  c.optim.b1, c.optim.b2 = 0.9, 0.999          # torch.optim.Adam defaults
  c.optim.weight_decay = float(s.WEIGHT_DECAY)
  c.optim.epochs = int(s.MAX_EPOCHS)
  c.optim.warmup_epochs = int(s.WARMUP_ITERS)   # BoT counts it in epochs
  c.optim.warmup_factor = float(s.WARMUP_FACTOR)
  c.optim.milestones = tuple(int(m) for m in s.STEPS)
  c.optim.gamma = float(s.GAMMA)
  c.loss.id_weight = 1.0
  c.loss.label_smoothing = 0.1                 # CrossEntropyLabelSmooth's default
  c.loss.triplet = "batch_hard"
  c.loss.triplet_weight = 1.0
  c.loss.triplet_margin = float(s.MARGIN)
  c.loss.center_weight = float(s.CENTER_LOSS_WEIGHT)
  c.loss.center_lr = float(s.CENTER_LR)
  c.data.batch_size = int(s.IMS_PER_BATCH)
  c.data.num_instances = int(cfg.DATALOADER.NUM_INSTANCE)
  c.data.height, c.data.width = (int(v) for v in cfg.INPUT.SIZE_TRAIN)
  c.data.mean = tuple(cfg.INPUT.PIXEL_MEAN)
  c.data.std = tuple(cfg.INPUT.PIXEL_STD)
  c.model.dtype = "float32"
  return c


def align_schedule(c) -> None:
  """Shifts our warm-up/multi-step schedule one epoch earlier (BoT's effective one)."""
  w, f = int(c.optim.warmup_epochs), float(c.optim.warmup_factor)
  if w < 1:
    raise ValueError("align=schedule needs a warm-up")
  c.optim.warmup_factor = f + (1.0 - f) / w
  c.optim.warmup_epochs = w - 1
  c.optim.milestones = tuple(max(int(m) - 1, 0) for m in c.optim.milestones)


class BotReference(ReferenceSide):
  """reid-strong-baseline's create_supervised_trainer_with_center step on CPU."""

  name = "bot"

  def __init__(self, ref_dir: str, *, batch: int, num_instances: int, height: int,
               width: int, num_classes: int, steps_per_epoch: int, seed: int = 0,
               dtype: str = "float32", align: Sequence[str] = ()):
    import torch  # pylint: disable=import-outside-toplevel
    unknown = set(align) - set(ALIGNMENTS)
    if unknown:
      raise SystemExit(f"--align: unknown {sorted(unknown)} for bot (known: {ALIGNMENTS})")
    self.torch = torch
    self.dtype = getattr(torch, dtype)
    self.ref = _import_reference(ref_dir)
    cfg = self.ref.config.cfg.clone()
    cfg.merge_from_file(os.path.join(os.path.abspath(ref_dir), CONFIG_FILE))
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu",
        "MODEL.PRETRAIN_CHOICE", "self",   # no ImageNet file: random init below
        "SOLVER.IMS_PER_BATCH", batch,
        "DATALOADER.NUM_INSTANCE", num_instances,
        "INPUT.SIZE_TRAIN", [height, width],
        "INPUT.PROB", 0.0, "INPUT.RE_PROB", 0.0, "INPUT.PADDING", 0,  # augmentation off
    ])
    cfg.freeze()
    self.cfg = cfg
    self.num_classes = num_classes
    self.steps_per_epoch = steps_per_epoch
    self.align = tuple(align)
    self.config = map_config(cfg)
    if "schedule" in self.align:
      align_schedule(self.config)

    warnings.filterwarnings("ignore", module="torch.optim.lr_scheduler")
    warnings.filterwarnings("ignore", message=".*addmm_.*")
    torch.manual_seed(seed)
    with cpu_cuda_shim():
      self.model = self.ref.modeling.build_model(cfg, num_classes)
      self.model.base.random_init()
      loss_func, self.center_criterion = self.ref.layers.make_loss_with_center(
          cfg, num_classes)
      # float64: the same float32 initial values, converted before the optimizers
      # are made (the float32 noise floor of parity.run_parity).
      self.model.to(self.dtype)
      self.center_criterion.to(self.dtype)
      self.optimizer, self.optimizer_center = self.ref.solver.make_optimizer_with_center(
          cfg, self.model, self.center_criterion)
      self.scheduler = self.ref.solver.WarmupMultiStepLR(
          self.optimizer, cfg.SOLVER.STEPS, cfg.SOLVER.GAMMA, cfg.SOLVER.WARMUP_FACTOR,
          cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_METHOD)
    # Record each loss term as the reference's own loss_func computes it.
    self.terms: dict = {}
    cells = _closure(loss_func)
    for name, term, pick in (("xent", "id", None), ("triplet", "triplet", 0),
                             ("center_criterion", "center", None)):
      if name not in cells:
        raise RuntimeError(f"the reference's loss_func has no {name!r}; "
                           "parity_bot needs updating for this checkout")
      cells[name].cell_contents = _Recorder(cells[name].cell_contents, term,
                                            self.terms, pick)
    engine = self.ref.trainer.create_supervised_trainer_with_center(
        self.model, self.center_criterion, self.optimizer, self.optimizer_center,
        loss_func, cfg.SOLVER.CENTER_LOSS_WEIGHT, device=cfg.MODEL.DEVICE)
    self._update = engine._process_function  # pylint: disable=protected-access
    if "stem_relu" in self.align:
      self.model.base.bn1.register_forward_hook(
          lambda mod, inp, out: torch.nn.functional.relu(out))
    self.bn_counts = bn_counter(self.model)
    self.layout = Layout(backbone_prefix="base.", neck="bottleneck",
                         classifier="classifier", centers="centers")
    self.term_map = {"id_loss": "id", "tri_loss": "triplet", "center_loss": "center",
                     "loss": "total"}
    self.iteration = 0
    self.description = (
        f"bot ({CONFIG_FILE}): {cfg.MODEL.NAME} last stride {cfg.MODEL.LAST_STRIDE}, "
        f"BNNeck, label-smoothed CE + triplet(margin {cfg.SOLVER.MARGIN}) + "
        f"{cfg.SOLVER.CENTER_LOSS_WEIGHT} x center (SGD lr {cfg.SOLVER.CENTER_LR}), "
        f"Adam lr {cfg.SOLVER.BASE_LR} wd {cfg.SOLVER.WEIGHT_DECAY}, warm-up "
        f"{cfg.SOLVER.WARMUP_ITERS} epochs from {cfg.SOLVER.WARMUP_FACTOR}, steps "
        f"{tuple(cfg.SOLVER.STEPS)}; {dtype}; align: {','.join(self.align) or 'none'}")

  def initial_weights(self):
    return torch_named(
        self.model, {"centers": self.center_criterion.centers})

  def load_weights(self, named):
    torch_load(self.model, named, {"centers": self.center_criterion.centers})

  def step(self, batch: Batch) -> dict[str, float]:
    torch = self.torch
    if self.iteration % self.steps_per_epoch == 0:
      self.scheduler.step()          # do_train_with_center: Events.EPOCH_STARTED
    lr = self.optimizer.param_groups[0]["lr"]
    img = torch.from_numpy(batch.nchw()).to(self.dtype)
    target = torch.from_numpy(batch.pids.astype(np.int64))
    self.terms.clear()
    with cpu_cuda_shim():
      total, _ = self._update(None, (img, target))
    self.iteration += 1
    out = dict(self.terms)
    out["total"] = float(total)
    out["lr"] = float(lr)
    return out

  def grads(self) -> dict[str, np.ndarray]:
    out = torch_grads(self.model)
    # The step multiplied the centers' gradient by 1 / CENTER_LOSS_WEIGHT in
    # place; undo it so the replay's own scaling (optax.scale) is exercised.
    g = self.center_criterion.centers.grad.detach().cpu().numpy()
    out["centers"] = g * self.cfg.SOLVER.CENTER_LOSS_WEIGHT
    return out

  def snapshot(self) -> Snapshot:
    return torch_snapshot(
        self.model, self.optimizer, {"centers": self.center_criterion.centers})
