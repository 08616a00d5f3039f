"""The inversion attacker on tiny images whose identity is known to be in the features."""

import numpy as np
import pytest

from privreid_jax.privacy import inversion

NUM_CLASSES = 6
H, W = 16, 8


def identity_images(per_class=16, seed=0):
  """Each identity: its own colour in the top half, another in the bottom half."""
  rng = np.random.default_rng(seed)
  top = rng.uniform(-1.5, 1.5, size=(NUM_CLASSES, 3))
  bottom = rng.uniform(-1.5, 1.5, size=(NUM_CLASSES, 3))
  y = np.repeat(np.arange(NUM_CLASSES), per_class)
  img = np.empty((len(y), H, W, 3), np.float32)
  img[:, :H // 2] = top[y][:, None, None]
  img[:, H // 2:] = bottom[y][:, None, None]
  img += 0.1 * rng.normal(size=img.shape)
  return img.astype(np.float32), y.astype(np.int32)


def run(features, images, y, steps=120):
  test = np.arange(len(y)) % 4 == 0
  return inversion.inversion_attack(
      features[~test], images[~test], y[~test], features[test], images[test], y[test],
      num_classes=NUM_CLASSES, steps=steps, classifier_steps=steps, widths=(16, 8),
      classifier_width=4, classifier_stages=2, batch_size=24, lr=3e-3, seed=0)


@pytest.fixture(scope="module")
def data():
  images, y = identity_images()
  rng = np.random.default_rng(1)
  codes = rng.normal(size=(NUM_CLASSES, 8))
  informative = (codes[y] + 0.2 * rng.normal(size=(len(y), 8))).astype(np.float32)
  return images, y, informative


def test_attacker_trains_and_recovers_identity_from_informative_features(data):
  images, y, feats = data
  out = run(feats, images, y)
  for key in ("id_acc", "chance", "psnr_input", "num_images", "examples"):
    assert key in out
  assert "ssim_input" not in out           # 16x8 < the SSIM window: skipped, not wrong
  hist = out["decoder_loss"]
  assert hist[-10:].mean() < 0.5 * hist[:10].mean()       # the decoder learns
  assert out["classifier_loss"][-10:].mean() < out["classifier_loss"][:10].mean()
  assert out["id_acc"] > 0.8 > out["chance"]
  assert out["examples"][0].shape == out["examples"][1].shape == (8, H, W, 3)
  row = inversion.inversion_row(out)
  assert set(row) >= {"id_acc", "chance", "psnr_input", "decoder_loss_last"}
  assert all(isinstance(v, float) for v in row.values())


@pytest.mark.parametrize("kind", ["constant", "random"])
def test_attacker_on_uninformative_features_is_near_chance(data, kind):
  images, y, feats = data
  if kind == "constant":
    feats = np.ones_like(feats)
  else:
    feats = np.random.default_rng(2).normal(size=feats.shape).astype(np.float32)
  out = run(feats, images, y)
  assert out["id_acc"] < out["chance"] + 0.25


def test_probe_fn_is_scored_on_reconstructions(data):
  images, y, feats = data
  # A "probe" that reads the identity off the top-half colour (the true colours).
  top = np.stack([images[y == c, :H // 2].mean((0, 1, 2)) for c in range(NUM_CLASSES)])

  def probe(x):
    import jax.numpy as jnp
    m = x[:, :H // 2].mean((1, 2))
    return -jnp.sum((m[:, None] - jnp.asarray(top)[None]) ** 2, -1)

  out = inversion.inversion_attack(feats, images, y, feats, images, y,
                                   num_classes=NUM_CLASSES, steps=120,
                                   classifier_steps=0, widths=(16, 8), batch_size=24,
                                   lr=3e-3, probe_fn=probe)
  assert "id_acc" not in out and out["probe_acc"] > 0.8


def test_bad_shapes_fail_with_one_line():
  x = np.zeros((4, 8), np.float32)
  with pytest.raises(ValueError, match="train features"):
    inversion.inversion_attack(x, np.zeros((3, H, W, 3)), np.zeros(4, int), x,
                               np.zeros((4, H, W, 3)), np.zeros(4, int), num_classes=2)
  assert inversion.vector_map_hw(128, 64) == (4, 2)


def _people_split(feats, images, y):
  """Decoder on identities 0-2; people 3-5 never trained on: half of each
  person's images are the attacker's labelled photos, half the released ones."""
  train = y < 3
  ppl = np.flatnonzero(~train)
  photo, released = ppl[::2], ppl[1::2]
  people = inversion.People(feats[photo], y[photo] - 3, feats[released], images[released],
                            y[released] - 3, num_classes=3)
  return train, people


@pytest.mark.parametrize("informative", [True, False])
def test_people_never_trained_on_are_named_from_their_released_features(data, informative):
  images, y, feats = data
  if not informative:
    feats = np.random.default_rng(3).normal(size=feats.shape).astype(np.float32)
  train, people = _people_split(feats, images, y)
  out = inversion.inversion_attack(
      feats[train], images[train], y[train], feats[train], images[train], y[train],
      num_classes=3, steps=120, classifier_steps=120, widths=(16, 8), classifier_width=4,
      classifier_stages=2, batch_size=24, lr=3e-3, seed=0, people=people)
  assert out["people_chance"] == pytest.approx(1 / 3)
  assert out["people_num_images"] == len(people.released_y)
  if informative:
    assert out["people_id_acc"] > 0.8
  else:
    assert out["people_id_acc"] < 1 / 3 + 0.3
  row = inversion.inversion_row(out)
  assert {"people_id_acc", "people_chance", "people_psnr_input"} <= set(row)


def test_people_labels_outside_their_classes_fail_with_one_line(data):
  images, y, feats = data
  train, people = _people_split(feats, images, y)
  bad = people._replace(photo_y=people.photo_y + 1)
  with pytest.raises(ValueError, match=r"people.photo_y outside \[0, 3\)"):
    inversion.inversion_attack(feats[train], images[train], y[train], feats[train],
                               images[train], y[train], num_classes=3, steps=2,
                               classifier_steps=2, widths=(16, 8), batch_size=24,
                               people=bad)
