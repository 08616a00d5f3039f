"""The one command to run when an accelerator machine is lent for a few minutes.

  python -m experiments.device_check --out /tmp/device_check --peak_tflops 312
  python -m experiments.device_check --out /tmp/device_check_smoke --smoke

On whatever JAX backend is present (JAX_PLATFORMS left as the environment has
it), each part runs as its own subprocess with its own timeout, so one failure
or hang does not stop the rest (its error line is recorded):

  devices          jax.devices(): platform, device kind, memory stats, versions.
  tests            tests/test_sharding.py, test_bf16.py, test_no_recompile.py
                   with JAX_PLATFORMS set to the detected platform (tests/conftest.py
                   would otherwise pick the CPU); pass / fail counts.
  train_baseline_b64  experiments/bench_train.py: the baseline ResNet-50 at 256x128
                   (configs/market.py), float32 and bfloat16, batch 64.
  train_anon       method A's joint step at paper size (configs/anon_market.py, 64).
  train_dual       method B's stage-1 step (configs/dual_market.py, 64).
  eval             experiments/bench_eval.py at MSMT17 size (11,659 x 82,161 x 2048)
                   on the detected platform (its torchreid NumPy loop on 100 queries).
  input            experiments/bench_input.py with 0, 2 and all-core workers (the
                   host pipeline at 256x128, batch 64; JAX on the CPU).
  train_baseline_b128  the baseline at batch 128: last, so that running out of
                   time or device memory there costs no other part.

The whole run is held to --budget_s (8 minutes by default): each part gets the
smaller of its own timeout and what is left of the budget once a minimum is kept
for every later part. Writes DIR/device_check.json (everything, with each part's
status, command, seconds, error line and rows), DIR/device_check.md (one Markdown
table) and DIR/logs/<part>.log (each subprocess's output), and prints the table.

Columns: img/s (for eval: queries/s), step ms, compile s (XLA lower + compile),
device memory GB (train: XLA's static buffer peak of the compiled step; devices:
the device's memory limit), MFU = XLA cost-analysis FLOPs per step / step time /
--peak_tflops (blank when either is unknown; the compiled step is the SPMD
partitioned per-device program, so this is per device on several devices). Peak bf16 dense TFLOP/s: A100 312,
H100 SXM 989, L4 121, T4 65 (fp16), TPU v4 275, v5e 197.

--smoke runs every part at tiny sizes on the CPU (configs/*synthetic.py:tiny, batch
8, bench_eval at 1% of MSMT17, bench_input on a few 32x16 images, only
tests/test_sharding.py): a check of this script, not a measurement.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from typing import Sequence

from experiments.device_check_report import (error_line, jsonable, markdown, num, parse_eval,
                                             parse_input, parse_tests, parse_train)

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_EXPERIMENTS = os.path.join(_REPO, "experiments")

# Minimum seconds kept for each part still to run when a part's timeout is cut.
_RESERVE_S = 25.0


# ----------------------------------------------------------------------------
# Plan.
# ----------------------------------------------------------------------------
def _bench(name: str) -> list[str]:
  return [sys.executable, os.path.join(_EXPERIMENTS, name)]


def plan(smoke: bool, cpu_count: int | None = None) -> list[dict]:
  """The parts in run order: name, kind, timeout and (for benches) the command."""
  cpus = cpu_count or os.cpu_count() or 1
  workers = ",".join(str(w) for w in sorted({0, 2, cpus}))
  if smoke:
    train_common = ["--steps=2", "--warmup=1", "--repeats=1"]
    base_cfg, batches = "configs/synthetic.py:tiny", [8]
    anon_cfg, dual_cfg, extra_batch = ("configs/anon_synthetic.py:tiny",
                                       "configs/dual_synthetic.py:tiny", 8)
    test_files = ["tests/test_sharding.py"]
    eval_flags = ["--scale=0.01", "--dim=256", "--baseline_queries=50"]
    input_flags = ["--num_ids=16", "--height=32", "--width=16", "--batch_size=8",
                   "--num_batches=3", "--warmup=1", "--repeats=1"]
    timeouts = {"devices": 60, "tests": 150, "train": 120, "eval": 60, "input": 60}
  else:
    train_common = ["--steps=5", "--warmup=2", "--repeats=2"]
    base_cfg, batches = "configs/market.py", [64, 128]
    anon_cfg, dual_cfg, extra_batch = ("configs/anon_market.py",
                                       "configs/dual_market.py", 64)
    test_files = ["tests/test_sharding.py", "tests/test_bf16.py",
                  "tests/test_no_recompile.py"]
    # The torchreid NumPy loop on 100 queries only (it is host work, ~0.1 s each).
    eval_flags = ["--baseline_queries=100"]
    input_flags = ["--num_batches=20", "--warmup=2", "--repeats=2"]
    timeouts = {"devices": 90, "tests": 150, "train": 150, "eval": 100, "input": 90}
  parts = [{"name": "devices", "kind": "devices", "timeout": timeouts["devices"]},
           {"name": "tests", "kind": "tests", "timeout": timeouts["tests"],
            "files": test_files,
            # -n 0: one process (pyproject.toml's addopts would start a pytest-xdist
            # worker per core, each taking its own share of the accelerator's memory).
            "cmd": [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                    *test_files]}]
  def baseline(b):
    return {"name": f"train_baseline_b{b}", "kind": "train",
            "timeout": timeouts["train"],
            "cmd": _bench("bench_train.py") + [
                f"--config={os.path.join(_REPO, base_cfg)}", f"--batch={b}",
                "--dtype=float32,bfloat16", "--conv_impl=auto", *train_common]}

  parts.append(baseline(batches[0]))
  for name, cfg in (("train_anon", anon_cfg), ("train_dual", dual_cfg)):
    # --conv_impl= (empty): no baseline variant, only the extra config's step.
    parts.append({"name": name, "kind": "train", "timeout": timeouts["train"],
                  "cmd": _bench("bench_train.py") + [
                      f"--config={os.path.join(_REPO, base_cfg)}",
                      f"--batch={extra_batch}", f"--extra_configs={cfg}",
                      "--conv_impl=", *train_common]})
  parts.append({"name": "eval", "kind": "eval", "timeout": timeouts["eval"],
                "cmd": _bench("bench_eval.py") + eval_flags})
  parts.append({"name": "input", "kind": "input", "timeout": timeouts["input"],
                "cmd": _bench("bench_input.py") + [f"--workers={workers}",
                                                   *input_flags]})
  # The larger batch last: the part most likely to be cut by the budget (or to run
  # out of device memory) costs nothing else.
  parts.extend(baseline(b) for b in batches[1:])
  return parts


# ----------------------------------------------------------------------------
# Subprocesses.
# ----------------------------------------------------------------------------
_DEVICES_SCRIPT = r"""
import json, sys
import jax, jaxlib
try:
  from jax._src import xla_bridge
  platform = xla_bridge.canonicalize_platform(jax.default_backend())
except Exception:  # private API moved: the backend's own name
  platform = jax.default_backend()
devices = []
for d in jax.devices():
  try:
    stats = d.memory_stats()
  except Exception as e:  # not every backend has them
    stats = {"error": f"{type(e).__name__}: {e}"}
  devices.append({"id": d.id, "platform": d.platform, "device_kind": d.device_kind,
                  "process_index": d.process_index, "str": str(d),
                  "memory_stats": stats})
try:
  env_info = jax.print_environment_info(return_string=True)
except Exception as e:
  env_info = f"{type(e).__name__}: {e}"
print("DEVICES_JSON " + json.dumps({
    "jax": jax.__version__, "jaxlib": jaxlib.__version__,
    "python": sys.version.split()[0], "default_backend": jax.default_backend(),
    "platform": platform, "device_count": jax.device_count(),
    "local_device_count": jax.local_device_count(), "devices": devices,
    "environment_info": env_info}, default=str))
"""


def run(cmd: list[str], env: dict, timeout: float, log_path: str
        ) -> tuple[str, float, str]:
  """Runs cmd in its own process group; returns (status, seconds, output).

  status is ok, failed (non-zero exit) or timeout (the group is killed).
  """
  t0 = time.perf_counter()
  with open(log_path, "w") as log:
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    proc = subprocess.Popen(cmd, cwd=_REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
      out, _ = proc.communicate(timeout=timeout)
      status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
      try:
        os.killpg(proc.pid, signal.SIGKILL)   # the bench and its workers
      except ProcessLookupError:
        pass
      out, _ = proc.communicate()
      status = "timeout"
    log.write(out or "")
  return status, time.perf_counter() - t0, out or ""


# ----------------------------------------------------------------------------
# Driver.
# ----------------------------------------------------------------------------
def _env(base: dict, platform: str | None, kind: str, smoke: bool) -> dict:
  env = dict(base)
  env["PYTHONPATH"] = _REPO + (os.pathsep + env["PYTHONPATH"]
                               if env.get("PYTHONPATH") else "")
  if smoke:
    env["JAX_PLATFORMS"] = "cpu"
    # Tiny programs: XLA's passes cost more compile time than they save.
    env.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    return env
  if kind != "tests":
    # Measurements: optimised programs, compile time not served from a cache.
    for var in ("JAX_DISABLE_MOST_OPTIMIZATIONS", "JAX_COMPILATION_CACHE_DIR"):
      env.pop(var, None)
  if kind == "input":
    env["JAX_PLATFORMS"] = "cpu"   # host pipeline; keep the device free
  elif platform and kind != "devices":
    env["JAX_PLATFORMS"] = platform  # conftest / bench_eval default to the CPU
  if kind == "tests":
    # A test's subprocess may start while the pytest process holds the device.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  return env


def run_part(part: dict, out_dir: str, env_base: dict, platform: str | None,
             smoke: bool, timeout: float, peak_tflops: float) -> dict:
  name, kind = part["name"], part["kind"]
  log_path = os.path.join(out_dir, "logs", f"{name}.log")
  env = _env(env_base, platform, kind, smoke)
  if kind == "devices":
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"   # memory stats as in use
    cmd = [sys.executable, "-c", _DEVICES_SCRIPT]
  else:
    cmd = list(part["cmd"])
  json_path = os.path.join(out_dir, "raw", f"{name}.json")
  if kind == "train":
    cmd.append(f"--json={json_path}")
  result = {"part": name, "kind": kind, "timeout_s": round(timeout, 1),
            "command": " ".join(c if c != _DEVICES_SCRIPT else "<devices script>"
                                for c in cmd),
            "jax_platforms": env.get("JAX_PLATFORMS", ""), "log": log_path}
  try:
    status, seconds, output = run(cmd, env, timeout, log_path)
  except OSError as e:
    return {**result, "status": "failed", "seconds": 0.0,
            "error": f"{type(e).__name__}: {e}", "rows": []}
  result.update(status=status, seconds=round(seconds, 1), rows=[])
  if status != "ok":
    result["error"] = (f"timeout after {timeout:.0f} s; last line: "
                       if status == "timeout" else "") + error_line(output)
  try:
    if kind == "devices":
      line = next((l for l in output.splitlines() if l.startswith("DEVICES_JSON ")),
                  None)
      if line is None:
        result["status"] = "failed"
        result.setdefault("error", error_line(output))
      else:
        info = json.loads(line[len("DEVICES_JSON "):])
        result["info"] = info
        for d in info["devices"]:
          stats = d.get("memory_stats") or {}
          limit = num(stats.get("bytes_limit")) if isinstance(stats, dict) else None
          result["rows"].append({
              "setting": f"{d['platform']}:{d['id']} {d['device_kind']}",
              "img_s": None, "step_ms": None, "compile_s": None,
              "memory_gb": limit / 1e9 if limit else None, "mfu": None,
              "note": f"jax {info['jax']}, {info['device_count']} device(s)"})
    elif kind == "tests":
      counts = parse_tests(output)
      result["counts"] = counts
      summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
      result["rows"].append({
          "setting": f"{' '.join(os.path.basename(t) for t in part['files'])} on "
                     f"{env.get('JAX_PLATFORMS', 'default')}",
          "img_s": None, "step_ms": None, "compile_s": None, "memory_gb": None,
          "mfu": None, "note": summary or "no pytest summary"})
      if status == "ok" and not counts["passed"]:
        result["status"] = "failed"
        result["error"] = "no test passed"
    elif kind == "train":
      result["rows"] = parse_train(output, json_path, peak_tflops)
      skipped = [l.strip() for l in output.splitlines() if l.startswith("skipping")]
      if skipped:
        result["skipped"] = skipped
        if status == "ok":
          result["status"] = "failed"
          result["error"] = skipped[0]
      if status == "ok" and not result["rows"]:
        result["status"] = "failed"
        result["error"] = "no rows"
    elif kind == "eval":
      result["rows"] = parse_eval(output)
    elif kind == "input":
      result["rows"] = parse_input(output)
    if kind in ("eval", "input") and status == "ok" and not result["rows"]:
      result["status"] = "failed"
      result["error"] = "could not parse the output: " + error_line(output)
  except (ValueError, KeyError, OSError) as e:   # a parser met an unexpected output
    result["status"] = "failed"
    result["error"] = f"parsing: {type(e).__name__}: {e}"
  return result


def _define(fv):
  """The tool's flags (absl, snake_case) on `fv`."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("out", None, "Output folder (created).", flag_values=fv)
  flags.DEFINE_float(
      "peak_tflops", 0.0, "Peak TFLOP/s of one device for the MFU column (e.g. 312 "
      "for an A100 in bf16); 0: unknown, MFU left blank.", flag_values=fv)
  flags.DEFINE_boolean("smoke", False, "Every part at tiny sizes on the CPU.",
                       flag_values=fv)
  flags.DEFINE_float(
      "budget_s", 0.0, "Wall-time budget of the whole run in seconds; 0: 480 "
      "(8 minutes), 240 with --smoke.", flag_values=fv)
  flags.DEFINE_list("parts", [], "Run only these parts (default: all; devices "
                    "always runs).", flag_values=fv)
  flags.mark_flag_as_required("out", flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the check; argv without the program name (default sys.argv[1:])."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from privreid_jax import cli  # pylint: disable=g-import-not-at-top
  argv = list(sys.argv[1:] if argv is None else argv)
  args = _define(flags.FlagValues())
  cli.parse_tool_flags(args, ["python -m experiments.device_check", *argv], __doc__)
  smoke = args.smoke
  out_dir = os.path.abspath(args.out)
  os.makedirs(os.path.join(out_dir, "logs"), exist_ok=True)
  os.makedirs(os.path.join(out_dir, "raw"), exist_ok=True)
  budget = args.budget_s or (240.0 if smoke else 480.0)
  parts = plan(smoke)
  if args.parts:
    unknown = set(args.parts) - {p["name"] for p in parts}
    if unknown:
      print(f"error: --parts: unknown {sorted(unknown)}; known: "
            f"{[p['name'] for p in parts]}", file=sys.stderr)
      return 2
    parts = [p for p in parts if p["name"] in args.parts or p["kind"] == "devices"]
  t_start = time.perf_counter()
  deadline = t_start + budget
  env_base = dict(os.environ)
  platform = "cpu" if smoke else None
  results = []
  for i, part in enumerate(parts):
    left = deadline - time.perf_counter() - _RESERVE_S * (len(parts) - i - 1)
    timeout = min(float(part["timeout"]), left)
    if timeout < 10:
      results.append({"part": part["name"], "kind": part["kind"],
                      "status": "skipped", "seconds": 0.0, "rows": [],
                      "error": f"out of the {budget:.0f} s budget"})
      print(f"[device_check] {part['name']}: skipped (out of time)", flush=True)
      continue
    print(f"[device_check] {part['name']} (timeout {timeout:.0f} s) ...", flush=True)
    res = run_part(part, out_dir, env_base, platform, smoke, timeout,
                   args.peak_tflops)
    if part["kind"] == "devices" and res.get("info"):
      platform = res["info"]["platform"]
    print(f"[device_check] {part['name']}: {res['status']} in {res['seconds']:.0f} s"
          + (f": {res['error']}" if res.get("error") else ""), flush=True)
    results.append(res)
  meta = {"smoke": smoke, "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
          "platform": platform, "peak_tflops": args.peak_tflops or None,
          "budget_s": budget, "wall_s": time.perf_counter() - t_start,
          "python": sys.executable, "cpu_count": os.cpu_count(),
          "load_average": list(os.getloadavg()),
          "argv": sys.argv}
  with open(os.path.join(out_dir, "device_check.json"), "w") as f:
    json.dump(jsonable({**meta, "parts": results}), f, indent=1)
  table = markdown(results, meta)
  with open(os.path.join(out_dir, "device_check.md"), "w") as f:
    f.write(table)
  print()
  print(table)
  print(f"wrote {out_dir}/device_check.json, device_check.md and logs/")
  return 0


if __name__ == "__main__":
  sys.exit(main())
