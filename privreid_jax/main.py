"""Entry point: `python -m privreid_jax.main --config=configs/synthetic.py --workdir=DIR`.

Intentionally kept short: flags only, then `trainer.run` (or the method's
`driver`, for a method that runs several trainer runs).
"""

import sys

from privreid_jax import host_memory

# Before JAX, NumPy or any thread starts: reuse freed host memory (~1.4x faster
# CPU steps; see host_memory.py).
host_memory.keep_freed_memory()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402
# pylint: enable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py[:variant]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and logs go.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-host TPU/GPU).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  from privreid_jax import trainer
  from privreid_jax.data.records import DatasetError
  from privreid_jax.methods import base as methods_base
  logging.set_verbosity(logging.INFO)
  # A method may drive several trainer runs itself (method A's progressive stages).
  run = methods_base.load(_CONFIG.value.method).driver or trainer.run
  try:
    results = run(_CONFIG.value, _WORKDIR.value).metrics
  except (DatasetError, FileNotFoundError, trainer.NonFiniteLossError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  for setting, metrics in results.items():
    print(f"{setting}: " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
  app.run(main)
