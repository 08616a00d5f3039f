"""A PyTorch twin of the baseline train step, for speed comparisons only.

Used by `experiments/bench_train.py --compare-torch`; imported only when torch is
importable (torch is not a project dependency; torchvision is not needed). The
network mirrors `privreid_jax.models.reid.ReidModel` without AGW extras: a
torchvision-layout ResNet-18/34/50 (v1.5, configurable stem width and layer4
stride), global average pooling, the BNNeck (BatchNorm1d with a frozen zero
bias) and a bias-free classifier. The loss mirrors `methods/reid_learner.py` with
the BoT defaults: label-smoothed cross-entropy on the logits plus the batch-hard
triplet loss on the pooled feature. Optimizers mirror the JAX side: Adam with
coupled weight decay (torch's `weight_decay`), or SGD with momentum 0.9 and
coupled weight decay.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}
BACKBONES = {"resnet18": 18, "resnet34": 34, "resnet50": 50}


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
  return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, cin: int, planes: int, stride: int):
    super().__init__()
    self.conv1, self.bn1 = _conv(cin, planes, 3, stride), nn.BatchNorm2d(planes)
    self.conv2, self.bn2 = _conv(planes, planes, 3), nn.BatchNorm2d(planes)
    self.downsample = None
    if stride != 1 or cin != planes:
      self.downsample = nn.Sequential(_conv(cin, planes, 1, stride),
                                      nn.BatchNorm2d(planes))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu((x if self.downsample is None else self.downsample(x)) + y)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin: int, planes: int, stride: int):
    super().__init__()
    out = planes * 4
    self.conv1, self.bn1 = _conv(cin, planes, 1), nn.BatchNorm2d(planes)
    self.conv2, self.bn2 = _conv(planes, planes, 3, stride), nn.BatchNorm2d(planes)
    self.conv3, self.bn3 = _conv(planes, out, 1), nn.BatchNorm2d(out)
    self.downsample = None
    if stride != 1 or cin != out:
      self.downsample = nn.Sequential(_conv(cin, out, 1, stride), nn.BatchNorm2d(out))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu((x if self.downsample is None else self.downsample(x)) + y)


class ReidNet(nn.Module):
  """ResNet backbone + average pooling + BNNeck + classifier: (logits, feat_pre)."""

  def __init__(self, depth: int, width: int, last_stride: int, num_classes: int):
    super().__init__()
    if depth not in DEPTHS:
      raise ValueError(f"depth={depth}: expected one of {sorted(DEPTHS)}")
    kind, stages = DEPTHS[depth]
    block = BasicBlock if kind == "basic" else Bottleneck
    self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    layers, cin = [], width
    for s, blocks in enumerate(stages):
      planes = width * 2 ** s
      stride = 1 if s == 0 else (last_stride if s == 3 else 2)
      for b in range(blocks):
        layers.append(block(cin, planes, stride if b == 0 else 1))
        cin = planes * block.expansion
    self.layers = nn.Sequential(*layers)
    self.bnneck = nn.BatchNorm1d(cin)
    self.bnneck.bias.requires_grad_(False)
    self.classifier = nn.Linear(cin, num_classes, bias=False)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    nn.init.normal_(self.classifier.weight, std=0.001)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = F.max_pool2d(x, 3, 2, 1)
    x = self.layers(x)
    feat_pre = x.mean(dim=(2, 3))
    return self.classifier(self.bnneck(feat_pre)), feat_pre


def batch_hard_triplet(feat: torch.Tensor, pids: torch.Tensor,
                       margin: float) -> torch.Tensor:
  """torchreid's hard-mining triplet loss (euclidean distance, MarginRankingLoss)."""
  sq = feat.pow(2).sum(1, keepdim=True)
  dist = (sq + sq.t() - 2 * feat @ feat.t()).clamp(min=1e-12).sqrt()
  pos = pids[:, None] == pids[None, :]
  d_ap = dist.masked_fill(~pos, float("-inf")).amax(1)
  d_an = dist.masked_fill(pos, float("inf")).amin(1)
  return F.relu(d_ap - d_an + margin).mean()


def reid_loss(net: ReidNet, x: torch.Tensor, pids: torch.Tensor, loss_cfg) -> torch.Tensor:
  """BoT's loss: label-smoothed cross-entropy plus the batch-hard triplet on feat_pre."""
  logits, feat_pre = net(x)
  loss = loss_cfg.id_weight * F.cross_entropy(
      logits, pids, label_smoothing=loss_cfg.label_smoothing)
  if loss_cfg.triplet != "none" and loss_cfg.triplet_weight:
    loss = loss + loss_cfg.triplet_weight * batch_hard_triplet(
        feat_pre, pids, loss_cfg.triplet_margin)
  return loss


def build(config, num_classes: int, channels_last: bool) -> ReidNet:
  """The twin of `reid.build_reid_model(config.model, num_classes)` (avg pooling only)."""
  m = config.model
  if m.backbone not in BACKBONES:
    raise ValueError(f"model.backbone={m.backbone!r}: expected one of {list(BACKBONES)}")
  if m.pooling != "avg" or m.non_local:
    raise ValueError("the torch reference covers the BoT baseline only "
                     "(model.pooling='avg', model.non_local=False)")
  net = ReidNet(BACKBONES[m.backbone], int(m.width), int(m.last_stride), num_classes)
  if channels_last:
    net = net.to(memory_format=torch.channels_last)
  return net


def optimizer(net: nn.Module, optim_cfg, name: str) -> torch.optim.Optimizer:
  params = [p for p in net.parameters() if p.requires_grad]
  if name == "adam":
    return torch.optim.Adam(params, lr=optim_cfg.lr, betas=(optim_cfg.b1, optim_cfg.b2),
                            weight_decay=optim_cfg.weight_decay)
  if name == "sgd":
    return torch.optim.SGD(params, lr=optim_cfg.lr, momentum=0.9,
                           weight_decay=optim_cfg.weight_decay)
  raise ValueError(f"optimizer={name!r}: expected adam | sgd")


def make_step(config, num_classes: int, batch: int, channels_last: bool,
              optimizer_name: str, seed: int = 0):
  """Returns step() running one forward/backward/update on a fixed random batch."""
  torch.manual_seed(seed)
  net = build(config, num_classes, channels_last).train()
  opt = optimizer(net, config.optim, optimizer_name)
  k = int(config.data.num_instances)
  x = torch.randn(batch, 3, config.data.height, config.data.width)
  if channels_last:
    x = x.contiguous(memory_format=torch.channels_last)
  pids = (torch.arange(batch) // k) % num_classes

  def step() -> float:
    opt.zero_grad(set_to_none=True)
    loss = reid_loss(net, x, pids, config.loss)
    loss.backward()
    opt.step()
    return float(loss.detach())

  return step
