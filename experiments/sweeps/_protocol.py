"""The results protocol shared by the sweeps of the README's tables.

Choices are made on validation identities only; the test split is read once,
at the end of a reported run, and is a fresh one no choice has seen:

  SELECT  overrides of a selection run: 20% of the training identities held
          out as validation (`val/*` rows, `val/image_quality`), the test split
          never read (evals.reid, evals.outsider and the attackers off).
  REPORT  overrides of a reported run: the same 80% of training identities (so
          every row of a table trains on the same people), the test split read
          once at the end (eval.every_epochs=0: every evaluator that follows
          it, the test split's rows, the attackers and the validation rows,
          runs once, after the last epoch).

Both use the synthetic generator with `test_seed=TEST_SEED`: the same training
people, cameras and generator as seed 0, and test people drawn from a seed
that no earlier choice looked at (the project's earlier tables and choices
used seed 0's own test people).

The real-data sweeps (`*_real*.py`, the small public datasets under
`--set data.root=PARENT`) follow the same rules on their own splits:
SELECT_REAL holds out the same 20% of the joined training identities and reads
no test split (the per-dataset targets and the run's own rows off); REPORT_REAL
trains on the same 80% and reads every test split once, at the end.
"""

TEST_SEED = 1
VAL_FRACTION = 0.2
SEEDS = (0, 1, 2)

_DATA = {"data.synthetic.test_seed": TEST_SEED, "data.val_fraction": VAL_FRACTION}

SELECT = {**_DATA, "evals.reid.enabled": False, "evals.val.every_epochs": -1}
REPORT = {**_DATA, "eval.every_epochs": 0}   # every evaluator at the end only


SELECT_REAL = {"data.val_fraction": VAL_FRACTION, "evals.reid.enabled": False,
               "evals.targets.enabled": False, "evals.val.every_epochs": -1}
REPORT_REAL = {"data.val_fraction": VAL_FRACTION, "eval.every_epochs": 0}


def select(extra=None, *, method_a=False):
  """A selection run's overrides (+ method A's PSNR/SSIM on validation images)."""
  out = dict(SELECT)
  if method_a:
    out["evals.image_quality.split"] = "val"
  return {**out, **(extra or {})}


def report(extra=None):
  """A reported run's overrides."""
  return {**REPORT, **(extra or {})}


def select_real(extra=None):
  """A real-data selection run's overrides (no test split read)."""
  return {**SELECT_REAL, **(extra or {})}


def report_real(extra=None):
  """A real-data reported run's overrides."""
  return {**REPORT_REAL, **(extra or {})}
