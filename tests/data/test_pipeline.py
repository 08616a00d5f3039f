"""Tests for privreid_jax.data.pipeline: training stream and eval loader."""

import collections
import io
import json

import numpy as np
from PIL import Image
import pytest

from privreid_jax import config_base
from privreid_jax.data import pipeline
from privreid_jax.data import transforms
from privreid_jax.data.records import DatasetError, Record

H, W = 16, 8


def _data_cfg(**kw):
  c = config_base.base_config().data
  c.height, c.width, c.pad = H, W, 2
  c.batch_size, c.num_instances, c.num_workers = 8, 2, 0
  c.eval_batch_size = 4
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def _source(counts, seed=0, size=(20, 10)):
  """In-memory dict source: counts[i] images of pid i, camera j % 3."""
  rng = np.random.default_rng(seed)
  items = []
  for pid, n in enumerate(counts):
    for j in range(n):
      items.append({"image": rng.integers(0, 256, size + (3,), dtype=np.uint8),
                    "pid": pid, "camid": j % 3})
  return items


def _pids(source):
  return [item["pid"] for item in source]


def _take(loader, n):
  return [next(loader) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def invert(x01):
  """A picklable target function (worker processes need to import it)."""
  return 1.0 - x01


# ----------------------------------------------------------- train loader ---


# Images per identity: uneven, with one identity below K.
COUNTS = [2, 4, 5, 8, 9, 3, 6, 4, 7, 1, 10, 4]


def test_train_batches_shapes_labels_and_determinism():
  src = _source(COUNTS)
  cfg = _data_cfg()
  a = pipeline.train_loader(src, _pids(src), cfg, seed=0)
  batches = _take(a, 4)
  b = batch = batches[0]
  assert b["image"].shape == (8, H, W, 3) and b["image"].dtype == np.float32
  for key in ("pid", "camid", "index"):
    assert batch[key].shape == (8,) and batch[key].dtype == np.int32
  for batch in batches:
    np.testing.assert_array_equal(
        batch["pid"], [src[i]["pid"] for i in batch["index"]])
    np.testing.assert_array_equal(
        batch["camid"], [src[i]["camid"] for i in batch["index"]])
    assert set(collections.Counter(batch["pid"].tolist()).values()) == {2}
  _assert_batches_equal(
      batches, _take(pipeline.train_loader(src, _pids(src), cfg, seed=0), 4))
  other = _take(pipeline.train_loader(src, _pids(src), cfg, seed=1), 4)
  assert not all(np.array_equal(x["index"], y["index"])
                 for x, y in zip(batches, other))
  a.close()


def test_train_stream_follows_sampler_epochs_and_uses_given_pids():
  src = _source(COUNTS)
  relabelled = [100 + p for p in _pids(src)]
  loader = pipeline.train_loader(src, relabelled, _data_cfg(), seed=4)
  n = loader.steps_per_epoch
  assert n == len(loader.sampler.epoch(0)) and n >= 1
  batches = _take(loader, n + 1)
  for row, batch in enumerate(batches[:n]):
    np.testing.assert_array_equal(batch["index"], loader.sampler.epoch(0)[row])
  np.testing.assert_array_equal(batches[n]["index"], loader.sampler.epoch(1)[0])
  assert batches[0]["pid"].min() >= 100   # pids come from `pids`


def test_augmentation_is_per_sample_and_varies():
  # One identity-sized source where every image is identical: differences
  # between samples come from the augmentation alone.
  image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
  src = [{"image": image, "pid": i // 2, "camid": 0} for i in range(8)]
  cfg = _data_cfg(erasing_prob=0.0)
  batch = next(pipeline.train_loader(src, _pids(src), cfg, seed=0))
  distinct = {batch["image"][j].tobytes() for j in range(8)}
  assert len(distinct) > 2
  plain = next(pipeline.train_loader(
      src, _pids(src), _data_cfg(flip_prob=0.0, pad=0, erasing_prob=0.0),
      seed=0))
  expected = transforms.eval_transform(image, transforms.TransformConfig(
      height=H, width=W, pad=0))
  np.testing.assert_allclose(plain["image"],
                             np.broadcast_to(expected, (8, H, W, 3)), rtol=1e-6)


def test_process_slices_concatenate_to_the_global_batch():
  src = _source(COUNTS)
  cfg = _data_cfg()
  whole = _take(pipeline.train_loader(src, _pids(src), cfg, seed=2), 3)
  parts = [_take(pipeline.train_loader(src, _pids(src), cfg, seed=2,
                                       process_index=p, process_count=4), 3)
           for p in range(4)]
  for step in range(3):
    assert parts[0][step]["image"].shape[0] == 2
    for key in whole[step]:
      np.testing.assert_array_equal(
          np.concatenate([parts[p][step][key] for p in range(4)]),
          whole[step][key], err_msg=key)


def test_sample_randomness_comes_from_seed_and_stream_position():
  src = _source(COUNTS)
  cfg = _data_cfg(erasing_prob=1.0)
  tcfg = transforms.TransformConfig.from_config(cfg)
  loader = pipeline.train_loader(src, _pids(src), cfg, seed=9, process_index=1,
                                 process_count=2, targets=invert)
  batches = _take(loader, 2)
  for b, batch in enumerate(batches):
    for j, idx in enumerate(batch["index"]):
      rng = pipeline.sample_rng(9, b * 8 + 4 + j)   # rows 4..7 of batch b
      image, target = transforms.train_transform(src[idx]["image"], rng, tcfg,
                                                 target_fn=invert)
      np.testing.assert_array_equal(batch["image"][j], image)
      np.testing.assert_array_equal(batch["target"][j], target)


def test_fresh_noise_targets_come_from_the_sample_generator_and_keep_the_images():
  """Per-read noise (the reference's fresh noise) is drawn from each sample's seeded
  generator after its geometry: same seed, same targets; the images are those of
  a fixed-noise loader (no other draw moved)."""
  from privreid_jax.ops import desensitize
  src = _source(COUNTS)
  cfg = _data_cfg(erasing_prob=1.0)
  fresh = desensitize.TargetFunction("noise", {"std": 0.2}, seed=0, fresh=True)
  fixed = desensitize.TargetFunction("noise", {"std": 0.2}, seed=0)
  one, two = (_take(pipeline.train_loader(src, _pids(src), cfg, seed=3, targets=fresh), 2)
              for _ in range(2))
  ref = _take(pipeline.train_loader(src, _pids(src), cfg, seed=3, targets=fixed), 2)
  for a, b, c in zip(one, two, ref):
    np.testing.assert_array_equal(a["target"], b["target"])
    np.testing.assert_array_equal(a["image"], c["image"])
    assert not np.allclose(a["target"], c["target"])


def test_paired_identity_target_equals_image_and_inverted_target_shares_geometry():
  src = _source(COUNTS)
  cfg = _data_cfg(erasing_prob=1.0)
  same = _take(pipeline.train_loader(src, _pids(src), cfg, seed=0,
                                     targets=lambda x: x), 2)
  for batch in same:
    np.testing.assert_array_equal(batch["target"], batch["image"])
    assert (batch["image"] == 0).any()    # erasing happened
  inv = _take(pipeline.train_loader(src, _pids(src), cfg, seed=0,
                                    targets=invert), 2)
  for a, b in zip(same, inv):
    np.testing.assert_array_equal(b["image"], a["image"])
    assert (b["target"][a["image"] == 0] == 0).all()
    assert not np.allclose(b["target"], b["image"])
  # Known geometry: always flipped, no shift, no erasing.
  cfg = _data_cfg(flip_prob=1.0, pad=0, erasing_prob=0.0)
  batch = next(pipeline.train_loader(src, _pids(src), cfg, seed=0,
                                     targets=invert))
  tcfg = transforms.TransformConfig.from_config(cfg)
  for j, idx in enumerate(batch["index"]):
    x01 = transforms.to_unit(transforms.resize(src[idx]["image"], H, W))
    np.testing.assert_allclose(
        batch["target"][j], transforms.normalise(1.0 - x01[:, ::-1], tcfg),
        rtol=1e-5, atol=1e-6)


def test_paired_stored_targets_come_from_the_aligned_source():
  src = _source(COUNTS, seed=0)
  stored = [{"image": item["image"][::-1].copy()} for item in _source(COUNTS)]
  cfg = _data_cfg(flip_prob=0.0, pad=0, erasing_prob=0.0)
  batch = next(pipeline.train_loader(src, _pids(src), cfg, seed=0,
                                     targets=stored))
  tcfg = transforms.TransformConfig.from_config(cfg)
  for j, idx in enumerate(batch["index"]):
    np.testing.assert_allclose(
        batch["target"][j], transforms.eval_transform(stored[idx]["image"], tcfg),
        rtol=1e-6)
  with pytest.raises(ValueError, match="targets source has 3 items"):
    pipeline.train_loader(src, _pids(src), cfg, seed=0, targets=stored[:3])


@pytest.mark.parametrize("targets", [None, "invert", "stored"])
def test_device_finish_equals_the_host_finish(targets):
  """finish="device" yields the workers' uint8 batch and rectangles; finishing it
  with JAX gives the host's normalised, erased batch bit for bit."""
  import jax
  from privreid_jax.data import device_finish
  src = _source(COUNTS)
  paired = {None: None, "invert": invert,
            "stored": [{"image": item["image"][::-1].copy()} for item in src]}[targets]
  cfg = _data_cfg(erasing_prob=0.7, mean=(0.3, 0.5, 0.7), std=(0.2, 0.25, 0.3))
  host = _take(pipeline.train_loader(src, _pids(src), cfg, seed=3, targets=paired), 3)
  raw = _take(pipeline.train_loader(src, _pids(src), cfg, seed=3, targets=paired,
                                    finish="device"), 3)
  finish = jax.jit(device_finish.finisher(transforms.TransformConfig.from_config(cfg)))
  erased = 0
  for h, r in zip(host, raw):
    assert r["image"].dtype == np.uint8 and r["erase"].shape == (8, 4)
    erased += int((r["erase"][:, 0] >= 0).sum())
    if targets == "invert":
      assert r["target"].dtype == np.float32
    out = jax.device_get(finish(r))
    assert sorted(out) == sorted(h)
    for key in h:
      np.testing.assert_array_equal(out[key], h[key], err_msg=key)
  assert 0 < erased < 24                  # some rectangles, some not
  # A host-finished batch passes through unchanged.
  again = jax.device_get(finish(host[0]))
  np.testing.assert_array_equal(again["image"], host[0]["image"])
  with pytest.raises(ValueError, match="finish='gpu'"):
    pipeline.train_loader(src, _pids(src), cfg, seed=3, finish="gpu")


def test_state_restore_in_process():
  src = _source(COUNTS)
  cfg = _data_cfg()
  loader = pipeline.train_loader(src, _pids(src), cfg, seed=7)
  _take(loader, 3)
  state = json.loads(json.dumps(loader.get_state()))
  after = _take(loader, 4)
  fresh = pipeline.train_loader(src, _pids(src), cfg, seed=7)
  fresh.set_state(state)
  _assert_batches_equal(_take(fresh, 4), after)
  loader.set_state(state)                   # rewinding the same iterator
  _assert_batches_equal(_take(loader, 4), after)
  other_seed = pipeline.train_loader(src, _pids(src), cfg, seed=8)
  with pytest.raises(ValueError, match="seed 7"):
    other_seed.set_state(state)
  with pytest.raises(ValueError, match="next_batch"):
    fresh.set_state({"step": 3})


def test_state_through_grain_checkpoint_handler(tmp_path):
  import grain  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  src = _source(COUNTS)
  loader = pipeline.train_loader(src, _pids(src), _data_cfg(), seed=1)
  _take(loader, 2)
  grain.checkpoint.CheckpointHandler().save(epath.Path(tmp_path), item=loader)
  after = _take(loader, 2)
  restored = pipeline.train_loader(src, _pids(src), _data_cfg(), seed=1)
  grain.checkpoint.CheckpointHandler().restore(epath.Path(tmp_path),
                                               item=restored)
  assert restored.get_state() == {"next_batch": 2, "seed": 1}
  _assert_batches_equal(_take(restored, 2), after)


def test_worker_processes_match_in_process_and_restore():
  src = _source(COUNTS)
  reference = _take(pipeline.train_loader(src, _pids(src), _data_cfg(), seed=3,
                                          targets=invert), 6)
  with pipeline.train_loader(src, _pids(src), _data_cfg(num_workers=2), seed=3,
                             targets=invert) as loader:
    first = _take(loader, 2)
    state = loader.get_state()
    after = _take(loader, 4)
    _assert_batches_equal(first + after, reference)
    loader.set_state(state)
    _assert_batches_equal(_take(loader, 4), after)
  assert state == {"next_batch": 2, "seed": 3}


def test_folder_of_jpegs(tmp_path):
  rng = np.random.default_rng(0)
  records = []
  for pid in range(4):
    for j in range(3):
      path = tmp_path / f"{pid + 1:04d}_c{j + 1}s1_{j:06d}_00.jpg"
      Image.fromarray(rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)).save(path)
      records.append(Record(str(path), pid, j))
  cfg = _data_cfg()
  batch = next(pipeline.train_loader(records, [r.pid for r in records], cfg,
                                     seed=0))
  np.testing.assert_array_equal(batch["camid"],
                                [records[i].camid for i in batch["index"]])
  assert np.isfinite(batch["image"]).all() and batch["image"].std() > 0.1
  first = next(iter(pipeline.eval_loader(records, cfg)))
  tcfg = transforms.TransformConfig.from_config(cfg)
  expected = transforms.eval_transform(
      np.asarray(Image.open(records[0].path).convert("RGB")), tcfg)
  np.testing.assert_allclose(first["image"][0], expected, rtol=1e-6)
  records.append(Record(str(tmp_path / "0009_c1s1_000000_00.jpg"), 3, 0))
  loader = pipeline.eval_loader(records, cfg)
  with pytest.raises(DatasetError, match="0009_c1s1_000000_00.jpg"):
    list(loader)


def test_eval_workers_default_to_the_training_workers():
  src = _source(COUNTS)
  assert pipeline.eval_loader(src, _data_cfg(num_workers=3))._num_workers == 3
  assert pipeline.eval_loader(src, _data_cfg(num_workers=3,
                                             eval_num_workers=0))._num_workers == 0
  assert pipeline.eval_loader(src, _data_cfg(num_workers=0,
                                             eval_num_workers=2))._num_workers == 2
  with pytest.raises(ValueError, match=r"data.eval_num_workers=-2 must be >= -1"):
    pipeline.eval_loader(src, _data_cfg(eval_num_workers=-2))


def test_bad_input_errors():
  src = _source(COUNTS)
  pids = _pids(src)
  with pytest.raises(ValueError, match="batch_size=9.*num_instances=2"):
    pipeline.train_loader(src, pids, _data_cfg(batch_size=9), seed=0)
  with pytest.raises(ValueError, match="batch_size=8.*process count 3"):
    pipeline.train_loader(src, pids, _data_cfg(), seed=0, process_index=0,
                          process_count=3)
  with pytest.raises(ValueError, match="process_index=2"):
    pipeline.train_loader(src, pids, _data_cfg(), seed=0, process_index=2,
                          process_count=2)
  with pytest.raises(ValueError, match="pids has 3 entries"):
    pipeline.train_loader(src, pids[:3], _data_cfg(), seed=0)
  with pytest.raises(ValueError, match="data.erasing_aspect"):
    pipeline.train_loader(src, pids, _data_cfg(erasing_aspect=2.0), seed=0)
  bad = [{"img": item["image"], "pid": item["pid"], "camid": 0} for item in src]
  with pytest.raises(DatasetError, match="no 'image' key"):
    next(pipeline.train_loader(bad, pids, _data_cfg(), seed=0))
  with pytest.raises(DatasetError, match="source item 0 is a tuple"):
    next(iter(pipeline.eval_loader([(1, 2)], _data_cfg())))
  # A prepared tfds dataset's items carry their file name: the error names it.
  broken = src[:1] + [dict(src[1], image=b"", filename="0002_c3s1_000151_01.jpg")]
  with pytest.raises(DatasetError, match=r"^cannot decode image source item 1 "
                     r"\(0002_c3s1_000151_01\.jpg\): not an image format PIL knows"):
    next(iter(pipeline.eval_loader(broken, _data_cfg())))


# ------------------------------------------------------------ eval loader ---


def _encoded_source(n):
  rng = np.random.default_rng(1)
  items = []
  for i in range(n):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 10, 3), dtype=np.uint8)).save(
        buf, format="PNG")
    items.append({"image": buf.getvalue(), "pid": 10 + i, "camid": i % 2})
  return items


def test_eval_batches_are_ordered_padded_and_masked():
  src = _encoded_source(10)
  cfg = _data_cfg(eval_batch_size=4)
  loader = pipeline.eval_loader(src, cfg)
  batches = list(loader)
  assert loader.num_eval_batches == len(loader) == len(batches) == 3
  assert all(b["image"].shape == (4, H, W, 3) for b in batches)
  np.testing.assert_array_equal(batches[2]["mask"], [True, True, False, False])
  assert all(b["mask"].all() for b in batches[:2])
  for key in ("image", "pid", "camid", "index"):
    assert not batches[2][key][2:].any()    # padding is zeros
  index = np.concatenate([b["index"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(index, np.arange(10))
  pid = np.concatenate([b["pid"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(pid, 10 + np.arange(10))
  tcfg = transforms.TransformConfig.from_config(cfg)
  expected = transforms.eval_transform(transforms.decode_image(src[5]["image"]),
                                       tcfg)
  np.testing.assert_allclose(batches[1]["image"][1], expected, rtol=1e-6)
  _assert_batches_equal(list(loader), batches)   # re-iterable, deterministic


def test_eval_process_slices_cover_the_global_batches():
  src = _encoded_source(10)
  cfg = _data_cfg(eval_batch_size=4)
  whole = list(pipeline.eval_loader(src, cfg))
  parts = [list(pipeline.eval_loader(src, cfg, process_index=p,
                                     process_count=2)) for p in range(2)]
  assert len(parts[0]) == len(parts[1]) == len(whole)
  for g, batch in enumerate(whole):
    assert parts[0][g]["image"].shape[0] == 2
    for key in batch:
      np.testing.assert_array_equal(
          np.concatenate([parts[0][g][key], parts[1][g][key]]), batch[key])
  with pytest.raises(ValueError, match="eval_batch_size=5"):
    pipeline.eval_loader(src, _data_cfg(eval_batch_size=5), process_count=2)
  with pytest.raises(ValueError, match="empty"):
    pipeline.eval_loader([], cfg)


def test_eval_with_worker_processes_matches_in_process():
  src = _encoded_source(10)
  ref = list(pipeline.eval_loader(src, _data_cfg(eval_batch_size=4)))
  got = list(pipeline.eval_loader(src, _data_cfg(eval_batch_size=4,
                                                 num_workers=2)))
  _assert_batches_equal(got, ref)
