"""Tests for the torchvision ResNet weight loader / exporter (and PyTorch parity)."""

import functools
import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privreid_jax import errors
from privreid_jax.models import pretrained
from privreid_jax.models import reid
from privreid_jax.models import resnet

jax.config.update("jax_disable_most_optimizations", True)

PretrainedError = pretrained.PretrainedError


def torchvision_shapes(depth: int, width: int) -> dict[str, tuple[int, ...]]:
  """torchvision ResNet state-dict keys and shapes (without fc / num_batches_tracked),
  written from torchvision's architecture independently of the Flax code."""
  bottleneck = depth == 50
  blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}[depth]
  out = {}

  def conv(name, o, i, k):
    out[f"{name}.weight"] = (o, i, k, k)

  def bn(name, c):
    for leaf in ("weight", "bias", "running_mean", "running_var"):
      out[f"{name}.{leaf}"] = (c,)

  conv("conv1", width, 3, 7)
  bn("bn1", width)
  inplanes = width
  for s, n in enumerate(blocks):
    planes = width * 2 ** s
    outc = planes * 4 if bottleneck else planes
    for b in range(n):
      pre = f"layer{s + 1}.{b}"
      if bottleneck:
        conv(f"{pre}.conv1", planes, inplanes, 1)
        conv(f"{pre}.conv2", planes, planes, 3)
        conv(f"{pre}.conv3", outc, planes, 1)
        for k in (1, 2):
          bn(f"{pre}.bn{k}", planes)
        bn(f"{pre}.bn3", outc)
      else:
        conv(f"{pre}.conv1", planes, inplanes, 3)
        conv(f"{pre}.conv2", planes, planes, 3)
        bn(f"{pre}.bn1", planes)
        bn(f"{pre}.bn2", planes)
      if b == 0 and (s > 0 or inplanes != outc):
        conv(f"{pre}.downsample.0", outc, inplanes, 1)
        bn(f"{pre}.downsample.1", outc)
      inplanes = outc
  return out


def random_state_dict(depth, width, seed=0):
  """Random weights with sane scales and non-trivial BN statistics."""
  rng = np.random.default_rng(seed)
  sd = {}
  for key, shape in torchvision_shapes(depth, width).items():
    if len(shape) == 4:
      fan_in = shape[1] * shape[2] * shape[3]
      v = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
    elif key.endswith("running_var"):
      v = rng.uniform(0.5, 1.5, shape)
    elif key.endswith("weight"):
      v = rng.uniform(0.5, 1.0, shape)
    else:  # bias, running_mean
      v = rng.normal(0, 0.1, shape)
    sd[key] = v.astype(np.float32)
  return sd


def random_variables(model, x, seed):
  """Variables of `model` filled with random numbers (shapes via eval_shape; no compile)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), shapes)


X = jnp.zeros((1, 64, 32, 3))
R50 = reid.ReidModel(num_classes=5, backbone="resnet50", width=8, non_local=True,
                     pooling="gem")


def _eq(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


# --------------------------------------------------------------------- layout


@pytest.mark.parametrize("depth,nkeys", [(18, 100), (34, 180), (50, 265)])
def test_export_matches_torchvision_layout(depth, nkeys):
  # torchvision state dicts: R18 122, R34 218, R50 320 keys, less fc.{weight,bias} and
  # one num_batches_tracked per BN (20, 36, 53).
  v = random_variables(resnet.ResNet(depth=depth, width=8), X, 0)
  sd = pretrained.export_torchvision_resnet(v)
  spec = torchvision_shapes(depth, 8)
  assert len(spec) == nkeys
  assert {k: tuple(a.shape) for k, a in sd.items()} == spec
  assert all(a.dtype == np.float32 for a in sd.values())
  # OIHW <-> HWIO.
  np.testing.assert_array_equal(
      sd["layer1.0.conv1.weight"],
      np.transpose(v["params"]["layer1_0"]["conv1"]["kernel"], (3, 2, 0, 1)))
  np.testing.assert_array_equal(sd["layer2.0.downsample.1.running_var"],
                                v["batch_stats"]["layer2_0"]["downsample_1"]["var"])
  np.testing.assert_array_equal(sd["bn1.weight"], v["params"]["bn1"]["scale"])


@pytest.mark.parametrize("ext", ["npz", "safetensors"])
def test_round_trip_replaces_only_the_backbone(tmp_path, ext):
  src = random_variables(R50, X, 1)
  dst = random_variables(R50, X, 2)
  sd = pretrained.export_torchvision_resnet(src)
  assert not any("nl" in k for k in sd)
  path = str(tmp_path / f"w.{ext}")
  if ext == "npz":
    np.savez(path, **sd)
  else:
    pretrained.write_safetensors(path, sd)
  out = pretrained.load_torchvision_resnet(path, dst)
  assert jax.tree.structure(out) == jax.tree.structure(dst)
  for coll in ("params", "batch_stats"):
    for name, sub in out[coll].items():
      if name != "backbone":
        _eq(sub, dst[coll][name])  # bnneck, classifier, pool untouched
        continue
      for block, t in sub.items():
        _eq(t, (dst if block.startswith("nl") else src)[coll]["backbone"][block])
  assert {a.dtype for a in jax.tree.leaves(out)} == {jnp.dtype(jnp.float32)}


def test_ignores_fc_num_batches_tracked_and_module_prefix(tmp_path):
  m = resnet.ResNet(depth=18, width=8)
  sd = random_state_dict(18, 8)
  extra = {"fc.weight": np.zeros((10, 64), np.float32), "fc.bias": np.zeros(10, np.float32),
           "bn1.num_batches_tracked": np.array(7, np.int64)}
  path = str(tmp_path / "w.npz")
  np.savez(path, **{f"module.{k}": v for k, v in {**sd, **extra}.items()})
  out = pretrained.load_torchvision_resnet(path, random_variables(m, X, 3))
  exported = pretrained.export_torchvision_resnet(out)
  assert exported.keys() == sd.keys()
  for k, v in exported.items():
    np.testing.assert_array_equal(v, sd[k])


# --------------------------------------------------------------------- errors


def _save(tmp_path, sd, name="w.npz"):
  path = str(tmp_path / name)
  np.savez(path, **sd)
  return path


def _one_line_error(path, variables, *needles):
  with pytest.raises(PretrainedError) as e:
    pretrained.load_torchvision_resnet(path, variables)
  msg = str(e.value)
  assert "\n" not in msg and path in msg
  for n in needles:
    assert n in msg, msg
  return msg


def test_missing_unexpected_misshaped_keys(tmp_path):
  m = resnet.ResNet(depth=18, width=8)
  v = random_variables(m, X, 4)
  sd = random_state_dict(18, 8)
  miss = dict(sd)
  del miss["layer3.1.bn2.running_var"]
  _one_line_error(_save(tmp_path, miss, "miss.npz"), v, "missing keys",
                  "layer3.1.bn2.running_var")
  extra = dict(sd, **{"layer5.0.conv1.weight": np.zeros((1, 1, 1, 1), np.float32)})
  _one_line_error(_save(tmp_path, extra, "extra.npz"), v, "unexpected keys",
                  "layer5.0.conv1.weight")
  bad = dict(sd, **{"layer1.0.conv2.weight": np.zeros((8, 8, 1, 1), np.float32)})
  _one_line_error(_save(tmp_path, bad, "bad.npz"), v, "mis-shaped",
                  "layer1.0.conv2.weight", "(8, 8, 1, 1)", "(8, 8, 3, 3)")
  # A ResNet-50 file for a ResNet-18: many keys, listed briefly.
  msg = _one_line_error(_save(tmp_path, random_state_dict(50, 8), "r50.npz"), v,
                        "unexpected keys", "in all)")
  assert len(msg) < 1500


def test_bad_files(tmp_path):
  v = random_variables(resnet.ResNet(depth=18, width=8), X, 5)
  with pytest.raises(FileNotFoundError, match="nope.npz"):
    pretrained.load_torchvision_resnet(str(tmp_path / "nope.npz"), v)
  (tmp_path / "w.h5").write_bytes(b"x")
  with pytest.raises(PretrainedError, match=r"w\.h5.*'\.h5'"):
    pretrained.load_torchvision_resnet(str(tmp_path / "w.h5"), v)
  (tmp_path / "w.safetensors").write_bytes(struct.pack("<Q", 10**6) + b"{}")
  with pytest.raises(PretrainedError, match="w.safetensors.*header length"):
    pretrained.load_torchvision_resnet(str(tmp_path / "w.safetensors"), v)
  with pytest.raises(PretrainedError, match="no ResNet"):
    pretrained.export_torchvision_resnet({"params": {"dense": {}}})
  (tmp_path / "w.npz").write_bytes(b"not weights")
  with pytest.raises(PretrainedError, match=r"w\.npz: not a readable \.npz file"):
    pretrained.load_torchvision_resnet(str(tmp_path / "w.npz"), v)
  blob = _save(tmp_path, random_state_dict(18, 8), "whole.npz")
  (tmp_path / "cut.npz").write_bytes(open(blob, "rb").read()[:1000])   # a copy cut short
  with pytest.raises(PretrainedError, match=r"cut\.npz: not a readable \.npz file"):
    pretrained.load_torchvision_resnet(str(tmp_path / "cut.npz"), v)
  # The command-line tools print these in one line (errors.is_user_error).
  assert errors.is_user_error(PretrainedError("x"))


def test_pth_without_torch_is_a_clear_error(tmp_path):
  try:
    import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    pytest.skip("torch is installed")
  except ImportError:
    pass
  (tmp_path / "w.pth").write_bytes(b"not read")
  with pytest.raises(PretrainedError, match=r"w\.pth.*needs torch"):
    pretrained.read_state_dict(str(tmp_path / "w.pth"))


@pytest.mark.parametrize("name,content,pattern", [
    ("garbage.pth", b"not a torch file", r"garbage\.pth: not a PyTorch weights file, or "
                                         r"one holding more than tensors"),
    ("empty.pt", b"", r"empty\.pt: not a readable PyTorch file \(EOFError\)$"),
    ("cut.pth", None, r"cut\.pth: not a readable PyTorch file \(.*central directory"),
    ("numpy.pth", "numpy", r"numpy\.pth: not a PyTorch weights file"),
])
def test_unreadable_pth_is_a_one_line_error(tmp_path, name, content, pattern):
  """torch.load's errors on a bad .pth (a traceback before) are PretrainedErrors."""
  torch = pytest.importorskip("torch")
  path = tmp_path / name
  if content is None:                                  # a real file, cut short
    torch.save({"conv1.weight": torch.ones(4, 3, 7, 7)}, tmp_path / "whole.pth")
    path.write_bytes((tmp_path / "whole.pth").read_bytes()[:300])
  elif content == "numpy":                             # a pickled numpy array
    torch.save({"conv1.weight": np.ones(3)}, path)
  else:
    path.write_bytes(content)
  with pytest.raises(PretrainedError, match=pattern) as info:
    pretrained.read_state_dict(str(path))
  assert "\n" not in str(info.value) and errors.is_user_error(info.value)


def test_safetensors_reader_on_a_hand_built_file(tmp_path):
  # Format: u64 LE header size, JSON header, raw little-endian buffer.
  f32 = np.arange(6, dtype="<f4").reshape(2, 3)
  f16 = np.array([0.5, -1.25], dtype="<f2")
  bf16_vals = np.array([1.5, -2.0, 3.0], np.float32)
  bf16 = (bf16_vals.view("<u4") >> 16).astype("<u2")  # exact in bfloat16
  i64 = np.array([3, -4], dtype="<i8")
  blobs = [f32.tobytes(), f16.tobytes(), bf16.tobytes(), i64.tobytes()]
  offs = np.cumsum([0] + [len(b) for b in blobs])
  header = {"__metadata__": {"format": "pt"},
            "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [int(offs[0]), int(offs[1])]},
            "b": {"dtype": "F16", "shape": [2], "data_offsets": [int(offs[1]), int(offs[2])]},
            "c": {"dtype": "BF16", "shape": [3], "data_offsets": [int(offs[2]), int(offs[3])]},
            "d": {"dtype": "I64", "shape": [2], "data_offsets": [int(offs[3]), int(offs[4])]}}
  h = json.dumps(header).encode()
  path = tmp_path / "hand.safetensors"
  path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
  got = pretrained.read_safetensors(str(path))
  assert set(got) == {"a", "b", "c", "d"}
  np.testing.assert_array_equal(got["a"], f32)
  np.testing.assert_array_equal(got["b"], [0.5, -1.25])
  np.testing.assert_array_equal(got["c"], bf16_vals)
  np.testing.assert_array_equal(got["d"], [3, -4])
  # The writer produces a file with the same layout rules (8-byte aligned header).
  pretrained.write_safetensors(str(tmp_path / "w.safetensors"), {"a": f32, "d": i64})
  raw = (tmp_path / "w.safetensors").read_bytes()
  (n,) = struct.unpack("<Q", raw[:8])
  assert n % 8 == 0
  hdr = json.loads(raw[8:8 + n])
  begin, end = hdr["a"]["data_offsets"]
  assert hdr["a"]["dtype"] == "F32" and hdr["a"]["shape"] == [2, 3] and end - begin == 24
  np.testing.assert_array_equal(
      np.frombuffer(raw[8 + n + begin:8 + n + end], "<f4").reshape(2, 3), f32)


def test_safetensors_round_trip_keeps_dtypes_and_0d_shapes(tmp_path):
  tensors = {"w": np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2],  # a strided view
             "h": np.array([0.5, -2.0], np.float16),
             "n": np.array(7, np.int64),       # num_batches_tracked: a 0-d tensor
             "s": np.array(2.5, np.float64),
             "m": np.array([True, False])}
  path = str(tmp_path / "w.safetensors")
  pretrained.write_safetensors(path, tensors)
  got = pretrained.read_safetensors(path)
  assert set(got) == set(tensors)
  for k, v in tensors.items():
    assert got[k].shape == v.shape and got[k].dtype == v.dtype, k
    np.testing.assert_array_equal(got[k], v)
  assert got["n"].ndim == 0 and int(got["n"]) == 7


@pytest.mark.parametrize("content", [b"", b"short", b"garbage " * 64,
                                     struct.pack("<Q", 2) + b"{x"])
def test_garbage_safetensors_is_a_one_line_error(tmp_path, content):
  path = tmp_path / "bad.safetensors"
  path.write_bytes(content)
  with pytest.raises(PretrainedError) as e:
    pretrained.read_state_dict(str(path))
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith(f"{path}: not a readable safetensors file")


def test_unwritable_dtype_is_a_one_line_error(tmp_path):
  path = str(tmp_path / "c.safetensors")
  with pytest.raises(PretrainedError, match=r"c\.safetensors: cannot write") as e:
    pretrained.write_safetensors(path, {"z": np.zeros(2, np.complex128)})
  assert "\n" not in str(e.value)


# ------------------------------------------------------------------- PyTorch parity


def torch_resnet_forward(torch, sd, depth, last_stride, x_nchw):
  """torchvision ResNet (eval mode, without avgpool/fc) from torch.nn.functional."""
  F = torch.nn.functional
  t = {k: torch.from_numpy(v) for k, v in sd.items()}

  def bn(x, name):
    return F.batch_norm(x, t[f"{name}.running_mean"], t[f"{name}.running_var"],
                        t[f"{name}.weight"], t[f"{name}.bias"], training=False, eps=1e-5)

  def conv(x, name, stride=1):
    w = t[f"{name}.weight"]
    return F.conv2d(x, w, stride=stride, padding=w.shape[-1] // 2)

  x = F.relu(bn(conv(x_nchw, "conv1", 2), "bn1"))
  x = F.max_pool2d(x, 3, 2, 1)
  blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}[depth]
  for s, n in enumerate(blocks):
    for b in range(n):
      pre = f"layer{s + 1}.{b}"
      stride = (1 if s == 0 else (last_stride if s == 3 else 2)) if b == 0 else 1
      if depth == 50:
        y = F.relu(bn(conv(x, f"{pre}.conv1"), f"{pre}.bn1"))
        y = F.relu(bn(conv(y, f"{pre}.conv2", stride), f"{pre}.bn2"))
        y = bn(conv(y, f"{pre}.conv3"), f"{pre}.bn3")
      else:
        y = F.relu(bn(conv(x, f"{pre}.conv1", stride), f"{pre}.bn1"))
        y = bn(conv(y, f"{pre}.conv2"), f"{pre}.bn2")
      if f"{pre}.downsample.0.weight" in t:
        x = bn(conv(x, f"{pre}.downsample.0", stride), f"{pre}.downsample.1")
      x = F.relu(x + y)
  return x


@functools.partial(jax.jit, static_argnums=(0,))
def _forward(model, v, x):
  return model.apply(v, x, train=False)


@pytest.mark.parametrize("depth,last_stride", [(18, 2), (50, 1)])
def test_pytorch_parity(tmp_path, depth, last_stride):
  torch = pytest.importorskip("torch")
  sd = random_state_dict(depth, 8, seed=depth)
  path = str(tmp_path / "w.pth")
  torch.save({"state_dict": {f"module.{k}": torch.from_numpy(v) for k, v in sd.items()}},
             path)
  x = np.random.default_rng(6).normal(size=(2, 64, 32, 3)).astype(np.float32)
  with torch.no_grad():
    ref = torch_resnet_forward(torch, sd, depth, last_stride,
                               torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  ref = ref.transpose(0, 2, 3, 1)
  model = reid.ReidModel(num_classes=3, backbone=f"resnet{depth}", width=8,
                         last_stride=last_stride)
  v = pretrained.load_torchvision_resnet(path, random_variables(model, x, 7))
  scale = float(np.abs(ref).max())
  assert scale > 0.1
  for impl in ("xla", "matmul"):
    _, out = _forward(model.clone(conv_impl=impl), v, x)
    np.testing.assert_allclose(out["feature_map"], ref, rtol=1e-4, atol=1e-4 * scale)
