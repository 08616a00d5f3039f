"""What bench_train.py measures of a variant, shared with bench_train_torch.py's PyTorch
child process (which times its own rounds): `Result`, one variant's measurements and its
JSON row, the process's resident-set high-water mark (VmHWM, reset through
/proc/self/clear_refs) and `measure_round`, which times a round of steps with the minor
page faults and kernel CPU time per step and the cores kept busy (getrusage of the whole
process). It imports only the standard library."""

from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from typing import Callable


@dataclasses.dataclass
class Result:
  """One variant's measurements."""
  label: str
  batch: int
  framework: str
  # The PyTorch twin this row compares with ("baseline": torch_reference.py,
  # "anonymization": torch_anon_reference.py; "": none).
  twin: str = ""
  compile_s: float = float("nan")
  flops: float = float("nan")
  xla_bytes: float = float("nan")
  rss_bytes: float = float("nan")
  times: list[list[float]] = dataclasses.field(default_factory=list)

  def median_step(self) -> float:
    return statistics.median(t for r in self.times for t in r)

  def row(self) -> dict:
    med = self.median_step()
    rounds = [self.batch / statistics.median(r) for r in self.times]
    return {"label": self.label, "framework": self.framework, "batch": self.batch,
            "compile_s": self.compile_s, "img_s": self.batch / med,
            "img_s_rounds": rounds, "step_ms": 1e3 * med,
            "gflop_per_step": self.flops / 1e9, "gflop_s": self.flops / med / 1e9,
            "xla_peak_gb": self.xla_bytes / 1e9, "rss_hwm_gb": self.rss_bytes / 1e9}


def reset_rss_peak() -> bool:
  """Resets VmHWM to the current RSS (Linux); False where unsupported."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def rss_peak_bytes() -> float:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return float(line.split()[1]) * 1024
  except OSError:
    pass
  return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def measure_round(step: Callable[[], None], steps: int, fresh: bool
                  ) -> tuple[list[float], float, float, float, float | None]:
  """Runs `steps` timed steps.

  Returns the seconds of each step, the minor page faults and kernel CPU seconds
  per step, the cores kept busy (user + kernel CPU seconds per wall second: 2.0
  is both cores of a 2-core machine all the time; getrusage of this process),
  and when `fresh` (the variant's first timed round) the resident-set peak over
  the round, else None.
  """
  if fresh:
    reset_rss_peak()
  times = []
  usage0 = resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(steps):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
  usage1 = resource.getrusage(resource.RUSAGE_SELF)
  faults = (usage1.ru_minflt - usage0.ru_minflt) / steps
  sys_s = (usage1.ru_stime - usage0.ru_stime) / steps
  cpu_s = usage1.ru_utime - usage0.ru_utime + usage1.ru_stime - usage0.ru_stime
  busy = cpu_s / max(sum(times), 1e-9)
  return times, faults, sys_s, busy, (rss_peak_bytes() if fresh else None)
