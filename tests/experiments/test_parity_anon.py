"""experiments/parity_anon*.py: the parts that need no reference checkout.

Always (jax/numpy): the key layouts of the U-Net, the PatchGAN and AGW's
non-local blocks / GeM (names and round trips through our Flax trees), the
batches with their mosaic targets, our NonLocal at AGW's code width, the
per-module BN update counts and the verdict's step-1 floor. Where torch is
importable (not a project dependency), the weight copy is checked on a forward
pass against our own PyTorch twins (experiments/torch_anon_reference.py: U-Net
and PatchGAN) and a small torch twin of AGW's non-local block written here.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import parity
from experiments import parity_anon_batches as pab
from experiments import parity_anon_layout as pal
from experiments import parity_jax
from experiments import parity_verdict
from privreid_jax.models import non_local, patchgan, reid, unet


def _randomize(tree, seed):
  leaves, treedef = jax.tree.flatten(tree)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(treedef, [jnp.asarray(rng.normal(size=np.shape(x)) + 1.5,
                                                  jnp.float32) for x in leaves])


def _assert_trees_equal(a, b):
  flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(flat_a, flat_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ----------------------------------------------------------------------------
# Key layouts (no torch).
# ----------------------------------------------------------------------------
def test_unet_entries_follow_pix2pix_nesting():
  keys = [k for k, _, _ in pal.unet_entries(5)]
  assert keys[:3] == ["model.model.0.weight", "model.model.3.weight", "model.model.3.bias"]
  assert "model.model.1.model.1.weight" in keys              # down1 conv
  assert "model.model.1.model.2.running_var" in keys         # down1 BN
  assert "model.model.1.model.3.model.5.weight" in keys      # up2 conv
  # innermost block (i = 4): conv at 1, up conv at 3, its BN at 4
  inner = "model.model.1.model.3.model.3.model.3.model."
  assert {inner + "1.weight", inner + "3.weight", inner + "4.weight"} <= set(keys)
  # the twin's bare outermost block: the same keys without the wrapper's "model."
  assert [k for k, _, _ in pal.unet_entries(5, "")] == [k[len("model."):] for k in keys]


@pytest.mark.parametrize("num_downs", [2, 4, 5])
def test_unet_round_trip_covers_every_leaf(num_downs):
  h, w = 2 ** num_downs, 2 ** num_downs
  v = unet.UNetGenerator(num_downs=num_downs, ngf=4).init(
      jax.random.PRNGKey(0), jnp.zeros((2, h, w, 3)), train=False)
  params, stats = _randomize(v["params"], 1), _randomize(v["batch_stats"], 2)
  entries = pal.unet_entries(num_downs)
  assert len(entries) == len(jax.tree.leaves(params)) + len(jax.tree.leaves(stats))
  named = pal.tree_to_named(entries, params, stats, "netG.")
  p2, s2 = pal.named_to_tree(entries, named, v["params"], v["batch_stats"], "netG.")
  _assert_trees_equal(p2, params)
  _assert_trees_equal(s2, stats)


def test_patchgan_round_trip_and_names():
  a = jnp.zeros((2, 64, 32, 3))
  v = patchgan.PatchDiscriminator(ndf=4, n_layers=3).init(jax.random.PRNGKey(0), a, a,
                                                         train=False)
  entries = pal.patchgan_entries(3)
  keys = [k for k, _, _ in entries]
  assert keys[:2] == ["model.0.weight", "model.0.bias"] and keys[-1] == "model.11.bias"
  assert "model.9.running_mean" in keys     # conv3_bn after the stride-1 conv at 8
  params, stats = _randomize(v["params"], 3), _randomize(v["batch_stats"], 4)
  named = pal.tree_to_named(entries, params, stats)
  assert named["model.2.weight"].shape == (8, 4, 4, 4)     # torch (out, in, kh, kw)
  p2, s2 = pal.named_to_tree(entries, named, v["params"], v["batch_stats"])
  _assert_trees_equal(p2, params)
  _assert_trees_equal(s2, stats)


def test_named_to_tree_names_a_misfit():
  entries = pal.patchgan_entries(1)
  v = patchgan.PatchDiscriminator(ndf=4, n_layers=1).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16, 16, 3)),
      train=False)
  named = pal.tree_to_named(entries, v["params"], v["batch_stats"])
  named["model.0.weight"] = np.zeros((4, 5, 4, 4), np.float32)
  with pytest.raises(ValueError, match="model.0.weight"):
    pal.named_to_tree(entries, named, v["params"], v["batch_stats"])
  del named["model.0.weight"]
  with pytest.raises(KeyError, match="model.0.weight"):
    pal.named_to_tree(entries, named, v["params"], v["batch_stats"])


def test_agw_non_local_names_follow_the_reference_module_lists():
  keys = {k: path for k, _, path in pal.agw_extra_entries("base.", "global_pool.p")}
  # ResNetNL: NL_2 after layer2 blocks 2, 3; NL_3 after layer3 blocks 3, 4, 5
  assert keys["base.NL_2.0.g.weight"] == ("backbone", "nl2_2", "g", "kernel")
  assert keys["base.NL_2.1.W.0.bias"] == ("backbone", "nl2_3", "W_0", "bias")
  assert keys["base.NL_3.2.W.1.running_var"] == ("backbone", "nl3_5", "W_1", "var")
  assert keys["global_pool.p"] == ("pool", "p")
  assert not any(k.startswith(("base.NL_1", "base.NL_4")) for k in keys)


def _tiny_agw_config():
  c = parity_jax.load_config("configs/anon_synthetic.py")
  c.model.backbone, c.model.width = "resnet18", 4
  c.model.pooling, c.model.non_local = "gem", True
  return c


def test_agw_nonlocal_width_is_the_references_and_the_reid_tree_round_trips():
  config = _tiny_agw_config()
  config.model.non_local_inter_channels = 1          # as map_config / make_agw
  model = reid.build_reid_model(config.model, 5)
  x = jnp.zeros((2, 32, 16, 3))
  v = model.init(jax.random.PRNGKey(0), x, train=False)
  assert v["params"]["backbone"]["nl2_1"]["theta"]["kernel"].shape == (1, 1, 8, 1)
  config.model.non_local_inter_channels = 0          # the non-local paper's C/2
  wide = reid.build_reid_model(config.model, 5).init(jax.random.PRNGKey(0), x, train=False)
  assert wide["params"]["backbone"]["nl2_1"]["theta"]["kernel"].shape == (1, 1, 8, 4)
  # resnet18 stages (2, 2, 2, 2): AGW's (0, 2, 3, 0) non-local blocks after every block
  entries = pal.agw_extra_entries("base.", "global_pool.p", stages=(2, 2, 2, 2))
  params, stats = _randomize(v["params"], 5), _randomize(v["batch_stats"], 6)
  named = pal.tree_to_named(entries, params, stats, "netC.")
  assert named["netC.base.NL_3.1.theta.weight"].shape == (1, 16, 1, 1)
  p2, s2 = pal.named_to_tree(entries, named, v["params"], v["batch_stats"], "netC.")
  for key, coll, path in entries:
    got = pal.get_path(p2 if coll == "params" else s2, path)
    want = pal.get_path(params if coll == "params" else stats, path)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=key)


# ----------------------------------------------------------------------------
# Batches and the harness's bookkeeping (no torch).
# ----------------------------------------------------------------------------
def test_batches_are_8_bit_with_our_mosaic_when_no_reference():
  images8 = pab.make_images8(2, 8, 4, 751, 32, 16, seed=0)
  assert images8[0][0].dtype == np.uint8 and images8[0][0].shape == (8, 32, 16, 3)
  assert list(images8[0][1][:4]) == [images8[0][1][0]] * 4
  lines = []
  batches = pab.make_anon_batches(images8, mean=(0.485, 0.456, 0.406), std=(0.5,) * 3,
                                  block=3, log=lines.append)
  b = batches[0]
  np.testing.assert_allclose(b.images, (images8[0][0] / 255.0 - (0.485, 0.456, 0.406)) / 0.5,
                             atol=1e-6)
  # mosaic: every 3x3 block holds its top-left pixel
  m = b.targets[0]
  np.testing.assert_allclose(m[0:3, 0:3], np.broadcast_to(b.images[0, 0, 0], (3, 3, 3)),
                             atol=1e-6)
  np.testing.assert_allclose(m[3:6, 3:6], np.broadcast_to(b.images[0, 3, 3], (3, 3, 3)),
                             atol=1e-6)
  assert b.targets_nchw().shape == (8, 3, 32, 16)
  assert "ours" in lines[0]


def test_reference_mosaic_is_compared_and_used():
  pytest.importorskip("PIL")
  images8 = pab.make_images8(1, 8, 4, 751, 32, 16, seed=1)

  from PIL import Image  # pylint: disable=import-outside-toplevel
  from privreid_jax.ops import desensitize  # pylint: disable=import-outside-toplevel
  ours = desensitize.make_target_fn("mosaic", 0, block=3, fill="top_left")

  def fake_ref(pil, block):   # our mosaic, in place, one level off at one pixel
    m = ours(np.asarray(pil, np.float32) / 255.0)
    pil.paste(Image.fromarray(np.round(m * 255.0).astype(np.uint8)))
    px = pil.load()
    r, g, b = px[0, 0]
    px[0, 0] = (r + 1 if r < 255 else r - 1, g, b)
    del block
  lines = []
  batches = pab.make_anon_batches(images8, mean=(0.5,) * 3, std=(0.5,) * 3, block=3,
                                  ref_mosaic=fake_ref, log=lines.append)
  assert "max |diff| 1 / 255" in lines[0], lines
  assert batches[0].targets.shape == (8, 32, 16, 3)


def test_compare_snapshots_takes_bn_updates_per_module():
  init = parity_verdict.Snapshot({}, {"a.running_var": np.ones(3), "b.running_var": np.ones(3)},
                         {}, {})
  ours = parity_verdict.Snapshot({}, {"a.running_var": np.full(3, 0.9),
                                      "b.running_var": np.full(3, 0.9)}, {}, {})
  ref_bn = {"a.running_var": parity_verdict.bn_var_unbiased(np.full(3, 0.9), np.ones(3), 4, 1),
            "b.running_var": parity_verdict.bn_var_unbiased(np.full(3, 0.9), np.ones(3), 4, 2)}
  ref = parity_verdict.Snapshot({}, ref_bn, {}, {})
  g = parity_verdict.compare_snapshots(ours, ref, init, {"a": 4, "b": 4}, updates={"a": 1, "b": 2})
  assert g["bn_stats_unbiased"].value < 1e-12
  g = parity_verdict.compare_snapshots(ours, ref, init, {"a": 4, "b": 4}, updates=1)
  assert g["bn_stats_unbiased"].value > 1e-3


def _report(terms):
  groups = {p: {} for p in parity_verdict.PAIRS}
  return parity_verdict.StepReport(1, (1e-4, 1e-4), terms, groups)


def test_verdict_step1_floor_accepts_only_when_ours_is_at_the_float64_value():
  # ours exact, the reference's float32 1.1e-4 off: passes only with step1_floor
  r = _report({"tri_P": (1.0, 1.00011, 1.0)})
  assert not parity_verdict.verdict([r], 1e-4)[0]
  assert parity_verdict.verdict([r], 1e-4, step1_floor=True)[0]
  # ours off the float64 value: fails either way
  r = _report({"tri_P": (1.00011, 1.0, 1.0)})
  assert not parity_verdict.verdict([r], 1e-4, step1_floor=True)[0]


def test_parity_flags_wire_the_anon_reference():
  fv = parity.parse_args(["--reference=anon", "--reference_dir=/nowhere", "--ngf=8",
                          "--ndf=4", "--align=d_bn_g_step"])
  assert (fv.reference, fv.ngf, fv.ndf, fv.align) == ("anon", 8, 4, "d_bn_g_step")
  pytest.importorskip("torch")
  with pytest.raises(SystemExit, match="privacy-reid"):
    parity.build_reference(fv)


# ----------------------------------------------------------------------------
# Against PyTorch twins (torch only).
# ----------------------------------------------------------------------------
def _twins():
  torch = pytest.importorskip("torch")
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))), "experiments"))
  import torch_anon_reference  # pylint: disable=import-outside-toplevel
  return torch, torch_anon_reference


def _perturb_bn_buffers(torch, module, seed):
  g = torch.Generator().manual_seed(seed)
  for m in module.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
      m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
      m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("train", [False, True])
def test_unet_weights_copied_from_the_twin_give_its_output(train):
  torch, tar = _twins()
  torch.manual_seed(0)
  twin = tar.unet(4, 4, dropout=False)
  _perturb_bn_buffers(torch, twin, 1)
  named = {k: v.numpy() for k, v in twin.state_dict().items()
           if not k.endswith("num_batches_tracked")}
  x = np.random.default_rng(0).normal(size=(2, 32, 16, 3)).astype(np.float32)
  model = unet.UNetGenerator(num_downs=4, ngf=4)
  v = model.init(jax.random.PRNGKey(0), jnp.asarray(x), train=False)
  entries = pal.unet_entries(4, "")
  assert set(named) == {k for k, _, _ in entries}
  params, stats = pal.named_to_tree(entries, named, v["params"], v["batch_stats"])
  twin.train(train)
  with torch.no_grad():
    want = twin(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
  if train:
    got, _ = model.apply({"params": params, "batch_stats": stats}, jnp.asarray(x), train=True,
                         mutable=["batch_stats"])
  else:
    got = model.apply({"params": params, "batch_stats": stats}, jnp.asarray(x), train=False)
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)
  back = pal.tree_to_named(entries, params, stats)
  for k, val in named.items():
    np.testing.assert_array_equal(back[k], val, err_msg=k)


def test_patchgan_weights_copied_from_the_twin_give_its_logits():
  torch, tar = _twins()
  torch.manual_seed(0)
  twin = tar.patchgan(4, 3)
  _perturb_bn_buffers(torch, twin, 2)
  twin.eval()
  named = {k: v.numpy() for k, v in twin.state_dict().items()
           if not k.endswith("num_batches_tracked")}
  rng = np.random.default_rng(1)
  a, b = (rng.normal(size=(2, 64, 32, 3)).astype(np.float32) for _ in range(2))
  model = patchgan.PatchDiscriminator(ndf=4, n_layers=3)
  v = model.init(jax.random.PRNGKey(0), jnp.asarray(a), jnp.asarray(b), train=False)
  params, stats = pal.named_to_tree(pal.patchgan_entries(3, ""), named, v["params"],
                                    v["batch_stats"])
  with torch.no_grad():
    ab = torch.from_numpy(np.concatenate([a, b], -1).transpose(0, 3, 1, 2).copy())
    want = twin(ab).numpy().transpose(0, 2, 3, 1)
  got = model.apply({"params": params, "batch_stats": stats}, jnp.asarray(a), jnp.asarray(b),
                    train=False)
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)


def test_non_local_width_one_matches_a_torch_twin_of_agw_non_local():
  torch, _ = _twins()
  nn = torch.nn

  class NonLocalTwin(nn.Module):
    """AGW's embedded dot product with `inter` channels: z = x + BN(W(f g) / N)."""

    def __init__(self, c, inter):
      super().__init__()
      self.inter = inter
      self.g, self.theta, self.phi = (nn.Conv2d(c, inter, 1) for _ in range(3))
      self.W = nn.Sequential(nn.Conv2d(inter, c, 1), nn.BatchNorm2d(c))

    def forward(self, x):
      b, _, h, w = x.shape
      g = self.g(x).reshape(b, self.inter, -1).permute(0, 2, 1)
      th = self.theta(x).reshape(b, self.inter, -1).permute(0, 2, 1)
      ph = self.phi(x).reshape(b, self.inter, -1)
      y = torch.matmul(torch.matmul(th, ph) / (h * w), g)
      y = y.permute(0, 2, 1).reshape(b, self.inter, h, w)
      return x + self.W(y)

  torch.manual_seed(0)
  twin = NonLocalTwin(8, 1)
  _perturb_bn_buffers(torch, twin, 3)
  twin.W[1].weight.data.fill_(0.7)
  twin.eval()
  sd = {("NL_2.0." + k): v.numpy() for k, v in twin.state_dict().items()
        if not k.endswith("num_batches_tracked")}
  x = np.random.default_rng(2).normal(size=(2, 4, 2, 8)).astype(np.float32)
  block = non_local.NonLocal(inter_channels=1, name="nl2_0")
  v = block.init(jax.random.PRNGKey(0), jnp.asarray(x), train=False)
  # a one-block "backbone" tree so the AGW entries apply as they do to C
  entries = [e for e in pal.agw_extra_entries("", "", stages=(2, 2, 2, 2))
             if e[0].startswith("NL_2.0.")]
  tree_p, tree_s = {"backbone": {"nl2_0": v["params"]}}, {"backbone": {"nl2_0": v["batch_stats"]}}
  p, s = pal.named_to_tree(entries, sd, tree_p, tree_s)
  got = block.apply({"params": p["backbone"]["nl2_0"], "batch_stats": s["backbone"]["nl2_0"]},
                    jnp.asarray(x), train=False)
  with torch.no_grad():
    want = twin(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
