"""Every config value checked at startup, before any data is read or anything compiles.

`check(config)` raises a one-line `errors.ConfigError` naming the first bad key
and its value (`config.data.batch_size=30: ...`), with the nearest valid values
where there are some. It covers the shared sections (data, model, loss, optim,
eval, evals, checkpoint, log) and calls the `check` of each method section the
config has (`config.dual`, `config.anon`). `main.py` and `trainer.run` call it.

`suggest` gives the "did you mean" of a misspelt key (difflib over the keys of
the section where the key stops matching).
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from typing import Any, Iterable

from privreid_jax.cli import has_key, suggest  # noqa: F401  (re-exported)
from privreid_jax.errors import ConfigError


def _get(config, key: str) -> Any:
  value = config
  for part in key.split("."):
    value = value[part]
  return value


def _fail(key: str, value: Any, what: str):
  raise ConfigError(f"config.{key}={value!r}: {what}")


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def need_int(config, key: str, minimum: int = 1) -> int:
  v = _get(config, key)
  if not _is_int(v) or v < minimum:
    _fail(key, v, f"expected an integer >= {minimum}")
  return int(v)


def need_number(config, key: str, low: float | None = None, high: float | None = None,
                *, low_open: bool = False, high_open: bool = False,
                allow_inf: bool = False) -> float:
  """A real number in [low, high] (open ends with low_open / high_open)."""
  v = _get(config, key)
  ok = _is_number(v) and not math.isnan(v) and (allow_inf or math.isfinite(v))
  if ok and low is not None:
    ok = v > low if low_open else v >= low
  if ok and high is not None:
    ok = v < high if high_open else v <= high
  if not ok:
    lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
    what = " and ".join(x for x in (lo, hi) if x)
    _fail(key, v, f"expected a {'' if allow_inf else 'finite '}number"
                  f"{' ' + what if what else ''}")
  return float(v)


def need_choice(config, key: str, choices: Iterable[str]) -> str:
  v = _get(config, key)
  choices = tuple(choices)
  if v not in choices:
    hint = difflib.get_close_matches(str(v), choices, n=1)
    _fail(key, v, f"expected {' | '.join(choices)}"
                  + (f" (did you mean {hint[0]!r}?)" if hint else ""))
  return v


def need_bool(config, key: str) -> bool:
  v = _get(config, key)
  if not isinstance(v, bool):
    _fail(key, v, "expected True or False")
  return v


def need_path(config, key: str, *, folder: bool | None = None) -> None:
  """An existing file or folder when the key is set (empty: unset)."""
  v = _get(config, key)
  if not v:
    return
  if not os.path.exists(v):
    _fail(key, v, "no such file or folder")
  if folder is True and not os.path.isdir(v):
    _fail(key, v, "expected a folder")
  if folder is False and os.path.isdir(v):
    _fail(key, v, "expected a file, found a folder")


def nearest_multiples(value: int, step: int) -> list[int]:
  """The positive multiples of `step` nearest to `value` (below and above)."""
  below = value // step * step
  return [v for v in (below, below + step) if v > 0]


def _devices() -> tuple[int, int]:
  import jax
  return jax.device_count(), jax.process_count()


def _check_data(config, devices: int, processes: int) -> None:
  from privreid_jax.data import catalog
  d = config.data
  names = tuple(dict.fromkeys(catalog.ALL_DATASETS + ("synthetic",)))
  if d.name or not d.get("sources", ()):      # "" with data.sources: the first found
    need_choice(config, "data.name", names)
  need_choice(config, "data.source", ("folder", "tfds"))
  for name in d.get("sources", ()) or ():
    if name not in names:
      _fail("data.sources", tuple(d.sources), f"unknown dataset {name!r}; known: "
                                              f"{', '.join(names)}")
  need_choice(config, "data.cuhk03_subset", ("labeled", "detected"))
  need_int(config, "data.split_index", 0)
  need_number(config, "data.val_fraction", 0.0, 1.0, high_open=True)
  _check_val_people(config)
  need_int(config, "data.height")
  need_int(config, "data.width")
  need_int(config, "data.pad", 0)
  need_int(config, "data.num_workers", 0)
  need_int(config, "data.eval_num_workers", -1)
  need_bool(config, "data.preresize")
  need_number(config, "data.flip_prob", 0.0, 1.0)
  need_number(config, "data.erasing_prob", 0.0, 1.0)
  area = d.erasing_area
  if (not isinstance(area, (tuple, list)) or len(area) != 2
      or not all(_is_number(x) for x in area) or not 0.0 < area[0] <= area[1] <= 1.0):
    _fail("data.erasing_area", area, "expected (low, high) with 0 < low <= high <= 1")
  need_number(config, "data.erasing_aspect", 0.0, 1.0, low_open=True)
  for key in ("mean", "std"):
    v = d[key]
    if (not isinstance(v, (tuple, list)) or len(v) != 3
        or not all(_is_number(x) and math.isfinite(x) for x in v)
        or (key == "std" and not all(x > 0 for x in v))):
      _fail(f"data.{key}", v, "expected 3 finite numbers" +
            (", each > 0" if key == "std" else ""))
  batch = need_int(config, "data.batch_size")
  k = need_int(config, "data.num_instances")
  if batch % k:
    _fail("data.batch_size", batch,
          f"must be a multiple of config.data.num_instances={k} (K images per "
          f"identity); nearest valid values: "
          f"{', '.join(map(str, nearest_multiples(batch, k)))}")
  if batch % devices:
    step = math.lcm(k, devices)
    _fail("data.batch_size", batch,
          f"must be divisible by the number of devices ({devices}) and by "
          f"config.data.num_instances={k}; nearest valid values: "
          f"{', '.join(map(str, nearest_multiples(batch, step)))}")
  if batch % processes:            # devices are a multiple of processes; kept for clarity
    _fail("data.batch_size", batch, f"must be divisible by the {processes} processes")
  eval_batch = need_int(config, "data.eval_batch_size")
  if eval_batch % devices:
    _fail("data.eval_batch_size", eval_batch,
          f"must be divisible by the number of devices ({devices}); nearest valid "
          f"values: {', '.join(map(str, nearest_multiples(eval_batch, devices)))}")
  if d.name == "synthetic" and "synthetic" in d:
    from privreid_jax.data import synthetic
    try:
      synthetic.check_params(**dict(d.synthetic))
    except ValueError as e:
      raise ConfigError(f"config.data.{str(e).replace('synthetic dataset: ', 'synthetic.')}"
                        ) from None


def _check_val_people(config) -> None:
  """data.val_people_seed: synthetic data only, alone, not the test split's seed."""
  d = config.data
  seed = d.get("val_people_seed", -1)
  if not _is_int(seed) or seed < -1:
    _fail("data.val_people_seed", seed, "expected an integer >= 0, or -1 for none")
  if seed < 0:
    return
  if d.name != "synthetic" or d.get("sources", ()):
    _fail("data.val_people_seed", seed, f"draws new synthetic people; data.name is "
                                        f"{d.name!r} (use data.val_fraction there)")
  if float(d.val_fraction) > 0:
    _fail("data.val_people_seed", seed, f"and data.val_fraction={d.val_fraction} both make "
                                        "a validation split: set one of them")
  if seed == d.synthetic.get("test_seed", -1):
    _fail("data.val_people_seed", seed, "is data.synthetic.test_seed: validation would "
                                        "be the test split")


def _check_model(config) -> None:
  from privreid_jax.models import conv, reid, reid_head
  need_choice(config, "model.backbone", reid.BACKBONES)
  need_int(config, "model.width")
  v = config.model.last_stride
  if v not in (1, 2) or isinstance(v, bool):
    _fail("model.last_stride", v, "expected 1 or 2")
  need_choice(config, "model.pooling", reid_head.POOLINGS)
  need_number(config, "model.gem_p", 0.0, low_open=True)
  need_bool(config, "model.non_local")
  need_choice(config, "model.dtype", reid.DTYPES)
  need_choice(config, "model.conv_impl", conv.IMPLS)
  need_path(config, "model.pretrained", folder=False)


def _check_loss(config) -> None:
  need_choice(config, "loss.triplet", ("batch_hard", "soft_margin", "weighted", "none"))
  for key in ("id_weight", "triplet_weight", "triplet_margin", "center_weight",
              "center_lr"):
    need_number(config, f"loss.{key}", 0.0)
  need_number(config, "loss.label_smoothing", 0.0, 1.0, high_open=True)


def _check_optim(config) -> None:
  need_number(config, "optim.lr", 0.0, low_open=True)
  need_number(config, "optim.b1", 0.0, 1.0, high_open=True)
  need_number(config, "optim.b2", 0.0, 1.0, high_open=True)
  need_number(config, "optim.weight_decay", 0.0)
  need_int(config, "optim.epochs")
  need_int(config, "optim.warmup_epochs", 0)
  need_number(config, "optim.warmup_factor", 0.0, low_open=True)
  need_number(config, "optim.gamma", 0.0, low_open=True)
  need_int(config, "optim.steps_per_epoch", 0)
  if "epoch_offset" in config.optim:      # < 0 would make the first warm-up lrs negative
    need_int(config, "optim.epoch_offset", 0)
  milestones = config.optim.milestones
  if (not isinstance(milestones, (tuple, list))
      or not all(_is_int(m) and m >= 0 for m in milestones)):
    _fail("optim.milestones", milestones, "expected a tuple of epochs >= 0")


def _check_evals(config) -> None:
  from privreid_jax.evaluation import ranking
  need_int(config, "eval.every_epochs", 0)
  need_choice(config, "eval.distance", ranking.METRICS)
  need_bool(config, "eval.rerank")
  need_int(config, "eval.max_rank")
  for name in config.evals.keys():
    key = f"evals.{name}"
    need_bool(config, f"{key}.enabled")
    need_int(config, f"{key}.every_epochs", -1)
    section = config.evals[name]
    for option in section.keys():
      value = section[option]
      if option == "epsilon":
        need_number(config, f"{key}.epsilon", 0.0, low_open=True, allow_inf=True)
      elif option in ("steps", "classifier_steps", "count", "images"):
        need_int(config, f"{key}.{option}")
      elif option == "widths":
        if not value or not all(_is_int(w) and w >= 1 for w in value):
          _fail(f"{key}.widths", value, "expected a tuple of integers >= 1")
      elif option == "workdir":
        need_path(config, f"{key}.workdir", folder=True)


def _check_run(config) -> None:
  need_int(config, "seed", 0)
  need_int(config, "checkpoint.every_epochs")
  need_int(config, "checkpoint.keep")
  need_path(config, "checkpoint.init_file", folder=True)
  need_int(config, "log.every_steps")
  need_bool(config, "log.tensorboard")
  need_bool(config, "log.progress")


def _check_anon(config) -> None:
  """config.anon (method A); keys checked when present."""
  a = config.anon

  def has(key):
    return has_key(config, f"anon.{key}")
  if has("mode"):
    need_choice(config, "anon.mode", ("learned", "base"))
  if has("desensitize"):
    need_choice(config, "anon.desensitize", ("mosaic", "blur", "noise"))
  if has("mosaic_fill"):
    need_choice(config, "anon.mosaic_fill", ("top_left", "mean"))
  for key in ("mosaic_block", "ngf", "num_downs", "ndf", "d_layers"):
    if has(key):
      need_int(config, f"anon.{key}")
  if has("blur_sigma"):
    need_number(config, "anon.blur_sigma", 0.0, low_open=True)
  for key in ("noise_std", "d_loss_scale"):
    if has(key):
      need_number(config, f"anon.{key}", 0.0)
  for key in ("b1", "b2"):
    if has(key):
      need_number(config, f"anon.{key}", 0.0, 1.0, high_open=True)
  if has("weights"):
    for key in a.weights.keys():
      need_number(config, f"anon.weights.{key}", 0.0)
  if has("stages"):
    need_bool(config, "anon.stages.enabled")
    need_int(config, "anon.stages.check_every_epochs")
    need_int(config, "anon.stages.max_stages", 0)
    need_number(config, "anon.stages.min_rank1", 0.0, 1.0)
    if has("stages.quality_images"):
      need_int(config, "anon.stages.quality_images", 0)


def _check_method_sections(config) -> None:
  """The checks of each method section present (keyed by section, not method name)."""
  if "dual" in config:
    from privreid_jax.methods.dual_stage import config as dual_config
    dual_config.check(config.dual)
  if "anon" in config:
    _check_anon(config)


def check(config, *, devices: int | None = None, processes: int | None = None) -> None:
  """Raises a one-line ConfigError for the first invalid value of `config`.

  `devices` / `processes` default to JAX's counts (batch sizes must split evenly).
  """
  from privreid_jax.methods import base as methods_base
  if devices is None or processes is None:
    n_dev, n_proc = _devices()
    devices = n_dev if devices is None else devices
    processes = n_proc if processes is None else processes
  try:
    methods_base.load(config.method)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  try:
    _check_data(config, devices, processes)
    _check_model(config)
    _check_loss(config)
    _check_optim(config)
    _check_evals(config)
    _check_run(config)
    _check_method_sections(config)
  except ConfigError:
    raise
  except (KeyError, AttributeError) as e:
    raise ConfigError(f"config is missing the key {e}") from None
  except ValueError as e:         # a method section's own check (one-line ValueError)
    raise ConfigError(str(e)) from None


# --- keys, for "did you mean" -----------------------------------------------------
