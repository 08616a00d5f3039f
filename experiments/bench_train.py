"""Train-step speed: compile time, images/s, GFLOP/s and peak memory.

  python experiments/bench_train.py --config=configs/market.py --batch=16,32 \
      --conv_impl=matmul,xla --optimizer=sgd
  python experiments/bench_train.py --batch=16 --conv_impl=matmul \
      --dtype=float32,bfloat16
  python experiments/bench_train.py --compare-torch ...   # a Python with torch
  python experiments/bench_train.py --config=configs/market.py \
      --extra_configs=configs/anon_market.py --batch=4 --compare-torch
  python experiments/bench_train.py --config=configs/synthetic.py --batch=32
  python experiments/bench_train.py --extra_configs=configs/anon_market.py,configs/dual_market.py

Times the project's real step: `Method.train_step` of `config.method`, jitted as
the trainer jits it (replicated state, data-sharded batch, donated state), on a
fixed random P x K batch (no input pipeline). Every variant (a conv lowering, a
batch size, a method config, a PyTorch memory format) is compiled once, then the
variants run in alternating rounds (the order reversed every other round; the
machine may be shared) and the medians over all timed steps are reported. Each
round's line also gives the minor page faults and kernel CPU time per step
(getrusage of the whole process): a step that faults its buffers in again
every time runs slower (see privreid_jax/host_memory.py); and the cores kept
busy (CPU seconds per wall second): below the core count, part of the step runs
on fewer threads than there are cores.

Columns:
  compile_s   `lower()` + `compile()` wall time (JAX); first step for PyTorch.
  img/s       batch / median step time; [lo-hi] are the per-round medians.
  GFLOP       flops per step from XLA's cost analysis of the compiled step.
  GFLOP/s     GFLOP / median step time.
  xla_GB      XLA's static buffer peak: arguments + outputs - aliased + temps.
  rss_GB      process resident-set high-water mark (VmHWM, reset through
              /proc/self/clear_refs just before the variant's first timed round);
              it includes everything else resident in the process (other
              variants' states, the Python heap), so compare it across separate
              runs of one variant each (e.g. --batch=32 --conv_impl=matmul).

`--optimizer sgd` swaps the baseline's Adam for SGD (momentum 0.9, coupled weight
decay) to match the PyTorch baseline it is compared with. `--extra_configs` also
times other methods' steps (method A's joint step, method B's stage-1 step); a
config whose file or method module does not exist yet is skipped with a message.
`--compare-torch` adds the PyTorch twin of the baseline and of method A's joint
step (learned mode) and prints each JAX row's ratio to its own twin's rows.
PyTorch runs in a child process of its own, idle while JAX's rounds run, as a
user of either framework would run it (the child imports this file, so glibc keeps
freed host memory in it as in JAX's process, as when both shared one process);
`--torch_process=same` runs it in this process instead, where the two frameworks'
threads and heaps sit side by side (on the 2-core CPU both frameworks' ResNet-50
steps ran 5-15% slower that way, see the README).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import statistics
import sys
import time
from typing import Callable

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from privreid_jax import host_memory  # noqa: E402

# Before NumPy, JAX or any thread starts (host_memory.py); PRIVREID_KEEP_HOST_MEMORY=0
# measures without it.
KEEP_HOST_MEMORY = host_memory.keep_freed_memory()

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # noqa: E402
import optax  # noqa: E402

from experiments.bench_measure import Result, measure_round  # noqa: E402
from experiments.bench_train_torch import (  # noqa: E402
    RemoteStep, TorchProcess, remote_torch_runner, torch_runner, twin_of)
from privreid_jax import sharding, trainer  # noqa: E402
from privreid_jax.methods import base as methods_base  # noqa: E402
# pylint: enable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_REPO, "configs", "market.py"),
    "Experiment config (its method, model, input size and losses are used).")
_BATCH = flags.DEFINE_list("batch", ["16", "32"], "Global batch sizes.")
_STEPS = flags.DEFINE_integer("steps", 4, "Timed steps per variant and round.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compiling.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Alternating rounds over the variants.")
_CONV_IMPL = flags.DEFINE_list(
    "conv_impl", ["matmul", "xla"],
    "config.model.conv_impl values to compare (empty: no JAX variants).")
_DTYPE = flags.DEFINE_list(
    "dtype", [], "config.model.dtype values to compare (default: the config's).")
_OPTIMIZER = flags.DEFINE_enum(
    "optimizer", "adam", ["adam", "sgd"],
    "adam: the config's optimizer; sgd: momentum 0.9 + coupled weight decay "
    "(baseline only).")
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", 0, "Classifier width; 0: half the synthetic ids for synthetic "
    "data, else 751 (Market-1501's training identities).")
_EXTRA = flags.DEFINE_list(
    "extra_configs", [],
    "More configs to time, as path[:variant] (e.g. configs/anon_market.py).")
_COMPARE_TORCH = flags.DEFINE_bool(
    "compare-torch", False, "Also time the PyTorch twins (experiments/"
    "torch_reference.py for the baseline, torch_anon_reference.py for method A's "
    "joint step) and print JAX/PyTorch ratios.")
_TORCH_FORMATS = flags.DEFINE_list(
    "torch_formats", ["channels_last", "nchw"], "PyTorch memory formats.")
_TORCH_PROCESS = flags.DEFINE_enum(
    "torch_process", "separate", ["separate", "same"],
    "Where --compare-torch runs PyTorch: 'separate', a child process of its own "
    "(idle while JAX runs), or 'same', this process (both frameworks' threads and "
    "heaps in one process).")
_JSON = flags.DEFINE_string("json", "", "Also write the rows to this JSON file.")


# ----------------------------------------------------------------------------
# Configs and batches.
# ----------------------------------------------------------------------------
def load_config(spec: str):
  """Loads `path[:variant]` through the file's get_config (one-line errors)."""
  path, _, arg = spec.partition(":")
  full = path if os.path.isabs(path) else os.path.join(_REPO, path)
  if not os.path.isfile(full):
    raise FileNotFoundError(f"--extra_configs: no config file {path}")
  module_spec = importlib.util.spec_from_file_location(
      f"_bench_config_{abs(hash(full))}", full)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path}: defines no get_config()")
  return module.get_config(arg or None)


def num_classes_for(config) -> int:
  if _NUM_CLASSES.value:
    return _NUM_CLASSES.value
  if config.data.name == "synthetic":
    return max(int(config.data.synthetic.num_ids) // 2, 1)
  return 751


def random_batch(config, batch: int, num_classes: int, paired: bool,
                 seed: int = 0) -> dict[str, np.ndarray]:
  """A P x K batch of normalised-looking random images (K = data.num_instances)."""
  rng = np.random.default_rng(seed)
  shape = (batch, config.data.height, config.data.width, 3)
  k = int(config.data.num_instances)
  # The keys of the pipeline's training batches (data/pipeline.py).
  out = {"image": rng.standard_normal(shape, np.float32),
         "pid": ((np.arange(batch) // k) % num_classes).astype(np.int32),
         "camid": (np.arange(batch) % 6).astype(np.int32),
         "index": np.arange(batch, dtype=np.int32)}
  if paired:
    out["target"] = rng.standard_normal(shape, np.float32)
  return out


def sgd(method, config) -> None:
  """Replaces the baseline's Adam by SGD (momentum 0.9, coupled weight decay)."""
  tx = optax.chain(optax.add_decayed_weights(config.optim.weight_decay),
                   optax.sgd(method.reid.schedule, momentum=0.9))
  method.txs = {**method.txs, method.reid.name: tx}
  method.reid.txs = method.txs


# ----------------------------------------------------------------------------
# Runners: each returns (Result, step) with step() running one blocking step.
# ----------------------------------------------------------------------------
def jax_runner(config, label: str, batch: int, optimizer: str
               ) -> tuple[Result, Callable[[], None]]:
  """Builds, compiles and cost-analyses the method's train step."""
  config = copy.deepcopy(config)
  config.data.batch_size = batch
  sharding.check_batch_size(batch, "--batch")
  method_cls = methods_base.load(config.method)
  num_classes = num_classes_for(config)
  method = method_cls(config, num_classes=num_classes, steps_per_epoch=100)
  if optimizer == "sgd":
    if config.method != "baseline":
      raise ValueError(f"--optimizer=sgd applies to the baseline only, not "
                       f"method {config.method!r}")
    sgd(method, config)
  paired = method_cls.train_targets(config) is not None

  mesh = sharding.make_mesh()
  repl = sharding.replicated(mesh)
  rng = jax.random.PRNGKey(0)
  state = jax.jit(method.init, out_shardings=repl)(
      rng, trainer.example_batch(config.data, paired))
  data = sharding.global_batch(mesh, random_batch(config, batch, num_classes, paired))
  step_fn = jax.jit(method.train_step,
                    in_shardings=(repl, sharding.data_sharded(mesh)),
                    out_shardings=(repl, repl), donate_argnums=0)
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, data).compile()
  result = Result(label, batch, "jax", twin=twin_of(config),
                  compile_s=time.perf_counter() - t0)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  result.flops = float((cost or {}).get("flops", float("nan")))
  mem = compiled.memory_analysis()
  if mem is not None:
    result.xla_bytes = float(mem.argument_size_in_bytes + mem.output_size_in_bytes
                             - mem.alias_size_in_bytes + mem.temp_size_in_bytes)
  holder = {"state": state}

  def step() -> None:
    holder["state"], metrics = compiled(holder["state"], data)
    jax.block_until_ready((holder["state"], metrics))

  return result, step


# ----------------------------------------------------------------------------
# Driver.
# ----------------------------------------------------------------------------
def variants(batch: int, torch_process: TorchProcess | None = None
             ) -> list[tuple[str, Callable]]:
  """(label, factory) for every variant at one batch size; PyTorch's variants are
  built in `torch_process` when one is given, else in this process."""
  out = []
  config = _CONFIG.value
  dtypes = _DTYPE.value or [config.model.dtype]
  for impl in _CONV_IMPL.value:
    for dtype in dtypes:
      c = copy.deepcopy(config)
      c.model.conv_impl = impl
      c.model.dtype = dtype
      label = f"{c.method}/{c.model.backbone}/{impl}"
      if len(dtypes) > 1 or dtype != "float32":
        label += f"/{dtype}"
      out.append((label, functools.partial(jax_runner, c, label, batch,
                                           _OPTIMIZER.value)))
  twins = []
  if twin_of(config):
    label = (f"torch/{config.model.backbone}" if config.method == "baseline"
             else f"torch/{config.method}")
    twins.append((config, label, _OPTIMIZER.value))
  for spec in _EXTRA.value:
    try:
      c = load_config(spec)
      methods_base.load(c.method)
    except (FileNotFoundError, ValueError) as e:
      print(f"skipping {spec}: {e}")
      continue
    label = f"{c.method}/{os.path.basename(spec)}"
    out.append((label, functools.partial(jax_runner, c, label, batch, "adam")))
    if twin_of(c) == "anonymization":
      twins.append((c, f"torch/{label}", "adam"))
  if _COMPARE_TORCH.value:
    if importlib.util.find_spec("torch") is None:
      print("skipping --compare-torch: torch is not importable in this Python "
            f"({sys.executable}); run this script with a Python that has torch")
      return out
    for fmt in _TORCH_FORMATS.value:
      if fmt not in ("channels_last", "nchw"):
        raise ValueError(f"--torch_formats: {fmt!r} is not channels_last | nchw")
      for c, label, optimizer in twins:
        args = (c, f"{label}/{fmt}", batch, optimizer, fmt == "channels_last",
                num_classes_for(c))
        out.append((f"{label}/{fmt}", functools.partial(remote_torch_runner, torch_process, *args)
                    if torch_process else functools.partial(torch_runner, *args)))
  return out


def print_table(results: list[Result]) -> None:
  head = (f"{'variant':38s} {'batch':>5s} {'compile_s':>9s} {'img/s':>6s} "
          f"{'[rounds]':>13s} {'step_ms':>8s} {'GFLOP':>7s} {'GFLOP/s':>7s} "
          f"{'xla_GB':>6s} {'rss_GB':>6s}")
  print(head)
  for r in results:
    w = r.row()
    rounds = w["img_s_rounds"]
    print(f"{r.label:38s} {r.batch:5d} {w['compile_s']:9.1f} {w['img_s']:6.2f} "
          f"[{min(rounds):5.2f}-{max(rounds):5.2f}] {w['step_ms']:8.0f} "
          f"{w['gflop_per_step']:7.2f} {w['gflop_s']:7.1f} "
          f"{w['xla_peak_gb']:6.2f} {w['rss_hwm_gb']:6.2f}")


def print_ratios(results: list[Result]) -> None:
  for batch in sorted({r.batch for r in results}):
    jx = [r for r in results
          if r.batch == batch and r.framework == "jax" and r.twin]
    pt = [r for r in results if r.batch == batch and r.framework == "torch"]
    for a in jx:
      for b in (b for b in pt if b.twin == a.twin):
        print(f"b{batch}: {a.label} / {b.label} = "
              f"{b.median_step() / a.median_step():.2f}x (img/s ratio)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  batches = [int(b) for b in _BATCH.value]
  if _STEPS.value < 1 or _REPEATS.value < 1:
    raise app.UsageError("--steps and --repeats must be positive")
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} x {jax.device_count()}; "
        f"freed host memory kept: {KEEP_HOST_MEMORY}; load average {os.getloadavg()}")
  if os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS"):
    print("warning: JAX_DISABLE_MOST_OPTIMIZATIONS is set; steps will be slow")
  torch_process = None
  if _COMPARE_TORCH.value and importlib.util.find_spec("torch") is not None:
    if _TORCH_PROCESS.value == "separate":
      torch_process = TorchProcess()
      print(f"{torch_process.call('info')}, in a child process of its own "
            "(--torch_process=same: in this one)")
    else:
      import torch  # pylint: disable=g-import-not-at-top
      print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, in this process")
  try:
    done = run_rounds(batches, torch_process)
  finally:
    if torch_process is not None:
      torch_process.close()
  print(f"\nload average {os.getloadavg()}")
  print_table(done)
  print_ratios(done)
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"load_average": os.getloadavg(), "rows": [r.row() for r in done]},
                f, indent=1)


def run_rounds(batches: list[int], torch_process: TorchProcess | None) -> list[Result]:
  """Compiles every variant once and times them in alternating rounds."""
  plan = [(batch, label, factory) for batch in batches
          for label, factory in variants(batch, torch_process)]
  if not plan:
    raise app.UsageError("nothing to time: no JAX variant, extra config or torch")
  results: dict[tuple[int, str], Result] = {}
  steps: dict[tuple[int, str], Callable] = {}
  for rnd in range(_REPEATS.value):
    order = plan if rnd % 2 == 0 else plan[::-1]
    for batch, label, factory in order:
      key = (batch, label)
      if key not in steps:
        print(f"compiling {label} at batch {batch} ...", flush=True)
        try:
          results[key], steps[key] = factory()
        except (ValueError, ImportError) as e:
          print(f"skipping {label} at batch {batch}: {e}")
          steps[key] = None
          continue
        for _ in range(_WARMUP.value):
          steps[key]()
      if steps[key] is None:
        continue
      fresh = not results[key].times
      measure = (steps[key].round if isinstance(steps[key], RemoteStep)
                 else functools.partial(measure_round, steps[key]))
      times, faults, sys_s, busy, rss = measure(_STEPS.value, fresh)
      results[key].times.append(times)
      if rss is not None:
        results[key].rss_bytes = rss
      print(f"  round {rnd}: {label} b{batch}: "
            f"{batch / statistics.median(times):.2f} img/s "
            f"({faults:,.0f} page faults, {sys_s:.2f} s kernel time per step, "
            f"{busy:.2f} cores busy)", flush=True)
  return [results[(b, l)] for b, l, _ in plan if (b, l) in results]


if __name__ == "__main__":
  app.run(main)
