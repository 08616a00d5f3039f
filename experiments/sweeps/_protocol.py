"""The results protocol shared by the sweeps of the reported tables (docs/results_*.md).

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

With `people=True` (select / report) the validation split is new people
instead (`data.val_people_seed=VAL_PEOPLE_SEED`): drawn like the test split,
whole groups of look-alikes and distractors, as hard as it, while every
training identity trains. On the synthetic data the held-out identities
rank runs unlike the test split (method B's runs: Spearman -0.09 for Rank-1,
new people 0.87; docs/results_synthetic.md, "The protocol"), so new choices use new people; the
tables already run keep the held-out protocol they were run with.

The real-data sweeps (`*_real*.py`, the small public datasets under
`--set data.root=PARENT`) follow the same rules on their own splits:
SELECT_REAL holds out the same 20% of the joined training identities and reads
no test split (the per-dataset targets and the run's own rows off); REPORT_REAL
trains on the same 80% and reads every test split once, at the end.
"""

TEST_SEED = 1
VAL_FRACTION = 0.2
SEEDS = (0, 1, 2)

VAL_PEOPLE_SEED = 7

_DATA = {"data.synthetic.test_seed": TEST_SEED, "data.val_fraction": VAL_FRACTION}
_PEOPLE = {"data.synthetic.test_seed": TEST_SEED, "data.val_people_seed": VAL_PEOPLE_SEED,
           "data.val_fraction": 0.0}   # method A's stages variant sets 0.2 itself
_SELECT = {"evals.reid.enabled": False, "evals.val.every_epochs": -1}
_REPORT = {"eval.every_epochs": 0}   # every evaluator at the end only

SELECT = {**_DATA, **_SELECT}
REPORT = {**_DATA, **_REPORT}
SELECT_PEOPLE = {**_PEOPLE, **_SELECT}
REPORT_PEOPLE = {**_PEOPLE, **_REPORT}


SELECT_REAL = {"data.val_fraction": VAL_FRACTION, "evals.reid.enabled": False,
               "evals.targets.enabled": False, "evals.val.every_epochs": -1}
REPORT_REAL = {"data.val_fraction": VAL_FRACTION, "eval.every_epochs": 0}


def select(extra=None, *, method_a=False, people=False):
  """A selection run's overrides (+ method A's PSNR/SSIM on validation images);
  people: validated on new people (SELECT_PEOPLE) instead of held-out ids."""
  out = dict(SELECT_PEOPLE if people else SELECT)
  if method_a:
    out["evals.image_quality.split"] = "val"
  return {**out, **(extra or {})}


def report(extra=None, *, people=False):
  """A reported run's overrides (people: REPORT_PEOPLE, every training id trains)."""
  return {**(REPORT_PEOPLE if people else REPORT), **(extra or {})}


def select_real(extra=None):
  """A real-data selection run's overrides (no test split read)."""
  return {**SELECT_REAL, **(extra or {})}


def report_real(extra=None):
  """A real-data reported run's overrides."""
  return {**REPORT_REAL, **(extra or {})}


def sweep_args(arg, allowed, sweep):
  """The comma-separated words of a sweep file's argument (`FILE:a,b`), each one
  of `allowed`; anything else is a one-line error naming `sweep` and the word."""
  names = [a for a in (arg or "").split(",") if a]
  unknown = [a for a in names if a not in allowed]
  if unknown:
    words = [w for w in allowed if w != "tiny"][:1] + (["tiny"] if "tiny" in allowed else [])
    raise ValueError(f"{sweep}: unknown argument {arg!r} ({unknown[0]!r} is not one of "
                     f"{', '.join(allowed)}; e.g. :{','.join(words)})")
  return names
