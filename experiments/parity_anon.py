"""The `anon` reference of experiments/parity.py: whuzjw/privacy-reid (method A).

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
import dataclasses
import importlib.util
import logging
import os
import sys
import types
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from experiments import parity

CONFIG_FILE = "configs/AGW_baseline.yml"
# C's pooled features at the reference's random init have |f| ~ 80 (an ImageNet
# init gives ~10-30); anchors then reach d_ap - d_an > 88 and the reference's
# SoftMarginLoss, log(1 + exp(-x)) in float32, overflows to inf (deviation W in
# docs/method_a.md). The harness scales layer4's output BNs by this factor after
# the reference's init, on the reference's weights, before they are copied.
C_FEATURE_SCALE = 0.1
ALIGNMENTS = ("d_bn_g_step", "d_fake_first")
NETWORKS = ("G", "G_R", "D1", "D2")
AGW_STAGES = (3, 4, 6, 3)


# ----------------------------------------------------------------------------
# Weight layouts: our Flax trees <-> the reference's PyTorch names.
# An entry is (torch key, collection, path in our network's tree).
# Conv kernels: torch (out, in, kh, kw) and ConvTranspose (in, out, kh, kw) are
# both the flax kernel transposed by (3, 2, 0, 1) (see models/unet.py).
# ----------------------------------------------------------------------------
Entry = tuple[str, str, tuple[str, ...]]


def _bn_entries(key: str, name: Sequence[str]) -> list[Entry]:
  name = tuple(name)
  return [(f"{key}.weight", "params", name + ("scale",)),
          (f"{key}.bias", "params", name + ("bias",)),
          (f"{key}.running_mean", "batch_stats", name + ("mean",)),
          (f"{key}.running_var", "batch_stats", name + ("var",))]


def unet_entries(num_downs: int, prefix: str = "model.") -> list[Entry]:
  """pix2pix UnetGenerator keys for our UNetGenerator(num_downs).

  Block i (0 = outermost) has its Sequential at `prefix + "model."`, then
  "1.model." (the submodule follows the outermost block's single down conv),
  then "3.model." per further level (after LeakyReLU, conv, BN): `prefix` is
  "model." for the reference's UnetGenerator, "" for the bare outermost block
  of experiments/torch_anon_reference.py.
  """
  n = int(num_downs)
  if n < 2:
    raise ValueError(f"unet_entries: num_downs={n}, expected >= 2")
  out: list[Entry] = []
  for i in range(n):
    bp = prefix + "model." + ("1.model." if i else "") + "3.model." * max(i - 1, 0)
    if i == 0:
      out += [(f"{bp}0.weight", "params", ("down0", "kernel")),
              (f"{bp}3.weight", "params", ("up0", "kernel")),
              (f"{bp}3.bias", "params", ("up0", "bias"))]
    elif i == n - 1:
      out += [(f"{bp}1.weight", "params", (f"down{i}", "kernel")),
              (f"{bp}3.weight", "params", (f"up{i}", "kernel"))]
      out += _bn_entries(f"{bp}4", (f"up{i}_bn",))
    else:
      out += [(f"{bp}1.weight", "params", (f"down{i}", "kernel"))]
      out += _bn_entries(f"{bp}2", (f"down{i}_bn",))
      out += [(f"{bp}5.weight", "params", (f"up{i}", "kernel"))]
      out += _bn_entries(f"{bp}6", (f"up{i}_bn",))
  return out


def patchgan_entries(n_layers: int, prefix: str = "model.") -> list[Entry]:
  """pix2pix NLayerDiscriminator keys (its `model` Sequential) for our PatchDiscriminator."""
  n = int(n_layers)
  out: list[Entry] = [(f"{prefix}0.weight", "params", ("conv0", "kernel")),
                      (f"{prefix}0.bias", "params", ("conv0", "bias"))]
  for k in range(1, n + 1):
    out.append((f"{prefix}{3 * k - 1}.weight", "params", (f"conv{k}", "kernel")))
    out += _bn_entries(f"{prefix}{3 * k}", (f"conv{k}_bn",))
  last = 3 * n + 2
  out += [(f"{prefix}{last}.weight", "params", (f"conv{n + 1}", "kernel")),
          (f"{prefix}{last}.bias", "params", (f"conv{n + 1}", "bias"))]
  return out


def agw_extra_entries(base_prefix: str = "base.", pool_key: str = "global_pool.p",
                      non_local_layers: Sequence[int] = (0, 2, 3, 0),
                      stages: Sequence[int] = AGW_STAGES) -> list[Entry]:
  """AGW's pieces outside a torchvision ResNet: the non-local blocks and GeM's p.

  The reference's `ResNetNL` keeps stage s's blocks in `NL_{s}` (a ModuleList)
  after that stage's last len(NL_s) blocks; ours are `backbone/nl{s}_{b}`.
  """
  from privreid_jax.models import resnet  # pylint: disable=import-outside-toplevel
  out: list[Entry] = []
  for s, (blocks, count) in enumerate(zip(stages, non_local_layers), 1):
    for j, b in enumerate(resnet.non_local_indices(blocks, count) if count else ()):
      tk, ours = f"{base_prefix}NL_{s}.{j}", ("backbone", f"nl{s}_{b}")
      for sub, mine in (("g", "g"), ("theta", "theta"), ("phi", "phi"), ("W.0", "W_0")):
        out += [(f"{tk}.{sub}.weight", "params", ours + (mine, "kernel")),
                (f"{tk}.{sub}.bias", "params", ours + (mine, "bias"))]
      out += _bn_entries(f"{tk}.W.1", ours + ("W_1",))
  if pool_key:
    out.append((pool_key, "params", ("pool", "p")))
  return out


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree, path, value):
  tree = dict(tree)
  tree[path[0]] = value if len(path) == 1 else _set(tree[path[0]], path[1:], value)
  return tree


def _to_torch(v) -> np.ndarray:
  v = np.asarray(v)
  return v.transpose(3, 2, 0, 1) if v.ndim == 4 else v


def _from_torch(v) -> np.ndarray:
  v = np.asarray(v)
  return v.transpose(2, 3, 1, 0) if v.ndim == 4 else v


def tree_to_named(entries: Sequence[Entry], params, stats=None, prefix: str = ""
                  ) -> dict[str, np.ndarray]:
  """{prefix + torch key: torch-layout float32 array}; `stats` None skips BN buffers
  (so a params-shaped tree such as Adam's moments works too)."""
  out = {}
  trees = {"params": params, "batch_stats": stats}
  for key, coll, path in entries:
    if trees[coll] is None:
      continue
    out[prefix + key] = np.ascontiguousarray(_to_torch(np.asarray(_get(trees[coll], path),
                                                                  np.float32)))
  return out


def named_to_tree(entries: Sequence[Entry], named: Mapping[str, np.ndarray], params,
                  stats, prefix: str = "", strict_stats: bool = True):
  """(params, stats) with every entry copied from `named`, shapes checked.

  BN buffers missing from `named` keep their values unless `strict_stats`."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  trees = {"params": params, "batch_stats": stats}
  for key, coll, path in entries:
    full = prefix + key
    if full not in named:
      if coll == "batch_stats" and not strict_stats:
        continue
      raise KeyError(f"{full}: missing from the reference's weights")
    old = _get(trees[coll], path)
    value = _from_torch(named[full])
    if tuple(value.shape) != tuple(np.shape(old)):
      raise ValueError(f"{full}: reference {tuple(np.shape(named[full]))} does not fit "
                       f"ours {tuple(np.shape(old))} ({'/'.join(path)})")
    trees[coll] = _set(trees[coll], path, jnp.asarray(value, jnp.float32))
  return trees["params"], trees["batch_stats"]


@dataclasses.dataclass(frozen=True)
class AnonLayout:
  """Where method A's networks live in the reference's PrivacyModel state dict."""
  num_downs: int
  d_layers: int = 3
  g: str = "netG."
  g_r: str = "netG_R."
  d1: str = "netD1."
  d2: str = "netD2."
  c: str = "netC."
  centers: str = "centers"
  unet_prefix: str = "model."       # the reference's UnetGenerator wrapper
  patchgan_prefix: str = "model."

  @property
  def reid(self) -> parity.Layout:
    return parity.Layout(backbone_prefix=self.c + "base.", neck=self.c + "bottleneck",
                         classifier=self.c + "classifier", centers=self.centers)

  def prefix(self, net: str) -> str:
    return {"G": self.g, "G_R": self.g_r, "D1": self.d1, "D2": self.d2}[net]

  def entries(self, net: str) -> list[Entry]:
    if net in ("G", "G_R"):
      return unet_entries(self.num_downs, self.unet_prefix)
    if net in ("D1", "D2"):
      return patchgan_entries(self.d_layers, self.patchgan_prefix)
    raise KeyError(net)

  @property
  def c_extra(self) -> list[Entry]:
    return agw_extra_entries("base.", "global_pool.p")


def reid_to_named(params, stats, layout: AnonLayout, *, with_frozen_bias: bool = True
                  ) -> dict[str, np.ndarray]:
  """Our AGW C (ReidModel params / BN stats) in the reference's names."""
  out = parity.jax_to_named(params, stats, layout.reid, with_frozen_bias=with_frozen_bias)
  out.update(tree_to_named(layout.c_extra, params, stats, layout.c))
  return out


def named_to_reid(named: Mapping[str, np.ndarray], params, stats, layout: AnonLayout):
  extra_keys = {layout.c + k for k, _, _ in layout.c_extra}
  plain = {k: v for k, v in named.items() if k not in extra_keys}
  params, stats = parity.named_to_jax(plain, params, stats, layout.reid)
  return named_to_tree(layout.c_extra, named, params, stats, layout.c,
                       strict_stats=bool(stats))


def anon_to_named(params: Mapping[str, Any], stats: Mapping[str, Any] | None,
                  layout: AnonLayout, *, reid_name: str = "reid",
                  with_frozen_bias: bool = True) -> dict[str, np.ndarray]:
  """All of method A's networks (params-shaped trees, e.g. Adam moments, with
  stats None) as {reference key: torch-layout array}."""
  out = {}
  for net in NETWORKS:
    if net in params:
      out.update(tree_to_named(layout.entries(net), params[net],
                               None if stats is None else stats[net], layout.prefix(net)))
  out.update(reid_to_named(params[reid_name], None if stats is None else stats[reid_name],
                           layout, with_frozen_bias=with_frozen_bias))
  centers = f"{reid_name}_centers"
  if centers in params:
    out[layout.centers] = np.asarray(params[centers], np.float32)
  return out


def named_to_anon(named: Mapping[str, np.ndarray], params: Mapping[str, Any],
                  stats: Mapping[str, Any], layout: AnonLayout, *, reid_name: str = "reid"):
  """(params, stats) of method A with every network copied from `named`."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  params, stats = dict(params), dict(stats)
  for net in NETWORKS:
    if net in params:
      params[net], stats[net] = named_to_tree(layout.entries(net), named, params[net],
                                              stats[net], layout.prefix(net))
  params[reid_name], stats[reid_name] = named_to_reid(named, params[reid_name],
                                                      stats[reid_name], layout)
  centers = f"{reid_name}_centers"
  if centers in params:
    c = np.asarray(named[layout.centers], np.float32)
    if c.shape != tuple(params[centers].shape):
      raise ValueError(f"centers: reference {c.shape} vs ours {params[centers].shape}")
    params[centers] = jnp.asarray(c)
  return params, stats


# ----------------------------------------------------------------------------
# Batches: 8-bit images, the reference's mosaic as M.
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class AnonBatch(parity.Batch):
  targets: np.ndarray = None   # [B, H, W, 3] float32, normalised M

  def targets_nchw(self) -> np.ndarray:
    return np.ascontiguousarray(self.targets.transpose(0, 3, 1, 2))


def make_images8(steps: int, batch: int, num_instances: int, num_classes: int,
                 height: int, width: int, seed: int = 0):
  """[(uint8 images [B, H, W, 3], pids)] per step: parity.make_batches' patterns
  (per-identity coarse colour grid + per-image noise) rounded to 8 bits."""
  if batch % num_instances or batch // num_instances < 2:
    raise ValueError(f"batch={batch} must be P x K with K={num_instances} and P >= 2")
  p = batch // num_instances
  rng = np.random.default_rng(seed)
  cell = 16 if height % 16 == 0 and width % 16 == 0 else 1
  out = []
  for _ in range(steps):
    ids = rng.choice(num_classes, size=p, replace=False)
    pids = np.repeat(ids, num_instances).astype(np.int32)
    base = rng.uniform(0.0, 1.0, size=(p, height // cell, width // cell, 3))
    base = np.repeat(base.repeat(cell, axis=1).repeat(cell, axis=2), num_instances, axis=0)
    img = np.clip(base + rng.normal(0.0, 0.1, size=base.shape), 0.0, 1.0)
    out.append((np.round(img * 255.0).astype(np.uint8), pids))
  return out


def load_reference_mosaic(ref_dir: str):
  """The reference's `do_mosaic(PIL image, neighbor)` (in place), loaded from its
  file alone (its package imports torchvision; a stub stands in if it is missing:
  do_mosaic itself uses only PIL)."""
  path = os.path.join(os.path.abspath(ref_dir), "data", "datasets", "dataset_loader.py")
  stubs = {}
  try:
    import torchvision.transforms.functional  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except Exception:  # pylint: disable=broad-except
    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    fn = types.ModuleType("torchvision.transforms.functional")
    fn.InterpolationMode = types.SimpleNamespace(BILINEAR="bilinear")
    tv.transforms, tr.functional = tr, fn
    stubs = {"torchvision": tv, "torchvision.transforms": tr,
             "torchvision.transforms.functional": fn}
  saved = {k: sys.modules.get(k) for k in stubs}
  sys.modules.update(stubs)
  try:
    spec = importlib.util.spec_from_file_location("parity_anon_ref_dataset_loader", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k, None)
      else:
        sys.modules[k] = v
  return module.do_mosaic


def make_anon_batches(images8, *, mean, std, block: int, ref_mosaic=None,
                      log=print) -> list[AnonBatch]:
  """Normalised O and M for both sides. M is `ref_mosaic` (the reference's) when
  given, else ours; ours is compared with it either way."""
  from privreid_jax.ops import desensitize  # pylint: disable=import-outside-toplevel
  ours_fn = desensitize.make_target_fn("mosaic", 0, block=int(block), fill="top_left")
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  worst = 0.0
  out = []
  for img8, pids in images8:
    ours = np.stack([ours_fn(im.astype(np.float32) / 255.0) for im in img8])
    if ref_mosaic is not None:
      from PIL import Image  # pylint: disable=import-outside-toplevel
      ref = []
      for im in img8:
        pil = Image.fromarray(im)
        ref_mosaic(pil, block)
        ref.append(np.asarray(pil, np.float32) / 255.0)
      m = np.stack(ref)
      worst = max(worst, float(np.max(np.abs(m - ours))) * 255.0)
    else:
      m = ours
    o = (img8.astype(np.float64) / 255.0 - mean) / std
    mm = (m.astype(np.float64) - mean) / std
    out.append(AnonBatch(images=o.astype(np.float32), pids=pids,
                         targets=mm.astype(np.float32)))
  if ref_mosaic is not None:
    log(f"mosaic targets (block {block}): ours vs the reference's do_mosaic, max |diff| "
        f"{worst:.3g} / 255 levels; both sides get the reference's")
  else:
    log(f"mosaic targets (block {block}): ours (the reference's do_mosaic not loadable)")
  return out


# ----------------------------------------------------------------------------
# Our side.
# ----------------------------------------------------------------------------
def _fake_first_method(base_cls):
  """Method A whose D loss runs the fake pair before the real one (the reference's
  order of D's BN-statistics updates); the loss value is the same."""
  from privreid_jax import losses  # pylint: disable=import-outside-toplevel

  class FakeFirst(base_cls):
    def _d_loss(self, params, stats, name, cond, real, fake):
      logits_fake, st = self._discriminate(params, stats, name, cond, fake)
      logits_real, st = self._discriminate(params, {name: st}, name, cond, real)
      loss = self.d_loss_scale * (losses.gan_bce(logits_real, True)
                                  + losses.gan_bce(logits_fake, False))
      return loss, st
  return FakeFirst


class AnonJaxSide(parity.JaxSide):
  """privreid_jax.methods.anonymization.Method stepped with jax.jit(train_step)."""

  def __init__(self, config, *, num_classes: int, steps_per_epoch: int,
               layout: AnonLayout, fake_first: bool = False):
    from privreid_jax.methods import anonymization  # pylint: disable=import-outside-toplevel
    cls = _fake_first_method(anonymization.Method) if fake_first else anonymization.Method
    super().__init__(config, num_classes=num_classes, steps_per_epoch=steps_per_epoch,
                     layout=layout, method=cls)

  @staticmethod
  def _batch(batch: AnonBatch):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    return {"image": jnp.asarray(batch.images), "target": jnp.asarray(batch.targets),
            "pid": jnp.asarray(batch.pids)}

  def init_from(self, named, batch: AnonBatch, seed: int = 0):
    state = self.method.init(self.jax.random.PRNGKey(seed), self._batch(batch))
    params, stats = named_to_anon(named, state.params, state.batch_stats, self.layout,
                                  reid_name=self.name)
    self.state = state.replace(params=params, batch_stats=stats)

  def step(self, batch: AnonBatch) -> dict[str, float]:
    self.state, metrics = self._step(self.state, self._batch(batch))
    return {k: float(v) for k, v in self.jax.device_get(metrics).items()}

  def snapshot(self) -> parity.Snapshot:
    st = self.jax.device_get(self.state)
    return _anon_snapshot(st.params, st.batch_stats, st.opt_state, self.layout, self.name)

  def make_replay(self) -> "AnonReplay":
    return AnonReplay(self)


def _anon_snapshot(params, stats, opt_state, layout: AnonLayout, name: str
                   ) -> parity.Snapshot:
  named = anon_to_named(params, stats or None, layout, reid_name=name) if stats else \
      anon_to_named(params, None, layout, reid_name=name)
  bn = {k: v for k, v in named.items() if parity.is_bn_stat(k)}
  prm = {k: v for k, v in named.items() if not parity.is_bn_stat(k)}
  adams = {k: parity.find_adam_state(opt_state[k]) for k in params
           if k != f"{name}_centers"}
  mu = {k: a.mu for k, a in adams.items()}
  nu = {k: a.nu for k, a in adams.items()}
  adam_m = anon_to_named(mu, None, layout, reid_name=name, with_frozen_bias=False)
  adam_v = anon_to_named(nu, None, layout, reid_name=name, with_frozen_bias=False)
  counts = {int(a.count) for a in adams.values()}
  return parity.Snapshot(prm, bn, adam_m, adam_v, counts.pop() if len(counts) == 1 else None)


class AnonReplay:
  """Our optimizers (every network's) on the reference's gradients (parity.OptimizerReplay)."""

  def __init__(self, ours: AnonJaxSide):
    import jax  # pylint: disable=import-outside-toplevel
    self.jax, self.layout, self.name = jax, ours.layout, ours.name
    self.txs = ours.method.txs
    self.params = dict(ours.state.params)
    self.stats_template = ours.state.batch_stats
    self.opt_state = {k: self.txs[k].init(v) for k, v in self.params.items()}
    self._update = parity.replay_update(self.txs)

  def step(self, grads: Mapping[str, np.ndarray], buffers: Mapping[str, np.ndarray]):
    tree, _ = named_to_anon({**grads, **buffers}, self.params, self.stats_template,
                            self.layout, reid_name=self.name)
    self.params, self.opt_state = self._update(self.params, self.opt_state, tree)

  def snapshot(self) -> parity.Snapshot:
    params, opt_state = self.jax.device_get((self.params, self.opt_state))
    return _anon_snapshot(params, {}, opt_state, self.layout, self.name)


# ----------------------------------------------------------------------------
# The reference side.
# ----------------------------------------------------------------------------
class _CpuDataParallel:
  """`torch.nn.DataParallel(module, ids)` -> module (see the module docstring)."""

  def __new__(cls, module, *args, **kwargs):
    del args, kwargs
    return module


@contextlib.contextmanager
def tensor_cuda_shim():
  """`Tensor.cuda()` / `Module.cuda()` return the object itself."""
  import torch  # pylint: disable=import-outside-toplevel
  old_t, old_m = torch.Tensor.cuda, torch.nn.Module.cuda
  torch.Tensor.cuda = lambda self, *a, **k: self
  torch.nn.Module.cuda = lambda self, *a, **k: self
  try:
    yield
  finally:
    torch.Tensor.cuda, torch.nn.Module.cuda = old_t, old_m


@contextlib.contextmanager
def cpu_shims():
  """While the reference builds: CUDA 'available', `.to(<gpu id>)` and DataParallel
  pass-throughs, `.cuda()` the identity."""
  import torch  # pylint: disable=import-outside-toplevel
  old_avail, old_to, old_dp = torch.cuda.is_available, torch.nn.Module.to, torch.nn.DataParallel

  def to(self, *args, **kwargs):
    dev = args[0] if args else kwargs.get("device")
    if isinstance(dev, int) or (isinstance(dev, (str, torch.device))
                                and str(dev).startswith("cuda")):
      return self
    return old_to(self, *args, **kwargs)

  torch.cuda.is_available = lambda: True
  torch.nn.Module.to = to
  torch.nn.DataParallel = _CpuDataParallel
  try:
    with tensor_cuda_shim():
      yield
  finally:
    torch.cuda.is_available, torch.nn.Module.to = old_avail, old_to
    torch.nn.DataParallel = old_dp


def _stub(name: str, **attrs):
  module = types.ModuleType(name)
  module.__doc__ = "parity_anon stub: not used by the training step"
  for k, v in attrs.items():
    setattr(module, k, v)
  return module


class _NoWriter:
  def __init__(self, *a, **k):
    pass

  def __getattr__(self, item):
    return lambda *a, **k: None


def _import_reference(ref_dir: str):
  ref_dir = os.path.abspath(ref_dir)
  for sub in ("modeling", "tools", "config", "utils"):
    if not os.path.isdir(os.path.join(ref_dir, sub)):
      raise SystemExit(f"{ref_dir}: no {sub}/ folder; expected a checkout of "
                       "whuzjw/privacy-reid")
  if not os.path.isfile(os.path.join(ref_dir, "modeling", "privacy_model.py")):
    raise SystemExit(f"{ref_dir}: no modeling/privacy_model.py; expected whuzjw/privacy-reid")
  # Another reference's checkout (bot) may have put same-named packages in sys.modules.
  for mod in [m for m in sys.modules
              if m.split(".")[0] in ("config", "modeling", "utils", "tools", "layers")]:
    origin = getattr(sys.modules[mod], "__file__", "") or ""
    if not origin.startswith(ref_dir):
      del sys.modules[mod]
  if ref_dir in sys.path:
    sys.path.remove(ref_dir)
  sys.path.insert(0, ref_dir)
  try:
    import utils.reid_metric  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except Exception:  # pylint: disable=broad-except
    import utils  # pylint: disable=import-outside-toplevel
    stub = _stub("utils.reid_metric", r1_mAP_mINP=None, r1_mAP_mINP_reranking=None)
    sys.modules["utils.reid_metric"] = stub
    utils.reid_metric = stub
  try:
    import torch.utils.tensorboard  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except Exception:  # pylint: disable=broad-except
    import torch.utils  # pylint: disable=import-outside-toplevel
    stub = _stub("torch.utils.tensorboard", SummaryWriter=_NoWriter)
    sys.modules["torch.utils.tensorboard"] = stub
    torch.utils.tensorboard = stub
  import config as ref_config  # pylint: disable=import-outside-toplevel
  import modeling as ref_modeling  # pylint: disable=import-outside-toplevel
  from modeling import networks as ref_networks  # pylint: disable=import-outside-toplevel
  import tools.train as ref_train  # pylint: disable=import-outside-toplevel
  from utils import lr_scheduler as ref_lr  # pylint: disable=import-outside-toplevel
  return types.SimpleNamespace(config=ref_config, modeling=ref_modeling,
                               networks=ref_networks, train=ref_train, lr=ref_lr)


@contextlib.contextmanager
def _unet_depth(networks, netg: str, num_downs: int):
  """`define_G` builds the reference's own UnetGenerator with `num_downs` downs for
  the harness's name `netg` (the reference names only unet_128 / unet_256)."""
  original = networks.define_G

  def define_g(input_nc, output_nc, ngf, net_g, norm="batch", use_dropout=False,
               init_type="normal", init_gain=0.02, gpu_ids=()):
    if net_g != netg:
      return original(input_nc, output_nc, ngf, net_g, norm, use_dropout, init_type,
                      init_gain, list(gpu_ids))
    net = networks.UnetGenerator(input_nc, output_nc, num_downs, ngf,
                                 norm_layer=networks.get_norm_layer(norm_type=norm),
                                 use_dropout=use_dropout)
    return networks.init_net(net, init_type, init_gain, list(gpu_ids))
  networks.define_G = define_g
  try:
    yield
  finally:
    networks.define_G = original


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
  c = parity.load_config("configs/anon_market.py", "mosaic,agw")
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


class AnonReference(parity.ReferenceSide):
  """privacy-reid's create_supervised_trainer step (GCR, both) on CPU."""

  name = "anon"
  step1_floor = True   # parity.verdict: the WRT triplet's own float32 error at step 1

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
    self.ref = _import_reference(ref_dir)
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
    with cpu_shims(), _unet_depth(self.ref.networks, netg, num_downs), \
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
    self.bn_counts = parity._bn_counter(model)  # pylint: disable=protected-access
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
    parity._torch_load(self.model, named, {"centers": self.criterion["center"].centers})  # pylint: disable=protected-access

  def _named(self) -> dict[str, np.ndarray]:
    return parity._torch_named(  # pylint: disable=protected-access
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
    out = parity._torch_grads(self.model)  # pylint: disable=protected-access
    # The step multiplied the centers' gradient by 1 / CENTER_LOSS_WEIGHT in place.
    g = self.criterion["center"].centers.grad.detach().cpu().numpy()
    out["centers"] = g * self.cfg.SOLVER.CENTER_LOSS_WEIGHT
    return out

  def snapshot(self) -> parity.Snapshot:
    named = self._named()
    bn = {k: v for k, v in named.items() if parity.is_bn_stat(k)}
    params = {k: v for k, v in named.items() if not parity.is_bn_stat(k)}
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
    return parity.Snapshot(params, bn, adam_m, adam_v,
                           counts.pop() if len(counts) == 1 else None)
