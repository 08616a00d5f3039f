"""Tests for privreid_jax.data.transforms (decode, resize, flip/pad/crop, erasing)."""

import io

import numpy as np
from PIL import Image
import pytest

from privreid_jax.data import transforms
from privreid_jax.data.records import DatasetError

H, W, PAD = 12, 8, 2
MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.5)


def _cfg(**kw):
  base = dict(height=H, width=W, mean=MEAN, std=STD, flip_prob=0.5, pad=PAD,
              erasing_prob=0.5, erasing_area=(0.02, 0.4), erasing_aspect=0.3)
  base.update(kw)
  return transforms.TransformConfig(**base)


def _known_image01():
  """A float [0,1] image whose every pixel/channel is distinct."""
  return (np.arange(H * W * 3, dtype=np.float32).reshape(H, W, 3)
          / (H * W * 3))


def _norm(x01):
  return (x01 - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)


def _encode(array, fmt):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format=fmt)
  return buf.getvalue()


def test_decode_bytes_gray_png_and_array_give_rgb_uint8():
  rgb = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
  out = transforms.decode_image(_encode(rgb, "PNG"))
  np.testing.assert_array_equal(out, rgb)  # PNG is lossless
  gray = np.full((5, 4), 77, np.uint8)
  out = transforms.decode_image(_encode(gray, "PNG"))
  assert out.shape == (5, 4, 3) and out.dtype == np.uint8
  assert (out == 77).all()
  np.testing.assert_array_equal(transforms.decode_image(rgb), rgb)
  jpeg = transforms.decode_image(_encode(rgb, "JPEG"))
  assert jpeg.shape == (5, 4, 3)


def test_decode_errors_name_the_image(tmp_path):
  missing = str(tmp_path / "0001_c1s1_000001_00.jpg")
  with pytest.raises(DatasetError, match="0001_c1s1_000001_00.jpg"):
    transforms.decode_image(missing, name=missing)
  with pytest.raises(DatasetError, match="source item 7") as e:
    transforms.decode_image(b"not an image", name="source item 7")
  assert "BytesIO" not in str(e.value)       # not PIL's repr of its buffer
  with pytest.raises(DatasetError, match="float32"):
    transforms.decode_image(np.zeros((4, 4, 3), np.float32), name="x")


def test_resize_is_bilinear_to_height_width():
  img = np.zeros((4, 2, 3), np.uint8)
  img[:, 1] = 200                       # left column 0, right column 200
  out = transforms.resize(img, 8, 4)
  assert out.shape == (8, 4, 3)
  row = out[3, :, 0].astype(int)
  assert row[0] == 0 and row[-1] == 200
  assert 0 < row[1] < row[2] < 200      # interpolated, increasing


def test_normalise_maps_mean_to_zero():
  x = np.broadcast_to(np.asarray(MEAN, np.float32), (H, W, 3))
  np.testing.assert_allclose(transforms.normalise(x, _cfg()), 0.0, atol=1e-7)
  one = transforms.normalise(np.ones((H, W, 3), np.float32), _cfg())
  np.testing.assert_allclose(one[0, 0], (1 - np.array(MEAN)) / np.array(STD),
                             rtol=1e-6)


def test_flip_without_shift_is_a_mirror():
  x = _known_image01()
  geom = transforms.Geometry(flip=True, top=PAD, left=PAD, erase=None)
  out = transforms.apply_geometry(x, geom, _cfg())
  np.testing.assert_allclose(out, _norm(x[:, ::-1]), rtol=1e-6)
  geom = transforms.Geometry(flip=False, top=PAD, left=PAD, erase=None)
  np.testing.assert_allclose(transforms.apply_geometry(x, geom, _cfg()),
                             _norm(x), rtol=1e-6)


def test_crop_offsets_shift_in_zero_padding():
  x = _known_image01()
  pad_value = _norm(np.zeros(3, np.float32))
  # Window at the top-left corner of the padded image: content moves down-right.
  out = transforms.apply_geometry(
      x, transforms.Geometry(False, 0, 0, None), _cfg())
  np.testing.assert_allclose(out[PAD:, PAD:], _norm(x[:H - PAD, :W - PAD]),
                             rtol=1e-6)
  np.testing.assert_allclose(out[:PAD], np.broadcast_to(pad_value, (PAD, W, 3)),
                             rtol=1e-6)
  np.testing.assert_allclose(out[:, :PAD, :],
                             np.broadcast_to(pad_value, (H, PAD, 3)), rtol=1e-6)
  # Bottom-right corner, after a flip: content moves up-left.
  out = transforms.apply_geometry(
      x, transforms.Geometry(True, 2 * PAD, 2 * PAD, None), _cfg())
  np.testing.assert_allclose(out[:H - PAD, :W - PAD],
                             _norm(x[:, ::-1][PAD:, PAD:]), rtol=1e-6)
  np.testing.assert_allclose(out[H - PAD:, :, :],
                             np.broadcast_to(pad_value, (PAD, W, 3)), rtol=1e-6)


def test_erasing_fills_rectangle_with_the_mean():
  x = _known_image01()
  geom = transforms.Geometry(False, PAD, PAD, erase=(3, 2, 4, 5))
  out = transforms.apply_geometry(x, geom, _cfg())
  region = np.zeros((H, W), bool)
  region[3:7, 2:7] = True
  assert (out[region] == 0).all()
  # Back in pixel space the erased pixels are exactly the per-channel mean.
  pixels = out[region] * np.asarray(STD, np.float32) + np.asarray(MEAN, np.float32)
  np.testing.assert_allclose(pixels, np.broadcast_to(MEAN, pixels.shape),
                             atol=1e-6)
  np.testing.assert_allclose(out[~region], _norm(x)[~region], rtol=1e-6)


def test_sample_geometry_erasing_rectangle_obeys_area_and_aspect():
  cfg = _cfg(height=64, width=32, erasing_prob=1.0)
  rng = np.random.default_rng(0)
  areas, aspects = [], []
  for _ in range(300):
    g = transforms.sample_geometry(rng, cfg)
    assert g.erase is not None  # always fits within 100 attempts at this size
    top, left, eh, ew = g.erase
    assert 0 <= top and top + eh <= 64 and 0 <= left and left + ew <= 32
    assert eh < 64 and ew < 32
    areas.append(eh * ew / (64 * 32))
    aspects.append(eh / ew)
  # Rounding of h and w blurs the bounds a little.
  assert 0.01 < min(areas) and max(areas) < 0.45
  assert 0.2 < min(aspects) and max(aspects) < 1 / 0.2
  assert max(aspects) > 1.5 and min(aspects) < 0.7  # both orientations


def test_sample_geometry_probabilities_and_offsets():
  rng = np.random.default_rng(1)
  geoms = [transforms.sample_geometry(rng, _cfg()) for _ in range(2000)]
  flips = np.mean([g.flip for g in geoms])
  erased = np.mean([g.erase is not None for g in geoms])
  assert 0.45 < flips < 0.55 and 0.45 < erased < 0.55
  tops = {g.top for g in geoms}
  lefts = {g.left for g in geoms}
  assert tops == lefts == set(range(2 * PAD + 1))
  never = [transforms.sample_geometry(rng, _cfg(flip_prob=0.0, erasing_prob=0.0))
           for _ in range(50)]
  assert not any(g.flip or g.erase for g in never)
  fixed = transforms.sample_geometry(rng, _cfg(pad=0, flip_prob=1.0))
  assert fixed.flip and fixed.top == 0 and fixed.left == 0


def test_train_transform_target_gets_identical_geometry():
  rng = np.random.default_rng(3)
  image = rng.integers(0, 256, (24, 10, 3), dtype=np.uint8)
  cfg = _cfg(erasing_prob=1.0)
  for seed in range(5):
    out, target = transforms.train_transform(
        image, np.random.default_rng(seed), cfg, target_fn=lambda x: x)
    np.testing.assert_array_equal(target, out)
    out2, inverted = transforms.train_transform(
        image, np.random.default_rng(seed), cfg, target_fn=lambda x: 1.0 - x)
    np.testing.assert_array_equal(out2, out)
    geom = transforms.sample_geometry(np.random.default_rng(seed), cfg)
    x01 = transforms.to_unit(transforms.resize(image, H, W))
    np.testing.assert_allclose(
        inverted, transforms.apply_geometry(1.0 - x01, geom, cfg), rtol=1e-6)
    assert (inverted[out == 0] == 0).all()  # same erased rectangle


def test_train_transform_without_target_and_with_stored_target():
  rng = np.random.default_rng(4)
  image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
  stored = rng.integers(0, 256, (2 * H, 2 * W, 3), dtype=np.uint8)
  cfg = _cfg(flip_prob=1.0, pad=0, erasing_prob=0.0)
  out, target = transforms.train_transform(image, rng, cfg)
  assert target is None
  np.testing.assert_allclose(out, _norm(transforms.to_unit(image)[:, ::-1]),
                             rtol=1e-6)
  _, target = transforms.train_transform(image, rng, cfg, target_image=stored)
  expected = transforms.to_unit(transforms.resize(stored, H, W))[:, ::-1]
  np.testing.assert_allclose(target, _norm(expected), rtol=1e-6)
  with pytest.raises(ValueError, match="target function returned shape"):
    transforms.train_transform(image, rng, cfg, target_fn=lambda x: x[:2])


def test_eval_transform_is_resize_and_normalise():
  image = np.full((24, 16, 3), 255, np.uint8)
  out = transforms.eval_transform(image, _cfg())
  assert out.shape == (H, W, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out, np.broadcast_to(_norm(np.ones(3, np.float32)),
                                                  (H, W, 3)), rtol=1e-6)


@pytest.mark.parametrize("key,value", [
    ("erasing_aspect", 1.5), ("erasing_area", (0.5, 0.1)), ("flip_prob", 2.0),
    ("pad", -1), ("std", (0.1, 0.0, 0.2)), ("mean", (0.1, 0.2)),
    ("height", 0)])
def test_config_errors_name_the_key(key, value):
  with pytest.raises(ValueError, match=f"data.{key}"):
    _cfg(**{key: value})


def test_from_config_reads_the_data_section():
  from privreid_jax import config_base  # pylint: disable=g-import-not-at-top
  data = config_base.base_config().data
  cfg = transforms.TransformConfig.from_config(data)
  assert (cfg.height, cfg.width, cfg.pad) == (256, 128, 10)
  assert cfg.erasing_area == (0.02, 0.4) and cfg.mean == (0.485, 0.456, 0.406)
