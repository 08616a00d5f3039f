"""host_memory.keep_freed_memory: a freed large buffer is reused without page faults."""

import os
import subprocess
import sys
import textwrap

import pytest

from privreid_jax import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Allocates, touches and frees 256 MB with malloc (as XLA:CPU's step buffers),
# four times; prints the minor page faults of the first and of the later rounds.
PROBE = textwrap.dedent("""
    import ctypes, resource, sys
    sys.path.insert(0, sys.argv[1])
    from privreid_jax import host_memory
    print(host_memory.keep_freed_memory())
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    size = 256 << 20
    def faults():
      return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    counts = []
    for _ in range(4):
      f0 = faults()
      p = libc.malloc(size)
      ctypes.memset(p, 1, size)
      libc.free(p)
      counts.append(faults() - f0)
    print(counts[0], max(counts[1:]))
""")


def _probe(env_value: str) -> tuple[bool, int, int]:
  env = dict(os.environ, **{host_memory.ENV: env_value})
  out = subprocess.run([sys.executable, "-c", PROBE, REPO], env=env, check=True,
                       capture_output=True, text=True).stdout.split()
  return out[0] == "True", int(out[1]), int(out[2])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_kept_memory_is_reused_without_page_faults():
  applied, first, later = _probe("1")
  assert applied
  pages = (256 << 20) // os.sysconf("SC_PAGE_SIZE")
  assert first > pages // 1000       # the first round maps memory (>= 1 fault per huge page)
  assert later < max(first // 100, 50), (first, later)


def test_opt_out_applies_nothing():
  applied, _, _ = _probe("0")
  assert not applied
