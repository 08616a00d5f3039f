"""One process per workdir: a lock file naming its holder's host and PID.

`acquire(workdir)` creates the workdir (a read-only or unwritable location
fails here, with one line) and `WORKDIR/.lock` exclusively. A second process
finds the file and stops with one line naming the holder. A stale lock, left by
a process that died without releasing it (kill -9, power loss), is taken over
when it names this host and a PID that is no longer running (or that now
belongs to a process started after the lock was written); a lock held on
another host cannot be checked from here and must be removed by hand.
"""

from __future__ import annotations

import json
import os
import socket
import time

from privreid_jax import errors

LOCK_FILE = ".lock"


class WorkdirLockedError(errors.UserError, RuntimeError):
  """Another live process holds the workdir."""


def _proc_stat(pid: int) -> tuple[str, int] | None:
  """(state, start time in clock ticks since boot) of a process (Linux), else None."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      stat = f.read()
  except OSError:
    return None
  # The command name (field 2) may hold spaces; fields after it are plain.
  fields = stat[stat.rfind(")") + 2:].split()
  try:
    return fields[0], int(fields[19])    # fields 3 and 22 of proc(5)
  except (IndexError, ValueError):
    return None


def _start_time(pid: int) -> int | None:
  stat = _proc_stat(pid)
  return None if stat is None else stat[1]


def _alive(pid: int, start_time: int | None) -> bool:
  """Is `pid` a running process (the same one, when its start time is known)?"""
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass                          # exists, owned by another user
  if not os.path.exists("/proc/self/stat"):
    return True                   # no /proc: the PID exists, assume it is the holder
  stat = _proc_stat(pid)
  if stat is None or stat[0] == "Z":
    return False                  # gone since, or dead and not yet reaped
  return start_time is None or stat[1] == start_time   # else: PID reused


def _read(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}                     # unreadable or half-written: treated as unknown


class WorkdirLock:
  """The lock of one workdir, held by this process until `release()`."""

  def __init__(self, workdir: str):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_FILE)
    self.held = False
    self.took_over: dict | None = None   # the stale holder replaced, if any

  def _create(self) -> bool:
    info = {"host": socket.gethostname(), "pid": os.getpid(),
            "start_time": _start_time(os.getpid()),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
      fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      json.dump(info, f)
    return True

  def _age(self) -> float:
    try:
      return time.time() - os.path.getmtime(self.path)
    except OSError:
      return 0.0

  def acquire(self) -> WorkdirLock:
    try:
      os.makedirs(self.workdir, exist_ok=True)
    except FileExistsError:
      raise NotADirectoryError(f"--workdir={self.workdir}: exists and is not a folder"
                               ) from None
    except PermissionError:
      raise PermissionError(f"--workdir={self.workdir}: cannot create it (permission "
                            "denied)") from None
    if not os.path.isdir(self.workdir):
      raise NotADirectoryError(f"--workdir={self.workdir}: exists and is not a folder")
    for _ in range(3):
      try:
        if self._create():
          self.held = True
          return self
      except OSError as e:
        raise PermissionError(f"--workdir={self.workdir}: not writable "
                              f"({e.strerror or e})") from None
      holder = _read(self.path)
      if holder is None:            # released between the two calls: try again
        continue
      if not holder and self._age() > 30:   # never finished writing: its writer died
        holder = {"host": socket.gethostname(), "pid": -1}
      host, pid = holder.get("host"), holder.get("pid")
      if (host == socket.gethostname() and isinstance(pid, int)
          and not _alive(pid, holder.get("start_time"))):
        try:
          os.remove(self.path)      # stale: its process is gone
        except FileNotFoundError:
          pass
        self.took_over = holder
        continue
      if pid == os.getpid() and host == socket.gethostname():
        raise WorkdirLockedError(f"--workdir={self.workdir} is already in use by this "
                                 "process (a run inside a run?)")
      where = (f"process {pid} on host {host}" if holder else "an unknown process")
      hint = ("" if host == socket.gethostname() else
              f"; if that process is gone, delete {self.path}")
      raise WorkdirLockedError(f"--workdir={self.workdir} is in use by {where} "
                               f"(since {holder.get('since', '?')}){hint}")
    raise WorkdirLockedError(f"--workdir={self.workdir}: could not take its lock "
                             f"{self.path}")

  def release(self) -> None:
    if not self.held:
      return
    self.held = False
    holder = _read(self.path)
    if holder and holder.get("pid") == os.getpid() and \
        holder.get("host") == socket.gethostname():
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass

  def __enter__(self) -> WorkdirLock:
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def acquire(workdir: str) -> WorkdirLock:
  """Creates `workdir` if needed and locks it for this process (see the module doc)."""
  return WorkdirLock(workdir).acquire()
