"""Every sweep under experiments/sweeps/ loads, names its runs uniquely and builds each run's
config with its overrides, exactly as `experiments.ablate` checks them, without training.

Rows of method A's "full" (progressive stages) variant are skipped, naming the
run, while the config file does not know that variant yet.
"""

import glob
import json
import os

import pytest

from experiments import ablate_sweep

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SWEEPS = os.path.join(REPO, "experiments", "sweeps")
FILES = sorted(p for p in glob.glob(os.path.join(SWEEPS, "*.py"))
               if not os.path.basename(p).startswith("_"))
# Arguments a sweep takes besides none, checked too.
ARGS = {"baseline_synthetic.py": ("tiny", "people", "people,tiny"), "baseline_synthetic_select.py": ("tiny", "size", "width",
                                                               "width,tiny"),
        "anon_synthetic.py": ("tiny", "people", "people,tiny"),
        "dual_synthetic.py": ("tiny", "people", "people,tiny"),
        "anon_market.py": ("mosaic",),
        "anon_synthetic_select.py": ("lr", "noise,tiny", "lr_people", "lr_people,tiny",
                                     "min_rank1_people", "min_rank1_people,tiny"),
        "real_small_select.py": ("tiny", "triplet", "triplet,tiny"),
        "anon_real.py": ("tiny",), "dual_real.py": ("tiny",), "real_small.py": ("tiny",)}
MARKET_ROOT = {"data.root": "/data/Market-1501-v15.09.15"}   # --set, as the docs say
SMALL_ROOT = {"data.root": "/data/small_reid"}                 # the real_small sweeps' --set
SWEEP_ROOT = "/runs/sweep"                                     # --root


def kept_runs(folder: str):
  """(run name, run.json, evaluation rows) of each run kept in experiments/results/FOLDER."""
  kept = os.path.join(REPO, "experiments", "results", folder)
  for run in sorted(os.listdir(kept)):
    if run == "report":   # experiments.report's default output (git ignores it)
      continue
    with open(os.path.join(kept, run, "run.json")) as f:
      status = json.load(f)
    with open(os.path.join(kept, run, "eval_metrics.jsonl")) as f:
      yield run, status, [json.loads(line) for line in f]


def specs() -> list[str]:
  out = []
  for path in FILES:
    out.append(path)
    out += [f"{path}:{arg}" for arg in ARGS.get(os.path.basename(path), ())]
  return out


def runs_of(spec: str) -> list[tuple[str, int, dict]]:
  return [(spec, i, raw) for i, raw in enumerate(ablate_sweep.load_sweep(spec))]


ALL_RUNS = [r for spec in specs() for r in runs_of(spec)]


def _id(run) -> str:
  spec, _, raw = run
  return f"{os.path.relpath(spec, SWEEPS)}/{raw.get('name')}"


def _is_stages(raw: dict) -> bool:
  return "stages" in raw["config"].partition(":")[2].split(",")


def test_the_sweeps_of_the_papers_tables_exist():
  names = {os.path.basename(p) for p in FILES}
  assert {"anon_synthetic.py", "anon_market.py", "dual_market.py"} <= names


@pytest.mark.parametrize("spec", specs(), ids=lambda s: os.path.relpath(s, SWEEPS))
def test_sweep_loads_with_unique_folder_names(spec):
  raw = ablate_sweep.load_sweep(spec)
  names = [r["name"] for r in raw]
  assert len(names) == len(set(names)), names
  assert all(set(r) <= {"name", "config", "overrides"} for r in raw)


@pytest.mark.parametrize("run", ALL_RUNS, ids=_id)
def test_run_config_and_overrides_build(run):
  spec, index, raw = run
  sweep_file = spec.partition(":")[0]
  base = os.path.basename(sweep_file)
  extra = MARKET_ROOT if "market" in base else SMALL_ROOT if "real" in base else {}
  try:
    resolved = ablate_sweep.resolve(raw, index, sweep_file, extra, SWEEP_ROOT)
  except ablate_sweep.SweepError as e:
    if _is_stages(raw) and "unknown variant" in str(e):
      pytest.skip(f"{raw['name']}: {raw['config']} waits for the progressive-stages "
                  f"variant ({e})")
    raise
  config = resolved.resolved
  for key, value in {**raw.get("overrides", {}), **extra}.items():
    node = config
    for part in key.split("."):
      node = node[part]
    if isinstance(value, str):
      value = value.replace("{root}", SWEEP_ROOT)
    assert node == (tuple(value) if isinstance(value, list) else value), key
  if "market" in os.path.basename(sweep_file):
    assert config.data.root == MARKET_ROOT["data.root"]
    assert (config.data.height, config.data.width) == (256, 128)
    assert config.model.backbone == "resnet50"


def _row_names(seed_suffix: str, desensitize=("mosaic", "blur", "noise")):
  return [f"{row}_{d}{seed_suffix}" for d in desensitize for row in ("base", "wo", "full")]


def _check_rows(module, raw, third_party):
  assert all(r["overrides"]["evals.outsider.workdir"] == "{root}/" + third_party
             for r in raw)
  for r in raw:
    variant = [v for v in r["config"].split(":")[1].split(",") if v not in ("agw", "tiny")]
    row, d = r["name"].split("_")[:2]
    assert variant == (["base", d] if row == "base" else [d, "stages"] if row == "full"
                       else [d]), r
  full = [r for r in raw if r["name"].startswith("full_")]
  assert all(_is_stages(r) for r in full)
  assert not any(_is_stages(r) for r in raw if not r["name"].startswith("full_"))


def test_method_a_market_sweep_has_the_papers_rows():
  module = ablate_sweep._load_module(os.path.join(SWEEPS, "anon_market.py"), "anon_market.py")
  raw = module.get_sweep()
  assert [r["name"] for r in raw] == ["third_party"] + _row_names("")
  _check_rows(module, raw[1:], "third_party")


def test_method_a_synthetic_sweep_has_the_papers_rows_with_seeds_on_the_headline():
  from experiments.sweeps import _protocol
  module = ablate_sweep._load_module(os.path.join(SWEEPS, "anon_synthetic.py"), "anon_synthetic.py")
  raw = module.get_sweep()
  expected = ["third_party_s0"] + _row_names("_s0") + [
      f"wo_noise_l1w{w:g}_s0" for w in module.select.L1_WEIGHTS if w != module.NOISE_L1]
  for seed in _protocol.SEEDS[1:]:
    expected += [f"third_party_s{seed}"] + _row_names(f"_s{seed}", module.HEADLINE)
  assert [r["name"] for r in raw] == expected and len(_protocol.SEEDS) == 3
  for seed in _protocol.SEEDS:
    rows = [r for r in raw if r["name"].endswith(f"_s{seed}")]
    _check_rows(module, rows[1:], f"third_party_s{seed}")
    assert all(r["overrides"]["seed"] == seed for r in rows)
  # The results protocol: every run on the same training ids and the fresh test split,
  # read once at the end; the learned rows at the lr chosen on validation.
  for r in raw:
    o = r["overrides"]
    assert o["data.val_fraction"] == _protocol.VAL_FRACTION
    assert o["data.synthetic.test_seed"] == _protocol.TEST_SEED
    assert o["eval.every_epochs"] == 0
    if not r["name"].startswith("third_party"):
      assert o["optim.lr"] == module.LR


def test_method_a_rows_set_the_mode_and_the_supervision():
  spec = os.path.join(SWEEPS, "anon_synthetic.py")
  for index, raw in enumerate(ablate_sweep.load_sweep(spec)):
    if _is_stages(raw) or raw["name"].startswith("third_party"):
      continue
    config = ablate_sweep.resolve(raw, index, spec, root=SWEEP_ROOT).resolved
    row, d = raw["name"].split("_")[:2]
    assert config.anon.mode == ("base" if row == "base" else "learned")
    assert config.anon.desensitize == d
    assert config.data.val_fraction == 0.2 and config.eval.every_epochs == 0


def test_market_sweeps_need_the_dataset_root_from_set():
  spec = os.path.join(SWEEPS, "dual_market.py")
  raw = ablate_sweep.load_sweep(spec)
  assert all("data.root" not in r["overrides"] for r in raw)
  assert ablate_sweep.resolve(raw[0], 0, spec).resolved.data.root == ""


@pytest.mark.parametrize("sweep, extra", [("anon_synthetic.py", {}),
                                          ("anon_market.py", MARKET_ROOT),
                                          ("anon_real.py", SMALL_ROOT)])
def test_method_a_third_party_matches_the_rows_data_and_image_size(sweep, extra):
  spec = os.path.join(SWEEPS, sweep)
  runs = [(r["name"], ablate_sweep.resolve(r, i, spec, extra, SWEEP_ROOT))
          for i, r in enumerate(ablate_sweep.load_sweep(spec)) if not _is_stages(r)]
  thirds = {name: run.resolved for name, run in runs if name.startswith("third_party")}
  for name, run in runs:
    if name.startswith("third_party"):
      assert run.resolved.method == "baseline"
      continue
    row = run.resolved
    tp_name = os.path.basename(row.evals.outsider.workdir)
    assert row.evals.outsider.workdir == os.path.join(SWEEP_ROOT, tp_name)
    third = thirds[tp_name]
    assert third.seed == row.seed
    for key in ("name", "height", "width", "root", "val_fraction", "sources"):
      assert third.data[key] == row.data[key], key
    for key in ("backbone", "width"):
      assert third.model[key] == row.model[key], key
    assert third.optim.epochs == row.optim.epochs
    assert tuple(third.evals.targets.datasets) == tuple(row.evals.targets.datasets)
    if third.data.name == "synthetic":
      assert third.data.synthetic == row.data.synthetic


def test_real_small_selection_never_reads_the_test_splits():
  spec = os.path.join(SWEEPS, "real_small_select.py")
  raw = ablate_sweep.load_sweep(spec)
  for index, r in enumerate(raw):
    config = ablate_sweep.resolve(r, index, spec, SMALL_ROOT, SWEEP_ROOT).resolved
    assert not config.evals.targets.enabled and not config.evals.reid.enabled
    assert config.data.val_fraction == 0.2 and config.evals.val.enabled
    assert config.data.root == SMALL_ROOT["data.root"]
  # one change at a time from the config's own guess (the first row)
  base = ablate_sweep.resolve(raw[0], 0, spec, SMALL_ROOT, SWEEP_ROOT).resolved
  for index, r in enumerate(raw[1:], 1):
    config = ablate_sweep.resolve(r, index, spec, SMALL_ROOT, SWEEP_ROOT).resolved
    changed = [k for k in ("model.width", "data.erasing_prob", "optim.lr", "optim.epochs")
               if config[k.split(".")[0]][k.split(".")[1]]
               != base[k.split(".")[0]][k.split(".")[1]]]
    assert len(changed) == 1, (r["name"], changed)
    # the first round ran with BoT's triplet, whatever the config now says
    assert config.loss.triplet == base.loss.triplet == "batch_hard"


def test_real_triplet_rule_needs_more_than_a_point_of_rank1_and_no_lower_map():
  from experiments.sweeps import real_small_select as select
  hard = (44.0, 55.0)
  assert select.choose_triplet({"hard": hard, "soft": (45.1, 55.0)}) == "soft"
  assert select.choose_triplet({"hard": hard, "soft": (45.0, 56.0)}) == "hard"   # not > 1
  assert select.choose_triplet({"hard": hard, "soft": (50.0, 54.9)}) == "hard"   # mAP lower


def test_real_small_triplet_is_the_rule_applied_to_the_kept_round():
  """The second round's kept runs (experiments/results/real_triplet_select), the rule on
  their means, the constant the sweep file records and configs/real_small.py agree."""
  from experiments.sweeps import real_small_select as select
  from configs import real_small
  kinds = {v["loss.triplet"]: k for k, v in select.TRIPLETS.items()}
  scores = {}
  for _, status, rows in kept_runs("real_triplet_select"):
    overrides = status["overrides"]
    last = [r for r in rows if r["setting"] == "val/O->O"][-1]
    assert last["epoch"] == 40 and overrides["seed"] in select.TRIPLET_SEEDS
    scores.setdefault(kinds[overrides["loss.triplet"]], []).append(
        (100 * last["rank1"], 100 * last["mAP"]))
  assert sorted(scores) == sorted(select.TRIPLETS)
  assert all(len(v) == len(select.TRIPLET_SEEDS) for v in scores.values())
  means = {k: tuple(sum(x[i] for x in v) / len(v) for i in (0, 1)) for k, v in scores.items()}
  assert select.choose_triplet(means) == select.CHOSEN_TRIPLET
  chosen = select.TRIPLETS[select.CHOSEN_TRIPLET]["loss.triplet"]
  assert real_small.get_config().loss.triplet == chosen


def test_kept_real_baseline_table_read_each_test_split_once_with_the_chosen_config():
  """experiments/results/real_small_table (docs/results_real.md's reported row): three seeds
  of real_small.py, trained with the validated triplet, every split scored once at the end."""
  from experiments.sweeps import _protocol, real_small_select as select
  runs = list(kept_runs("real_small_table"))
  assert [run for run, _, _ in runs] == [f"{select.CHOSEN}_s{s}" for s in _protocol.SEEDS]
  rank1 = []
  for _, status, rows in runs:
    config = status["resolved_config"]
    assert config["loss"]["triplet"] == select.TRIPLETS[select.CHOSEN_TRIPLET]["loss.triplet"]
    settings = [r["setting"] for r in rows]
    assert len(settings) == len(set(settings)) and "cuhk01/O->O" in settings
    assert {r["epoch"] for r in rows} == {config["optim"]["epochs"]}
    rank1 += [100 * r["rank1"] for r in rows if r["setting"] == "cuhk01/O->O"]
  assert round(sum(rank1) / len(rank1), 1) == 44.7     # the README's and results_real.md's


def test_real_triplet_round_changes_only_the_triplet_on_the_chosen_row():
  from experiments.sweeps import real_small_select as select
  spec = os.path.join(SWEEPS, "real_small_select.py")
  chosen = ablate_sweep.resolve(
      ablate_sweep.load_sweep(spec)[list(select.GRID).index(select.CHOSEN)],
      0, spec, SMALL_ROOT, SWEEP_ROOT).resolved.to_dict()
  kinds = set()
  for index, r in enumerate(ablate_sweep.load_sweep(spec + ":triplet")):
    config = ablate_sweep.resolve(r, index, spec + ":triplet", SMALL_ROOT, SWEEP_ROOT).resolved
    assert not config.evals.targets.enabled and not config.evals.reid.enabled
    assert config.data.val_fraction == 0.2 and config.evals.val.enabled
    ours = config.to_dict()
    kinds.add((ours["loss"].pop("triplet"), ours.pop("seed")))
    reference = {k: v for k, v in chosen.items() if k != "seed"}
    reference["loss"] = {k: v for k, v in chosen["loss"].items() if k != "triplet"}
    assert ours == reference, r["name"]
  assert kinds == {(t, s) for t in ("batch_hard", "soft_margin") for s in (0, 1)}


def test_schedule_selection_never_reads_the_test_split():
  spec = os.path.join(SWEEPS, "baseline_synthetic_select.py")
  raw = ablate_sweep.load_sweep(spec)
  epochs = set()
  for index, r in enumerate(raw):
    config = ablate_sweep.resolve(r, index, spec, {}, SWEEP_ROOT).resolved
    assert not config.evals.reid.enabled and config.evals.val.enabled
    assert config.data.val_fraction == 0.2 and config.data.synthetic.test_seed == 1
    e = config.optim.epochs
    assert tuple(config.optim.milestones) == (e - 4, e - 2) and config.eval.every_epochs == e
    epochs.add(e)
  assert epochs == {10, 12, 14}


def test_width_selection_changes_only_the_width_and_validates_on_new_people():
  spec = os.path.join(SWEEPS, "baseline_synthetic_select.py")
  from experiments.sweeps import _protocol
  from configs import synthetic
  command1 = synthetic.get_config()
  widths = set()
  for index, r in enumerate(ablate_sweep.load_sweep(spec + ":width")):
    config = ablate_sweep.resolve(r, index, spec + ":width", {}, SWEEP_ROOT).resolved
    assert not config.evals.reid.enabled and config.evals.val.enabled
    assert config.data.val_fraction == 0.0
    assert config.data.val_people_seed == _protocol.VAL_PEOPLE_SEED
    ours, theirs = config.to_dict(), command1.to_dict()
    assert ours["optim"] == theirs["optim"] and ours["loss"] == theirs["loss"]
    # command 1's data, validated on new people beside the protocol's fresh test split
    for data in (ours["data"], theirs["data"]):
      data.pop("val_people_seed"), data["synthetic"].pop("test_seed")
    assert ours["data"] == theirs["data"]
    ours["model"].pop("width"), theirs["model"].pop("width")
    assert ours["model"] == theirs["model"]
    widths.add((config.model.width, config.seed))
  assert widths == {(w, s) for w in (16, 24, 32) for s in (0, 1)}


def test_width_rule_keeps_a_smaller_width_only_within_a_point_of_the_best_in_both():
  from experiments.sweeps import baseline_synthetic_select as select
  assert select.choose_width({16: (80.0, 79.0), 24: (85.0, 84.1), 32: (85.5, 85.0)}) == 24
  assert select.choose_width({16: (80.0, 79.0), 24: (85.0, 83.9), 32: (85.5, 85.0)}) == 32
  assert select.choose_width({16: (86.0, 79.0), 24: (85.0, 85.0), 32: (84.5, 84.0)}) == 24


def test_command1_width_is_the_rule_applied_to_the_kept_width_round():
  """The fifth round's kept runs (experiments/results/base_width_select), the rule on their
  means, the constant the sweep file records and command 1's config agree."""
  from experiments.sweeps import baseline_synthetic_select as select
  from configs import synthetic
  scores = {}
  for _, status, rows in kept_runs("base_width_select"):
    width = status["overrides"]["model.width"]
    last = [r for r in rows if r["setting"] == "val/O->O"][-1]
    assert last["epoch"] == 14
    scores.setdefault(width, []).append((100 * last["rank1"], 100 * last["mAP"]))
  assert sorted(scores) == list(select.WIDTHS)
  assert all(len(v) == len(select.SEEDS) for v in scores.values())
  means = {w: tuple(sum(x[i] for x in v) / len(v) for i in (0, 1)) for w, v in scores.items()}
  assert select.choose_width(means) == select.CHOSEN_WIDTH == synthetic.get_config().model.width


def test_read_size_selection_keeps_the_schedule_and_changes_only_the_size():
  spec = os.path.join(SWEEPS, "baseline_synthetic_select.py")
  first = ablate_sweep.resolve(ablate_sweep.load_sweep(spec)[0], 0, spec, {}, SWEEP_ROOT).resolved
  assert first.optim.epochs == 14 and (first.data.height, first.data.width) == (128, 64)
  for index, r in enumerate(ablate_sweep.load_sweep(spec)):   # rounds 1-3 ran at 128x64
    config = ablate_sweep.resolve(r, index, spec, {}, SWEEP_ROOT).resolved
    assert (config.data.height, config.data.width, config.data.pad) == (128, 64, 5)
  sizes = set()
  for index, r in enumerate(ablate_sweep.load_sweep(spec + ":size")):
    config = ablate_sweep.resolve(r, index, spec + ":size", {}, SWEEP_ROOT).resolved
    assert not config.evals.reid.enabled and config.data.val_fraction == 0.2
    assert config.data.synthetic.height == 128 and config.data.height < 128
    for section, key in (("optim", "epochs"), ("optim", "lr"), ("optim", "milestones"),
                         ("model", "width"), ("data", "synthetic")):
      assert config[section][key] == first[section][key], key
    sizes.add((config.data.height, config.data.width, config.seed))
  assert sizes == {(h, w, s) for h, w in ((112, 56), (96, 48)) for s in (0, 1)}
  with pytest.raises(ValueError, match="'sizes'"):   # a misspelt round, named
    ablate_sweep.load_sweep(spec + ":sizes")


@pytest.mark.parametrize("sweep", ["anon_real.py", "dual_real.py"])
def test_real_method_sweeps_train_on_the_same_ids_and_read_the_tests_once(sweep):
  spec = os.path.join(SWEEPS, sweep)
  raw = ablate_sweep.load_sweep(spec)
  from experiments.sweeps import _protocol
  per_seed = len(raw) // len(_protocol.SEEDS)
  assert all(r["name"].endswith("_s0") for r in raw[:per_seed])    # a whole table first
  for index, r in enumerate(raw):
    config = ablate_sweep.resolve(r, index, spec, SMALL_ROOT, SWEEP_ROOT).resolved
    assert config.data.val_fraction == 0.2 and config.eval.every_epochs == 0
    assert config.data.sources[0] == "cuhk01" and config.evals.reid.enabled
    assert "synthetic" not in str(r["overrides"])


def test_real_small_reports_the_row_chosen_on_validation_with_three_seeds():
  from experiments.sweeps import _protocol, real_small_select
  spec = os.path.join(SWEEPS, "real_small.py")
  raw = ablate_sweep.load_sweep(spec)
  assert [r["name"] for r in raw] == [f"{real_small_select.CHOSEN}_s{s}" for s in _protocol.SEEDS]
  chosen = real_small_select.GRID[real_small_select.CHOSEN]
  for index, r in enumerate(raw):
    config = ablate_sweep.resolve(r, index, spec, SMALL_ROOT, SWEEP_ROOT).resolved
    assert config.eval.every_epochs == 0 and config.data.val_fraction == 0.2
    assert tuple(config.evals.targets.datasets) == tuple(config.data.sources)
    for key, value in chosen.items():
      section, name = key.split(".")
      assert config[section][name] == value
    triplet = real_small_select.TRIPLETS[real_small_select.CHOSEN_TRIPLET]["loss.triplet"]
    assert config.loss.triplet == triplet


def test_method_a_lr_on_new_people_validates_on_them_with_every_training_id():
  spec = os.path.join(SWEEPS, "anon_synthetic_select.py")
  from experiments.sweeps import _protocol, anon_synthetic_select as select
  held = {r["name"]: ablate_sweep.resolve(r, i, spec + ":lr", {}, SWEEP_ROOT).resolved
          for i, r in enumerate(ablate_sweep.load_sweep(spec + ":lr"))}
  raw = ablate_sweep.load_sweep(spec + ":lr_people")
  assert [r["name"] for r in raw] == ["people_" + n for n in held]
  for index, r in enumerate(raw):
    config = ablate_sweep.resolve(r, index, spec + ":lr_people", {}, SWEEP_ROOT).resolved
    twin = held[r["name"][len("people_"):]]
    assert config.optim.lr == twin.optim.lr and config.anon.mode == twin.anon.mode
    assert not config.evals.reid.enabled and config.evals.val.enabled   # no test split
    assert config.data.val_fraction == 0.0 and twin.data.val_fraction == 0.2
    assert config.data.val_people_seed == _protocol.VAL_PEOPLE_SEED >= 0
    assert config.data.synthetic.test_seed == _protocol.TEST_SEED != _protocol.VAL_PEOPLE_SEED
    assert config.evals.image_quality.split == "val"
  assert select.CHOSEN_LR_PEOPLE in (None,) + select.LRS
  if select.CHOSEN_LR_PEOPLE is not None:   # the table trains at the lr new people chose
    from experiments.sweeps import anon_synthetic
    assert anon_synthetic.LR == select.CHOSEN_LR_PEOPLE
  # A reported run on new people, method A's stages variant included (it sets
  # val_fraction itself): one validation split, every training identity.
  run = {"name": "full_mosaic_s0", "config": "configs/anon_synthetic.py:mosaic,stages",
         "overrides": _protocol.report({"seed": 0}, people=True)}
  try:
    config = ablate_sweep.resolve(run, 0, spec, {}, SWEEP_ROOT).resolved
  except ablate_sweep.SweepError as e:
    pytest.skip(f"no stages variant: {e}")
  from privreid_jax import config_checks
  config_checks.check(config, devices=1, processes=1)
  assert config.data.val_fraction == 0.0 and config.eval.every_epochs == 0
  assert config.data.val_people_seed == _protocol.VAL_PEOPLE_SEED


def test_method_a_min_rank1_on_new_people_runs_the_full_method_at_the_chosen_lr():
  spec = os.path.join(SWEEPS, "anon_synthetic_select.py")
  from experiments.sweeps import _protocol, anon_synthetic_select as select
  raw = ablate_sweep.load_sweep(spec + ":min_rank1_people")
  seen = set()
  for index, r in enumerate(raw):
    config = ablate_sweep.resolve(r, index, spec, {}, SWEEP_ROOT).resolved
    assert _is_stages(r) and config.anon.stages.enabled, r["name"]
    assert config.optim.lr == select.CHOSEN_LR_PEOPLE
    assert not config.evals.reid.enabled and config.evals.val.enabled   # no test split
    assert config.data.val_people_seed == _protocol.VAL_PEOPLE_SEED
    assert config.data.val_fraction == 0.0
    seen.add((config.anon.stages.min_rank1, config.anon.desensitize))
  assert seen == {(m, d) for m in select.MIN_RANK1S for d in ("mosaic", "blur")}
  assert 0.2 in select.MIN_RANK1S   # the value in use is one of the candidates
  assert select.CHOSEN_MIN_RANK1_PEOPLE in (None,) + select.MIN_RANK1S
  if select.CHOSEN_MIN_RANK1_PEOPLE is not None:   # the config carries the choice
    plain = {"name": "x", "config": "configs/anon_synthetic.py:mosaic,stages"}
    c = ablate_sweep.resolve(plain, 0, spec, {}, SWEEP_ROOT).resolved
    assert c.anon.stages.min_rank1 == select.CHOSEN_MIN_RANK1_PEOPLE


def test_method_a_table_on_new_people_has_the_same_rows_with_every_training_id():
  spec = os.path.join(SWEEPS, "anon_synthetic.py")
  from experiments.sweeps import _protocol, anon_synthetic_select as select
  held = {r["name"]: (i, r) for i, r in enumerate(ablate_sweep.load_sweep(spec))}
  raw = ablate_sweep.load_sweep(spec + ":people")
  assert [r["name"] for r in raw] == list(held)
  for index, r in enumerate(raw):
    config = ablate_sweep.resolve(r, index, spec, {}, SWEEP_ROOT).resolved
    i, twin_raw = held[r["name"]]
    twin = ablate_sweep.resolve(twin_raw, i, spec, {}, SWEEP_ROOT).resolved
    assert r["config"] == twin_raw["config"]
    assert config.data.val_people_seed == _protocol.VAL_PEOPLE_SEED
    assert config.data.val_fraction == 0.0 and twin.data.val_fraction > 0.0
    assert config.eval.every_epochs == 0 and config.evals.reid.enabled   # test once, at the end
    assert config.seed == twin.seed
    if r["name"].startswith("third_party"):
      assert config.optim.lr == twin.optim.lr
    else:
      assert config.anon.mode == twin.anon.mode
      assert config.optim.lr == select.CHOSEN_LR_PEOPLE
      if select.CHOSEN_MIN_RANK1_PEOPLE is not None:
        assert config.anon.stages.min_rank1 == select.CHOSEN_MIN_RANK1_PEOPLE
  with pytest.raises(ValueError, match="people,tiny"):
    ablate_sweep.load_sweep(spec + ":peoples")


@pytest.mark.parametrize("sweep", ["dual_synthetic.py", "baseline_synthetic.py"])
def test_method_b_and_baseline_tables_on_new_people_have_the_same_rows_with_every_training_id(
    sweep):
  spec = os.path.join(SWEEPS, sweep)
  from experiments.sweeps import _protocol
  protocol_keys = set(_protocol.REPORT) | set(_protocol.REPORT_PEOPLE)
  for arg in ("", ":tiny"):
    held = ablate_sweep.load_sweep(spec + arg)
    people = ablate_sweep.load_sweep(spec + (arg + ",people" if arg else ":people"))
    assert [(r["name"], r["config"]) for r in people] == [(r["name"], r["config"])
                                                          for r in held]
    for index, (r, twin) in enumerate(zip(people, held)):
      config = ablate_sweep.resolve(r, index, spec, {}, SWEEP_ROOT).resolved
      assert config.data.val_people_seed == _protocol.VAL_PEOPLE_SEED
      assert config.data.val_fraction == 0.0
      assert config.evals.reid.enabled and config.eval.every_epochs == 0
      assert {k: v for k, v in r["overrides"].items() if k not in protocol_keys} == {
          k: v for k, v in twin["overrides"].items() if k not in protocol_keys}
  with pytest.raises(ValueError, match="people,tiny"):
    ablate_sweep.load_sweep(spec + ":person")


def test_sweep_arguments_are_comma_separated_words_each_checked():
  from experiments.sweeps import _protocol
  assert _protocol.sweep_args(None, ("people", "tiny"), "x.py") == []
  assert _protocol.sweep_args("people,tiny", ("people", "tiny"), "x.py") == ["people", "tiny"]
  with pytest.raises(ValueError, match=r"^x\.py: unknown argument 'tiny,peple' \('peple' "):
    _protocol.sweep_args("tiny,peple", ("people", "tiny"), "x.py")
  # every sweep that takes words names the bad one and still builds its good ones
  for spec, good, bad in (("anon_synthetic.py", "people,tiny", "people,tiy"),
                          ("anon_synthetic_select.py", "lr_people,tiny", "lr_peopl"),
                          ("baseline_synthetic_select.py", "size,tiny", "tiny,sizes")):
    path = os.path.join(SWEEPS, spec)
    assert ablate_sweep.load_sweep(f"{path}:{good}")
    with pytest.raises(ablate_sweep.SweepError, match=repr(bad.split(",")[-1])):
      ablate_sweep.load_sweep(f"{path}:{bad}")


# Kept tables the docs report, with the sweep whose runs they are: each kept run's config
# must be what that sweep resolves to today, or the table no longer describes the code.
REPORTED_TABLES = {"real_small_table": "real_small.py", "dual_real_table": "dual_real.py",
                   "anon_real_table": "anon_real.py"}


def _without_paths(config: dict, root: str) -> dict:
  """A resolved config with the sweep root's path (a run's outsider workdir) as '{root}'."""
  text = json.dumps(config, sort_keys=True)
  return json.loads(text.replace(json.dumps(root)[1:-1], "{root}"))


@pytest.mark.parametrize("folder", sorted(REPORTED_TABLES))
def test_a_reported_table_was_trained_with_its_sweep_as_it_is_today(folder):
  spec = os.path.join(SWEEPS, REPORTED_TABLES[folder])
  runs = {r["name"]: (i, r) for i, r in enumerate(ablate_sweep.load_sweep(spec))}
  kept = list(kept_runs(folder))
  assert sorted(run for run, _, _ in kept) == sorted(runs)
  for run, status, _ in kept:
    index, raw = runs[run]
    root = os.path.dirname(status["command"].rsplit("--workdir=", 1)[1])
    extra = {"data.root": status["overrides"]["data.root"]}
    today = ablate_sweep.resolve(raw, index, spec, extra, root).resolved.to_dict()
    assert _without_paths(status["resolved_config"], root) == _without_paths(today, root), run
