"""How method A's parity harness (experiments/parity_anon.py) runs whuzjw/privacy-reid
on a CPU without changing a formula: CUDA pass-throughs, stub modules for its
evaluation and logging imports, the import of the checkout itself, and a U-Net
of any depth through its own `define_G` (the module docstring of parity_anon
lists each shim)."""

from __future__ import annotations

import contextlib
import os
import sys
import types


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


def import_reference(ref_dir: str):
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
def unet_depth(networks, netg: str, num_downs: int):
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
