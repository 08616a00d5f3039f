"""SIGINT and SIGTERM as one exception, so a preempted run saves like a Ctrl-C.

A preemptible TPU VM (and most schedulers) sends SIGTERM before killing a
process; Python's default action ends it at once, saving nothing and leaving
its grain worker processes behind. `handled()` turns both signals into
`Interrupted` (a KeyboardInterrupt), raised in the main thread, so `finally`
blocks run, the trainer saves a checkpoint and the workers are closed.

Code that must not be cut in half (a checkpoint save, a donated train step)
runs under `deferred()`: a signal arriving there is held and raised when the
block ends. A second signal while the first is being handled (e.g. during the
save) is logged and ignored; a third ends the process the default way.
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
  """SIGINT or SIGTERM. `exit_code` is the shell's 128 + signal number;
  `detail` (set by the trainer) says what was saved."""

  def __init__(self, signum: int = signal.SIGINT, detail: str | None = None):
    super().__init__(signal.Signals(signum).name)
    self.signum = int(signum)
    self.detail = detail

  @property
  def signal_name(self) -> str:
    return signal.Signals(self.signum).name

  @property
  def exit_code(self) -> int:
    return 128 + self.signum

  def message(self) -> str:
    text = f"interrupted by {self.signal_name}"
    return f"{text}: {self.detail}" if self.detail else text


class _State:
  """Signal handlers run in the main thread, the only one that installs them."""

  def __init__(self):
    self.depth = 0           # nesting of handled()
    self.deferring = 0       # nesting of deferred()
    self.pending: int | None = None
    self.raised = 0          # signals seen since the last one was raised


_state = _State()
_previous: dict[int, object] = {}


def _handler(signum, frame):
  del frame
  if _state.raised >= 2:                       # third signal: give up gracefully
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)
    return
  if _state.raised == 1:
    from absl import logging
    logging.warning("%s received while handling the previous one: still saving; "
                    "send it again to end at once", signal.Signals(signum).name)
    _state.raised += 1
    return
  if _state.deferring:
    _state.pending = signum
    return
  _state.raised = 1
  raise Interrupted(signum)


def _in_main_thread() -> bool:
  return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def handled():
  """Within the block SIGINT and SIGTERM raise `Interrupted` (main thread only;
  elsewhere a no-op). Nested uses share one installation."""
  if not _in_main_thread():
    yield
    return
  if _state.depth == 0:
    for sig in SIGNALS:
      _previous[sig] = signal.signal(sig, _handler)
    _state.raised = 0
    _state.pending = None
  _state.depth += 1
  try:
    yield
  finally:
    _state.depth -= 1
    if _state.depth == 0:
      for sig in SIGNALS:
        signal.signal(sig, _previous.pop(sig))


@contextlib.contextmanager
def deferred():
  """Holds SIGINT/SIGTERM until the block ends, then raises `Interrupted`."""
  _state.deferring += 1
  try:
    yield
  finally:
    _state.deferring -= 1
  # Not reached when the block raised: that exception ends the work anyway.
  if not _state.deferring and _state.pending is not None:
    signum, _state.pending = _state.pending, None
    _state.raised = 1
    raise Interrupted(signum)


def reset() -> None:
  """Forgets signals already handled (after the interrupted work was saved)."""
  _state.raised = 0
  _state.pending = None
