"""The reference side of the parity harness (experiments/parity.py): the interface a
reference adapter implements (parity_bot, parity_anon), our own PyTorch twin, a
reference run replayed from disk, and the torch helpers the adapters share."""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from experiments.parity_batches import Batch
from experiments.parity_layout import Layout, is_bn_stat
from experiments.parity_verdict import Snapshot


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
    self.bn_counts = bn_counter(self.net)
    self.description = (f"our PyTorch twin ({dtype}), {config.model.backbone} width "
                        f"{config.model.width}, Adam lr {config.optim.lr} constant")

  def initial_weights(self):
    return torch_named(self.net)

  def load_weights(self, named):
    torch_load(self.net, named)

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
    return torch_snapshot(self.net, self.opt)

  def grads(self) -> dict[str, np.ndarray]:
    return torch_grads(self.net)


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


def bn_counter(module) -> dict[str, int]:
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


def torch_named(module, extra: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
  """state_dict (without num_batches_tracked) and `extra` tensors as numpy, own dtype."""
  out = {k: v.detach().cpu().numpy().copy()
         for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
  for k, v in (extra or {}).items():
    out[k] = v.detach().cpu().numpy().copy()
  return out


def torch_load(module, named: Mapping[str, np.ndarray],
               extra: Mapping[str, Any] | None = None) -> None:
  """Copies `named` (as `torch_named` gives it) into the module's state and the
  `extra` tensors, in place, each converted to its own dtype."""
  import torch  # pylint: disable=import-outside-toplevel
  targets = {k: v for k, v in module.state_dict().items() if k in named}
  targets.update({k: v for k, v in (extra or {}).items() if k in named})
  with torch.no_grad():
    for k, t in targets.items():
      t.copy_(torch.from_numpy(np.array(named[k])).to(t.dtype))


def torch_grads(module) -> dict[str, np.ndarray]:
  return {name: p.grad.detach().cpu().numpy().copy()
          for name, p in module.named_parameters() if p.grad is not None}


def torch_snapshot(module, optimizer, extra: Mapping[str, Any] | None = None
                    ) -> Snapshot:
  named = torch_named(module, extra)
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
