"""host_memory.keep_freed_memory: a freed large buffer is reused without page faults, on
JAX's CPU backend only."""

import importlib.machinery
import importlib.util
import os
import pkgutil
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


def _probe(env_value: str, **extra_env: str) -> tuple[bool, int, int]:
  env = dict(os.environ, **{host_memory.ENV: env_value, "JAX_PLATFORMS": "cpu"})
  env.update(extra_env)
  env = {k: v for k, v in env.items() if v}  # "" unsets
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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_an_installed_gpu_plugin_applies_nothing(tmp_path):
  # A stand-in jax_cuda12_plugin on the path, JAX_PLATFORMS unset: JAX would pick the GPU.
  (tmp_path / "jax_cuda12_plugin").mkdir()
  (tmp_path / "jax_cuda12_plugin" / "__init__.py").write_text("")
  applied, first, later = _probe("1", JAX_PLATFORMS="", PYTHONPATH=str(tmp_path))
  assert not applied
  assert later > first // 10, (first, later)   # freed memory goes back to the OS


# --------------------------------------------------- which backend, without JAX


@pytest.fixture
def plugins(monkeypatch):
  """Pretends exactly the named modules are installed (find_spec / iter_modules)."""
  installed = set()
  real_find_spec, real_iter_modules = importlib.util.find_spec, pkgutil.iter_modules

  def find_spec(name, package=None):
    if name in host_memory.ACCELERATOR_PLUGINS:
      return importlib.machinery.ModuleSpec(name, None) if name in installed else None
    return real_find_spec(name, package)

  def iter_modules(path=None, prefix=""):
    yield from (m for m in real_iter_modules(path, prefix)
                if not m.name.startswith(host_memory.ACCELERATOR_PREFIXES))
    for name in sorted(installed):
      if name.startswith(host_memory.ACCELERATOR_PREFIXES):
        yield pkgutil.ModuleInfo(None, name, True)

  monkeypatch.setattr(importlib.util, "find_spec", find_spec)
  monkeypatch.setattr(pkgutil, "iter_modules", iter_modules)
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  return installed


def test_no_plugin_means_cpu(plugins):
  assert host_memory.accelerator_plugins() == []
  assert host_memory.uses_cpu_backend()


@pytest.mark.parametrize("plugin", ["jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu",
                                    "jax_rocm7_plugin"])
def test_an_accelerator_plugin_means_not_cpu(plugins, monkeypatch, plugin):
  plugins.add(plugin)
  assert host_memory.accelerator_plugins() == [plugin]
  assert not host_memory.uses_cpu_backend()
  monkeypatch.setenv(host_memory.ENV, "1")
  assert host_memory.keep_freed_memory() is False   # returns before any mallopt
  # JAX_PLATFORMS naming only the CPU wins over the installed plugin.
  for value in ("cpu", " CPU ", "cpu,"):
    monkeypatch.setenv("JAX_PLATFORMS", value)
    assert host_memory.uses_cpu_backend(), value
  for value in ("cuda", "cuda,cpu", "tpu", "rocm"):
    monkeypatch.setenv("JAX_PLATFORMS", value)
    assert not host_memory.uses_cpu_backend(), value


def test_jax_platforms_without_a_plugin_falls_back_to_the_plugin_check(plugins, monkeypatch):
  # JAX_PLATFORMS=cuda without a CUDA plugin: JAX cannot use a GPU; the tuning applies.
  monkeypatch.setenv("JAX_PLATFORMS", "cuda")
  assert host_memory.uses_cpu_backend()
  monkeypatch.setenv("JAX_PLATFORMS", "")
  assert host_memory.uses_cpu_backend()
