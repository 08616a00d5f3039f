"""experiments/device_check.py: the smoke run end to end, its timeouts and its parsers
(experiments/device_check_report.py)."""

import json
import os
import subprocess
import sys

from experiments import device_check
from experiments import device_check_report

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STATUSES = {"ok", "failed", "timeout", "skipped"}


def test_smoke_writes_every_part_with_a_status(tmp_path):
  out = tmp_path / "dc"
  # Generous: the smoke takes ~2 minutes on the loaded 2-core CPU.
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.device_check", f"--out={out}", "--smoke",
       "--budget_s=500", "--peak_tflops=1"],
      cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  data = json.loads((out / "device_check.json").read_text())
  names = [p["name"] for p in device_check.plan(smoke=True)]
  assert [p["part"] for p in data["parts"]] == names
  for part in data["parts"]:
    assert part["status"] in STATUSES, part
    if part["status"] != "ok":
      assert part["error"], part
  by_name = {p["part"]: p for p in data["parts"]}
  assert by_name["devices"]["status"] == "ok"
  assert data["platform"] == "cpu"
  assert by_name["devices"]["info"]["devices"][0]["platform"] == "cpu"
  if by_name["train_baseline_b8"]["status"] == "ok":
    rows = by_name["train_baseline_b8"]["rows"]
    assert len(rows) == 2 and all(r["img_s"] > 0 for r in rows)
    assert all(r["mfu"] is not None for r in rows)   # --peak_tflops given
  table = (out / "device_check.md").read_text()
  assert "| part | setting | status | img/s | step ms | compile s |" in table
  for name in names:
    assert f"| {name} |" in table
  assert "| part | setting |" in proc.stdout
  assert (out / "logs" / "tests.log").is_file()


def test_plan_covers_the_device_parts():
  parts = device_check.plan(smoke=False, cpu_count=8)
  assert [p["name"] for p in parts] == [
      "devices", "tests", "train_baseline_b64", "train_anon", "train_dual", "eval",
      "input", "train_baseline_b128"]
  by_name = {p["name"]: p for p in parts}
  assert by_name["tests"]["files"] == ["tests/test_sharding.py", "tests/test_bf16.py",
                                       "tests/test_no_recompile.py"]
  cmd = by_name["tests"]["cmd"]
  assert cmd[cmd.index("-n") + 1] == "0"   # one pytest process on the device
  assert "--dtype=float32,bfloat16" in by_name["train_baseline_b128"]["cmd"]
  assert "--extra_configs=configs/anon_market.py" in by_name["train_anon"]["cmd"]
  assert "--extra_configs=configs/dual_market.py" in by_name["train_dual"]["cmd"]
  assert "--workers=0,2,8" in by_name["input"]["cmd"]
  assert not any(a.startswith("--scale") for a in by_name["eval"]["cmd"])  # MSMT17 size


def test_env_sets_the_detected_platform_for_tests_and_eval():
  base = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1", "JAX_COMPILATION_CACHE_DIR": "/x"}
  tests = device_check._env(base, "cuda", "tests", smoke=False)
  assert tests["JAX_PLATFORMS"] == "cuda"
  ev = device_check._env(base, "cuda", "eval", smoke=False)
  assert ev["JAX_PLATFORMS"] == "cuda"
  assert "JAX_DISABLE_MOST_OPTIMIZATIONS" not in ev      # measured, optimised
  assert "JAX_COMPILATION_CACHE_DIR" not in ev           # compile time not cached
  assert device_check._env(base, "cuda", "input", smoke=False)["JAX_PLATFORMS"] == "cpu"
  assert "JAX_PLATFORMS" not in device_check._env({}, None, "devices", smoke=False)
  assert device_check._env({}, None, "train", smoke=True)["JAX_PLATFORMS"] == "cpu"


def test_parsers():
  assert device_check_report.parse_tests("..F\n1 failed, 6 passed in 12.3s\n") == {
      "passed": 6, "failed": 1, "error": 0, "skipped": 0}
  assert device_check_report.parse_tests("= 2 passed, 1 error in 3s =")["error"] == 1
  assert device_check_report.mfu(100.0, 100.0, 1.0) == 1.0      # 100 GFLOP in 0.1 s of 1 TFLOP/s
  assert device_check_report.mfu(float("nan"), 100.0, 1.0) is None
  assert device_check_report.mfu(100.0, 100.0, 0.0) is None
  rows = device_check_report.parse_train(
      "  round 0: baseline/resnet50/auto b64: 128.00 img/s (0 page faults, 0.00 s kernel "
      "time per step, 1.98 cores busy)\n",
      "/nonexistent.json", 312.0)
  assert rows[0]["setting"] == "baseline/resnet50/auto b64"
  assert rows[0]["step_ms"] == 500.0
  inp = device_check_report.parse_input(
      "145 training images ...; output 32x16, batch 8, 2 CPUs\n"
      "workers first batch s  ms/batch    img/s        img/s per run\n"
      "      0          0.02       3.9   2037.9                 2038\n"
      "      2          3.95       2.5   3155.4                 3155\n")
  assert [r["setting"] for r in inp] == ["workers=0 32x16 b8", "workers=2 32x16 b8"]
  assert inp[1]["img_s"] == 3155.4
  ev = device_check_report.parse_eval(
      "data: 117 queries x 822 gallery x 256-d, 31 ids\n"
      "evaluate_features (all 117 queries, chunk 256, incl. jit compile): 0.5 s, peak "
      "RSS +0.05 GiB; Rank-1 0.4701 mAP 0.2050 mINP 0.0458 (117 valid queries)\n"
      "  torchreid loop        0.1 s   peak RSS +0.00 GiB\n")
  assert ev[0]["setting"] == "117 q x 822 g x 256-d" and ev[0]["img_s"] == 234.0
  assert device_check_report.error_line(
      "Traceback (most recent call last):\n  x\nValueError: boom\n\n") == "ValueError: boom"


def test_a_failing_or_hanging_part_is_recorded(tmp_path):
  (tmp_path / "logs").mkdir()
  (tmp_path / "raw").mkdir()
  part = {"name": "eval", "kind": "eval", "timeout": 60,
          "cmd": [sys.executable, "-c", "raise ValueError('boom')"]}
  res = device_check.run_part(part, str(tmp_path), dict(os.environ), "cpu", True, 60, 0)
  assert res["status"] == "failed" and res["error"] == "ValueError: boom"
  hang = {**part, "cmd": [sys.executable, "-c", "import time; print('x'); time.sleep(60)"]}
  res = device_check.run_part(hang, str(tmp_path), dict(os.environ), "cpu", True, 2, 0)
  assert res["status"] == "timeout" and res["seconds"] < 30
  assert res["error"].startswith("timeout after 2 s")
  table = device_check_report.markdown([res], {"smoke": True, "when": "now",
                                               "platform": "cpu", "peak_tflops": None,
                                               "wall_s": 1.0})
  assert "| eval |  | timeout |" in table
