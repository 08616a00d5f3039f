"""Test set-up shared by the whole suite."""

import os
import tempfile

# Tests run on the host CPU; simulated multi-device runs set XLA_FLAGS in a subprocess.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests use tiny shapes, where XLA's optimisation passes cost far more compile
# time than they save at run time. Subprocesses inherit the setting.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# Many tests build the same tiny networks in fresh processes or closures; a
# persistent compilation cache shared by the session (and its subprocesses)
# compiles each program once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"privreid_jax_test_xla_cache_{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

from absl import flags  # noqa: E402

# grain's multiprocessing reads absl flags; outside absl.app.run they are unparsed.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()
