"""Method A (learnable reversible anonymization): targets, one joint step, embed, a run.

Tiny shapes from configs/anon_synthetic.py:tiny (32x16 images, widths 4-8).
"""

import pickle

import jax
import numpy as np
import pytest

from configs import anon_synthetic
from privreid_jax import checkpoint, errors, metric_writers, trainer
from privreid_jax.data import pipeline
from privreid_jax.methods import anonymization
from privreid_jax.ops import desensitize, image_metrics
from tests import anon_runs

NETWORKS = ("G", "G_R", "D1", "D2", "reid")


def tiny_config(variant="tiny"):
  c = anon_synthetic.get_config(variant)
  c.optim.weight_decay = 0.0   # parameters move only where gradients reach
  return c


def fake_batch(seed=0, size=8, pids=2):
  rng = np.random.default_rng(seed)
  image = rng.uniform(-0.9, 1.0, (size, 32, 16, 3)).astype(np.float32)
  target = rng.uniform(-0.9, 1.0, (size, 32, 16, 3)).astype(np.float32)
  return {"image": image, "target": target,
          "pid": np.repeat(np.arange(pids), size // pids).astype(np.int32)}


def _max_change(before, after):
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                       before, after)
  return max(jax.tree.leaves(diffs))


@pytest.fixture(scope="module")
def stepped():
  config = tiny_config()
  method = anonymization.Method(config, num_classes=2, steps_per_epoch=2)
  batch = fake_batch()
  s0 = jax.jit(method.init)(jax.random.PRNGKey(0), batch)
  s0 = jax.device_get(s0)
  s1, metrics = jax.jit(method.train_step)(s0, batch)
  return method, batch, s0, jax.device_get(s1), jax.device_get(metrics)


# --- the supervision M -------------------------------------------------------------


def test_mosaic_target_is_the_scaled_mosaic_quantized_and_picklable():
  config = anon_synthetic.get_config("mosaic")     # 64x32: block 24 -> 6
  fn = pickle.loads(pickle.dumps(anonymization.Method.train_targets(config)))
  image = np.random.default_rng(1).uniform(0, 1, (64, 32, 3)).astype(np.float32)
  expected = desensitize.mosaic(image[None], block=6, fill="top_left")[0]
  # 8-bit levels, as the reference code's uint8 targets.
  np.testing.assert_allclose(fn(image), np.round(np.asarray(expected) * 255) / 255, atol=1e-6)
  np.testing.assert_allclose(fn(image) * 255, np.round(fn(image) * 255), atol=1e-4)
  assert not np.allclose(fn(image), image)
  config.anon.quantize_targets = False
  np.testing.assert_allclose(anonymization.Method.train_targets(config)(image), expected,
                             atol=1e-6)


def test_noise_target_is_fresh_on_every_read_but_seeded():
  """As the reference code: new noise each time an image is read, drawn from the
  sample's seeded generator (so a resumed run draws the same)."""
  fn = anonymization.Method.train_targets(anon_synthetic.get_config("noise,tiny"))
  assert fn.per_read
  a = np.random.default_rng(2).uniform(0.3, 0.7, (32, 16, 3)).astype(np.float32)
  gen = lambda seed: np.random.default_rng(seed)
  np.testing.assert_array_equal(fn(a, gen(1)), pickle.loads(pickle.dumps(fn))(a, gen(1)))
  assert not np.allclose(fn(a, gen(1)) - a, fn(a, gen(2)) - a, atol=0.05)
  assert 0.3 < np.std(fn(a, gen(1)) - a) < 0.5       # std 0.5, then clipped to [0, 1]
  with pytest.raises(ValueError, match="needs the sample's generator"):
    fn(a)


def test_fixed_noise_target_differs_per_image_but_is_deterministic():
  config = anon_synthetic.get_config("noise,tiny")
  config.anon.fresh_noise = False
  fn = anonymization.Method.train_targets(config)
  rng = np.random.default_rng(2)
  a, b = (rng.uniform(0.3, 0.7, (32, 16, 3)).astype(np.float32) for _ in range(2))
  np.testing.assert_array_equal(fn(a), pickle.loads(pickle.dumps(fn))(a))
  assert not np.allclose(fn(a) - a, fn(b) - b, atol=0.05)
  assert 0.3 < np.std(fn(a) - a) < 0.5        # std 0.5, then clipped to [0, 1]


def test_discriminator_loss_sums_real_and_fake_terms_as_the_reference(stepped):
  """d_loss = BCE(D(O, M), 1) + BCE(D(O, P), 0) (pix2pix halves it: d_loss_scale 0.5)."""
  method, batch, s0, _, _ = stepped
  from privreid_jax import losses
  o, m = batch["image"], batch["target"]
  p = o[::-1]
  real, _ = method._discriminate(s0.params, s0.batch_stats, "D1", o, m)
  st = method._discriminate(s0.params, s0.batch_stats, "D1", o, m)[1]
  fake, _ = method._discriminate(s0.params, {"D1": st}, "D1", o, p)
  want = float(losses.gan_bce(real, True) + losses.gan_bce(fake, False))
  got, _ = method._d_loss(s0.params, s0.batch_stats, "D1", o, m, p)
  assert float(got) == pytest.approx(want, rel=1e-5)
  config = tiny_config()
  config.anon.d_loss_scale = 0.5
  half = anonymization.Method(config, num_classes=2, steps_per_epoch=2)
  assert float(half._d_loss(s0.params, s0.batch_stats, "D1", o, m, p)[0]) == pytest.approx(
      want / 2, rel=1e-5)


def test_agw_variant_trains_c_with_the_reference_center_loss():
  from configs import anon_market
  c = anon_market.get_config("mosaic,agw")
  assert (c.loss.center_weight, c.loss.center_lr) == (5e-4, 0.5)
  assert (c.model.pooling, c.model.non_local, c.loss.triplet) == ("gem", True, "weighted")
  assert anon_market.get_config("mosaic").loss.center_weight == 0.0


def test_bad_desensitization_names_the_key():
  config = anon_synthetic.get_config("tiny")
  config.anon.desensitize = "pixelate"
  with pytest.raises(ValueError, match="config.anon.desensitize='pixelate'"):
    anonymization.Method.train_targets(config)


# --- one joint step ---------------------------------------------------------------------


def test_joint_step_losses_finite_and_every_network_moves(stepped):
  _, _, s0, s1, metrics = stepped
  for key in ("loss", "d1_loss", "d2_loss", "gan_d1", "gan_d2", "l1_anon", "l1_rec",
              "reid_raw", "reid_anon", "raw_id_loss", "anon_tri_loss"):
    assert np.isfinite(metrics[key]), key
  w = anon_synthetic.get_config("tiny").anon.weights
  total = (w.gan_d1 * metrics["gan_d1"] + w.gan_d2 * metrics["gan_d2"]
           + w.l1_anon * metrics["l1_anon"] + w.l1_rec * metrics["l1_rec"]
           + w.reid_raw * metrics["reid_raw"] + w.reid_anon * metrics["reid_anon"])
  assert metrics["loss"] == pytest.approx(total, rel=1e-5)
  assert int(s1.step) == 1
  for name in NETWORKS:
    assert _max_change(s0.params[name], s1.params[name]) > 0, name
    assert _max_change(s0.opt_state[name], s1.opt_state[name]) > 0, name
  for name in ("G", "G_R", "D1", "D2"):   # BN running statistics in train mode
    assert _max_change(s0.batch_stats[name], s1.batch_stats[name]) > 0, name


def test_generator_gets_the_recovery_gradient_through_p(stepped):
  """With only L1(R, O) active, G still learns: G_R's input P is not detached."""
  method, batch, s0, _, _ = stepped
  config = tiny_config()
  for k in config.anon.weights:
    config.anon.weights[k] = 1.0 if k == "l1_rec" else 0.0
  only_rec = anonymization.Method(config, num_classes=2, steps_per_epoch=2)
  s1, metrics = jax.jit(only_rec.train_step)(s0, batch)
  assert float(metrics["loss"]) == pytest.approx(float(metrics["l1_rec"]), rel=1e-6)
  assert _max_change(s0.params["G"], s1.params["G"]) > 0
  assert _max_change(s0.params["G_R"], s1.params["G_R"]) > 0
  # C gets no gradient from this loss: only Adam's zero update, no change.
  assert _max_change(s0.params["reid"], s1.params["reid"]) == 0


def test_embed_kinds(stepped):
  method, batch, _, s1, _ = stepped
  embed = jax.jit(method.embed, static_argnums=2)
  feats = {k: np.asarray(embed(s1, batch["image"], k)) for k in anonymization.KINDS}
  for k, f in feats.items():
    assert f.shape == (8, 64) and np.all(np.isfinite(f)), k   # ResNet-18 width 8: 8 * 8
  assert not np.allclose(feats["raw"], feats["anon"])
  assert not np.allclose(feats["anon"], feats["recovered"])
  p = method.anonymize(s1, batch["image"])
  np.testing.assert_allclose(embed(s1, p, "raw"), feats["anon"], atol=1e-5)
  with pytest.raises(ValueError, match="unknown image kind 'masked'"):
    method.embed(s1, batch["image"], "masked")


def test_base_mode_anonymizes_with_the_fixed_desensitization():
  config = tiny_config("base,tiny")
  method = anonymization.Method(config, num_classes=2, steps_per_epoch=2)
  assert set(method.eval_settings) == {"O->O", "O->P", "P->O", "P->P"}
  images = fake_batch()["image"]
  mean, std = np.asarray(config.data.mean), np.asarray(config.data.std)
  unit = np.clip(images * std + mean, 0, 1)
  expected = (np.asarray(desensitize.mosaic(unit, block=3)) - mean) / std   # 24 * 32/256
  np.testing.assert_allclose(method.anonymize(None, images), expected, atol=1e-5)


# --- a trainer run ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  config = anon_synthetic.get_config("tiny")
  config.data.root = str(tmp_path_factory.mktemp("anon_data"))
  config.optim.epochs = 1          # 2 steps, one evaluation
  workdir = tmp_path_factory.mktemp("anon_run")
  results = trainer.run(config, str(workdir)).metrics
  return config, workdir, results


def test_run_writes_every_setting_and_image_quality(run_dir):
  _, workdir, results = run_dir
  rows = metric_writers.read_eval_rows(str(workdir))
  assert [r["setting"] for r in rows] == ["O->O", "O->P", "P->O", "P->P", "R->O",
                                          "image_quality"]
  assert {r["step"] for r in rows} == {2}
  for r in rows[:5]:
    assert 0.0 <= r["rank1"] <= r["rank5"] <= r["rank10"] <= 1.0
    assert 0.0 < r["mAP"] <= 1.0
  quality = rows[-1]
  assert set(quality) - {"step", "epoch", "setting"} == {
      f"{m}_{x}" for m in ("psnr", "ssim") for x in "MPR"}
  assert results["image_quality"]["psnr_P"] == pytest.approx(quality["psnr_P"])


def test_run_image_quality_of_m_matches_an_independent_computation(run_dir):
  config, _, results = run_dir
  from privreid_jax.data import splits as data_splits
  splits = data_splits.open_splits(config.data)
  n = min(config.evals.image_quality.images, len(splits.query))
  images = []
  for batch in pipeline.eval_loader(splits.query.source, config.data):
    images.append(batch["image"][batch["mask"]])
  o = np.concatenate(images)[:n] * np.asarray(config.data.std) + np.asarray(config.data.mean)
  o = np.clip(o, 0, 1).astype(np.float32)
  m = np.round(np.asarray(desensitize.mosaic(o, block=3)) * 255) / 255   # 8-bit targets
  q = results["image_quality"]
  assert q["psnr_M"] == pytest.approx(float(np.mean(image_metrics.psnr(m, o))), rel=1e-4)
  assert q["ssim_M"] == pytest.approx(float(np.mean(image_metrics.ssim(m, o))), rel=1e-4)
  assert 0.0 < q["ssim_P"] < 1.0 and np.isfinite(q["psnr_R"])


# --- the third-party check ----------------------------------------------------------------


@pytest.fixture(scope="module")
def third_party_runs(tmp_path_factory):
  """A tiny baseline (raw images only) and a tiny method-A run scored by it."""
  base_dir, base_results, _, results = anon_runs.trained_with_outsider(tmp_path_factory)
  return base_dir, base_results, results


def test_third_party_rows_score_our_images_with_the_baseline_model(third_party_runs):
  _, base_results, results = third_party_runs
  assert set(anonymization.third_party.SETTINGS) <= set(results)
  # 3rd:O->O is the baseline model on raw images: its own evaluation, although the
  # two runs normalise differently (std 0.5 here, ImageNet std there).
  for key in ("rank1", "rank5", "mAP", "mINP"):
    assert results["3rd:O->O"][key] == pytest.approx(base_results["O->O"][key], abs=1e-6)
  assert results["3rd:P->O"] != results["3rd:O->O"]


def test_adaptive_outsider_fine_tunes_the_outsider_on_raw_and_anonymized_pairs(
    third_party_runs):
  _, _, results = third_party_runs
  ft = anonymization.adaptive_outsider
  assert set(ft.SETTINGS) <= set(results)
  fit = results[ft.FIT_ROW]
  assert fit["steps"] == 3 * 2                 # 3 epochs of the tiny sampler's 2 batches
  assert fit["loss_last_epoch"] < fit["loss_first_epoch"]
  # It starts from the outsider's weights but ends elsewhere: its rows are its own.
  assert results["3rd-ft:P->O"] != results["3rd:P->O"]
  assert results["3rd-ft:O->O"] != results["3rd:O->O"]


def test_third_party_of_another_image_size_is_refused(third_party_runs, tmp_path):
  base_dir, _, _ = third_party_runs
  config = anon_synthetic.get_config("tiny")
  config.data.height, config.data.width = 64, 32
  method = anonymization.Method(config, num_classes=2, steps_per_epoch=2)
  # A ConfigError: main prints it in one line (was a ValueError: a traceback).
  with pytest.raises(errors.ConfigError,
                     match="outsider.workdir.*32x16 images, this one 64x32"):
    anonymization.third_party.ThirdParty.load(base_dir, method, config.data)


def test_third_party_that_is_not_a_baseline_run_is_refused(tmp_path):
  """A method-A (or method-B) run as the outsider gave '3rd:' rows of a model that
  was not trained on raw images alone, with exit 0."""
  config = anon_synthetic.get_config("tiny")
  method = anonymization.Method(config, num_classes=2, steps_per_epoch=2)
  state = jax.jit(method.init)(jax.random.PRNGKey(0),
                               trainer.example_batch(config.data, True))
  ckpts = checkpoint.Checkpoints.of_run(str(tmp_path / "anon"))
  ckpts.save(1, state, {"next_batch": 1}, checkpoint.config_meta(config, step=1))
  ckpts.close()
  with pytest.raises(errors.ConfigError, match="outsider.workdir=.*anon'?: a "
                     "'anonymization' run; the outsider is a baseline run"):
    anonymization.third_party.ThirdParty.load(str(tmp_path / "anon"), method, config.data)


@pytest.mark.parametrize("overrides,pattern", [
    ({"anon.d_layers": 9}, r"config\.anon\.d_layers=9: images of 32x16 leave"),
    ({"evals.image_quality.split": "tset"}, r"image_quality\.split='tset': expected"),
    ({"evals.image_quality.split": "val", "data.val_fraction": 0.0,
      "data.val_people_seed": -1}, r"image_quality\.split='val' needs a validation"),
    ({"evals.adaptive_outsider.epochs": 0}, r"adaptive_outsider\.epochs=0: expected"),
    ({"evals.adaptive_outsider.lr": 0.0}, r"adaptive_outsider\.lr=0\.0: expected"),
])
def test_values_checked_as_the_run_starts_are_config_errors(third_party_runs, tmp_path,
                                                            overrides, pattern):
  """Checked as the networks and evaluators are built, before training: a
  ConfigError is one line from main (they were ValueErrors: a traceback)."""
  config = anon_synthetic.get_config("tiny")
  config.data.root = str(tmp_path / "data")
  config.evals.outsider.workdir = third_party_runs[0]
  config.update_from_flattened_dict(overrides)
  with pytest.raises(errors.ConfigError, match=pattern):
    trainer.run(config, str(tmp_path / "run"))
  assert checkpoint.latest_step(str(tmp_path / "run")) is None


def test_missing_third_party_checkpoint_fails_before_training(tmp_path):
  config = anon_synthetic.get_config("tiny")
  config.data.root = str(tmp_path / "data")
  config.evals.outsider.workdir = str(tmp_path / "nothing")
  with pytest.raises((FileNotFoundError, ValueError), match="outsider.workdir=.*nothing"):
    trainer.run(config, str(tmp_path / "run"))
  (tmp_path / "empty").mkdir()                 # a folder, but no checkpoint in it
  config.evals.outsider.workdir = str(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="outsider.workdir=.*empty.*no checkpoint"):
    trainer.run(config, str(tmp_path / "run"))
  assert checkpoint.latest_step(str(tmp_path / "run")) is None


def test_base_noise_at_evaluation_is_per_image_not_per_batch_position():
  """Base mode's 'anon' images: every image gets its own noise field, the same
  wherever it sits (once every batch drew from one key, so a query and a gallery
  image at the same batch position shared their noise)."""
  config = tiny_config("base,noise,tiny")
  method = anonymization.Method(config, num_classes=2, steps_per_epoch=2)
  rng = np.random.default_rng(5)
  a, b, c = (rng.uniform(0.35, 0.65, (1, 32, 16, 3)).astype(np.float32) for _ in range(3))
  mean, std = np.asarray(config.data.mean), np.asarray(config.data.std)
  norm = lambda x: ((x - mean) / std).astype(np.float32)
  noise = lambda out, x: np.asarray(out) * std + mean - x     # P - O in [0, 1] pixels
  batch1 = method.anonymize(None, norm(np.concatenate([a, c])))
  batch2 = method.anonymize(None, norm(np.concatenate([b, a])))
  n_a1, n_b2, n_a2 = noise(batch1[0], a[0]), noise(batch2[0], b[0]), noise(batch2[1], a[0])
  # a at position 0 and b at position 0 do not share a noise field ...
  assert abs(np.corrcoef(n_a1.ravel(), n_b2.ravel())[0, 1]) < 0.2
  # ... and a's noise is the same at position 0 of one batch and 1 of another.
  np.testing.assert_allclose(n_a1, n_a2, atol=1e-5)


def test_upgrade_rule_quality_is_measured_as_the_reference_code(run_dir, stepped):
  """metrics="reference": PSNR = 10 log10(1 / MSE averaged over the set), SSIM with
  zero-padded windows, on every image when max_images is 0."""
  config, _, _ = run_dir
  method, _, _, s1, _ = stepped
  from privreid_jax.data import splits as data_splits
  from privreid_jax.methods.anonymization import evaluators
  source = data_splits.open_splits(config.data).query.source
  quality = evaluators.ImageQuality(method, config.data)
  got, _ = quality.measure(s1, source, 0, metrics="reference")
  per_image, _ = quality.measure(s1, source, 0, metrics="per_image")
  images = [b["image"][b["mask"]] for b in pipeline.eval_loader(source, config.data)]
  o = np.clip(np.concatenate(images) * np.asarray(config.data.std)
              + np.asarray(config.data.mean), 0, 1).astype(np.float32)
  assert len(o) == len(source)
  m = np.round(np.asarray(desensitize.mosaic(o, block=3)) * 255) / 255
  mse = np.mean(np.square(m - o), axis=(1, 2, 3))
  assert got["psnr_M"] == pytest.approx(10 * np.log10(1 / np.mean(mse)), rel=1e-4)
  assert per_image["psnr_M"] == pytest.approx(np.mean(10 * np.log10(1 / mse)), rel=1e-4)
  assert got["psnr_M"] != pytest.approx(per_image["psnr_M"], rel=1e-4)
  ssim_zero = image_metrics.ssim(m, o, padding="same_zero")
  assert got["ssim_M"] == pytest.approx(float(np.mean(ssim_zero)), rel=1e-4)
