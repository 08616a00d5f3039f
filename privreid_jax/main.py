"""Entry point: `python -m privreid_jax.main --config=configs/synthetic.py --workdir=DIR`.

Intentionally kept short: flags, the config check, then `trainer.run` (or the
method's `driver`, for a method that runs several trainer runs).

Every user error ends the process with one line on stderr (`error: ...`) and
no traceback: exit code 2 for a command line that cannot run (bad flag,
unknown config key with a "did you mean", bad value, missing config file),
1 for an error met while running (dataset, files, permissions, workdir in use,
resume with another config, a loss or evaluation turning NaN). SIGINT and
SIGTERM save a checkpoint and exit with 130 and 143. Anything else is an
internal error and keeps its traceback.
"""


from privreid_jax import host_memory

# Before JAX, NumPy or any thread starts: reuse freed host memory (~1.4x faster
# CPU steps; see host_memory.py).
host_memory.keep_freed_memory()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from privreid_jax import cli, errors, interrupts  # noqa: E402
# pylint: enable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py[:variant]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and logs go.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-host TPU/GPU).")
flags.mark_flags_as_required(["config", "workdir"])


def _run() -> dict:
  import jax
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  from privreid_jax import config_checks, trainer
  from privreid_jax.methods import base as methods_base
  config = _CONFIG.value
  config_checks.check(config)        # a ConfigError: main's one line, exit 2
  logging.set_verbosity(logging.INFO)
  # A method may drive several trainer runs itself (method A's progressive stages).
  run = methods_base.load(config.method).driver or trainer.run
  return run(config, _WORKDIR.value).metrics


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}", cli.USAGE_EXIT)
  try:
    with interrupts.handled():
      results = _run()
  except KeyboardInterrupt as e:
    signum = getattr(e, "signum", 2)
    message = e.message() if isinstance(e, interrupts.Interrupted) else "interrupted"
    cli.fail(message, 128 + signum)
  except errors.ConfigError as e:   # config_checks, or a value found wrong as the run starts
    cli.fail(errors.describe(e), cli.USAGE_EXIT)
  except Exception as e:  # pylint: disable=broad-except
    if not errors.is_user_error(e):
      raise
    cli.fail(errors.describe(e))
  for setting, metrics in results.items():
    print(f"{setting}: " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
