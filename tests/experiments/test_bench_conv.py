"""experiments/bench_conv.py's command line: absl flags; a misspelt one is one line, exit 2."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_misspelt_flag_is_one_line_with_exit_2():
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "experiments", "bench_conv.py"), "--batchs=1"],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  err = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(err) == 1 and "batchs" in err[0], proc.stderr
