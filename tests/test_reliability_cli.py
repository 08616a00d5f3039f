"""Issue 17 at the command line: exit codes, one-line errors, signals, kill -9.

Each case runs `python -m privreid_jax.main` (or `privreid_jax.anonymize`) in a
subprocess on `configs/synthetic.py:tiny` with its data in a temporary folder.
"""

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from PIL import Image

from privreid_jax import checkpoint, main as main_module, metric_writers, trainer
from configs import synthetic as synthetic_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "--config=configs/synthetic.py:tiny"
DUAL = "--config=configs/dual_synthetic.py:tiny"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return str(tmp_path_factory.mktemp("synth") / "data")


def _env(**extra):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.update(extra)
  return env


def run_cli(args, module="privreid_jax.main", timeout=300, **env):
  done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                        text=True, env=_env(**env), cwd=ROOT, timeout=timeout)
  return done.returncode, done.stdout, done.stderr


def assert_one_line(stderr, pattern):
  lines = stderr.strip().splitlines()
  assert "Traceback" not in stderr, stderr
  assert lines and lines[-1].startswith("error: "), stderr
  assert re.search(pattern, lines[-1]), lines[-1]
  return lines


# --- 4. every user error is one line ----------------------------------------------------


@pytest.mark.parametrize("args,pattern", [
    ([TINY, "--config.optim.lrr=1"],
     r"--config\.optim\.lrr: .* has no key 'optim\.lrr'; did you mean --config\.optim\.lr\?"),
    (["--config=configs/nope.py"], r"no such config file: configs/nope\.py"),
    (["--config=configs/synthetic.py:tinyy"], r"unknown variant 'tinyy'"),
    ([TINY, "--config.optim.lr=abc"], r"--config\.optim\.lr=abc: could not convert"),
    ([TINY, "--nope=1"], r"Unknown command line flag 'nope'"),
    ([TINY, "--config.eval.rerank=maybe"],      # was absl's tuple text
     r"^error: --config\.eval\.rerank=maybe: expected true or false, got 'maybe'$"),
])
def test_bad_command_line_is_one_line_exit_2(tmp_path, args, pattern):
  code, _, stderr = run_cli(args + [f"--workdir={tmp_path}"])
  assert code == 2
  assert len(assert_one_line(stderr, pattern)) == 1


def test_missing_workdir_flag(tmp_path):
  code, _, stderr = run_cli([TINY])
  assert code == 2 and len(assert_one_line(stderr, r"--workdir is required")) == 1


def test_empty_path_flags_are_refused_not_taken_as_the_current_folder(tmp_path):
  """`--workdir=$UNSET` trained a run into the current folder (exit 0); an empty
  --checkpoint read one from there. An empty config field keeps its meaning."""
  done = subprocess.run(
      [sys.executable, "-m", "privreid_jax.main",
       f"--config={ROOT}/configs/synthetic.py:tiny", "--config.model.pretrained=",
       "--workdir="], capture_output=True, text=True, env=_env(PYTHONPATH=ROOT),
      cwd=tmp_path, timeout=120)
  assert done.returncode == 2
  assert len(assert_one_line(done.stderr, r"^error: --workdir= is empty")) == 1
  code, _, stderr = run_cli(["--checkpoint=", f"--input={tmp_path}",
                             f"--output={tmp_path / 'o'}"], module="privreid_jax.anonymize")
  assert code == 2 and len(assert_one_line(stderr, r"^error: --checkpoint= is empty")) == 1
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args,pattern,devices", [
    ([TINY], r"config\.data\.batch_size=8: must be divisible by the number of devices "
             r"\(3\).*nearest valid values: 12", 3),
    ([TINY, "--config.data.batch_size=12"],
     r"config\.data\.eval_batch_size=16: .*nearest valid values: 15, 18", 3),
    ([TINY, "--config.data.batch_size=10"], r"nearest valid values: 8, 12", 1),
    ([TINY, "--config.data.num_instances=0"], r"config\.data\.num_instances=0", 1),
    ([TINY, "--config.model.backbone=resnet19"], r"config\.model\.backbone='resnet19'", 1),
    ([DUAL, "--config.dual.delta=1.0"], r"config\.dual\.delta=1\.0", 1),
    ([DUAL, "--config.dual.noise_draws=0"], r"config\.dual\.noise_draws=0", 1),
    ([DUAL, "--config.dual.epsilons=(0.0,)"], r"config\.dual\.epsilons: 0\.0 is not > 0", 1),
])
def test_bad_config_value_is_one_line_before_anything_runs(tmp_path, args, pattern,
                                                           devices):
  workdir = tmp_path / "w"
  code, _, stderr = run_cli(
      args + [f"--workdir={workdir}"],
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  assert code == 2
  assert len(assert_one_line(stderr, pattern)) == 1
  assert not workdir.exists()


def test_config_value_found_wrong_as_the_run_starts_exits_2(tmp_path):
  """Method A's stages in Base mode are checked by the stage driver, after
  config_checks: the same exit code 2 as a value config_checks refuses."""
  workdir = tmp_path / "w"
  code, _, stderr = run_cli(["--config=configs/anon_synthetic.py:base,mosaic,stages,tiny",
                             f"--workdir={workdir}"])
  assert code == 2
  assert_one_line(stderr, r"^error: config\.anon\.stages\.enabled needs "
                          r"config\.anon\.mode='learned', got 'base'$")
  assert checkpoint.latest_step(str(workdir)) is None


def test_unwritable_workdir_and_workdir_that_is_a_file(tmp_path, data_root):
  if os.geteuid() == 0:
    workdir = "/sys/privreid_jax_reliability_test"      # not creatable, even by root
  else:
    os.chmod(tmp_path, 0o555)
    workdir = str(tmp_path / "w")
  code, _, stderr = run_cli([TINY, f"--config.data.root={data_root}",
                             f"--workdir={workdir}"])
  assert code == 1 and len(assert_one_line(stderr, r"--workdir=.*cannot create")) == 1
  os.chmod(tmp_path, 0o755)
  (tmp_path / "file").write_text("x")
  code, _, stderr = run_cli([TINY, f"--config.data.root={data_root}",
                             f"--workdir={tmp_path / 'file'}"])
  assert code == 1 and len(assert_one_line(stderr, r"is not a folder")) == 1


@pytest.mark.parametrize("name,content,pattern", [
    ("weights", b"x", r"weights: unsupported weights format ''"),
    ("w.npz", b"not weights", r"w\.npz: not a readable \.npz file"),
    ("w.safetensors", b"not weights", r"w\.safetensors: not a readable safetensors file"),
])
def test_unreadable_pretrained_file_is_one_line(tmp_path, data_root, name, content,
                                                pattern):
  (tmp_path / name).write_bytes(content)
  code, _, stderr = run_cli([TINY, f"--config.data.root={data_root}",
                             f"--config.model.pretrained={tmp_path / name}",
                             f"--workdir={tmp_path / 'w'}"])
  assert code == 1     # the line after the run's log (the file is read at init)
  assert_one_line(stderr, pattern)


def test_main_prints_user_errors_and_keeps_internal_tracebacks(monkeypatch, capsys):
  """A config value found wrong once the run has started (a ConfigError) is a
  command line that cannot run: exit 2, as for the values config_checks finds
  (it was 1); other user errors exit 1."""
  from privreid_jax import errors
  monkeypatch.setattr(main_module, "_run", lambda: (_ for _ in ()).throw(
      errors.ConfigError("config.x=1: bad\nsecond line")))
  with pytest.raises(SystemExit) as info:
    main_module.main(["main"])
  assert info.value.code == 2
  assert capsys.readouterr().err == "error: config.x=1: bad\n"
  monkeypatch.setattr(main_module, "_run", lambda: (_ for _ in ()).throw(
      PermissionError(13, "Permission denied", "/data/x")))
  with pytest.raises(SystemExit) as info:
    main_module.main(["main"])
  assert info.value.code == 1
  assert capsys.readouterr().err == "error: /data/x: Permission denied\n"
  monkeypatch.setattr(main_module, "_run", lambda: (_ for _ in ()).throw(
      RuntimeError("a bug")))
  with pytest.raises(RuntimeError, match="a bug"):       # not swallowed: a traceback
    main_module.main(["main"])


def test_nan_at_evaluation_names_the_step(tmp_path, data_root):
  """The campaign's lr=1e10 run: it stops in one line naming the step, exit 1."""
  code, _, stderr = run_cli([TINY, f"--config.data.root={data_root}",
                             "--config.optim.lr=1e10", "--config.optim.steps_per_epoch=1",
                             "--config.optim.epochs=3", f"--workdir={tmp_path}"])
  assert code == 1
  assert_one_line(stderr, r"(NaN|nan|inf|not finite).* at step \d+")


def test_script_without_main_guard_is_told_to_add_one(tmp_path, data_root):
  """A script that trains at import time: grain's spawned data worker imports it
  again, and the run that would start there stops with the fix in its message
  (before this check: "workdir in use by process <the script's own pid>")."""
  script = tmp_path / "train_no_guard.py"
  workdir = tmp_path / "run"
  script.write_text(
      "from configs import synthetic\n"
      "from privreid_jax import trainer\n"
      "c = synthetic.get_config('tiny')\n"
      f"c.data.root = {data_root!r}\n"
      "c.data.num_workers = 1\n"
      f"trainer.run(c, {str(workdir)!r})\n")
  done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                        env=_env(PYTHONPATH=ROOT), cwd=ROOT, timeout=300)
  assert done.returncode != 0
  assert (f"{script} starts a training run when it is imported" in done.stderr
          and 'put the call under `if __name__ == "__main__":`' in done.stderr), done.stderr
  assert "in use by" not in done.stderr
  assert checkpoint.latest_step(str(workdir)) is None


# --- 1. signals: saved, one line, no process left ----------------------------------------


def _children_of(pid):
  """PIDs of every live descendant of `pid` (from /proc)."""
  kids = {}
  for name in os.listdir("/proc"):
    if name.isdigit():
      try:
        with open(f"/proc/{name}/stat") as f:
          stat = f.read()
      except OSError:
        continue
      fields = stat[stat.rfind(")") + 2:].split()
      kids.setdefault(int(fields[1]), []).append(int(name))
  out, todo = [], [pid]
  while todo:
    for kid in kids.get(todo.pop(), []):
      out.append(kid)
      todo.append(kid)
  return out


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


class Trainer:
  """A `main` subprocess whose stderr is collected line by line."""

  def __init__(self, args):
    self.proc = subprocess.Popen([sys.executable, "-m", "privreid_jax.main", *args],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=_env(), cwd=ROOT)
    self.lines = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stderr:
      self.lines.append(line.rstrip("\n"))

  def wait_for(self, pattern, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
      if any(re.search(pattern, line) for line in self.lines):
        return True
      if self.proc.poll() is not None:
        return False
      time.sleep(0.1)
    raise TimeoutError(f"no {pattern!r} in {self.lines[-5:]}")

  def finish(self, timeout=240):
    code = self.proc.wait(timeout)
    self._reader.join(10)
    return code


@pytest.mark.parametrize("sig,workers", [(signal.SIGTERM, 1), (signal.SIGINT, 0)])
def test_signal_saves_exits_in_one_line_and_leaves_no_process(tmp_path, data_root,
                                                              sig, workers):
  t = Trainer([TINY, f"--config.data.root={data_root}", "--config.optim.epochs=500",
               f"--config.data.num_workers={workers}", "--config.eval.every_epochs=0",
               "--config.checkpoint.every_epochs=1000", f"--workdir={tmp_path}"])
  try:
    assert t.wait_for(r"\] step 3: ")
    kids = _children_of(t.proc.pid)
    if workers:
      assert kids, "the grain worker should be running"
    t.proc.send_signal(sig)
    code = t.finish()
  finally:
    if t.proc.poll() is None:
      t.proc.kill()
  name = signal.Signals(sig).name
  assert code == 128 + sig
  assert "Traceback" not in "\n".join(t.lines)
  last = t.lines[-1]
  m = re.fullmatch(rf"error: interrupted by {name}: at step (\d+) of 1000: the "
                   rf"checkpoint of step \1 is in .*; run the same command again to "
                   "resume", last)
  assert m, last
  assert checkpoint.latest_step(str(tmp_path)) == int(m.group(1)) >= 3
  deadline = time.time() + 20
  while any(_alive(k) for k in kids) and time.time() < deadline:
    time.sleep(0.2)
  assert not [k for k in kids if _alive(k)], "processes outlived the trainer"
  assert not (tmp_path / ".lock").exists()


def _tiny(data_root, **optim):
  c = synthetic_config.get_config("tiny")
  c.data.root = data_root
  for k, v in optim.items():
    c.optim[k] = v
  return c


def _state_leaves(workdir):
  state, _, step = checkpoint.restore_run(workdir, workdir)
  return step, [np.asarray(x) for x in jax.tree.leaves(state)]


def test_kill_9_anywhere_then_resume_is_bit_identical(tmp_path, data_root):
  """kill -9 at a random moment (a checkpoint is written every step, so often mid-save),
  plus a save cut short and a half-written eval row left behind; the resumed run ends
  with the same parameters and the same evaluation rows, one per step."""
  config = _tiny(data_root, steps_per_epoch=1, epochs=8)
  config.checkpoint.every_epochs = 1
  config.eval.every_epochs = 2
  reference = str(tmp_path / "reference")
  trainer.run(config, reference)

  workdir = tmp_path / "killed"
  t = Trainer([TINY, f"--config.data.root={data_root}", "--config.optim.steps_per_epoch=1",
               "--config.optim.epochs=8", "--config.checkpoint.every_epochs=1",
               "--config.eval.every_epochs=2", f"--workdir={workdir}"])
  try:
    t.wait_for(r"\] step 1: ")
    time.sleep(random.Random(os.getpid()).uniform(0.0, 2.0))
    t.proc.kill()
    t.finish()
  finally:
    if t.proc.poll() is None:
      t.proc.kill()
  ckpts = workdir / "checkpoints"
  latest = checkpoint.latest_step(str(workdir)) or 0
  # What a kill in the middle of writing leaves: a temporary checkpoint folder (orbax
  # renames it when complete) and the start of an eval row.
  partial = ckpts / f"{latest + 1}.orbax-checkpoint-tmp-1234567890"
  os.makedirs(partial / "state", exist_ok=True)
  (partial / "state" / "garbage").write_bytes(b"\x00" * 10)
  with open(workdir / metric_writers.EVAL_FILE, "a") as f:
    f.write('{"step": 99, "epoch": 9')

  trainer.run(config, str(workdir))          # the dead process's lock is taken over
  assert metric_writers.read_eval_rows(str(workdir)) == \
      metric_writers.read_eval_rows(reference)
  step_ref, ref = _state_leaves(reference)
  step_res, res = _state_leaves(str(workdir))
  assert step_ref == step_res == 8
  for a, b in zip(ref, res, strict=True):
    np.testing.assert_array_equal(a, b)
  assert not partial.exists()


def _damaged_run(workdir, data_root, damage):
  """A workdir holding one checkpoint (step 4) of the tiny baseline, damaged as a
  disk that filled up or a copy cut short leaves it: the state files cut to 100
  bytes, or the run's meta not JSON."""
  from privreid_jax.methods import base as methods_base
  config = _tiny(data_root)
  method = methods_base.load(config.method)(config, num_classes=8, steps_per_epoch=2)
  state = jax.jit(method.init)(jax.random.PRNGKey(0),
                               trainer.example_batch(config.data, False))
  ckpts = checkpoint.Checkpoints.of_run(str(workdir))
  ckpts.save(4, state, {"next_batch": 4}, checkpoint.config_meta(config, step=4))
  ckpts.close()
  step = workdir / "checkpoints" / "4"
  if damage == "state":
    for r, _, ps in os.walk(step / "state"):
      for p in ps:
        if os.path.getsize(os.path.join(r, p)) > 100:
          with open(os.path.join(r, p), "r+b") as f:
            f.truncate(100)
  else:
    (step / "meta" / "metadata").write_text("{garbage")
  return str(step)


@pytest.mark.parametrize("damage", ["state", "meta"])
def test_damaged_checkpoint_is_one_line_naming_it(tmp_path, data_root, damage):
  """Resuming, anonymizing or loading from a checkpoint that cannot be read: one
  line naming the step's folder, and none of orbax's late 'Event loop is closed'
  tracebacks after it; the checkpoint is left as it was."""
  step = _damaged_run(tmp_path / "w", data_root, damage)
  before = _digest(step)
  pattern = re.escape(f"checkpoint {step} cannot be read (")
  code, _, stderr = run_cli([TINY, f"--config.data.root={data_root}",
                             f"--workdir={tmp_path / 'w'}"])
  assert code == 1 and "Event loop" not in stderr
  assert_one_line(stderr, pattern)
  images = tmp_path / "in"
  os.makedirs(images)
  Image.fromarray(np.zeros((8, 4, 3), np.uint8)).save(images / "a.png")
  code, _, stderr = run_cli([f"--checkpoint={tmp_path / 'w'}", f"--input={images}",
                             f"--output={tmp_path / 'o'}"], module="privreid_jax.anonymize")
  assert code == 1 and len(assert_one_line(stderr, pattern)) == 1
  assert stderr.startswith(f"error: --checkpoint={tmp_path / 'w'}: ")
  assert _digest(step) == before


# --- anonymize: one line, never writes into its input -------------------------------------


def _digest(folder):
  return {os.path.relpath(os.path.join(r, p), folder):
          hashlib.sha256(open(os.path.join(r, p), "rb").read()).hexdigest()
          for r, _, ps in os.walk(folder) for p in ps}


def test_anonymize_refuses_outputs_that_touch_the_input_or_cannot_be_written(tmp_path):
  images = tmp_path / "in"
  os.makedirs(images / "sub")
  for name in ("a.png", "sub/b.png"):
    Image.fromarray(np.zeros((8, 4, 3), np.uint8)).save(images / name)
  os.symlink(images / "sub", tmp_path / "link_into_input")
  (tmp_path / "a_file").write_text("x")
  before = _digest(images)
  cases = [
      (images, r"is inside \(or equal to\) --input"),
      (images / "sub" / "out", r"is inside"),
      (tmp_path / "link_into_input" / "out", r"is inside"),
      (tmp_path, r"contains --input"),
      (tmp_path / "a_file", r"is an existing file; pick a folder"),
      (tmp_path / "a_file" / "out", r"is a file, not a folder"),
  ]
  if os.geteuid() == 0:
    cases.append(("/sys/privreid_jax_reliability_test/out", r"cannot create it"))
  for output, pattern in cases:
    code, stdout, stderr = run_cli([f"--checkpoint={tmp_path / 'no_run'}",
                                    f"--input={images}", f"--output={output}"],
                                   module="privreid_jax.anonymize")
    assert code == 1, (output, stderr)
    assert len(assert_one_line(stderr, pattern)) == 1
    assert _digest(images) == before
  code, _, stderr = run_cli([f"--input={images}", f"--output={tmp_path / 'o'}"],
                            module="privreid_jax.anonymize")
  assert code == 2 and len(assert_one_line(stderr, r"--checkpoint is required")) == 1
  assert _digest(images) == before and json.dumps(before)
