"""The sweep runner: tiny runs in subprocesses, skip when finished, resume, shards, errors.

One module-scoped sweep of two tiny runs (`configs/synthetic.py:tiny`, 2 steps)
is trained once and shared; the other tests need no training.
"""

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import types

import pytest

from experiments import ablate, ablate_status, ablate_sweep

TINY = "configs/synthetic.py:tiny"


def write_sweep(path, runs) -> str:
  path.write_text(f"def get_sweep(arg=None):\n  return {runs!r}\n")
  return str(path)


def run_main(args):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = ablate.main(args)
  return code, out.getvalue(), err.getvalue()


def eval_rows(workdir):
  with open(os.path.join(workdir, ablate_status.EVAL_FILE)) as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("sweep")
  common = {"data.root": str(tmp / "data"), "optim.epochs": 2, "optim.steps_per_epoch": 1}
  runs = [{"name": f"seed{s}", "config": TINY, "overrides": {**common, "seed": s}}
          for s in (0, 1)]
  sweep = write_sweep(tmp / "sweep.py", runs)
  root = str(tmp / "root")
  code, out, err = run_main(["--sweep", sweep, "--root", root])
  return types.SimpleNamespace(root=root, sweep=sweep, code=code, out=out, err=err)


def test_sweep_trains_each_run_in_its_own_workdir(swept):
  assert swept.code == 0, swept.out + swept.err
  lines = swept.out.splitlines()
  for k, seed in enumerate((0, 1), 1):
    workdir = os.path.join(swept.root, f"seed{seed}")
    status = ablate_status.read_status(workdir)
    assert status["status"] == "done" and status["returncode"] == 0
    assert status["attempts"] == 1 and status["wall_time_s"] > 0 and status["host"]
    assert status["overrides"]["seed"] == seed
    assert status["resolved_config"]["seed"] == seed        # what the subprocess saw
    assert status["resolved_config"]["optim"]["epochs"] == 2
    assert status["code_versions"] == [ablate.code_version()]   # the code that trained
    step, meta = ablate_status.latest_checkpoint(workdir)
    assert (step, meta["epoch"], meta["config"]["seed"]) == (2, 2, seed)
    assert [r["step"] for r in eval_rows(workdir)] == [1, 2]
    line = next(ln for ln in lines if ln.startswith(f"[{k}/2] seed{seed}:"))
    assert "training ... done in" in line and "O->O R1" in line
  assert "2 trained, 0 skipped, 0 failed" in swept.out


def test_rerun_skips_finished_runs_without_training(swept, monkeypatch):
  def no_training(*args, **kwargs):
    raise AssertionError(f"a finished run was started again: {args}")

  before = {}
  for name in ("seed0", "seed1"):
    workdir = os.path.join(swept.root, name)
    before[name] = (open(os.path.join(workdir, ablate_status.RUN_FILE)).read(),
                    os.path.getsize(os.path.join(workdir, ablate_status.LOG_FILE)))
  monkeypatch.setattr(subprocess, "Popen", no_training)
  code, out, err = run_main(["--sweep", swept.sweep, "--root", swept.root])
  assert code == 0, err
  assert "[1/2] seed0: skipped" in out and "[2/2] seed1: skipped" in out
  assert "0 trained, 2 skipped, 0 failed" in out
  for name, (status, log_size) in before.items():
    workdir = os.path.join(swept.root, name)
    assert open(os.path.join(workdir, ablate_status.RUN_FILE)).read() == status
    assert os.path.getsize(os.path.join(workdir, ablate_status.LOG_FILE)) == log_size


def test_interrupted_run_resumes_from_its_checkpoint(swept, tmp_path):
  """A run left 'running' with only its step-1 checkpoint trains step 2 only."""
  root = tmp_path / "root"
  workdir = root / "seed0"
  shutil.copytree(os.path.join(swept.root, "seed0"), workdir)
  shutil.rmtree(workdir / "checkpoints" / "2")          # killed before the last save
  rows = [r for r in eval_rows(str(workdir)) if r["step"] == 1]
  (workdir / ablate_status.EVAL_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
  status = ablate_status.read_status(str(workdir))
  status["status"] = "running"
  ablate_status.write_status(str(workdir), status)

  code, out, err = run_main(["--sweep", swept.sweep, "--root", str(root), "--only", "seed0",
                             "--compile_cache", os.path.join(swept.root, ".jax_cache")])
  assert code == 0, out + err
  assert "[1/1] seed0: resuming from step 1 ... done" in out
  assert ablate_status.latest_checkpoint(str(workdir))[0] == 2
  # Step 1 was not evaluated again: the trainer resumed rather than restarted.
  assert [r["step"] for r in eval_rows(str(workdir))] == [1, 2]
  log = (workdir / ablate_status.LOG_FILE).read_text()
  assert "resumed from" in log and "attempt 2" in log
  status = ablate_status.read_status(str(workdir))
  assert status["status"] == "done" and status["attempts"] == 2
  assert not (root / "seed1").exists()                  # --only


def test_failed_run_is_reported_and_the_sweep_goes_on(tmp_path, monkeypatch):
  runs = [{"name": n, "config": TINY} for n in ("bad", "good")]
  sweep = write_sweep(tmp_path / "sweep.py", runs)
  scripts = {"bad": "import sys; print('error: the data is gone'); sys.exit(3)",
             "good": "print('fine')"}
  monkeypatch.setattr(ablate_sweep.Run, "command",
                      lambda self, root: [sys.executable, "-c", scripts[self.name]])
  root = tmp_path / "root"
  code, out, _ = run_main(["--sweep", sweep, "--root", str(root)])
  assert code == 1
  assert "[1/2] bad: training ... FAILED (exit 3)" in out
  assert "error: the data is gone" in out and str(root / "bad" / ablate_status.LOG_FILE) in out
  assert "1 trained, 0 skipped, 1 failed" in out
  bad, good = (ablate_status.read_status(str(root / n)) for n in ("bad", "good"))
  assert (bad["status"], bad["returncode"]) == ("failed", 3)
  assert good["status"] == "done"
  # A failed run is not finished: the next sweep starts it again.
  code, out, _ = run_main(["--sweep", sweep, "--root", str(root)])
  assert "[1/2] bad: training" in out
  assert ablate_status.read_status(str(root / "bad"))["attempts"] == 2
  # "good" exited 0 but wrote no checkpoint at the final epoch: not skipped either.
  assert "[2/2] good: training" in out


def test_shard_picks_every_nth_run_and_dry_run_writes_nothing(tmp_path):
  runs = [{"name": f"r{i}", "config": TINY, "overrides": {"seed": i}} for i in range(5)]
  sweep = write_sweep(tmp_path / "sweep.py", runs)
  root = tmp_path / "root"
  code, out, _ = run_main(["--sweep", sweep, "--root", str(root), "--shard", "1/2",
                           "--dry_run"])
  assert code == 0
  picked = [ln.split("]")[1].split(":")[0].strip() for ln in out.splitlines()
            if ln.startswith("[")]
  assert picked == ["r1", "r3"]
  assert "--config.seed=3" in out and f"--workdir={root / 'r3'}" in out
  assert not root.exists()
  code, out, _ = run_main(["--sweep", sweep, "--root", str(root), "--shard", "0/2",
                           "--only", "r2,r3", "--dry_run"])
  assert [ln for ln in out.splitlines() if ln.startswith("[")] == ["[1/1] r2: would run"]
  code, _, err = run_main(["--sweep", sweep, "--root", str(root), "--shard", "2/2"])
  assert code == 2 and "--shard '2/2'" in err


def test_bad_override_key_fails_naming_the_key(tmp_path):
  runs = [{"name": "ok", "config": TINY},
          {"name": "typo", "config": TINY, "overrides": {"optim.epoch": 3}}]
  sweep = write_sweep(tmp_path / "sweep.py", runs)
  root = tmp_path / "root"
  code, out, err = run_main(["--sweep", sweep, "--root", str(root)])
  assert code == 2
  assert "run 'typo'" in err and "unknown config key 'optim.epoch'" in err
  assert "did you mean 'optim.epochs'" in err
  assert not root.exists() and not out                 # nothing ran, not even 'ok'


@pytest.mark.parametrize("overrides, expected", [
    ({"optim.epochs": "3"}, "override optim.epochs='3' (str)"),
    ({"log.tensorboard": 1}, "override log.tensorboard=1 (int)"),
    ({"optim": 3}, "'optim' is a section"),
    ({"nosuch.key": 3}, "unknown config key 'nosuch.key'"),
])
def test_override_type_errors_name_the_key(tmp_path, overrides, expected):
  with pytest.raises(ablate_sweep.SweepError, match="run 'x'") as e:
    ablate_sweep.resolve({"name": "x", "config": TINY, "overrides": overrides}, 0,
                         str(tmp_path / "sweep.py"))
  assert expected in str(e.value)


def test_overrides_reach_the_config_as_main_parses_them(tmp_path):
  run = ablate_sweep.resolve(
      {"name": "x", "config": TINY,
       "overrides": {"optim.milestones": [1, 3], "log.tensorboard": False, "optim.lr": 1,
                     "model.pooling": "gem", "data.mean": (0.5, 0.5, 0.5)}},
      0, str(tmp_path / "sweep.py"), extra=ablate_sweep.parse_set(["seed=7", "data.root=/d/x"]))
  c = run.resolved
  assert c.optim.milestones == (1, 3) and c.log.tensorboard is False
  assert c.optim.lr == 1.0 and isinstance(c.optim.lr, float)
  assert (c.model.pooling, c.data.mean, c.seed, c.data.root) == ("gem", (0.5,) * 3, 7, "/d/x")
  assert c.optim.epochs == 2                            # the tiny variant was loaded
  assert run.config_file.endswith("configs/synthetic.py:tiny")
  assert os.path.isabs(run.config_file)
  assert "--config.log.tensorboard=false" in run.flags


def test_root_placeholder_in_overrides_becomes_the_sweep_root(tmp_path):
  raw = {"name": "x", "config": TINY, "overrides": {"data.root": "{root}/data"}}
  run = ablate_sweep.resolve(raw, 0, str(tmp_path / "sweep.py"), root="/sweeps/a")
  assert run.resolved.data.root == "/sweeps/a/data"
  assert "--config.data.root=/sweeps/a/data" in run.flags
  assert raw["overrides"]["data.root"] == "{root}/data"   # the sweep's dict is untouched
  with pytest.raises(ablate_sweep.SweepError, match="data.root=.*uses {root}, but no root"):
    ablate_sweep.resolve(raw, 0, str(tmp_path / "sweep.py"))


def test_run_folder_written_for_other_overrides_is_an_error(tmp_path):
  sweep = write_sweep(tmp_path / "sweep.py",
                      [{"name": "a", "config": TINY, "overrides": {"seed": 2}}])
  ablate_status.write_status(str(tmp_path / "root" / "a"),
                             {"config": TINY, "overrides": {"seed": 1}, "status": "done"})
  code, _, err = run_main(["--sweep", sweep, "--root", str(tmp_path / "root")])
  assert code == 2 and "run 'a'" in err and "rename the run or delete" in err


def test_sweep_file_errors_are_one_line(tmp_path):
  code, _, err = run_main(["--sweep", str(tmp_path / "missing.py"), "--root", str(tmp_path)])
  assert code == 2 and "no file" in err and "missing.py" in err
  dup = write_sweep(tmp_path / "dup.py", [{"name": "a", "config": TINY}] * 2)
  code, _, err = run_main(["--sweep", dup, "--root", str(tmp_path)])
  assert code == 2 and "two runs are named 'a'" in err
  bad = write_sweep(tmp_path / "bad.py", [{"name": "a", "config": "configs/nope.py"}])
  code, _, err = run_main(["--sweep", bad, "--root", str(tmp_path)])
  assert code == 2 and "config file 'configs/nope.py' not found" in err
  extra = write_sweep(tmp_path / "extra.py", [{"name": "a", "config": TINY, "seeds": 3}])
  code, _, err = run_main(["--sweep", extra, "--root", str(tmp_path)])
  assert code == 2 and "unknown key(s) ['seeds']" in err


def test_misspelt_flag_is_one_line_with_exit_2(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    ablate.main(["--sweep", str(tmp_path / "s.py"), "--root", str(tmp_path), "--dry-run"])
  err = capsys.readouterr().err
  assert e.value.code == 2 and "dry-run" in err and err.count("\n") == 1, err


def test_baseline_synthetic_sweep_resolves():
  raw = ablate_sweep.load_sweep(
      os.path.join(ablate_sweep.REPO, "experiments/sweeps/baseline_synthetic.py") + ":tiny")
  runs = [ablate_sweep.resolve(r, i, "baseline_synthetic.py") for i, r in enumerate(raw)]
  # bot, bot_128x64 (the earlier read size) and bot_e12 (the shorter schedule) x 3 seeds
  # + 5 variants with seed 0, then the soft-margin and AGW triplets with seeds 1 and 2
  assert len({r.name for r in runs}) == len(runs) == 18
  assert [r.name for r in runs][14:] == ["soft_margin_s1", "wrt_s1", "soft_margin_s2",
                                         "wrt_s2"]
  assert [(r.resolved.loss.triplet, r.resolved.seed) for r in runs[14:]] == [
      ("soft_margin", 1), ("weighted", 1), ("soft_margin", 2), ("weighted", 2)]
  triplets = {r.resolved.loss.triplet for r in runs}
  assert triplets == {"batch_hard", "soft_margin", "weighted", "none"}
  assert [r.resolved.seed for r in runs if r.name.startswith("bot_")] == [0, 1, 2] * 3
  assert all(r.resolved.optim.epochs == 2 for r in runs)     # tiny keeps its own schedule
  full = ablate_sweep.load_sweep(
      os.path.join(ablate_sweep.REPO, "experiments/sweeps/baseline_synthetic.py"))
  full = {r["name"]: ablate_sweep.resolve(r, i, "baseline_synthetic.py").resolved
          for i, r in enumerate(full)}
  for seed in (0, 1, 2):
    now, short = full[f"bot_s{seed}"].optim, full[f"bot_e12_s{seed}"].optim
    assert (now.epochs, now.lr) != (short.epochs, short.lr)
    assert (short.epochs, short.lr, tuple(short.milestones)) == (12, 1e-3, (8, 10))
    # the comparison rows keep the earlier read size; the headline reads the config's
    big, headline = full[f"bot_128x64_s{seed}"], full[f"bot_s{seed}"]
    for run in (big, full[f"bot_e12_s{seed}"]):
      assert (run.data.height, run.data.width, run.data.pad) == (128, 64, 5)
    assert (headline.data.height, headline.data.width) != (128, 64)
    assert big.optim == headline.optim and big.model == headline.model
  assert all(r.resolved.data.val_fraction == 0.2 and r.resolved.eval.every_epochs == 0
             and r.resolved.data.synthetic.test_seed == 1 for r in runs)


def test_code_version_names_the_checkout_and_says_when_it_is_changed(tmp_path):
  if subprocess.run(["git", "--version"], capture_output=True).returncode != 0:
    pytest.skip("git not installed")
  assert ablate.code_version(str(tmp_path)) == ""          # not a checkout
  repo = tmp_path / "repo"
  repo.mkdir()
  git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True,
                                  capture_output=True, text=True).stdout.strip()
  git("init", "-q")
  (repo / "f.py").write_text("x = 1\n")
  git("add", "f.py")
  git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
  head = git("rev-parse", "HEAD")
  assert ablate.code_version(str(repo)) == head
  (repo / "f.py").write_text("x = 2\n")
  assert ablate.code_version(str(repo)) == head + "+dirty"


def test_sigterm_to_the_runner_reaches_the_run_and_marks_it_interrupted(tmp_path, monkeypatch):
  """`kill RUNNER` (SIGTERM, not the terminal's Ctrl-C) must not leave the run training
  on its own, unsupervised, with run.json saying running."""
  sweep = write_sweep(tmp_path / "sweep.py", [{"name": "r", "config": TINY}])
  mark = tmp_path / "child_got"
  # The run: on SIGTERM it notes it and exits as main does (128 + 15); it signals
  # the runner itself, after installing its handler, so no timing is involved.
  script = ("import os, signal, sys, time\n"
            "def on_term(signum, frame):\n"
            f"  open({str(mark)!r}, 'w').write(str(signum))\n"
            "  sys.exit(143)\n"
            "signal.signal(signal.SIGTERM, on_term)\n"
            "os.kill(os.getppid(), signal.SIGTERM)\n"
            "time.sleep(60)\n")
  monkeypatch.setattr(ablate_sweep.Run, "command",
                      lambda self, root: [sys.executable, "-c", script])
  root = tmp_path / "root"

  def unhandled(signum, frame):   # what a runner without its own handler would meet
    raise AssertionError("the runner does not handle SIGTERM")

  previous = signal.signal(signal.SIGTERM, unhandled)   # not pytest's death if it fails
  try:
    code, out, _ = run_main(["--sweep", sweep, "--root", str(root)])
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert code == 130 and "interrupted; rerun the same command to resume" in out
  assert mark.read_text() == "15"                       # passed on to the run
  status = ablate_status.read_status(str(root / "r"))
  assert (status["status"], status["returncode"]) == ("interrupted", 143)
  assert status["last_attempt_s"] < 30                  # not the child's 60 s sleep


SLEEPER = "import time; print('up', flush=True); time.sleep(60)"


def test_a_run_still_training_on_this_host_is_left_alone(tmp_path, monkeypatch):
  sweep = write_sweep(tmp_path / "sweep.py", [{"name": "r", "config": TINY}])
  root = tmp_path / "root"
  workdir = root / "r"
  workdir.mkdir(parents=True)
  same = {"config": TINY, "overrides": {}}   # written for this run
  # An orphaned trainer of this run (its runner was killed): still alive.
  orphan = subprocess.Popen([sys.executable, "-c", SLEEPER, f"--workdir={workdir}"],
                            stdout=subprocess.PIPE)
  # Until the child has exec'd, /proc shows pytest's command line, not this one.
  assert orphan.stdout.readline() == b"up\n"
  try:
    ablate_status.write_status(str(workdir), {**same, "status": "running",
                                              "host": ablate_status.socket.gethostname(),
                                              "pid": 999999999, "child_pid": orphan.pid})
    started = []
    monkeypatch.setattr(ablate, "execute", lambda *a, **k: started.append(a) or ("done", "ok"))
    code, out, _ = run_main(["--sweep", sweep, "--root", str(root)])
    assert code == 1 and not started
    assert f"[1/1] r: busy: pid {orphan.pid} on this host is still training it" in out
    assert "0 trained, 0 skipped, 0 failed, 1 busy" in out
  finally:
    orphan.kill()
    orphan.communicate()
  # Once it is gone (or when the pid is another program's) the run resumes.
  code, out, _ = run_main(["--sweep", sweep, "--root", str(root)])
  assert code == 0 and started and "[1/1] r: training ... ok" in out
  sleeper = subprocess.Popen([sys.executable, "-c", SLEEPER], stdout=subprocess.PIPE)
  assert sleeper.stdout.readline() == b"up\n"
  try:
    ablate_status.write_status(str(workdir), {**same, "status": "running",
                                              "host": ablate_status.socket.gethostname(),
                                              "child_pid": sleeper.pid})
    code, out, _ = run_main(["--sweep", sweep, "--root", str(root)])
    assert code == 0 and len(started) == 2
  finally:
    sleeper.kill()
    sleeper.communicate()
