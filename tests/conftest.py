"""Test set-up shared by the whole suite."""

import os

# Tests run on the host CPU; simulated multi-device runs set XLA_FLAGS in a subprocess.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import flags  # noqa: E402

# grain's multiprocessing reads absl flags; outside absl.app.run they are unparsed.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()
