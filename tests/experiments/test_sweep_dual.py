"""The method-B sweep file: every row resolves to a valid config (checked by the runner,
no training), and the rows are the paper's ablation."""

import contextlib
import io
import os

from experiments import ablate

SWEEP = os.path.join(os.path.dirname(ablate.__file__), "sweeps", "dual_synthetic.py")


def dry_run(arg, root):
  out = io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    code = ablate.main(["--sweep", f"{SWEEP}{arg}", "--root", str(root), "--dry_run"])
  return code, out.getvalue()


def test_full_and_tiny_sweeps_resolve_with_both_attackers(tmp_path):
  code, out = dry_run("", tmp_path / "full")
  assert code == 0, out
  names = [line.split("]")[1].split(":")[0].strip() for line in out.splitlines()
           if line.startswith("[")]
  rows = ["baseline", "mosaic", "twostage", "clean", "advid", "blur", "noise", "onestage"]
  assert names == ([f"{r}_s0" for r in rows] + ["baseline_s1", "twostage_s1",
                                                "baseline_s2", "twostage_s2"])
  assert out.count("--config.evals.inversion.enabled=true") == 12
  # The results protocol: same training ids, fresh test split read at the end only.
  assert out.count("--config.data.val_fraction=0.2") == 12
  assert out.count("--config.data.synthetic.test_seed=1") == 12
  assert out.count("--config.eval.every_epochs=0") == 12
  assert "dual_synthetic.py:mosaic " in out and "dual_synthetic.py --config" in out
  code, out = dry_run(":tiny", tmp_path / "tiny")
  assert code == 0, out
  assert out.count("would run") == 3 and out.count(":baseline,tiny") == 1
  code, out = dry_run(":huge", tmp_path / "bad")
  assert code != 0 and "unknown argument 'huge'" in out
