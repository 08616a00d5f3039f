"""Issue 17, item 2: every config value is checked at startup, in one line naming
the key and the value (config_checks.py, the method sections' checks)."""

import glob
import importlib.util
import math
import os

import pytest

from privreid_jax import config_checks, errors, trainer
from configs import dual_synthetic, synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _check(config, devices=1):
  config_checks.check(config, devices=devices, processes=1)


def _bad(config, match, devices=1):
  with pytest.raises(errors.ConfigError, match=match) as info:
    _check(config, devices)
  assert "\n" not in str(info.value)
  return str(info.value)


def _config_files():
  for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield os.path.basename(path), module


def test_every_shipped_config_passes():
  for name, module in _config_files():
    for arg in (None, "tiny"):
      try:
        config = module.get_config(arg)
      except ValueError:          # a file without a `tiny` variant
        continue
      _check(config)


@pytest.mark.parametrize("delta", [1.0, 0.0, -1e-5, 2.0, math.nan])
def test_delta_must_be_a_probability(delta):
  c = dual_synthetic.get_config("tiny")
  c.dual.delta = delta
  _bad(c, r"config\.dual\.delta=")


@pytest.mark.parametrize("eps", [0.0, -1.0, math.nan])
def test_epsilons_must_be_positive(eps):
  c = dual_synthetic.get_config("tiny")
  c.dual.epsilons = (math.inf, eps)
  _bad(c, r"config\.dual\.epsilons")
  c = dual_synthetic.get_config("tiny")
  c.evals.feature_attack.epsilon = eps
  _bad(c, r"config\.evals\.feature_attack\.epsilon=")


def test_noise_draws_at_least_one():
  c = dual_synthetic.get_config("tiny")
  c.dual.noise_draws = 0
  _bad(c, r"config\.dual\.noise_draws=0: expected an integer >= 1")


def test_batch_divisible_by_k_gives_the_nearest_values():
  c = synthetic.get_config("tiny")
  c.data.batch_size = 10
  _bad(c, r"config\.data\.batch_size=10: must be a multiple of "
          r"config\.data\.num_instances=4.*nearest valid values: 8, 12")


def test_batch_and_eval_batch_divisible_by_devices():
  c = synthetic.get_config("tiny")                       # batch 8, K 4, eval 16
  _bad(c, r"config\.data\.batch_size=8: must be divisible by the number of devices "
          r"\(3\).*nearest valid values: 12$", devices=3)
  c.data.batch_size = 12
  _bad(c, r"config\.data\.eval_batch_size=16: .*devices \(3\); nearest valid values: "
          r"15, 18", devices=3)
  c.data.eval_batch_size = 18
  _check(c, devices=3)


@pytest.mark.parametrize("key,value,match", [
    ("data.num_instances", 0, r"config\.data\.num_instances=0: expected an integer >= 1"),
    ("data.batch_size", 0, r"config\.data\.batch_size=0"),
    ("data.eval_batch_size", -16, r"config\.data\.eval_batch_size=-16"),
    ("optim.epochs", 0, r"config\.optim\.epochs=0"),
    ("optim.lr", 0.0, r"config\.optim\.lr=0\.0"),
    ("optim.lr", math.inf, r"config\.optim\.lr=inf"),
    # A negative offset gave the first epochs a negative learning rate (BoT's warm-up
    # line extended below k = 0): gradient ascent, without a word.
    ("optim.epoch_offset", -3, r"config\.optim\.epoch_offset=-3: expected an integer >= 0"),
    ("model.backbone", "resnet19", r"config\.model\.backbone='resnet19': expected "
                                    r"resnet18 \| resnet34 \| resnet50 \(did you mean"),
    ("model.width", 0, r"config\.model\.width=0"),
    ("checkpoint.every_epochs", 0, r"config\.checkpoint\.every_epochs=0"),
    ("checkpoint.keep", 0, r"config\.checkpoint\.keep=0"),
    ("log.every_steps", 0, r"config\.log\.every_steps=0"),
    ("data.name", "market", r"config\.data\.name='market'"),
    ("eval.distance", "cosin", r"config\.eval\.distance='cosin'"),
    ("seed", -1, r"config\.seed=-1"),
    ("data.num_workers", -1, r"config\.data\.num_workers=-1"),
    ("data.eval_num_workers", -2, r"config\.data\.eval_num_workers=-2"),
    # Checked by the pipeline only, once the run had started (a traceback from main).
    ("data.erasing_area", (0.5, 0.1), r"config\.data\.erasing_area=\(0\.5, 0\.1\): "
                                      r"expected \(low, high\) with 0 < low <= high"),
    ("data.erasing_area", 0.4, r"config\.data\.erasing_area=0\.4"),
    ("data.erasing_aspect", 2.0, r"config\.data\.erasing_aspect=2\.0: expected"),
    ("data.erasing_aspect", 0.0, r"config\.data\.erasing_aspect=0\.0"),
])
def test_one_line_error_names_key_and_value(key, value, match):
  c = synthetic.get_config("tiny")
  section, _, leaf = key.rpartition(".")
  target = c
  for part in section.split(".") if section else ():
    target = target[part]
  with target.ignore_type():
    target[leaf] = value
  _bad(c, match)


def test_unknown_method_and_missing_init_file(tmp_path):
  c = synthetic.get_config("tiny")
  c.method = "nope"
  _bad(c, r"config\.method='nope'")
  c = synthetic.get_config("tiny")
  c.checkpoint.init_file = str(tmp_path / "missing")
  _bad(c, r"config\.checkpoint\.init_file=.*no such file or folder")


def test_trainer_checks_before_touching_the_workdir(tmp_path):
  c = dual_synthetic.get_config("tiny")
  c.dual.noise_draws = 0
  with pytest.raises(errors.ConfigError, match="noise_draws"):
    trainer.run(c, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_suggest_finds_the_misspelt_key():
  c = synthetic.get_config("tiny")
  assert config_checks.suggest("optim.lrr", c) == "optim.lr"
  assert config_checks.suggest("optimm.lr", c) == "optim.lr"
  assert config_checks.suggest("evals.reid.enabeld", c) == "evals.reid.enabled"
  assert config_checks.suggest("optim.zzz", c) is None


def test_resume_differences_block_meaning_and_tolerate_schedule():
  import json
  old = synthetic.get_config("tiny")
  saved = json.loads(old.to_json_best_effort())
  new = synthetic.get_config("tiny")
  new.data.height, new.data.batch_size, new.optim.lr = 64, 12, 0.01
  new.log.every_steps, new.evals.reid.every_epochs, new.data.num_workers = 7, 3, 2
  new.evals.reid.enabled = False
  new.log.progress, new.log.tensorboard = True, False
  blocking, tolerated = trainer.config_differences(saved, new)
  assert [b.split()[0] for b in blocking] == ["data.batch_size", "data.height",
                                              "optim.lr"]
  assert "data.height 32 -> 64" in blocking
  assert sorted(t.split()[0] for t in tolerated) == [
      "data.num_workers", "evals.reid.enabled", "evals.reid.every_epochs",
      "log.every_steps", "log.progress", "log.tensorboard"]
  del saved["optim"]["gamma"]          # a key added to the code since: tolerated
  blocking, tolerated = trainer.config_differences(saved, old)
  assert not blocking and tolerated == ["optim.gamma (new key)"]


def test_val_people_seed_is_synthetic_only_alone_and_not_the_test_seed():
  c = synthetic.get_config("tiny")
  c.data.val_people_seed = 5
  _check(c)                                   # a valid setting passes
  c.data.val_people_seed = -2
  _bad(c, r"config\.data\.val_people_seed=-2: expected an integer >= 0, or -1")
  c = synthetic.get_config("tiny")
  c.data.val_people_seed = 5
  c.data.val_fraction = 0.2
  _bad(c, r"config\.data\.val_people_seed=5: and data\.val_fraction=0\.2 both")
  c = synthetic.get_config("tiny")
  c.data.val_people_seed = 1
  c.data.synthetic.test_seed = 1
  _bad(c, r"config\.data\.val_people_seed=1: is data\.synthetic\.test_seed")
  from configs import market
  c = market.get_config()
  c.data.root = "/nonexistent"
  c.data.val_people_seed = 0
  _bad(c, r"config\.data\.val_people_seed=0: draws new synthetic people; data\.name is "
          r"'market1501'")
