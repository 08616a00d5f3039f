"""The accelerator installs name the JAX of requirements.txt.

requirements.txt pins jax and jaxlib; the package's extras (`.[cuda12]`,
`.[cuda13]`, `.[tpu]`) and the install lines of the README and docs add the
accelerator plugin on top. A plugin of another JAX version either fails to
install or replaces the pinned jaxlib, so every `jax[...]==X` must say the same X.
"""

import os
import re
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts):
  with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
    return f.read()


def _pinned_jax():
  pins = dict(re.findall(r"^(jax|jaxlib)==(\S+)", _read("requirements.txt"), re.M))
  assert pins.get("jax") and pins["jax"] == pins.get("jaxlib"), pins
  return pins["jax"]


def test_extras_pin_the_jax_of_requirements():
  extras = tomllib.loads(_read("pyproject.toml"))["project"]["optional-dependencies"]
  want = _pinned_jax()
  for name in ("cuda12", "cuda13", "tpu"):
    assert extras[name] == [f"jax[{name}]=={want}"], (name, extras[name])


def test_install_lines_in_the_docs_pin_the_same_jax():
  want = _pinned_jax()
  found = []
  for doc in ["README.md", *(os.path.join("docs", n) for n in os.listdir(
      os.path.join(ROOT, "docs")) if n.endswith(".md"))]:
    for extra, version in re.findall(r"jax\[(\w+)\]==([\w.]+)", _read(doc)):
      found.append((doc, extra))
      assert version == want, (doc, extra, version)
  assert {e for _, e in found} >= {"cuda12", "cuda13", "tpu"}, found
