"""Inversion attack on released Re-ID features [ours]: arrays in, numbers out.

The attacker holds released (optionally DP-noised) features of images it also
has, with their identities (the complement of the ID probe's held-out split of
the training set). It trains

  1. its own inversion decoder, feature vector -> image (`DeIDDecoder` from the
     pooled vector), L1 against the input image (not the de-identified target:
     the attacker wants the person back);
  2. its own identity classifier (`ImageIdentityClassifier`) on the decoder's
     reconstructions of those same features;

and is scored on the held-out images: identity accuracy of its classifier on
their reconstructions (`id_acc`), optionally that of a fixed classifier trained
on clean images (`probe_acc`, method B's ID probe), and PSNR/SSIM of the
reconstructions against the input images.

Images are in the pipeline's normalised space (mean/std); `mean`/`std` map
them back to [0, 1] for PSNR/SSIM. Training is minibatch Adam with a host
numpy sampler (seeded, `fitting.fit`), one jitted step per network.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from privreid_jax.models import adversary as adversary_lib
from privreid_jax.models import deid_decoder
from privreid_jax.ops import image_metrics, normalize
from privreid_jax.privacy import fitting


def vector_map_hw(height: int, width: int) -> tuple[int, int]:
  """The smallest map (h, w) with the image's aspect ratio that the decoder upsamples
  by a power of two: (4, 2) for 2:1 pedestrians of height >= 8."""
  for h in (4, 2, 1):
    if height % h == 0 and width * h % height == 0:
      w = width * h // height
      try:
        deid_decoder.num_stages((h, w), (height, width))
      except ValueError:
        continue
      return h, w
  raise ValueError(f"inversion: no power-of-two decoder map for images {height}x{width}")


def _check(name, x, imgs, y, num_classes):
  if x.ndim != 2 or imgs.ndim != 4 or not len(x) or not len(x) == len(imgs) == len(y):
    raise ValueError(f"inversion_attack: {name} features {x.shape}, images {imgs.shape} "
                     f"and labels {y.shape} must be [N, D], [N, H, W, C] and [N], N > 0")
  if y.min() < 0 or y.max() >= num_classes:
    raise ValueError(f"inversion_attack: {name} labels outside [0, {num_classes})")


def _predict(fn, x: np.ndarray, batch_size: int) -> np.ndarray:
  return np.concatenate([np.asarray(fn(jnp.asarray(x[i:i + batch_size])))
                         for i in range(0, len(x), batch_size)])


def inversion_attack(train_x, train_images, train_y, test_x, test_images, test_y, *,
                     num_classes: int, steps: int = 300, classifier_steps: int = 300,
                     widths: Sequence[int] = (64, 32, 16, 8), classifier_width: int = 16,
                     classifier_stages: int = 4, batch_size: int = 32, lr: float = 1e-3,
                     mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), seed: int = 0,
                     probe_fn: Callable[[jax.Array], jax.Array] | None = None,
                     conv_impl: str = "auto",
                     people: "People | None" = None) -> dict[str, Any]:
  """Trains an inversion decoder and an identity classifier; scores them on the test set.

  Args:
    train_x, test_x: [N, D] released features (already noised if DP applies).
    train_images, test_images: [N, H, W, C] the images those features came from,
      normalised like the pipeline's (the decoder's target and the reference).
    train_y, test_y: [N] identity labels in [0, num_classes).
    num_classes: number of identities.
    steps: decoder training steps; classifier_steps: classifier steps (0: none).
    widths: decoder stage widths; classifier_width / classifier_stages: its size.
    mean, std: the normalisation, to compare images in [0, 1].
    probe_fn: optional fixed classifier, normalised images -> logits.
    people: optional second target, people never trained on (see `People`):
      the same decoder inverts their released features; a classifier trained
      on the reconstructions of the attacker's own labelled photos of them
      names the reconstructions of the released ones ("people_*" outputs).

  Returns:
    {"id_acc", "probe_acc" (with probe_fn), "chance", "psnr_input", "ssim_input"
    (when the images are at least SSIM_WINDOW pixels), "num_images",
    "decoder_loss" and "classifier_loss" (per-step histories),
    "examples": (test images, their reconstructions), 8 each, in [0, 1]};
    with `people` also "people_id_acc", "people_chance", "people_psnr_input",
    "people_num_images".
  """
  train_x, test_x = (np.asarray(x, np.float32) for x in (train_x, test_x))
  train_images, test_images = (np.asarray(x, np.float32) for x in (train_images, test_images))
  train_y, test_y = (np.asarray(y, np.int32) for y in (train_y, test_y))
  _check("train", train_x, train_images, train_y, num_classes)
  _check("test", test_x, test_images, test_y, num_classes)
  if train_x.shape[1] != test_x.shape[1] or train_images.shape[1:] != test_images.shape[1:]:
    raise ValueError(f"inversion_attack: train and test shapes differ: features "
                     f"{train_x.shape} vs {test_x.shape}, images {train_images.shape} "
                     f"vs {test_images.shape}")
  if people is not None:
    _check_people(people, train_x.shape[1], train_images.shape[1:])
  # Standardise features with the attacker's own (training) statistics.
  mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
  train_x, test_x = (train_x - mu) / sd, (test_x - mu) / sd
  _, height, width, channels = train_images.shape
  k_dec, k_cls = jax.random.split(jax.random.PRNGKey(seed))

  decoder = deid_decoder.DeIDDecoder(height, width, widths=tuple(widths),
                                     out_channels=channels,
                                     vector_map_hw=vector_map_hw(height, width),
                                     conv_impl=conv_impl)
  v = decoder.init(k_dec, jnp.asarray(train_x[:2]), train=False)

  def dec_loss(p, s, x, img):
    rec, upd = decoder.apply({"params": p, "batch_stats": s}, x, train=True,
                             mutable=["batch_stats"])
    return jnp.mean(jnp.abs(rec - img)), upd["batch_stats"]

  dp_, ds_, dec_hist = fitting.fit(dec_loss, v["params"], v["batch_stats"],
                                   (train_x, train_images), steps=steps,
                                   tx=optax.adam(lr), batch_size=batch_size, seed=seed)
  invert = jax.jit(lambda x: decoder.apply({"params": dp_, "batch_stats": ds_}, x,
                                           train=False))
  train_rec = _predict(invert, train_x, 64)
  test_rec = _predict(invert, test_x, 64)

  out: dict[str, Any] = {"chance": 1.0 / num_classes, "num_images": float(len(test_x)),
                         "decoder_loss": dec_hist}
  if classifier_steps:
    classify, cls_hist = _train_classifier(
        train_rec, train_y, k_cls, num_classes=num_classes, steps=classifier_steps,
        width=classifier_width, stages=classifier_stages, batch_size=batch_size, lr=lr,
        seed=seed + 1, conv_impl=conv_impl)
    out["id_acc"] = float(np.mean(np.argmax(_predict(classify, test_rec, 64), -1) == test_y))
    out["classifier_loss"] = cls_hist
  if probe_fn is not None:
    logits = _predict(probe_fn, test_rec, 64)
    out["probe_acc"] = float(np.mean(np.argmax(logits, -1) == test_y))

  if people is not None:
    out.update(_people_attack(people, invert, (mu, sd), k_cls, num_classes=people.num_classes,
                              classifier_steps=classifier_steps,
                              classifier_width=classifier_width,
                              classifier_stages=classifier_stages, batch_size=batch_size,
                              lr=lr, mean=mean, std=std, seed=seed, conv_impl=conv_impl))

  x01 = normalize.to_unit(test_images, mean, std)
  r01 = normalize.to_unit(test_rec, mean, std)
  out["psnr_input"] = float(np.mean(np.asarray(image_metrics.psnr(r01, x01))))
  if min(height, width) >= image_metrics.SSIM_WINDOW:
    out["ssim_input"] = float(np.mean(np.asarray(image_metrics.ssim(r01, x01))))
  out["examples"] = (x01[:8], r01[:8])
  return out


class People(NamedTuple):
  """People the decoder never saw: the attacker's labelled photos of them (features
  it computes itself, `photo_x`, labels `photo_y`) and their released features
  (`released_x`, from `released_images`, labels `released_y`); labels in
  [0, num_classes)."""
  photo_x: np.ndarray
  photo_y: np.ndarray
  released_x: np.ndarray
  released_images: np.ndarray
  released_y: np.ndarray
  num_classes: int


def _train_classifier(images, labels, key, *, num_classes: int, steps: int, width: int,
                      stages: int, batch_size: int, lr: float, seed: int, conv_impl: str):
  """The attacker's identity classifier on (reconstructed) images: (classify, losses)."""
  clf = adversary_lib.ImageIdentityClassifier(num_classes, width=width, num_stages=stages,
                                              conv_impl=conv_impl)
  v = clf.init(key, jnp.asarray(images[:2]), train=False)

  def clf_loss(p, s, img, y):
    logits, upd = clf.apply({"params": p, "batch_stats": s}, img, train=True,
                            mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), \
        upd["batch_stats"]

  cp, cs, history = fitting.fit(clf_loss, v["params"], v["batch_stats"], (images, labels),
                                steps=steps, tx=optax.adam(lr), batch_size=batch_size,
                                seed=seed)
  classify = jax.jit(lambda x: clf.apply({"params": cp, "batch_stats": cs}, x, train=False))
  return classify, history


def _check_people(people: People, dim: int, image_shape) -> None:
  n = people.num_classes
  for name, y in (("photo_y", people.photo_y), ("released_y", people.released_y)):
    y = np.asarray(y)
    if len(y) and (y.min() < 0 or y.max() >= n):
      raise ValueError(f"inversion_attack: people.{name} outside [0, {n})")
  for name, x, y in (("photo", people.photo_x, people.photo_y),
                     ("released", people.released_x, people.released_y)):
    if np.ndim(x) != 2 or np.shape(x)[1] != dim or len(x) != len(y):
      raise ValueError(f"inversion_attack: people.{name}_x has shape {np.shape(x)}, "
                       f"expected [{len(y)}, {dim}]")
  if np.shape(people.released_images) != (len(people.released_x), *image_shape):
    raise ValueError(f"inversion_attack: people.released_images has shape "
                     f"{np.shape(people.released_images)}, expected "
                     f"{(len(people.released_x), *image_shape)}")


def _people_attack(people: People, invert, standardise, key, *, num_classes: int,
                   classifier_steps: int, classifier_width: int, classifier_stages: int,
                   batch_size: int, lr: float, mean, std, seed: int, conv_impl: str):
  """Classifier on the reconstructions of the photos, scored on the released ones."""
  mu, sd = standardise
  photo_x = (np.asarray(people.photo_x, np.float32) - mu) / sd
  released_x = (np.asarray(people.released_x, np.float32) - mu) / sd
  photo_y, released_y = (np.asarray(y, np.int32) for y in (people.photo_y, people.released_y))
  images = np.asarray(people.released_images, np.float32)
  photo_rec = _predict(invert, photo_x, 64)
  released_rec = _predict(invert, released_x, 64)
  out = {"people_chance": 1.0 / num_classes, "people_num_images": float(len(released_x))}
  if classifier_steps:
    classify, _ = _train_classifier(
        photo_rec, photo_y, jax.random.fold_in(key, 1), num_classes=num_classes,
        steps=classifier_steps, width=classifier_width, stages=classifier_stages,
        batch_size=batch_size, lr=lr, seed=seed + 2, conv_impl=conv_impl)
    pred = np.argmax(_predict(classify, released_rec, 64), -1)
    out["people_id_acc"] = float(np.mean(pred == released_y))
  x01 = normalize.to_unit(images, mean, std)
  r01 = normalize.to_unit(released_rec, mean, std)
  out["people_psnr_input"] = float(np.mean(np.asarray(image_metrics.psnr(r01, x01))))
  return out


def inversion_row(result: dict[str, Any]) -> dict[str, float]:
  """The scalar metrics of `inversion_attack`'s result (for eval_metrics.jsonl)."""
  row = {k: float(v) for k, v in result.items()
         if k in ("id_acc", "probe_acc", "chance", "psnr_input", "ssim_input", "num_images")
         or k.startswith("people_")}
  for k in ("decoder_loss", "classifier_loss"):
    if k in result and len(result[k]):
      tail = max(1, len(result[k]) // 10)
      row[f"{k}_first"] = float(np.mean(result[k][:tail]))
      row[f"{k}_last"] = float(np.mean(result[k][-tail:]))
  return row
