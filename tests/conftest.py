"""Test set-up shared by the whole suite."""

import os
import tempfile

# Tests run on the host CPU; simulated multi-device runs set XLA_FLAGS in a subprocess.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests use tiny shapes, where XLA's optimisation passes cost far more compile
# time than they save at run time. Subprocesses inherit the setting.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# Many tests build the same tiny networks in fresh processes or closures; a
# persistent compilation cache compiles each program once. Each pytest-xdist
# worker (with its subprocesses) has its own: JAX writes entries in place, so a
# worker could read another's half-written one. Workers inherit the controller's
# setting, hence the prefix test.
_CACHE = os.path.join(tempfile.gettempdir(), f"privreid_jax_test_xla_cache_{os.getuid()}")
if os.environ.get("JAX_COMPILATION_CACHE_DIR", _CACHE).startswith(_CACHE):
  _WORKER = os.environ.get("PYTEST_XDIST_WORKER")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE + (f"_{_WORKER}" if _WORKER else "")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

from absl import flags  # noqa: E402


def pytest_xdist_auto_num_workers(config):
  """`-n auto` (pyproject.toml): one worker per core, at most 4.

  Most of the suite's time is XLA compiling small programs on one thread, so two
  workers on a 2-core machine nearly halve it; each worker's own JAX computations
  use every core, so more workers than cores, or many workers on a large host (each
  holding its own compiled programs), would only contend.
  """
  del config
  return max(1, min(4, os.cpu_count() or 1))


# grain's multiprocessing reads absl flags; outside absl.app.run they are unparsed.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()
