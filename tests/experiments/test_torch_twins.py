"""The PyTorch twins of experiments/ mirror the JAX networks they are timed against.

Skipped where torch is not installed (it is not a project dependency): a speed
ratio means something only if both sides build the same networks, so the
parameter shapes of method A's U-Net and PatchGAN twins must equal the JAX
modules' (same count per shape, PyTorch layout mapped to flax's), and one twin
step must run and return a finite loss.
"""

import collections
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privreid_jax.models import patchgan
from privreid_jax.models import unet

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "experiments"))
import torch_anon_reference  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def _flax_shapes(variables) -> collections.Counter:
  return collections.Counter(tuple(v.shape) for v in jax.tree.leaves(variables["params"]))


def _torch_shapes(module) -> collections.Counter:
  out = collections.Counter()
  for p in module.parameters():
    shape = tuple(p.shape)
    if len(shape) == 4:          # (out, in, kh, kw) or (in, out, kh, kw) -> (kh, kw, ., .)
      shape = (shape[2], shape[3], shape[1], shape[0])
    out[shape] += 1
  return out


@pytest.mark.parametrize("num_downs, hw", [(4, (32, 16)), (5, (64, 32))])
def test_unet_twin_has_the_jax_generators_parameters(num_downs, hw):
  x = jnp.zeros((2, *hw, 3))
  variables = unet.UNetGenerator(num_downs=num_downs, ngf=8).init(
      jax.random.PRNGKey(0), x, train=False)
  twin = torch_anon_reference.unet(num_downs, 8, dropout=False)
  assert _torch_shapes(twin) == _flax_shapes(variables)
  y = twin(torch.zeros(2, 3, *hw))
  assert tuple(y.shape) == (2, 3, *hw)


@pytest.mark.parametrize("n_layers", [1, 3])
def test_patchgan_twin_has_the_jax_discriminators_parameters_and_output(n_layers):
  a = jnp.zeros((2, 64, 32, 3))
  variables = patchgan.PatchDiscriminator(ndf=8, n_layers=n_layers).init(
      jax.random.PRNGKey(0), a, a, train=False)
  twin = torch_anon_reference.patchgan(8, n_layers)
  assert _torch_shapes(twin) == _flax_shapes(variables)
  logits = twin(torch.zeros(2, 6, 64, 32))
  assert tuple(logits.shape[2:]) == patchgan.patchgan_output_shape(64, 32, n_layers)


def test_method_a_twin_step_runs_with_a_finite_loss():
  from configs import anon_synthetic  # pylint: disable=g-import-not-at-top
  config = anon_synthetic.get_config("tiny")
  config.model.backbone = "resnet18"
  step = torch_anon_reference.make_step(config, num_classes=8, batch=8, channels_last=True)
  losses = [step(), step()]
  assert all(np.isfinite(losses)), losses
