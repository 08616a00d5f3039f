"""The identity-held-out validation split (config.data.val_fraction)."""

import numpy as np
import pytest

from configs import synthetic as synthetic_config
from privreid_jax.data import splits


def _train(num_ids=10, per_id=6, cams=3):
  pids = np.repeat(np.arange(num_ids), per_id).astype(np.int32)
  camids = np.tile(np.arange(per_id) % cams, num_ids).astype(np.int32)
  source = [f"img{i}" for i in range(len(pids))]
  return splits.Split(source, pids, camids)


def test_val_ids_are_disjoint_seeded_and_train_is_relabelled():
  full = _train()
  train, vq, vg = splits.hold_out_validation(full, 0.2, seed=3)
  val_ids = set(vq.pids) | set(vg.pids)
  assert len(val_ids) == 2 and len(np.unique(train.pids)) == 8
  # Train items are the other identities' images, relabelled 0..7 in order.
  train_items = [train.source[i] for i in range(len(train))]
  original = np.array([full.pids[int(x[3:])] for x in train_items])
  assert not set(original) & val_ids
  assert sorted(np.unique(train.pids)) == list(range(8))
  assert np.all(np.diff(train.pids) >= 0) and np.all(np.diff(original) >= 0)
  # Every held-out image is in exactly one of val query / val gallery.
  held = sorted([vq.source[i] for i in range(len(vq))] + [vg.source[i] for i in range(len(vg))])
  assert held == sorted(f"img{i}" for i in np.flatnonzero(np.isin(full.pids, list(val_ids))))
  # One query per (identity, camera); val pids keep their original values.
  assert len(vq) == 2 * 3 and len({(p, c) for p, c in zip(vq.pids, vq.camids)}) == 6
  assert set(vq.pids) == set(vg.pids) == val_ids
  # Seeded: the same seed gives the same split, another seed another one.
  again = splits.hold_out_validation(full, 0.2, seed=3)
  assert list(again[1].pids) == list(vq.pids) and list(again[2].source.indices) == list(
      vg.source.indices)
  others = {tuple(sorted(set(splits.hold_out_validation(full, 0.2, seed=s)[1].pids)))
            for s in range(6)}
  assert len(others) > 1


def test_one_image_per_camera_leaves_every_val_identity_a_gallery_image():
  # VIPeR-like: two cameras, one image each; i-LIDS-like: four cameras, one image each
  for per_id, cams in ((2, 2), (4, 4)):
    full = _train(num_ids=20, per_id=per_id, cams=cams)
    _, vq, vg = splits.hold_out_validation(full, 0.2, seed=1)
    assert set(vq.pids) == set(vg.pids) and len(set(vq.pids)) == 4
    assert len(vq) == 4 * (cams - 1) and len(vg) == 4
    for pid in set(vq.pids):   # every query can be matched under another camera
      g_cams = set(vg.camids[vg.pids == pid])
      assert all(c not in g_cams for c in vq.camids[vq.pids == pid])
  # several images per camera: one query per (identity, camera), as before
  _, vq, _ = splits.hold_out_validation(_train(num_ids=20, per_id=6, cams=3), 0.2, seed=1)
  assert len(vq) == 4 * 3


@pytest.mark.parametrize("fraction", [1.0, -0.1, 0.99])
def test_bad_fraction_names_the_key(fraction):
  with pytest.raises(ValueError, match="config.data.val_fraction"):
    splits.hold_out_validation(_train(num_ids=3), fraction, seed=0)


def test_open_splits_holds_out_validation_only_when_asked(tmp_path):
  config = synthetic_config.get_config("tiny")
  config.data.root = str(tmp_path / "synth")
  plain = splits.open_splits(config.data)
  assert plain.val_query is None
  config.data.val_fraction = 0.25
  s = splits.open_splits(config.data)
  assert s.num_train_pids == plain.num_train_pids - 2
  assert len(s.train) + len(s.val_query) + len(s.val_gallery) == len(plain.train)
  assert len(s.query) == len(plain.query)          # the test split is untouched
  val = s.validation()
  assert val.query is s.val_query and val.gallery is s.val_gallery
  assert "val_gallery" in s.summary()
  with pytest.raises(ValueError, match="val_fraction > 0"):
    plain.validation()


def _file_bytes(split, i):
  item = split.source[i]
  path = item.path if hasattr(item, "path") else item
  with open(path, "rb") as f:
    return f.read()


def test_val_people_seed_draws_new_people_with_the_test_protocol(tmp_path):
  config = synthetic_config.get_config("tiny")
  config.data.root = str(tmp_path / "synth")
  plain = splits.open_splits(config.data)
  config.data.val_people_seed = 3
  s = splits.open_splits(config.data)
  # Every training identity still trains; the test split is untouched.
  assert len(s.train) == len(plain.train) and s.num_train_pids == plain.num_train_pids
  assert list(s.query.pids) == list(plain.query.pids)
  assert list(s.gallery.pids) == list(plain.gallery.pids)
  # The validation split has the test split's make-up: its queries' identities all
  # in its gallery, distractors (pid 0) beside them, one camera per query image...
  vq, vg = s.val_query, s.val_gallery
  assert len(vq) > 0 and set(vq.pids) <= set(vg.pids)
  assert (vg.pids == 0).any() == (plain.gallery.pids == 0).any()
  assert len(np.unique(vq.pids)) == len(np.unique(plain.query.pids))
  # ...but other people: no val gallery image is a test gallery image.
  test_images = {_file_bytes(plain.gallery, i) for i in range(len(plain.gallery))}
  val_images = [_file_bytes(vg, i) for i in range(len(vg))]
  assert not test_images & set(val_images)
  # Seeded: the same seed opens the same files, another seed other people.
  again = splits.open_splits(config.data)
  assert [_file_bytes(again.val_gallery, i) for i in range(len(vg))] == val_images
  config.data.val_people_seed = 4
  other = splits.open_splits(config.data).val_gallery
  assert not set(val_images) & {_file_bytes(other, i) for i in range(len(other))}
  # The validation folder is generated beside data.root, never inside it.
  assert str(tmp_path / "synth-people3") in vg.source[0].path


def test_val_people_seed_is_never_the_test_split():
  config = synthetic_config.get_config("tiny")
  config.data.synthetic.test_seed = 2
  config.data.val_people_seed = 2
  with pytest.raises(ValueError, match="val_people_seed=2 is data.synthetic.test_seed"):
    splits.fresh_people_validation(config.data, 2)
