"""The data-parallel step on 8 simulated devices equals the 1-device step."""

import os
import subprocess
import sys

import numpy as np
import pytest

from privreid_jax import sharding

SCRIPT = os.path.join(os.path.dirname(__file__), "sharded_step_main.py")


def _run(devices: int, out: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  proc = subprocess.run([sys.executable, SCRIPT, out], env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return dict(np.load(out))


def test_eight_devices_match_one_device(tmp_path):
  one = _run(1, str(tmp_path / "one.npz"))
  eight = _run(8, str(tmp_path / "eight.npz"))
  assert int(one["devices"]) == 1 and int(eight["devices"]) == 8
  assert np.all(np.isfinite(one["losses"]))
  assert one["losses"][1] != one["losses"][0]      # the step did update the model
  np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(eight["params"], one["params"], rtol=1e-4, atol=1e-6)


def test_batch_size_must_divide_device_count(monkeypatch):
  monkeypatch.setattr(sharding.jax, "device_count", lambda: 8)
  with pytest.raises(ValueError, match="data.batch_size=12 must be divisible by .* 8"):
    sharding.check_batch_size(12)
  sharding.check_batch_size(16)
