"""Training-step parity against a reference implementation's own PyTorch code (issue 18).

    python experiments/parity.py --reference=bot --reference_dir=/tmp/ref_bot \
        [--steps 5] [--batch 16] [--height 256 --width 128]

builds the reference's model, losses, optimizers and LR scheduler from the
reference checkout itself (DIR is put on sys.path; torch comes from the user's
environment, never from this package), copies ONE set of initial weights (the
reference's random init) into our JAX method, feeds both sides the same batches
(augmentation off) and runs N complete training steps on each: forward, every
loss term, backward, the optimizer with its schedule and warm-up, batch-norm
running statistics, the center-loss centers with their own SGD. Per step it
prints each loss term on both sides and the largest relative difference of the
losses, parameters, Adam moments and BN statistics, then one verdict line
against `--tol` (default 1e-4; see TOLERANCE below).

References:
  bot   michuanhaohao/reid-strong-baseline, configs/softmax_triplet_with_center.yml
        (its create_supervised_trainer_with_center step, experiments/parity_bot.py)
        against privreid_jax.methods.baseline.Method on configs/market.py with
        the values mapped from the reference's config.
  twin  our own PyTorch twin (experiments/torch_reference.py): no checkout
        needed; a self-check of this harness (no center loss, constant lr).
  anon  whuzjw/privacy-reid (method A), configs/AGW_baseline.yml in GCR mode
        (its create_supervised_trainer step: D1/D2 step, then the joint G, G_R,
        C step with the center SGD; experiments/parity_anon.py) against
        privreid_jax.methods.anonymization.Method on configs/anon_market.py:mosaic,agw
        with the values mapped from the reference's config. `--ngf/--ndf` size
        the U-Nets and PatchGANs (64 as the reference); the U-Net depth follows
        the image (7 downs, unet_128, at 256x128).

`--align` names known deviations to neutralise for diagnosis (see the
reference's module): the verdict of an aligned run says what remains once those
are accounted for. Nothing here changes package code.

Relative differences (`rel_diff`): a tensor's difference is max|ours - ref|
divided by the larger of max|ours| and max|ref| (the tensors' own scale), so
near-zero elements do not blow up the ratio; a group's figure is the largest over its
tensors. Loss terms: |ours - ref| / |ref|. "updates" compares the change since
the initial weights, (p_N - p_0), the same way: the most sensitive view, shown
for information, not part of the verdict. "bn_stats_unbiased" converts our
running variances to torch's unbiased update (n/(n-1) on each batch variance)
before comparing, which isolates that known difference.

TOLERANCE. The forward pass is well conditioned: on identical weights and
batch (step 1) every loss term agrees to ~1e-7..1e-5 relative in float32, so
step-1 losses are held to `--tol` (1e-4). The backward pass of a randomly
initialised ResNet-50 with BatchNorm is not: measured on the bot reference at
256x128, batch 16, PyTorch's own float32 weight gradients are up to ~9% (median
~2%) of the tensor's scale away from the same code in float64 (3% median
channels_last), and Adam's first steps turn such gradient errors into sign
flips of whole updates. No float32 implementation can then agree with another
to 1e-4 on parameters or optimizer state after the first step. So by default
(`--float64_floor`) the reference also runs in float64 from the same weights,
and every later quantity is judged by how far OUR float32 run is from that
float64 run, against max(tol, FLOOR_FACTOR x the reference's own float32
distance from it); the lr of every step must match to 1e-6. Without the
float64 run (`--nofloat64_floor`) everything is held to `--tol`. The float64
run goes first, alone, and is replayed from a temporary folder (RecordedSide),
so at most two models are in memory at once. After step 1 that float32 error
is one draw of a chaotic process: `--seeds 0,1,2` runs the comparison once per
seed and pools those comparisons over the runs (verdict_seeds).
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import importlib.util
import math
import os
import sys
import tempfile
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

DEFAULT_TOL = 1e-4
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------
# Batches: the same images and labels for both sides.
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Batch:
  images: np.ndarray   # [B, H, W, 3] float32, normalised (JAX layout)
  pids: np.ndarray     # [B] int32, P identities x K consecutive images

  def nchw(self) -> np.ndarray:
    """The same images in PyTorch's layout [B, 3, H, W] (a contiguous copy)."""
    return np.ascontiguousarray(self.images.transpose(0, 3, 1, 2))


def make_batches(steps: int, batch: int, num_instances: int, num_classes: int,
                 height: int, width: int, seed: int = 0) -> list[Batch]:
  """`steps` P x K batches, deterministic in the arguments, augmentation off.

  Each step draws P = batch / K distinct identities (as BoT's
  RandomIdentitySampler: K consecutive images per identity). An identity's
  images share a smooth random pattern (a coarse colour grid upsampled by
  nearest neighbour) plus per-image noise, in [0, 1], then are normalised with
  the ImageNet mean/std as both pipelines do.
  """
  if batch % num_instances or batch // num_instances < 2:
    raise ValueError(f"batch={batch} must be P x K with K={num_instances} and P >= 2 "
                     "(the batch-hard triplet needs a negative)")
  p = batch // num_instances
  if p > num_classes:
    raise ValueError(f"batch={batch} needs P={p} identities, num_classes={num_classes}")
  rng = np.random.default_rng(seed)
  cell = 16 if height % 16 == 0 and width % 16 == 0 else 1
  gh, gw = height // cell, width // cell
  out = []
  for _ in range(steps):
    ids = rng.choice(num_classes, size=p, replace=False)
    pids = np.repeat(ids, num_instances).astype(np.int32)
    base = rng.uniform(0.0, 1.0, size=(p, gh, gw, 3))
    base = base.repeat(cell, axis=1).repeat(cell, axis=2)
    base = np.repeat(base, num_instances, axis=0)
    img = np.clip(base + rng.normal(0.0, 0.1, size=base.shape), 0.0, 1.0)
    img = (img - np.asarray(IMAGE_MEAN)) / np.asarray(IMAGE_STD)
    out.append(Batch(images=img.astype(np.float32), pids=pids))
  return out


# ----------------------------------------------------------------------------
# Weight layouts: our Flax trees <-> a reference's PyTorch state dict names.
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Layout:
  """Where our ReidModel's pieces live in a reference's state dict.

  The backbone's torchvision keys (`layer3.1.conv2.weight`, what
  `pretrained.export_torchvision_resnet` writes) get `backbone_prefix`; with
  `flat_stages` (our PyTorch twin's single `layers` Sequential), `layer{s}.{b}.`
  becomes `layers.{i}.` with i counted over the stages' blocks.
  """
  backbone_prefix: str = ""
  neck: str = "bnneck"             # BatchNorm1d of the BNNeck
  classifier: str = "classifier"   # bias-free Linear
  centers: str = "centers"         # center-loss centers (a name of ours)
  flat_stages: tuple[int, ...] | None = None

  def backbone_key(self, tv_key: str) -> str:
    key = tv_key
    if self.flat_stages is not None and tv_key.startswith("layer"):
      stage_block, rest = tv_key.split(".", 2)[:2], tv_key.split(".", 2)[2]
      s, b = int(stage_block[0][len("layer"):]), int(stage_block[1])
      key = f"layers.{sum(self.flat_stages[:s - 1]) + b}.{rest}"
    return self.backbone_prefix + key

  def torchvision_key(self, key: str) -> str | None:
    """Inverse of `backbone_key`; None for a key outside the backbone."""
    if not key.startswith(self.backbone_prefix):
      return None
    key = key[len(self.backbone_prefix):]
    head = key.split(".", 1)[0]
    if head in (self.neck, self.classifier, self.centers):
      return None
    if self.flat_stages is not None and key.startswith("layers."):
      _, i, rest = key.split(".", 2)
      i = int(i)
      for s, n in enumerate(self.flat_stages, 1):
        if i < n:
          return f"layer{s}.{i}.{rest}"
        i -= n
      raise ValueError(f"{key}: block index beyond the stages {self.flat_stages}")
    return key


def jax_to_named(params: Mapping[str, Any], batch_stats: Mapping[str, Any] | None,
                 layout: Layout, *, with_frozen_bias: bool = True
                 ) -> dict[str, np.ndarray]:
  """A ReidModel's params (and BN stats) as {reference key: torch-layout array}.

  Works on any tree shaped like the params (Adam moments too). The BNNeck's
  bias is frozen at zero in BoT (no parameter of ours): `with_frozen_bias`
  adds it as zeros so the reference's stays checked.
  """
  from privreid_jax.models import pretrained  # pylint: disable=import-outside-toplevel
  stats = dict(batch_stats or {})
  variables = {"params": params, "batch_stats": stats}
  out = {layout.backbone_key(k): v
         for k, v in pretrained.export_torchvision_resnet(variables).items()}
  neck = params["bnneck"]
  out[f"{layout.neck}.weight"] = np.asarray(neck["scale"], np.float32)
  if with_frozen_bias:
    out[f"{layout.neck}.bias"] = np.zeros_like(out[f"{layout.neck}.weight"])
  if "bnneck" in stats:
    out[f"{layout.neck}.running_mean"] = np.asarray(stats["bnneck"]["mean"], np.float32)
    out[f"{layout.neck}.running_var"] = np.asarray(stats["bnneck"]["var"], np.float32)
  if "classifier" in params:
    out[f"{layout.classifier}.weight"] = np.asarray(params["classifier"]["kernel"],
                                                    np.float32).T
  return out


def named_to_jax(named: Mapping[str, np.ndarray], params: Mapping[str, Any],
                 batch_stats: Mapping[str, Any], layout: Layout):
  """Returns (params, batch_stats) of a ReidModel with `named`'s values copied in.

  The backbone goes through `pretrained.load_torchvision_resnet` (which checks
  every key and shape); the BNNeck and classifier are set here.
  """
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from privreid_jax.models import pretrained  # pylint: disable=import-outside-toplevel
  tv = {}
  for key, value in named.items():
    tvk = layout.torchvision_key(key)
    if tvk is not None:
      tv[tvk] = np.asarray(value, np.float32)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "backbone.npz")
    np.savez(path, **tv)
    variables = pretrained.load_torchvision_resnet(
        path, {"params": params, "batch_stats": batch_stats})
  params, stats = dict(variables["params"]), dict(variables["batch_stats"])
  neck = dict(params["bnneck"])
  neck["scale"] = jnp.asarray(named[f"{layout.neck}.weight"], jnp.float32)
  params["bnneck"] = neck
  bias = named.get(f"{layout.neck}.bias")
  if bias is not None and np.any(bias != 0):
    raise ValueError(f"{layout.neck}.bias is not zero: our BNNeck has no bias")
  if "bnneck" in stats:
    stats["bnneck"] = {"mean": jnp.asarray(named[f"{layout.neck}.running_mean"]),
                       "var": jnp.asarray(named[f"{layout.neck}.running_var"])}
  clf = dict(params["classifier"])
  clf["kernel"] = jnp.asarray(np.asarray(named[f"{layout.classifier}.weight"]).T)
  params["classifier"] = clf
  return params, stats


def find_adam_state(opt_state) -> Any:
  """The optax ScaleByAdamState (has `mu`, `nu`, `count`) inside a chain's state."""
  if hasattr(opt_state, "mu") and hasattr(opt_state, "nu"):
    return opt_state
  if isinstance(opt_state, (tuple, list)):
    for sub in opt_state:
      found = find_adam_state(sub)
      if found is not None:
        return found
  return None


def is_bn_stat(key: str) -> bool:
  return key.endswith("running_mean") or key.endswith("running_var")


from experiments.parity_verdict import (  # pylint: disable=unused-import
    BN_MOMENTUM,
    rel_diff,
    scalar_rel_diff,
    GroupDiff,
    compare_group,
    bn_var_unbiased,
    Snapshot,
    PAIRS,
    FLOOR_FACTOR,
    StepReport,
    compare_snapshots,
    verdict,
    verdict_seeds,
    resync_verdict,
    format_step,
    format_table,
    format_gradient_rows,
    format_update_signs,
    gradient_rows,
)

# ----------------------------------------------------------------------------
# Our side: the JAX method, stepped with jax.jit(method.train_step).
# ----------------------------------------------------------------------------
def load_config(path: str, arg: str | None = None):
  """get_config(arg) of a config file under configs/."""
  full = path if os.path.isabs(path) else os.path.join(_REPO, path)
  spec = importlib.util.spec_from_file_location(
      "parity_config_" + os.path.splitext(os.path.basename(full))[0], full)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


class JaxSide:
  """Our method on the given batches; snapshots in the reference's layout."""

  def __init__(self, config, *, num_classes: int, steps_per_epoch: int,
               layout: Layout, method: str | type = "baseline"):
    """`method`: a method's name under privreid_jax.methods, or its Method class."""
    import jax  # pylint: disable=import-outside-toplevel
    self.jax = jax
    cls = (importlib.import_module(f"privreid_jax.methods.{method}").Method
           if isinstance(method, str) else method)
    self.method = cls(config, num_classes=num_classes, steps_per_epoch=steps_per_epoch)
    self.layout = layout
    self.name = self.method.reid.name
    self.center_name = f"{self.name}_centers"
    self.state = None
    self._step = jax.jit(self.method.train_step)

  @staticmethod
  def _batch(batch: Batch):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    return {"image": jnp.asarray(batch.images), "pid": jnp.asarray(batch.pids)}

  def init_from(self, named: Mapping[str, np.ndarray], batch: Batch, seed: int = 0):
    """Initialises our state, then overwrites every weight with the reference's."""
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    state = self.method.init(self.jax.random.PRNGKey(seed), self._batch(batch))
    params, stats = named_to_jax(named, state.params[self.name],
                                 state.batch_stats[self.name], self.layout)
    new_params = {**state.params, self.name: params}
    if self.center_name in state.params:
      centers = named[self.layout.centers]
      if tuple(centers.shape) != tuple(state.params[self.center_name].shape):
        raise ValueError(f"centers: reference {centers.shape} vs ours "
                         f"{state.params[self.center_name].shape}")
      new_params[self.center_name] = jnp.asarray(centers, jnp.float32)
    self.state = state.replace(params=new_params,
                               batch_stats={**state.batch_stats, self.name: stats})

  def step(self, batch: Batch) -> dict[str, float]:
    self.state, metrics = self._step(self.state, self._batch(batch))
    return {k: float(v) for k, v in self.jax.device_get(metrics).items()}

  def snapshot(self) -> Snapshot:
    st = self.jax.device_get(self.state)
    return _flax_snapshot(st.params, st.batch_stats.get(self.name, {}), st.opt_state,
                          self.name, self.center_name, self.layout)


def _flax_snapshot(params, stats, opt_state, name: str, center_name: str,
                   layout: Layout) -> Snapshot:
  named = jax_to_named(params[name], stats, layout)
  bn = {k: v for k, v in named.items() if is_bn_stat(k)}
  params_named = {k: v for k, v in named.items() if not is_bn_stat(k)}
  if center_name in params:
    params_named[layout.centers] = np.asarray(params[center_name], np.float32)
  adam = find_adam_state(opt_state[name])
  adam_m = jax_to_named(adam.mu, None, layout, with_frozen_bias=False)
  adam_v = jax_to_named(adam.nu, None, layout, with_frozen_bias=False)
  return Snapshot(params_named, bn, adam_m, adam_v, int(adam.count))


def replay_update(txs):
  """jit((params, opt_state, grads) -> (params, opt_state)): each network's optax
  transformation applied to the gradients given for it (a replay of the reference's)."""
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel

  def update(params, opt_state, grads):
    params, opt_state = dict(params), dict(opt_state)
    for k, g in grads.items():
      upd, opt_state[k] = txs[k].update(g, opt_state[k], params[k])
      params[k] = optax.apply_updates(params[k], upd)
    return params, opt_state
  return jax.jit(update)


class OptimizerReplay:
  """Our optimizers fed the REFERENCE's gradients, from the reference's weights.

  The full-step comparison cannot resolve the optimizer to better than the
  (ill-conditioned) gradients allow. Here our optax transformations (Adam with
  coupled weight decay and the warm-up/multi-step schedule; the centers' scaled
  SGD) consume the gradients the reference computed in its own step, so their
  results must match the reference's optimizer state and weights to float32
  rounding: a well-conditioned check of every optimizer formula.
  """

  def __init__(self, ours: JaxSide):
    import jax  # pylint: disable=import-outside-toplevel
    self.jax, self.layout = jax, ours.layout
    self.name, self.center_name = ours.name, ours.center_name
    self.txs = ours.method.txs
    self.params = dict(ours.state.params)
    self.stats_template = ours.state.batch_stats[self.name]
    self.opt_state = {k: self.txs[k].init(v) for k, v in self.params.items()}
    self._update = replay_update(self.txs)

  def step(self, grads: Mapping[str, np.ndarray], buffers: Mapping[str, np.ndarray]):
    """`grads`: the reference's parameter gradients by name (centers unscaled);
    `buffers`: its BN buffers (only so the backbone keys are complete)."""
    g, _ = named_to_jax({**grads, **buffers}, self.params[self.name],
                        self.stats_template, self.layout)
    tree = {self.name: g}
    if self.center_name in self.params:
      tree[self.center_name] = np.asarray(grads[self.layout.centers], np.float32)
    self.params, self.opt_state = self._update(self.params, self.opt_state, tree)

  def snapshot(self) -> Snapshot:
    params, opt_state = self.jax.device_get((self.params, self.opt_state))
    return _flax_snapshot(params, {}, opt_state, self.name, self.center_name, self.layout)


# ----------------------------------------------------------------------------
# The reference side's interface (implemented per reference).
# ----------------------------------------------------------------------------
class ReferenceSide:
  """What a reference adapter provides (see parity_bot.BotReference)."""

  name: str = ""
  layout: Layout
  config: Any                  # our config with the reference's values mapped in
  num_classes: int
  steps_per_epoch: int
  term_map: Mapping[str, str]  # our metric name -> reference term name
  # Reference terms computed after an update inside the step (method A's G_gan_*
  # against the just-updated discriminators): `--resync` cannot compare them.
  post_update_terms: tuple[str, ...] = ()
  bn_counts: Mapping[str, int] = {}   # BN module name -> elements per channel
  description: str = ""

  def initial_weights(self) -> dict[str, np.ndarray]:
    """The current weights by name (before the first step: the initial ones)."""
    raise NotImplementedError

  def load_weights(self, named: Mapping[str, np.ndarray]) -> None:
    """Sets the weights from `initial_weights`' names (--resync's float64 floor)."""
    raise NotImplementedError

  def step(self, batch: Batch) -> dict[str, float]:
    """One training step; returns {term: value, ..., "lr": lr used}."""
    raise NotImplementedError

  def snapshot(self) -> Snapshot:
    raise NotImplementedError

  def grads(self) -> dict[str, np.ndarray]:
    """The gradients of the last step by parameter name, as the loss gave them
    (before any in-place rescaling by the reference's step)."""
    raise NotImplementedError


class TwinReference(ReferenceSide):
  """Our own PyTorch twin (experiments/torch_reference.py), constant lr, no center loss.

  A self-check of the harness that needs no reference checkout: same weights,
  batches and Adam; the twin's loss is torch's label-smoothed cross-entropy plus
  its batch-hard triplet on the pooled feature.
  """

  name = "twin"

  def __init__(self, config, *, num_classes: int, steps_per_epoch: int, seed: int = 0,
               dtype: str = "float32"):
    import torch  # pylint: disable=import-outside-toplevel
    from experiments import torch_reference as tr  # pylint: disable=import-outside-toplevel
    self.torch, self.tr = torch, tr
    self.dtype = getattr(torch, dtype)
    config.loss.center_weight = 0.0
    config.optim.warmup_epochs = 0
    config.optim.milestones = ()
    self.config = config
    self.num_classes = num_classes
    self.steps_per_epoch = steps_per_epoch
    torch.manual_seed(seed)
    self.net = tr.build(config, num_classes, channels_last=False).train().to(self.dtype)
    self.opt = tr.optimizer(self.net, config.optim, "adam")
    stages = tr.DEPTHS[tr.BACKBONES[config.model.backbone]][1]
    self.layout = Layout(neck="bnneck", flat_stages=tuple(stages))
    self.term_map = {"id_loss": "id", "tri_loss": "triplet", "loss": "total"}
    self.bn_counts = _bn_counter(self.net)
    self.description = (f"our PyTorch twin ({dtype}), {config.model.backbone} width "
                        f"{config.model.width}, Adam lr {config.optim.lr} constant")

  def initial_weights(self):
    return _torch_named(self.net)

  def load_weights(self, named):
    _torch_load(self.net, named)

  def step(self, batch: Batch) -> dict[str, float]:
    torch, tr, cfg = self.torch, self.tr, self.config.loss
    x = torch.from_numpy(batch.nchw()).to(self.dtype)
    pids = torch.from_numpy(batch.pids.astype(np.int64))
    lr = self.opt.param_groups[0]["lr"]
    self.opt.zero_grad(set_to_none=True)
    logits, feat = self.net(x)
    ce = torch.nn.functional.cross_entropy(logits, pids, label_smoothing=cfg.label_smoothing)
    tri = tr.batch_hard_triplet(feat, pids, cfg.triplet_margin)
    loss = cfg.id_weight * ce + cfg.triplet_weight * tri
    loss.backward()
    self.opt.step()
    return {"id": float(ce.detach()), "triplet": float(tri.detach()),
            "total": float(loss.detach()), "lr": lr}

  def snapshot(self) -> Snapshot:
    return _torch_snapshot(self.net, self.opt)

  def grads(self) -> dict[str, np.ndarray]:
    return _torch_grads(self.net)


class RecordedSide:
  """A reference run replayed from disk: its initial weights, per-step terms and
  snapshots, written by `record`. The float64 floor runs first and alone this
  way, so it never holds memory beside the two float32 sides (paper-size anon:
  the three together did not fit in 24 GB)."""

  GROUPS = ("params", "bn", "adam_m", "adam_v")

  def __init__(self, folder: str):
    self.folder = folder
    self._step = 0

  @classmethod
  def record(cls, side: ReferenceSide, batches: Sequence[Batch], folder: str,
             log: Callable[[str], None] = print,
             label: str = "float64 reference") -> "RecordedSide":
    import json  # pylint: disable=import-outside-toplevel
    cls._save(os.path.join(folder, "init"), side.initial_weights())
    for i, batch in enumerate(batches, 1):
      terms = side.step(batch)
      snap = side.snapshot()
      base = os.path.join(folder, f"step_{i}")
      for g in cls.GROUPS:
        cls._save(os.path.join(base, g), getattr(snap, g))
      with open(os.path.join(base, "terms.json"), "w") as f:
        json.dump({"terms": terms, "adam_count": snap.adam_count}, f)
      log(f"  {label}: step {i} recorded")
    return cls(folder)

  @staticmethod
  def _save(folder: str, arrays: Mapping[str, np.ndarray]) -> None:
    os.makedirs(folder, exist_ok=True)
    names = sorted(arrays)
    for j, k in enumerate(names):
      np.save(os.path.join(folder, f"{j}.npy"), np.asarray(arrays[k]))
    with open(os.path.join(folder, "names.txt"), "w") as f:
      f.write("\n".join(names))

  @staticmethod
  def _load(folder: str) -> dict[str, np.ndarray]:
    with open(os.path.join(folder, "names.txt")) as f:
      names = [n for n in f.read().split("\n") if n]
    return {k: np.load(os.path.join(folder, f"{j}.npy"), mmap_mode="r")
            for j, k in enumerate(names)}

  def initial_weights(self) -> dict[str, np.ndarray]:
    return self._load(os.path.join(self.folder, "init"))

  def step(self, batch: Batch) -> dict[str, float]:
    import json  # pylint: disable=import-outside-toplevel
    del batch   # recorded for these batches
    self._step += 1
    with open(os.path.join(self.folder, f"step_{self._step}", "terms.json")) as f:
      return json.load(f)["terms"]

  def snapshot(self) -> Snapshot:
    import json  # pylint: disable=import-outside-toplevel
    base = os.path.join(self.folder, f"step_{self._step}")
    with open(os.path.join(base, "terms.json")) as f:
      count = json.load(f)["adam_count"]
    return Snapshot(*(self._load(os.path.join(base, g)) for g in self.GROUPS), count)


def _bn_counter(module) -> dict[str, int]:
  """Registers hooks that record, per BN module, the elements per channel it sees."""
  import torch  # pylint: disable=import-outside-toplevel
  counts: dict[str, int] = {}
  for name, m in module.named_modules():
    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):  # pylint: disable=protected-access
      def hook(mod, inputs, name=name):
        x = inputs[0]
        counts[name] = int(x.numel() // x.shape[1])
      m.register_forward_pre_hook(hook)
  return counts


def _torch_named(module, extra: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
  """state_dict (without num_batches_tracked) and `extra` tensors as numpy, own dtype."""
  out = {k: v.detach().cpu().numpy().copy()
         for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
  for k, v in (extra or {}).items():
    out[k] = v.detach().cpu().numpy().copy()
  return out


def _torch_load(module, named: Mapping[str, np.ndarray],
                extra: Mapping[str, Any] | None = None) -> None:
  """Copies `named` (as `_torch_named` gives it) into the module's state and the
  `extra` tensors, in place, each converted to its own dtype."""
  import torch  # pylint: disable=import-outside-toplevel
  targets = {k: v for k, v in module.state_dict().items() if k in named}
  targets.update({k: v for k, v in (extra or {}).items() if k in named})
  with torch.no_grad():
    for k, t in targets.items():
      t.copy_(torch.from_numpy(np.array(named[k])).to(t.dtype))


def _torch_grads(module) -> dict[str, np.ndarray]:
  return {name: p.grad.detach().cpu().numpy().copy()
          for name, p in module.named_parameters() if p.grad is not None}


def _torch_snapshot(module, optimizer, extra: Mapping[str, Any] | None = None
                    ) -> Snapshot:
  named = _torch_named(module, extra)
  bn = {k: v for k, v in named.items() if is_bn_stat(k)}
  params = {k: v for k, v in named.items() if not is_bn_stat(k)}
  adam_m, adam_v, counts = {}, {}, set()
  for name, p in module.named_parameters():
    st = optimizer.state.get(p)
    if not st:
      continue
    adam_m[name] = st["exp_avg"].detach().cpu().numpy().copy()
    adam_v[name] = st["exp_avg_sq"].detach().cpu().numpy().copy()
    counts.add(int(st["step"]))
  count = counts.pop() if len(counts) == 1 else None
  return Snapshot(params, bn, adam_m, adam_v, count)


# ----------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------
def _terms(ref: ReferenceSide, ours: Mapping[str, float], *refs: Mapping[str, float]
           ) -> dict[str, tuple[float, ...]]:
  out = {}
  for our_name, ref_name in ref.term_map.items():
    if our_name in ours and all(ref_name in r for r in refs):
      out[ref_name] = (ours[our_name],) + tuple(r[ref_name] for r in refs)
  return out


def run_parity(ref: ReferenceSide, ours: JaxSide, batches: Sequence[Batch],
               floor: ReferenceSide | None = None,
               log: Callable[[str], None] = print,
               grads_top: int = 0) -> list[StepReport]:
  """Copies the reference's initial weights into ours, steps both, compares.

  `floor`: the same reference in float64 from the same initial weights; its
  distance from the float32 reference is the float32 error the reference
  itself makes (reported, and used by `verdict`). `grads_top` > 0 (with a
  floor): after step 1, the per-tensor gradient table (`gradient_rows`).
  """
  init = ref.initial_weights()
  ours.init_from(init, batches[0])
  start_ours, start_ref = ours.snapshot(), ref.snapshot()
  groups = compare_snapshots(start_ours, start_ref)
  log("step 0 (after the weight copy): " + ", ".join(
      f"{k} {v.fmt()}" for k, v in groups.items() if k in ("params", "bn_stats")))
  if groups["params"].missing or groups["bn_stats"].missing:
    log("  keys on one side only: " + ", ".join(
        groups["params"].missing + groups["bn_stats"].missing))
  if floor is not None:
    init64 = floor.initial_weights()
    worst = max(rel_diff(np.asarray(init64[k], np.float32), init[k]) for k in init)
    if set(init64) != set(init) or worst != 0:
      raise RuntimeError("the float64 reference does not start from the same weights")
  replay = ours.make_replay() if hasattr(ours, "make_replay") else OptimizerReplay(ours)
  per_step = getattr(ref, "bn_updates_per_step", None)   # anon: BN updates per step
  reports = []
  for i, batch in enumerate(batches, 1):
    updates = {k: i * v for k, v in per_step.items()} if per_step else i
    r_terms = ref.step(batch)
    s_ref = ref.snapshot()
    replay.step(ref.grads(), s_ref.bn)
    o_terms = ours.step(batch)
    s_ours = ours.snapshot()
    groups = {"ours~ref": compare_snapshots(s_ours, s_ref, start_ref, ref.bn_counts,
                                            updates=updates)}
    s_replay = replay.snapshot()
    groups["ours~ref"].update({
        "opt_params": compare_group(s_replay.params, s_ref.params),
        "opt_adam_m": compare_group(s_replay.adam_m, s_ref.adam_m),
        "opt_adam_v": compare_group(s_replay.adam_v, s_ref.adam_v),
    })
    if s_replay.adam_count != s_ref.adam_count or s_ours.adam_count != s_ref.adam_count:
      log(f"  Adam step counts differ: ours {s_ours.adam_count}, replay "
          f"{s_replay.adam_count}, reference {s_ref.adam_count}")
    if floor is not None:
      f_terms = floor.step(batch)
      s_floor = floor.snapshot()
      terms = _terms(ref, o_terms, r_terms, f_terms)
      groups["ref~ref64"] = compare_snapshots(s_ref, s_floor, start_ref)
      groups["ref~ref64"]["bn_stats_unbiased"] = groups["ref~ref64"]["bn_stats"]
      groups["ours~ref64"] = compare_snapshots(s_ours, s_floor, start_ref,
                                               ref.bn_counts, updates=updates)
      if i == 1 and grads_top:
        log(format_gradient_rows(gradient_rows(s_ours.adam_m, s_ref.adam_m,
                                               s_floor.adam_m), grads_top))
    else:
      terms = _terms(ref, o_terms, r_terms)
    report = StepReport(i, (o_terms.get("lr", math.nan), r_terms["lr"]), terms, groups)
    reports.append(report)
    log(format_step(report))
  return reports


REFERENCES = ("bot", "twin", "anon")
GENERIC_ALIGN = ("bn_unbiased",)   # handled here, for any reference


def build_reference(args, dtype: str = "float32") -> ReferenceSide:
  if args.reference == "twin":
    config = load_config("configs/synthetic.py", "tiny")
    config.model.backbone = args.backbone or "resnet18"
    config.data.height, config.data.width = args.height, args.width
    config.data.batch_size = args.batch
    config.data.num_instances = args.num_instances
    return TwinReference(config, num_classes=args.num_classes,
                         steps_per_epoch=args.steps_per_epoch, seed=args.seed, dtype=dtype)
  if not args.reference_dir:
    raise SystemExit(f"--reference={args.reference} needs --reference_dir "
                     "(a local checkout of the reference repository)")
  if args.reference == "bot":
    from experiments import parity_bot  # pylint: disable=import-outside-toplevel
    return parity_bot.BotReference(
        args.reference_dir, batch=args.batch, num_instances=args.num_instances,
        height=args.height, width=args.width, num_classes=args.num_classes,
        steps_per_epoch=args.steps_per_epoch, seed=args.seed, dtype=dtype,
        align=tuple(a for a in args.align.split(",") if a and a not in GENERIC_ALIGN))
  if args.reference == "anon":
    from experiments import parity_anon  # pylint: disable=import-outside-toplevel
    return parity_anon.AnonReference(
        args.reference_dir, batch=args.batch, num_instances=args.num_instances,
        height=args.height, width=args.width, num_classes=args.num_classes,
        steps_per_epoch=args.steps_per_epoch, seed=args.seed, dtype=dtype,
        align=tuple(a for a in args.align.split(",") if a and a not in GENERIC_ALIGN),
        ngf=args.ngf, ndf=args.ndf)
  raise SystemExit(f"--reference={args.reference}: not implemented")


def _define(fv):
  """The tool's flags (absl, snake_case) on `fv`."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_enum("reference", None, list(REFERENCES), "Which reference.", flag_values=fv)
  flags.DEFINE_string("reference_dir", "", "Local checkout of the reference repository "
                      "(put on sys.path).", flag_values=fv)
  flags.DEFINE_integer("steps", 5, "Training steps on each side.", flag_values=fv)
  flags.DEFINE_integer("batch", 16, "Batch size, P x K.", flag_values=fv)
  flags.DEFINE_integer("num_instances", 4, "K images per identity.", flag_values=fv)
  flags.DEFINE_integer("height", 256, "Image height.", flag_values=fv)
  flags.DEFINE_integer("width", 128, "Image width.", flag_values=fv)
  flags.DEFINE_integer("num_classes", 751, "Classifier size (Market-1501's training "
                       "identities).", flag_values=fv)
  flags.DEFINE_integer("steps_per_epoch", 2, "Optimizer steps per epoch; small so the "
                       "warm-up moves within the steps.", flag_values=fv)
  flags.DEFINE_string("backbone", "", "twin only: resnet18 | resnet34 | resnet50.",
                      flag_values=fv)
  flags.DEFINE_integer("ngf", 64, "anon only: U-Net width of G and G_R (MODEL.NGF).",
                       flag_values=fv)
  flags.DEFINE_integer("ndf", 64, "anon only: PatchGAN width of D1 and D2 (MODEL.NDF).",
                       flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the reference's init and of the batches.",
                       flag_values=fv)
  flags.DEFINE_list("seeds", [], "Several seeds, one complete run each, judged together "
                    "(verdict_seeds: the float32-noise comparisons pooled over runs); "
                    "replaces --seed.", flag_values=fv)
  flags.DEFINE_float("tol", DEFAULT_TOL, "Relative tolerance.", flag_values=fv)
  flags.DEFINE_boolean("float64_floor", True, "Also run the reference in float64 and "
                       "judge against it.", flag_values=fv)
  flags.DEFINE_integer("grads_top", 0, "With the float64 floor: after step 1, a "
                       "per-tensor table of the gradients (Adam's first moment), each "
                       "float32 side's distance from float64, this many worst rows.",
                       flag_values=fv)
  flags.DEFINE_boolean("grads_only", False, "Only step 1's gradients, tensor by tensor "
                       "(--grads_top rows, default 20), with one model in memory at a time: "
                       "the reference in float32 and float64 recorded to disk, then ours.",
                       flag_values=fv)
  flags.DEFINE_boolean("resync", False, "Before each step, copy the reference's current "
                       "float32 weights into ours and compare that step's loss terms only "
                       "(the step function without the trajectory's float32 chaos); with "
                       "the float64 floor the reference in float64 steps from the same "
                       "weights. One model in memory at a time.", flag_values=fv)
  flags.DEFINE_string("align", "", "Comma-separated known deviations to neutralise "
                      "(diagnosis): bn_unbiased (any reference: judge BN variances after "
                      "converting ours to torch's unbiased update); bot: schedule, "
                      "stem_relu; anon: d_bn_g_step, d_fake_first.", flag_values=fv)
  flags.mark_flag_as_required("reference", flag_values=fv)
  return fv


def parse_args(argv=None):
  """The flags of `argv` (without the program name; default sys.argv[1:])."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from privreid_jax import cli  # pylint: disable=import-outside-toplevel
  argv = list(sys.argv[1:] if argv is None else argv)
  fv = _define(flags.FlagValues())
  cli.parse_tool_flags(fv, ["python experiments/parity.py", *argv], __doc__)
  return fv


def _batches_for(args, side, seed: int) -> list[Batch]:
  if hasattr(side, "jax_side"):     # anon: its own method, batches with targets
    return side.make_batches(args.steps, args.batch, args.num_instances, args.height,
                             args.width, seed=seed)
  return make_batches(args.steps, args.batch, args.num_instances, side.num_classes,
                      args.height, args.width, seed=seed)


def _our_side(ref: ReferenceSide) -> JaxSide:
  if hasattr(ref, "jax_side"):
    return ref.jax_side()
  return JaxSide(ref.config, num_classes=ref.num_classes,
                 steps_per_epoch=ref.steps_per_epoch, layout=ref.layout)


def run_seed(args, seed: int) -> tuple[list[StepReport], bool]:
  """One complete parity run (reference, optional float64 floor, ours) at `seed`:
  its reports and whether the reference asks for verdict's step-1 floor."""
  args.seed = seed
  ref = build_reference(args)
  print(f"reference: {ref.description}; seed {seed}")
  batches = _batches_for(args, ref, seed)
  floor, tmp = None, None
  if args.float64_floor:       # before ours, alone, recorded to disk (RecordedSide)
    ref64 = build_reference(args, "float64")
    tmp = tempfile.TemporaryDirectory(prefix="parity_float64_")
    floor = RecordedSide.record(ref64, batches, tmp.name)
    del ref64
    gc.collect()
  ours = _our_side(ref)
  print(f"batches: {args.steps} x {args.batch} images "
        f"({args.batch // args.num_instances} ids x {args.num_instances}) at "
        f"{args.height}x{args.width}, {ref.num_classes} classes, "
        f"{ref.steps_per_epoch} steps per epoch, augmentation off"
        + ("; float64 run of the reference as the float32 noise floor" if floor else ""))
  try:
    reports = run_parity(ref, ours, batches, floor=floor, grads_top=args.grads_top)
  finally:
    if tmp is not None:
      tmp.cleanup()
  print()
  print(format_table(reports))
  return reports, bool(getattr(ref, "step1_floor", False))


def run_grads(args, seed: int, top: int) -> list:
  """Step 1's gradients only, one model in memory at a time (the reference in
  float32, then in float64, are recorded to disk and freed before ours runs):
  the per-tensor table of `gradient_rows` and the step-1 loss terms."""
  args.seed = seed
  ref = build_reference(args)
  print(f"reference: {ref.description}; seed {seed}; step-1 gradients only")
  batches = _batches_for(args, ref, seed)[:1]
  ours = _our_side(ref)
  term_map = dict(ref.term_map)
  with tempfile.TemporaryDirectory(prefix="parity_grads_") as tmp:
    rec32 = RecordedSide.record(ref, batches, os.path.join(tmp, "f32"),
                                label="float32 reference")
    del ref
    gc.collect()
    ref64 = build_reference(args, "float64")
    rec64 = RecordedSide.record(ref64, batches, os.path.join(tmp, "f64"))
    del ref64
    gc.collect()
    ours.init_from(rec32.initial_weights(), batches[0])
    o_terms = ours.step(batches[0])
    s_ours = ours.snapshot()
    r_terms, f_terms = rec32.step(batches[0]), rec64.step(batches[0])
    for our_name, ref_name in term_map.items():
      if our_name in o_terms and ref_name in r_terms and ref_name in f_terms:
        f = f_terms[ref_name]
        print(f"  loss {ref_name:<9} ours~ref64 {scalar_rel_diff(o_terms[our_name], f):.1e}"
              f"  ref~ref64 {scalar_rel_diff(r_terms[ref_name], f):.1e}")
    rows = gradient_rows(s_ours.adam_m, rec32.snapshot().adam_m, rec64.snapshot().adam_m)
  print(format_gradient_rows(rows, top))
  return rows


def run_resync(args, seed: int) -> list[dict[str, tuple[float, float]]]:
  """The step function alone, without the trajectory's float32 chaos: before each
  step ours is re-initialised from the reference's current float32
  weights (parameters, BN statistics, centers; our optimizer state starts afresh)
  and that step's loss terms are compared; terms computed after an update inside
  the step are left out. With the float64 floor the reference in float64 steps
  from the same float32 weights, so each term's allowance is the reference's own
  float32 error at that very state. One model in memory at a time (the weights go
  through disk). Per step {term: (ours vs ref, the reference's own error or nan)}."""
  args.seed = seed
  ref = build_reference(args)
  print(f"reference: {ref.description}; seed {seed}; resync: every step from the "
        "reference's current weights" + ("; float64 from the same weights"
                                         if args.float64_floor else ""))
  batches = _batches_for(args, ref, seed)
  ours = _our_side(ref)
  skip = set(getattr(ref, "post_update_terms", ()))
  term_map = {o: r for o, r in ref.term_map.items() if r not in skip}
  with tempfile.TemporaryDirectory(prefix="parity_resync_") as tmp:
    folders = [os.path.join(tmp, f"w{i}") for i in range(len(batches))]
    r_terms = []
    for folder, batch in zip(folders, batches):
      RecordedSide._save(folder, ref.initial_weights())  # pylint: disable=protected-access
      r_terms.append(ref.step(batch))
    del ref
    gc.collect()
    f_terms = [None] * len(batches)
    if args.float64_floor:
      ref64 = build_reference(args, "float64")
      for i, (folder, batch) in enumerate(zip(folders, batches)):
        ref64.load_weights(RecordedSide._load(folder))  # pylint: disable=protected-access
        f_terms[i] = ref64.step(batch)
      del ref64
      gc.collect()
    rows = []
    for i, (folder, batch) in enumerate(zip(folders, batches), 1):
      ours.state = None
      gc.collect()
      ours.init_from(RecordedSide._load(folder), batch)  # pylint: disable=protected-access
      o_terms, r, f = ours.step(batch), r_terms[i - 1], f_terms[i - 1]
      row = {name: (scalar_rel_diff(o_terms[o], r[name]),
                    scalar_rel_diff(r[name], f[name]) if f else math.nan)
             for o, name in term_map.items() if o in o_terms and name in r}
      rows.append(row)
      print(f"step {i}: " + "  ".join(
          f"{k} {a:.1e}" + ("" if math.isnan(b) else f" (own {b:.1e})")
          for k, (a, b) in row.items()))
  return rows


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    seeds = [int(s) for s in args.seeds] or [args.seed]
  except ValueError:
    print(f"error: --seeds {','.join(args.seeds)}: expected integers, e.g. 0,1,2",
          file=sys.stderr)
    return 2
  if args.grads_only:
    for seed in seeds:
      run_grads(args, seed, args.grads_top or 20)
    return 0
  if args.resync:
    ok, line = resync_verdict([run_resync(args, seed) for seed in seeds], args.tol)
    print(line)
    return 0 if ok else 1
  bn_group = "bn_stats_unbiased" if "bn_unbiased" in args.align.split(",") else "bn_stats"
  runs, step1_floor = [], False
  for seed in seeds:
    reports, step1_floor = run_seed(args, seed)
    runs.append(reports)
    if len(seeds) > 1:
      print(f"seed {seed} alone: " + verdict(runs[-1], args.tol, bn_group=bn_group,
                                             step1_floor=step1_floor)[1])
      print()
  ok, text = verdict_seeds(runs, args.tol, bn_group=bn_group, step1_floor=step1_floor)
  print(text)
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
