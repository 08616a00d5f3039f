"""Test set-up shared by the whole suite."""

import os

# Tests run on the host CPU; simulated multi-device runs set XLA_FLAGS in a subprocess.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests use tiny shapes, where XLA's optimisation passes cost far more compile
# time than they save at run time. Subprocesses inherit the setting.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

from absl import flags  # noqa: E402

# grain's multiprocessing reads absl flags; outside absl.app.run they are unparsed.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()
