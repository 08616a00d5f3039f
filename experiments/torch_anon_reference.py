"""A PyTorch twin of method A's joint train step, for speed comparisons only.

Used by `experiments/bench_train.py --compare-torch --extra_configs=configs/anon_market.py`
(torch is not a project dependency). Mirrors `privreid_jax.methods.anonymization`
in learned mode: the anonymizer G and the recovery network G_R are pix2pix U-Nets
(`models/unet.py`: down widths ngf * min(2^i, 8), BatchNorm, LeakyReLU 0.2 down /
ReLU up, skip-first concatenation, tanh output), D1 and D2 are pix2pix PatchGANs on
channel-concatenated pairs (`models/patchgan.py`), C is the BoT Re-ID network of
`torch_reference.py`. One step, as the JAX step:

  P = G(O), R = G_R(P);
  D1, D2 update on detached fakes: 0.5 (BCE(D1(O, M), 1) + BCE(D1(O, P), 0)) and
  0.5 (BCE(D2(P, O), 1) + BCE(D2(P, R), 0));
  one joint update of G, G_R and C against the updated discriminators with
  GAN(D1(O, P)) + GAN(D2(P, R)) + 100 L1(P, M) + 100 L1(R, O) + reid(O) + reid(P).

Adam everywhere with coupled weight decay; G, G_R, D1, D2 with betas (anon.b1,
anon.b2), C with the config's. The learning-rate schedules are left out (a
constant rate costs the same).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from privreid_jax.models import unet as unet_lib
import torch_reference


def _width(ngf: int, i: int) -> int:
  return ngf * min(2 ** i, 8)


class UnetBlock(nn.Module):
  """pix2pix's UnetSkipConnectionBlock for down level i of n."""

  def __init__(self, i: int, n: int, ngf: int, in_ch: int, out_ch: int,
               inner: nn.Module | None, dropout: bool):
    super().__init__()
    cin = in_ch if i == 0 else _width(ngf, i - 1)
    cout = out_ch if i == 0 else _width(ngf, i - 1)
    mid = _width(ngf, i)
    outermost, innermost = i == 0, i == n - 1
    down = [] if outermost else [nn.LeakyReLU(0.2)]
    down.append(nn.Conv2d(cin, mid, 4, 2, 1, bias=False))
    if not outermost and not innermost:
      down.append(nn.BatchNorm2d(mid))
    up = [nn.ReLU(), nn.ConvTranspose2d(mid if innermost else 2 * mid, cout, 4, 2, 1,
                                        bias=outermost)]
    up += [nn.Tanh()] if outermost else [nn.BatchNorm2d(cout)]
    if dropout and 4 <= i <= n - 2:
      up.append(nn.Dropout(0.5))
    self.outermost = outermost
    self.model = nn.Sequential(*down, *([inner] if inner is not None else []), *up)

  def forward(self, x):
    y = self.model(x)
    return y if self.outermost else torch.cat([x, y], 1)


def unet(num_downs: int, ngf: int, dropout: bool, channels: int = 3) -> nn.Module:
  block = None
  for i in reversed(range(num_downs)):
    block = UnetBlock(i, num_downs, ngf, channels, channels, block, dropout)
  return block


def patchgan(ndf: int, n_layers: int, in_ch: int = 6) -> nn.Module:
  layers = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
  prev = ndf
  for k in range(1, n_layers + 1):
    cur = ndf * min(2 ** k, 8)
    layers += [nn.Conv2d(prev, cur, 4, 2 if k < n_layers else 1, 1, bias=False),
               nn.BatchNorm2d(cur), nn.LeakyReLU(0.2)]
    prev = cur
  layers.append(nn.Conv2d(prev, 1, 4, 1, 1))
  return nn.Sequential(*layers)


def _init_pix2pix(module: nn.Module) -> None:
  for m in module.modules():
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
      nn.init.normal_(m.weight, 0.0, 0.02)
      if m.bias is not None:
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
      nn.init.normal_(m.weight, 1.0, 0.02)
      nn.init.zeros_(m.bias)


def _gan(logits: torch.Tensor, real: bool) -> torch.Tensor:
  target = torch.ones_like(logits) if real else torch.zeros_like(logits)
  return F.binary_cross_entropy_with_logits(logits, target)


def make_step(config, num_classes: int, batch: int, channels_last: bool, seed: int = 0):
  """Returns step() running one D update and one joint G, G_R, C update."""
  a, o_cfg = config.anon, config.optim
  if a.mode != "learned":
    raise ValueError(f"anon.mode={a.mode!r}: the twin covers the learned mode only")
  # The U-Net depth the JAX method picks for this image size.
  num_downs = unet_lib.num_downs_for(config.data.height, config.data.width, int(a.num_downs))
  torch.manual_seed(seed)
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  g = unet(num_downs, int(a.ngf), bool(a.dropout)).to(memory_format=fmt)
  g_r = unet(num_downs, int(a.ngf), bool(a.dropout)).to(memory_format=fmt)
  d1 = patchgan(int(a.ndf), int(a.d_layers)).to(memory_format=fmt)
  d2 = patchgan(int(a.ndf), int(a.d_layers)).to(memory_format=fmt)
  for m in (g, g_r, d1, d2):
    _init_pix2pix(m)
  c = torch_reference.build(config, num_classes, channels_last)
  for m in (g, g_r, d1, d2, c):
    m.train()

  def adam(params, b1, b2):
    return torch.optim.Adam(params, lr=o_cfg.lr, betas=(b1, b2),
                            weight_decay=o_cfg.weight_decay)

  opt_d = adam([*d1.parameters(), *d2.parameters()], a.b1, a.b2)
  opt_g = adam([*g.parameters(), *g_r.parameters()], a.b1, a.b2)
  opt_c = adam([p for p in c.parameters() if p.requires_grad], o_cfg.b1, o_cfg.b2)
  h, w = int(config.data.height), int(config.data.width)
  o = torch.randn(batch, 3, h, w).contiguous(memory_format=fmt)
  m_target = torch.randn(batch, 3, h, w).contiguous(memory_format=fmt)
  pids = (torch.arange(batch) // int(config.data.num_instances)) % num_classes
  wt = a.weights

  def reid(x):
    return torch_reference.reid_loss(c, x, pids, config.loss)

  def set_grad(modules, flag):
    for m in modules:
      for p in m.parameters():
        p.requires_grad_(flag)

  def step() -> float:
    p = g(o)
    r = g_r(p)
    # 1. D1, D2 on detached fakes.
    set_grad((d1, d2), True)
    opt_d.zero_grad(set_to_none=True)
    p_sg, r_sg = p.detach(), r.detach()
    loss_d = 0.5 * (_gan(d1(torch.cat([o, m_target], 1)), True)
                    + _gan(d1(torch.cat([o, p_sg], 1)), False))
    loss_d = loss_d + 0.5 * (_gan(d2(torch.cat([p_sg, o], 1)), True)
                             + _gan(d2(torch.cat([p_sg, r_sg], 1)), False))
    loss_d.backward()
    opt_d.step()
    # 2. Joint G, G_R, C update against the updated discriminators.
    set_grad((d1, d2), False)
    opt_g.zero_grad(set_to_none=True)
    opt_c.zero_grad(set_to_none=True)
    loss = (wt.gan_d1 * _gan(d1(torch.cat([o, p], 1)), True)
            + wt.gan_d2 * _gan(d2(torch.cat([p, r], 1)), True)
            + wt.l1_anon * F.l1_loss(p, m_target) + wt.l1_rec * F.l1_loss(r, o)
            + wt.reid_raw * reid(o) + wt.reid_anon * reid(p))
    loss.backward()
    opt_g.step()
    opt_c.step()
    return float(loss.detach())

  return step
