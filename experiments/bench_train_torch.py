"""The PyTorch side of `experiments/bench_train.py --compare-torch`: `twin_of` names a
config's PyTorch twin (torch_reference.py for the baseline, torch_anon_reference.py for
method A's learned joint step) and `torch_runner` builds its step, in this process with
--torch_process=same; with --torch_process=separate, `TorchProcess`, `RemoteStep` and
`remote_torch_runner` build and time it in a spawned child process of its own, whose body
`_torch_worker` the child unpickles from this module by name. torch and the twins are
imported only when a twin is built; importing this module puts experiments/ on sys.path
for the twins' top-level imports (torch_anon_reference imports torch_reference)."""

from __future__ import annotations

import copy
import os
import sys
import time
from typing import Callable

from experiments.bench_measure import Result, measure_round

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # torch_reference.py


def twin_of(config) -> str:
  """The PyTorch twin of a config's step, "" when there is none."""
  if config.method == "baseline":
    return "baseline"
  if config.method == "anonymization" and config.anon.mode == "learned":
    return "anonymization"
  return ""


def torch_runner(config, label: str, batch: int, optimizer: str,
                 channels_last: bool, num_classes: int
                 ) -> tuple[Result, Callable[[], None]]:
  # pylint: disable=g-import-not-at-top
  import torch_reference
  config = copy.deepcopy(config)
  twin = twin_of(config)
  if twin == "anonymization":
    import torch_anon_reference
    step = torch_anon_reference.make_step(config, num_classes, batch, channels_last)
  else:
    step = torch_reference.make_step(config, num_classes, batch, channels_last,
                                     optimizer)
  t0 = time.perf_counter()
  step()
  return Result(label, batch, "torch", twin=twin,
                compile_s=time.perf_counter() - t0), step


def _torch_worker(conn) -> None:
  """Body of the --torch_process=separate child: builds and times torch steps."""
  steps = {}
  while True:
    msg = conn.recv()
    if msg[0] == "stop":
      return
    try:
      if msg[0] == "build":
        result, steps[msg[1]] = torch_runner(*msg[2])
        conn.send(("ok", result))
      elif msg[0] == "info":
        import torch  # pylint: disable=g-import-not-at-top
        conn.send(("ok", f"torch {torch.__version__}, {torch.get_num_threads()} threads"))
      elif msg[0] == "step":
        steps[msg[1]]()
        conn.send(("ok", None))
      else:  # "round"
        conn.send(("ok", measure_round(steps[msg[1]], msg[2], msg[3])))
    except Exception as e:  # pylint: disable=broad-except
      conn.send(("error", f"{type(e).__name__}: {e}"))


class TorchProcess:
  """PyTorch in a child process of its own (--torch_process=separate).

  Neither framework then runs beside the other's threads and heap: the child
  waits on a pipe while JAX's rounds run, and times its own rounds itself.
  """

  def __init__(self):
    import multiprocessing  # pylint: disable=g-import-not-at-top
    ctx = multiprocessing.get_context("spawn")
    self._conn, child = ctx.Pipe()
    self._proc = ctx.Process(target=_torch_worker, args=(child,), daemon=True)
    self._proc.start()
    child.close()

  def call(self, *msg):
    self._conn.send(msg)
    try:
      status, payload = self._conn.recv()
    except EOFError:
      raise ValueError(f"PyTorch process exited (code {self._proc.exitcode})") from None
    if status == "error":
      raise ValueError(f"PyTorch process: {payload}")
    return payload

  def close(self) -> None:
    if self._proc.is_alive():
      self._conn.send(("stop",))
      self._proc.join(timeout=60)


class RemoteStep:
  """A step built in a TorchProcess: calling it runs one step there."""

  def __init__(self, process: TorchProcess, key: str):
    self.process, self.key = process, key

  def __call__(self) -> None:
    self.process.call("step", self.key)

  def round(self, steps: int, fresh: bool):
    """`measure_round` in the child, so faults and memory are the child's."""
    return self.process.call("round", self.key, steps, fresh)


def remote_torch_runner(process: TorchProcess, *args) -> tuple[Result, RemoteStep]:
  """`torch_runner(*args)` in `process`."""
  key = f"{args[1]}@{args[2]}"  # label@batch
  return process.call("build", key, args), RemoteStep(process, key)
