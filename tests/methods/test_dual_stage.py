"""Method B (dual-stage) on tiny shapes: one stage-1 step, gradient reversal, the ID
probe's isolation, and a 2-step trainer run.

Uses configs/dual_synthetic.py:tiny (16 synthetic ids at 32x16, ResNet-18 of width
8). Compilation dominates, so the unit tests share one method and one jitted
`compute_grads`.
"""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privreid_jax import checkpoint, losses, metric_writers, trainer
from privreid_jax.methods import dual_stage
from privreid_jax.methods.dual_stage import config as dual_config
from privreid_jax.methods.dual_stage import evaluators as dual_evaluators
from privreid_jax.privacy import holdout

from configs import dual_synthetic

NUM_CLASSES = 4
ADV_WEIGHT = 1.0
SCALE = 0.5


def tiny(variant="tiny", inversion=False, **dual):
  c = dual_synthetic.get_config(variant)
  c.evals.inversion.enabled = inversion
  for k, v in dual.items():
    setattr(c.dual, k, v)
  return c


def make_batch(config, seed=0):
  rng = np.random.default_rng(seed)
  b, h, w = 8, config.data.height, config.data.width
  image = rng.normal(size=(b, h, w, 3)).astype(np.float32)
  return {"image": jnp.asarray(image),
          "target": jnp.asarray(image[:, ::4, ::4].repeat(4, 1).repeat(4, 2)),
          "pid": jnp.asarray(np.repeat(np.arange(NUM_CLASSES), 2), jnp.int32),
          "index": jnp.arange(b, dtype=jnp.int32)}


@pytest.fixture(scope="module")
def setup():
  config = tiny(adversarial="reversal", adv_weight=ADV_WEIGHT, adv_reversal_scale=SCALE)
  method = dual_stage.Method(config, num_classes=NUM_CLASSES, steps_per_epoch=1)
  batch = make_batch(config)
  state = jax.jit(method.init)(jax.random.PRNGKey(0), batch)
  return method, state, batch, jax.jit(method.compute_grads)


def _norm(tree):
  return float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))) ** 0.5


def test_one_stage1_step_has_finite_losses_and_reaches_every_network(setup):
  method, state, batch, grads_fn = setup
  assert set(state.params) == {"reid", "decoder", "adversary", "id_probe"}
  grads, stats, metrics, _ = grads_fn(state, batch)
  for k in ("loss", "reid_loss", "recon_l1", "adv_xent", "probe_loss"):
    assert np.isfinite(float(metrics[k])), k
  for name in state.params:
    assert np.isfinite(_norm(grads[name])) and _norm(grads[name]) > 0, name
  # BN statistics of every network were updated from the batch.
  for name in ("reid", "decoder", "adversary", "id_probe"):
    before, after = jax.tree.leaves(state.batch_stats[name]), jax.tree.leaves(stats[name])
    assert any(not np.allclose(a, b) for a, b in zip(before, after)), name


def test_gradient_reversal_flips_the_adversary_gradient_into_the_encoder(setup):
  """Encoder/decoder gradients equal those of reid + w*L1 - scale*w_adv*CE(adv),
  computed here by plain autodiff through the same modules; the adversary gets
  +w_adv * dCE."""
  method, state, batch, grads_fn = setup
  grads, _, _, _ = grads_fn(state, batch)
  d = method.d

  def total(p, ap, unused=None):
    reid_loss, _ = method.reid.loss(p, state.batch_stats, batch["image"], batch["pid"])
    _, out, _ = method.reid.apply(p, state.batch_stats, batch["image"], train=True)
    recon, _ = method.decoder.apply(
        {"params": p["decoder"], "batch_stats": state.batch_stats["decoder"]},
        out["feature_map"], train=True, mutable=["batch_stats"])
    logits, _ = method.adversary.apply(
        {"params": ap, "batch_stats": state.batch_stats["adversary"]}, recon,
        train=True, mutable=["batch_stats"])
    ce = losses.cross_entropy_label_smooth(logits, batch["pid"], 0.0)
    return reid_loss + d.recon_weight * losses.l1(recon, batch["target"]), ce

  enc = {k: state.params[k] for k in ("reid", "decoder")}

  @jax.jit
  def reference(p, ap):
    (_, _), vjp_fn = jax.vjp(lambda p, ap: total(p, ap, 1.0), p, ap)
    base_g, _ = vjp_fn((jnp.float32(1), jnp.float32(0)))
    ce_g, ce_adv = vjp_fn((jnp.float32(0), jnp.float32(1)))
    return base_g, ce_g, ce_adv

  base_g, ce_g, ce_adv = reference(enc, state.params["adversary"])
  want = jax.tree.map(lambda b, c: b - SCALE * ADV_WEIGHT * c, base_g, ce_g)
  wrong = jax.tree.map(lambda b, c: b + SCALE * ADV_WEIGHT * c, base_g, ce_g)
  got = {k: grads[k] for k in enc}
  err = _norm(jax.tree.map(jnp.subtract, got, want))
  # The adversarial part is a sizeable share of the gradient, so the sign matters.
  assert _norm(jax.tree.map(jnp.subtract, want, wrong)) > 0.05 * _norm(want)
  assert err < 1e-3 * _norm(want) + 1e-6
  adv_err = _norm(jax.tree.map(lambda g, c: g - ADV_WEIGHT * c, grads["adversary"], ce_adv))
  assert adv_err < 1e-3 * _norm(ce_adv)


def test_id_probe_skips_heldout_images_and_never_moves_the_encoder(setup):
  method, state, batch, grads_fn = setup
  index = np.arange(4096)
  held = holdout.heldout_mask(index, 0.2, 0)
  assert 0.15 < held.mean() < 0.25
  np.testing.assert_array_equal(
      np.asarray(holdout.heldout_mask(jnp.asarray(index), 0.2, 0, xp=jnp)), held)
  assert not np.array_equal(holdout.heldout_mask(index, 0.2, 1), held)
  # A batch of held-out images only: the probe learns nothing from it.
  only_held = dict(batch, index=jnp.asarray(index[held][:8], jnp.int32))
  grads, _, _, _ = grads_fn(state, only_held)
  assert _norm(grads["id_probe"]) == 0
  # With training images the probe learns, yet the encoder's gradient does not
  # depend on the probe's parameters.
  grads1, _, _, _ = grads_fn(state, batch)
  moved = jax.tree.map(lambda x: x + 1.0, state.params["id_probe"])
  grads2, _, _, _ = grads_fn(state.replace(params={**state.params, "id_probe": moved}),
                             batch)
  assert _norm(grads1["id_probe"]) > 0
  assert _norm(jax.tree.map(jnp.subtract, grads1["id_probe"], grads2["id_probe"])) > 0
  for a, b in zip(jax.tree.leaves(grads1["reid"]), jax.tree.leaves(grads2["reid"])):
    np.testing.assert_array_equal(a, b)


def test_bad_config_values_give_one_line_errors():
  with pytest.raises(ValueError, match="config.dual.target='mosaicc'"):
    dual_config.check(tiny(target="mosaicc").dual)
  with pytest.raises(ValueError, match="adv_input='recon' needs a decoder"):
    dual_config.check(tiny(target="none", adversarial="reversal").dual)
  with pytest.raises(ValueError, match="epsilons: -1"):
    dual_config.check(tiny(epsilons=(-1.0,)).dual)
  with pytest.raises(ValueError, match="unknown variant 'pixle'"):
    dual_synthetic.get_config("pixle")


def test_ablation_variants_set_the_paper_rows():
  rows = {v: dual_synthetic.get_config(v).dual for v in
          ("baseline", "clean", "blur", "mosaic", "noise", "advid", "onestage")}
  default = dual_synthetic.get_config().dual
  assert (rows["baseline"].target, rows["baseline"].adversarial) == ("none", "none")
  assert [rows[v].target for v in ("clean", "blur", "mosaic", "noise")] == [
      "clean", "blur", "mosaic", "noise"]
  assert (rows["advid"].target, rows["advid"].adv_input) == ("none", "feature")
  assert rows["onestage"].adversarial != "none" and not rows["onestage"].epsilons
  assert default.target == "mosaic" and len(default.epsilons) > 1
  for d in list(rows.values()) + [default]:
    dual_config.check(d)


def test_targets_are_deidentified_and_picklable():
  config = tiny()
  image = np.random.default_rng(0).random((32, 16, 3)).astype(np.float32)
  fn = pickle.loads(pickle.dumps(dual_stage.Method.train_targets(config)))
  t = fn(image)
  assert t.shape == image.shape and not np.allclose(t, image)
  # 24-px blocks at 256 rows -> 3-px blocks at 32, each painted with its top-left pixel.
  np.testing.assert_array_equal(t[3:6, 3:6], np.broadcast_to(image[3, 3], (3, 3, 3)))
  config.dual.target = "noise"
  noisy = dual_stage.Method.train_targets(config)
  np.testing.assert_array_equal(noisy(image), noisy(image.copy()))   # fixed per image
  other = image.copy()
  other[0, 0, 0] += 0.01
  assert np.abs(noisy(image) - noisy(other)).mean() > 0.1             # but per image
  config.dual.target = "clean"
  np.testing.assert_array_equal(dual_stage.Method.train_targets(config)(image), image)
  config.dual.target, config.dual.adversarial = "none", "none"
  assert dual_stage.Method.train_targets(config) is None


def _params_at(workdir, step):
  ck = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"))
  restored = ck.manager.restore(step, args=checkpoint.ocp.args.Composite(
      state=checkpoint.ocp.args.StandardRestore()))
  ck.close()
  return restored["state"]["params"]


def test_two_step_alternating_run_writes_oo_probe_and_dp_rows(tmp_path):
  config = tiny(adversarial="alternating", dp_seed=0, inversion=True)
  config.data.root = str(tmp_path / "data")
  config.optim.weight_decay = 0.0     # so a changed parameter means a gradient reached it
  config.checkpoint.every_epochs = 1
  workdir = str(tmp_path / "work")
  results = trainer.run(config, workdir).metrics
  p1, p2 = _params_at(workdir, 1), _params_at(workdir, 2)
  for name in ("reid", "decoder", "adversary", "id_probe"):
    assert any(not np.allclose(a, b) for a, b in
               zip(jax.tree.leaves(p1[name]), jax.tree.leaves(p2[name]))), name
  by = {r["setting"]: r for r in metric_writers.read_eval_rows(workdir)}
  assert {"O->O", "id_probe:clean", "id_probe:recon", "recon:quality", "dp:eps=inf",
          "dp:eps=100"} <= set(by)
  assert by["id_probe:recon"]["chance"] == pytest.approx(1 / 8)   # 8 training ids
  assert 0.0 <= by["id_probe:recon"]["id_acc"] <= 1.0
  assert by["id_probe:recon"]["num_images"] > 0
  assert np.isfinite(by["recon:quality"]["psnr_input"])
  assert -1.0 <= by["recon:quality"]["ssim_target"] <= 1.0
  # The clean DP row is the O->O cosine evaluation; eps=100 noise is calibrated
  # and the per-identity epsilon composes k > 1 gallery images.
  assert by["dp:eps=inf"]["mAP"] == pytest.approx(results["O->O"]["mAP"], abs=1e-6)
  noisy = by["dp:eps=100"]
  assert noisy["k_per_id"] > 1 and noisy["eps_identity"] > noisy["eps_image"] == 100
  assert noisy["draws"] == 2 and noisy["sigma"] > 0
  assert noisy["mAP"] != by["dp:eps=inf"]["mAP"]
  # The linkage attack on the released gallery, at every epsilon: on a clean gallery it
  # is the O->O ranking; its classifier is scored on the released features.
  link = by["attack:linkage@eps=inf"]
  assert link["rank1"] == pytest.approx(results["O->O"]["rank1"], abs=1e-6)
  assert 0.0 <= link["classifier_acc"] <= 1.0 and link["draws"] == 1
  assert by["attack:linkage@eps=100"]["draws"] == 2
  # The inversion attacker's row, the figures and the saved query features.
  inv = by["attack:inversion"]
  assert {"id_acc", "probe_acc", "psnr_input", "chance"} <= set(inv)
  assert inv["num_images"] == by["id_probe:recon"]["num_images"]
  # ... and on the test identities: their released gallery features, named by a
  # classifier trained on the reconstructions of the query photos.
  assert inv["people_chance"] == pytest.approx(link["chance"])
  assert 0.0 <= inv["people_id_acc"] <= 1.0 and np.isfinite(inv["people_psnr_input"])
  assert inv["people_num_images"] > 0
  for name in ("recon_grid.png", "inversion_grid.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  saved = np.load(os.path.join(workdir, dual_evaluators.FEATURES_FILE))
  assert 0 < saved["features"].shape[0] == len(saved["pids"]) <= config.evals.features.count
  np.testing.assert_allclose(np.linalg.norm(saved["features"], axis=1), 1.0, rtol=1e-5)
