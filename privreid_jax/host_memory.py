"""Keeps freed host memory in the process instead of handing it back to the OS.

XLA:CPU allocates each step's temporary buffers (hundreds of MB for a Re-ID
train step) with malloc and frees them at the end of the step. glibc serves
allocations that large with mmap, or from per-thread arenas that it unmaps when
they empty, so every step touches fresh pages: measured on the 2-core CPU, ~72k
page faults per synthetic-baseline step and a quarter of the process's CPU time
in the kernel. `keep_freed_memory()` tells glibc (mallopt) to use one arena, no
mmap and no trimming, so the second step reuses the first step's pages; the
price is a resident set that stays at its peak (measured 1.2 -> 1.7 GB).

Call it first thing in an entry point, before JAX, NumPy or any thread starts
(glibc fixes the arena count when a second thread first allocates). Linux with
glibc only; elsewhere, and with PRIVREID_KEEP_HOST_MEMORY=0, it does nothing.

It also does nothing unless the run will use JAX's CPU backend: on a GPU/TPU the
step buffers live on the device, and a host resident set stuck at its peak would
buy nothing. That is decided without importing JAX (`uses_cpu_backend`): yes when
JAX_PLATFORMS names only "cpu"; otherwise yes only when no GPU/TPU plugin is
installed (jax_cuda12_plugin, jax_cuda13_plugin, jax_rocm*, libtpu).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pkgutil
import platform

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
ENV = "PRIVREID_KEEP_HOST_MEMORY"
# Top-level modules of JAX's accelerator plugins (pip: jax[cuda12], jax[cuda13], jax[tpu];
# ROCm plugins are named jax_rocm<version>_plugin).
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu")
ACCELERATOR_PREFIXES = ("jax_rocm",)


def _installed(name: str) -> bool:
  try:
    return importlib.util.find_spec(name) is not None
  except (ImportError, ValueError):
    return False


def accelerator_plugins() -> list[str]:
  """The JAX GPU/TPU plugins installed, found without importing them (or JAX)."""
  found = [name for name in ACCELERATOR_PLUGINS if _installed(name)]
  found += sorted({m.name for m in pkgutil.iter_modules()
                   if m.name.startswith(ACCELERATOR_PREFIXES)})
  return found


def uses_cpu_backend() -> bool:
  """Whether JAX will run on its CPU backend, decided without importing JAX."""
  platforms = {p.strip().lower() for p in os.environ.get("JAX_PLATFORMS", "").split(",")}
  platforms.discard("")
  if platforms == {"cpu"}:
    return True
  return not accelerator_plugins()


def keep_freed_memory() -> bool:
  """Sets the glibc malloc options; True when they were applied (CPU backend only)."""
  if os.environ.get(ENV, "1") == "0" or platform.system() != "Linux":
    return False
  if not uses_cpu_backend():
    return False
  if platform.libc_ver()[0] != "glibc":
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  # A trim threshold of -1 (as size_t: the maximum) disables trimming; a positive int
  # tops out at 2 GB, less than a ResNet-50 step's 4.6 GB of buffers.
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0),
              (_M_TRIM_THRESHOLD, -1), (_M_TOP_PAD, 256 << 20))
  return all(mallopt(param, value) == 1 for param, value in settings)
