"""The `anon` reference of experiments/parity.py: whuzjw/privacy-reid (method A).

This file builds and steps the reference (AnonReference); the names mapping is
in parity_anon_layout, the batches in parity_anon_batches, our side in
parity_anon_jax, the CPU shims in parity_anon_shims.

Everything that trains comes from the checkout's own code: `config.cfg` merged
with `configs/AGW_baseline.yml` (MODEL.MODE GCR, OUTPUT_MODE both: C on O and
on P), `modeling.build_model` (PrivacyModel: G and G_R pix2pix U-Nets from
`networks.define_G`, D1 and D2 PatchGANs from `networks.define_D`, C the AGW
`Baseline` on `resnet50_nl`: non-local blocks, GeM with a learned p, BNNeck),
`PrivacyModel.get_creterion` (CrossEntropyLabelSmooth + WeightedRegularizedTriplet
+ 5e-4 x CenterLoss per reid term, GANLoss('vanilla'), L1), `get_optimizer`
(Adam betas 0.5/0.999 for G, G_R, D1, D2, torch's defaults for C, all with the
coupled weight decay; SGD for the centers), `utils.lr_scheduler.WarmupMultiStepLR`
on the five Adams (as tools/main.py), and the step itself is the `_update`
function of `tools.train.create_supervised_trainer`: C(O), P = G(O), R = G_R(P),
C(P); D1 and D2 on detached fakes (fake term first, then real; the two terms
summed); one joint backward of GAN_D1 + GAN_D2 + 100 L1(P, M) + 100 L1(R, O) +
reid(O) + reid(P) into G, G_R and C; the center gradient times 1 / 5e-4 and its
SGD step. `do_train` steps the schedulers on EPOCH_STARTED; we do the same
every `steps_per_epoch` steps.

Batches: 8-bit images (P x K, augmentation off: INPUT.PROB, RE_PROB, PADDING
0), normalised as both pipelines do (ImageNet mean, std 0.5); M is the
reference's own `do_mosaic` (data/datasets/dataset_loader.py, PIL) of the 8-bit
image with our block size (24 at 256 px, scaled by height / 256 as our
config), and our `desensitize` mosaic is checked against it (printed). Both
sides get the same M.

Small sizes (development): the reference names two U-Nets only (unet_128: 7
downs, unet_256: 8); for other depths the harness builds the reference's own
`networks.UnetGenerator` with `num_downs_for(h, w, 7)` downs through its
`init_net` (no formula changes). `--ngf`/`--ndf` set MODEL.NGF/NDF.

CPU shims (no change to any formula), in `cpu_shims` while the reference
builds and `tensor_cuda_shim` while it steps:
  * `torch.cuda.is_available()` is True and `Module.to(<gpu id>)` the identity
    while building (its asserts and `.to(0)`), `torch.nn.DataParallel(m, ids)`
    returns m itself (torch's own DataParallel is a pass-through on a machine
    without GPUs; without the wrapper the keys carry no `module.`),
    `Module.cuda()` / `Tensor.cuda()` are the identity (GANLoss(...).cuda(),
    CenterLoss / CrossEntropyLabelSmooth with use_gpu=True).
  * `utils.reid_metric` (evaluation only; its imports need h5py) and
    `torch.utils.tensorboard` (the trainer's SummaryWriter, logging only) are
    stub modules when they cannot be imported.
  * MODEL.PRETRAIN_CHOICE 'none': no ImageNet file; C's backbone gets the
    reference's own `ResNetNL.random_init()` (which also sets the non-local
    output BN scale to 1, so every non-local path has a gradient), the BNNeck
    and classifier their kaiming / classifier init, G, G_R, D1, D2 pix2pix's
    normal(0, 0.02) `init_weights`, the centers CenterLoss's torch.randn.

Known deviations (docs/method_a.md, "Fidelity"):
  nonlocal_width (fixed) The reference's Non_local has `inter_channels =
             reduc_ratio // reduc_ratio` = 1 channel; ours was C/2. Now
             `config.model.non_local_inter_channels = 1` in config_base.make_agw
             (AGW's code, the default), 0 for the non-local paper's C/2.
`align` (diagnosis only):
  d_bn_g_step   the reference's G step runs D1/D2 in train mode, which also
                updates their BN running statistics (3 updates per step; ours
                2): its BN momentum is 0 during that forward.
  d_fake_first  the reference updates D's BN statistics fake batch first,
                then real; ours real first: our D loss runs fake first.
  Both touch only D's running statistics, which nothing reads (D always runs
  in train mode); the losses and weights are the same either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Sequence

import numpy as np

from experiments.parity_anon_batches import (AnonBatch, load_reference_mosaic,
                                             make_anon_batches, make_images8)
from experiments.parity_anon_jax import AnonJaxSide
from experiments.parity_anon_layout import AnonLayout
from experiments.parity_anon_shims import cpu_shims, import_reference, tensor_cuda_shim, unet_depth
from experiments.parity_jax import load_config
from experiments.parity_layout import is_bn_stat
from experiments.parity_reference import (ReferenceSide, bn_counter, torch_grads, torch_load,
                                          torch_named)
from experiments.parity_verdict import Snapshot

CONFIG_FILE = "configs/AGW_baseline.yml"
# C's pooled features at the reference's random init have |f| ~ 80 (an ImageNet
# init gives ~10-30); anchors then reach d_ap - d_an > 88 and the reference's
# SoftMarginLoss, log(1 + exp(-x)) in float32, overflows to inf (deviation W in
# docs/method_a.md). The harness scales layer4's output BNs by this factor after
# the reference's init, on the reference's weights, before they are copied.
C_FEATURE_SCALE = 0.1
ALIGNMENTS = ("d_bn_g_step", "d_fake_first")


class _Calls:
  """Wraps a criterion entry and records the value of every call, in order."""

  def __init__(self, fn, store: list):
    self.fn, self.store = fn, store

  def __call__(self, *args, **kwargs):
    out = self.fn(*args, **kwargs)
    value = out[0] if isinstance(out, tuple) else out
    self.store.append(float(value.detach()))
    return out

  def __getattr__(self, item):
    return getattr(self.fn, item)


def map_config(cfg, num_downs: int):
  """Our configs/anon_market.py:mosaic,agw with the reference cfg's values mapped in."""
  c = load_config("configs/anon_market.py", "mosaic,agw")
  s, m = cfg.SOLVER, cfg.MODEL
  if s.OPTIMIZER_NAME != "Adam" or s.WARMUP_METHOD != "linear":
    raise ValueError("only Adam with the linear warm-up is mapped")
  if (m.MODE, m.OUTPUT_MODE, m.NAME) != ("GCR", "both", "resnet50_nl"):
    raise ValueError(f"only MODE GCR, OUTPUT_MODE both, NAME resnet50_nl are mapped "
                     f"(got {m.MODE}, {m.OUTPUT_MODE}, {m.NAME})")
  if (m.WEIGHT_REGULARIZED_TRIPLET, m.GENERALIZED_MEAN_POOL, m.CENTER_LOSS) != ("on",) * 3:
    raise ValueError("only the AGW setting (weighted triplet, GeM, center loss) is mapped")
  if (m.GAN_MODE, m.NORM, m.NETD, m.INIT_TYPE) != ("vanilla", "batch", "basic", "normal"):
    raise ValueError("only vanilla GAN, batch norm, the basic PatchGAN, normal init are mapped")
  c.model.backbone = "resnet50"
  c.model.last_stride = int(m.LAST_STRIDE)
  c.model.pooling, c.model.non_local, c.model.stem_relu = "gem", True, False
  c.model.non_local_inter_channels = 1                # AGW's code: 1 channel
  c.model.dtype = "float32"
  c.model.pretrained = ""
  c.optim.lr = float(s.BASE_LR)
  c.optim.b1, c.optim.b2 = 0.9, 0.999                 # torch.optim.Adam defaults (C)
  c.anon.b1, c.anon.b2 = 0.5, 0.999                   # get_optimizer: G, G_R, D1, D2
  c.optim.weight_decay = float(s.WEIGHT_DECAY)
  c.optim.epochs = int(s.MAX_EPOCHS)
  c.optim.warmup_epochs = int(s.WARMUP_ITERS)
  c.optim.warmup_factor = float(s.WARMUP_FACTOR)
  c.optim.milestones = tuple(int(v) for v in s.STEPS)
  c.optim.gamma = float(s.GAMMA)
  c.optim.epoch_offset = 1   # scheduler stepped in its constructor and at EPOCH_STARTED
  c.loss.id_weight, c.loss.label_smoothing = 1.0, 0.1
  c.loss.triplet, c.loss.triplet_weight = "weighted", 1.0
  c.loss.center_weight = float(s.CENTER_LOSS_WEIGHT)
  c.loss.center_lr = float(s.CENTER_LR)
  c.anon.mode, c.anon.desensitize = "learned", "mosaic"
  c.anon.ngf, c.anon.ndf = int(m.NGF), int(m.NDF)
  c.anon.num_downs = int(num_downs)
  c.anon.d_layers = 3
  c.anon.dropout = False      # NO_DROPOUT 'store_true' (a truthy string): no dropout
  c.anon.d_loss_scale = 1.0
  c.anon.weights.update(dict(gan_d1=1.0, gan_d2=1.0, l1_anon=100.0, l1_rec=100.0,
                             reid_raw=1.0, reid_anon=1.0))
  c.data.batch_size = int(s.IMS_PER_BATCH)
  c.data.num_instances = int(cfg.DATALOADER.NUM_INSTANCE)
  c.data.height, c.data.width = (int(v) for v in cfg.INPUT.IMG_SIZE)
  c.data.mean = tuple(cfg.INPUT.PIXEL_MEAN)
  c.data.std = tuple(cfg.INPUT.PIXEL_STD)
  return c


def scale_c_features(base, factor: float) -> None:
  """Multiplies the scales of layer4's residual-branch output BNs (every block's
  bn3 and the downsample BN) by `factor`: C's feature map, hence the pooled
  feature, is `factor` times the random init's (BN makes the rest scale-free)."""
  import torch  # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    for i, block in enumerate(base.layer4):
      block.bn3.weight.mul_(factor)
      if i == 0 and block.downsample is not None:
        block.downsample[1].weight.mul_(factor)


class AnonReference(ReferenceSide):
  """privacy-reid's create_supervised_trainer step (GCR, both) on CPU."""

  name = "anon"
  step1_floor = True   # parity_verdict.verdict: the WRT triplet's own float32 error at step 1

  def __init__(self, ref_dir: str, *, batch: int, num_instances: int, height: int,
               width: int, num_classes: int, steps_per_epoch: int, seed: int = 0,
               dtype: str = "float32", align: Sequence[str] = (), ngf: int = 64,
               ndf: int = 64):
    import torch  # pylint: disable=import-outside-toplevel
    from privreid_jax.models import unet as unet_lib  # pylint: disable=import-outside-toplevel
    from privreid_jax.ops import desensitize  # pylint: disable=import-outside-toplevel
    unknown = set(align) - set(ALIGNMENTS)
    if unknown:
      raise SystemExit(f"--align: unknown {sorted(unknown)} for anon (known: {ALIGNMENTS})")
    self.torch = torch
    self.dtype = getattr(torch, dtype)
    self.ref_dir = ref_dir
    self.ref = import_reference(ref_dir)
    num_downs = unet_lib.num_downs_for(height, width, 7)
    netg = {7: "unet_128", 8: "unet_256"}.get(num_downs, f"parity_unet_{num_downs}")
    block = int(desensitize.scale_params("mosaic", {"block": 24}, height)["block"])
    cfg = self.ref.config.cfg.clone()
    cfg.merge_from_file(os.path.join(os.path.abspath(ref_dir), CONFIG_FILE))
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu",
        "MODEL.PRETRAIN_CHOICE", "none",   # no ImageNet file: random init below
        "MODEL.NETG", netg, "MODEL.NGF", ngf, "MODEL.NDF", ndf,
        "SOLVER.IMS_PER_BATCH", batch, "DATALOADER.NUM_INSTANCE", num_instances,
        "INPUT.IMG_SIZE", [height, width], "INPUT.TYPE", "mosaic", "INPUT.RADIUS", float(block),
        "INPUT.PROB", 0.0, "INPUT.RE_PROB", 0.0, "INPUT.PADDING", 0,   # augmentation off
        "DATASETS.NAMES", "market1501", "TEST.EVALUATE_ONLY", "off",
    ])
    cfg.freeze()
    self.cfg = cfg
    self.block = block
    self.num_downs = num_downs
    self.num_classes = num_classes
    self.steps_per_epoch = steps_per_epoch
    self.align = tuple(align)
    self.config = map_config(cfg, num_downs)
    self.layout = AnonLayout(num_downs=num_downs, d_layers=3)

    warnings.filterwarnings("ignore", module="torch.optim.lr_scheduler")
    warnings.filterwarnings("ignore", message=".*addmm_.*")
    torch.manual_seed(seed)
    with cpu_shims(), unet_depth(self.ref.networks, netg, num_downs), \
        contextlib.redirect_stdout(open(os.devnull, "w", encoding="utf-8")):
      model = self.ref.modeling.build_model(cfg, num_classes)
      model.netC.base.random_init()
      scale_c_features(model.netC.base, C_FEATURE_SCALE)
      criterion = model.get_creterion(cfg, num_classes)
      # float64: the same float32 initial values, converted before the optimizers.
      model.to(self.dtype)
      criterion["center"].to(self.dtype)
      criterion["gan"].to(self.dtype)
      optimizer = model.get_optimizer(cfg, criterion)
      self.schedulers = [
          self.ref.lr.WarmupMultiStepLR(optimizer[k], cfg.SOLVER.STEPS, cfg.SOLVER.GAMMA,
                                        cfg.SOLVER.WARMUP_FACTOR, cfg.SOLVER.WARMUP_ITERS,
                                        cfg.SOLVER.WARMUP_METHOD)
          for k in ("g", "c", "r", "d1", "d2")]
    self.model, self.criterion, self.optimizer = model, criterion, optimizer
    # Record each loss term as the reference's own criteria compute it.
    self.calls: dict[str, list] = {k: [] for k in ("xent", "triplet", "center", "gan",
                                                   "G_l1", "R_l1")}
    for key, store in self.calls.items():
      criterion[key] = _Calls(criterion[key], store)
    if "d_bn_g_step" in self.align:
      criterion["G_gan"] = self._no_d_stat_update(criterion["G_gan"])
    metric = {"r1": 0.0, "r1_max": 0.0, "psnr_OM": 0.0, "ssim_OM": 0.0, "psnr_OP": 100.0,
              "ssim_OP": 1.0}
    engine = self.ref.train.create_supervised_trainer(
        model, None, optimizer, criterion, cfg, metric, logging.getLogger("parity_anon"),
        device="cpu")
    self._update = engine._process_function  # pylint: disable=protected-access
    self.bn_counts = bn_counter(model)
    # Our step's BN updates per module and step (bn_stats_unbiased): G, G_R once,
    # C twice (O and P), D1 and D2 twice (real and fake).
    self.bn_updates_per_step = {k: (2 if k.startswith(("netC.", "netD")) else 1)
                                for k in self.bn_counts_names()}
    self.term_map = {
        "d1_loss": "D1", "d2_loss": "D2", "gan_d1": "G_gan_D1", "gan_d2": "G_gan_D2",
        "l1_anon": "G_l1", "l1_rec": "R_l1", "reid_raw": "C_O", "reid_anon": "C_P",
        "raw_id_loss": "id_O", "raw_tri_loss": "tri_O", "raw_center_loss": "center_O",
        "anon_id_loss": "id_P", "anon_tri_loss": "tri_P", "anon_center_loss": "center_P",
        "loss": "total"}
    self.post_update_terms = ("G_gan_D1", "G_gan_D2", "total")   # against the updated D
    self.iteration = 0
    self.description = (
        f"anon ({CONFIG_FILE}, GCR both): G, G_R {netg} ({num_downs} downs, ngf {ngf}), "
        f"D1, D2 basic PatchGAN (ndf {ndf}), C AGW {cfg.MODEL.NAME} (non-local width 1 "
        f"on both sides), mosaic block {block}; Adam lr {cfg.SOLVER.BASE_LR} wd "
        f"{cfg.SOLVER.WEIGHT_DECAY}, warm-up {cfg.SOLVER.WARMUP_ITERS} epochs from "
        f"{cfg.SOLVER.WARMUP_FACTOR}, steps {tuple(cfg.SOLVER.STEPS)}, center "
        f"{cfg.SOLVER.CENTER_LOSS_WEIGHT} (SGD {cfg.SOLVER.CENTER_LR}); {dtype}; "
        f"align: {','.join(self.align) or 'none'}")

  def bn_counts_names(self):
    return [n for n, m in self.model.named_modules()
            if isinstance(m, self.torch.nn.modules.batchnorm._BatchNorm)]  # pylint: disable=protected-access

  def _no_d_stat_update(self, fn):
    """Runs `fn` (the G step's D1/D2 forward) with D's BN momentum 0: batch
    statistics as before, running statistics unchanged (align d_bn_g_step)."""
    bns = [m for net in (self.model.netD1, self.model.netD2) for m in net.modules()
           if isinstance(m, self.torch.nn.modules.batchnorm._BatchNorm)]  # pylint: disable=protected-access

    def wrapped(*args, **kwargs):
      saved = [m.momentum for m in bns]
      for m in bns:
        m.momentum = 0.0
      try:
        return fn(*args, **kwargs)
      finally:
        for m, v in zip(bns, saved):
          m.momentum = v
    return wrapped

  # --- ReferenceSide --------------------------------------------------------------

  def make_batches(self, steps: int, batch: int, num_instances: int, height: int,
                   width: int, seed: int = 0, log=print) -> list[AnonBatch]:
    images8 = make_images8(steps, batch, num_instances, self.num_classes, height, width,
                           seed)
    try:
      ref_mosaic = load_reference_mosaic(self.ref_dir)
    except Exception as e:  # pylint: disable=broad-except
      log(f"the reference's do_mosaic could not be loaded ({type(e).__name__}: {e})")
      ref_mosaic = None
    return make_anon_batches(images8, mean=self.config.data.mean, std=self.config.data.std,
                             block=self.block, ref_mosaic=ref_mosaic, log=log)

  def jax_side(self, align: Sequence[str] = ()) -> AnonJaxSide:
    return AnonJaxSide(self.config, num_classes=self.num_classes,
                       steps_per_epoch=self.steps_per_epoch, layout=self.layout,
                       fake_first="d_fake_first" in (tuple(align) or self.align))

  def initial_weights(self):
    return self._named()

  def load_weights(self, named):
    torch_load(self.model, named, {"centers": self.criterion["center"].centers})

  def _named(self) -> dict[str, np.ndarray]:
    return torch_named(
        self.model, {"centers": self.criterion["center"].centers})

  def step(self, batch: AnonBatch) -> dict[str, float]:
    torch = self.torch
    if self.iteration % self.steps_per_epoch == 0:
      for s in self.schedulers:       # do_train: Events.EPOCH_STARTED
        s.step()
    lrs = {k: o.param_groups[0]["lr"] for k, o in self.optimizer.items() if k != "center"}
    if len(set(lrs.values())) != 1:
      raise RuntimeError(f"the reference's optimizers run at different lrs: {lrs}")
    o = torch.from_numpy(batch.nchw()).to(self.dtype)
    m = torch.from_numpy(batch.targets_nchw()).to(self.dtype)
    pids = torch.from_numpy(batch.pids.astype(np.int64))
    for store in self.calls.values():
      store.clear()
    with tensor_cuda_shim():
      out = self._update(None, (o, m, pids, None, None))
    self.iteration += 1
    c = self.calls
    if len(c["gan"]) != 6 or len(c["xent"]) != 2:
      raise RuntimeError(f"unexpected call pattern of the reference's criteria: "
                         f"{ {k: len(v) for k, v in c.items()} }")
    _, _, g_gan, g_l1, r_l1, d1, d2, c_o, c_p = out
    terms = {
        "D1": d1, "D2": d2, "G_gan_D1": c["gan"][4], "G_gan_D2": c["gan"][5],
        "G_l1": c["G_l1"][0], "R_l1": c["R_l1"][0], "C_O": c_o, "C_P": c_p,
        "id_O": c["xent"][0], "tri_O": c["triplet"][0], "center_O": c["center"][0],
        "id_P": c["xent"][1], "tri_P": c["triplet"][1], "center_P": c["center"][1],
        "total": float(g_gan) + float(g_l1) + float(r_l1) + float(c_o) + float(c_p),
        "lr": float(next(iter(lrs.values()))),
    }
    return {k: float(v) for k, v in terms.items()}

  def grads(self) -> dict[str, np.ndarray]:
    out = torch_grads(self.model)
    # The step multiplied the centers' gradient by 1 / CENTER_LOSS_WEIGHT in place.
    g = self.criterion["center"].centers.grad.detach().cpu().numpy()
    out["centers"] = g * self.cfg.SOLVER.CENTER_LOSS_WEIGHT
    return out

  def snapshot(self) -> Snapshot:
    named = self._named()
    bn = {k: v for k, v in named.items() if is_bn_stat(k)}
    params = {k: v for k, v in named.items() if not is_bn_stat(k)}
    names = {id(p): n for n, p in self.model.named_parameters()}
    adam_m, adam_v, counts = {}, {}, set()
    for key, opt in self.optimizer.items():
      if key == "center":
        continue
      for group in opt.param_groups:
        for p in group["params"]:
          st = opt.state.get(p)
          if not st:
            continue
          adam_m[names[id(p)]] = st["exp_avg"].detach().cpu().numpy().copy()
          adam_v[names[id(p)]] = st["exp_avg_sq"].detach().cpu().numpy().copy()
          counts.add(int(st["step"]))
    return Snapshot(params, bn, adam_m, adam_v,
                    counts.pop() if len(counts) == 1 else None)
