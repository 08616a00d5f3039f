"""The import graphs: no cycles in the package nor in experiments/, and the shared
library never imports a method.

Reads every module's imports with `ast` (including imports inside functions),
resolves `from a.b import c` to the module `a.b.c` when that is a module and to
`a.b` otherwise, and checks the graph of privreid_jax's own modules (and of
experiments/' own modules).
"""

import ast
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "privreid_jax"
LIBRARY = ("privacy", "evaluation", "data", "models", "ops")   # never import methods


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  parts = list(path.relative_to(root).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def modules(root: pathlib.Path = ROOT, package: str = PACKAGE) -> dict[str, pathlib.Path]:
  return {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def imports_of(name: str, path: pathlib.Path, known, package: str = PACKAGE) -> set[str]:
  """The modules of `package` that `name` imports anywhere in its file."""
  tree = ast.parse(path.read_text(), filename=str(path))
  is_package = path.name == "__init__.py"
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:       # relative: from the module's package
        pkg = name.split(".") if is_package else name.split(".")[:-1]
        pkg = pkg[:len(pkg) - node.level + 1]
        base = ".".join(pkg + ([base] if base else []))
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                 for a in node.names]
    else:
      continue
    for t in targets:
      while t and t not in known:      # `import a.b.c` of an attribute path
        t = t.rpartition(".")[0]
      if t.startswith(package) and t != name:
        out.add(t)
  return out


def import_graph(root: pathlib.Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
  known = modules(root, package)
  return {name: imports_of(name, path, known, package) for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle as [a, b, ..., a], or None."""
  state: dict[str, int] = {}      # 1: on the stack, 2: done
  stack: list[str] = []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def library_imports_of_methods(graph: dict[str, set[str]]) -> list[str]:
  bad = []
  for name, deps in sorted(graph.items()):
    if name.split(".")[1:2] and name.split(".")[1] in LIBRARY:
      bad += [f"{name} -> {d}" for d in sorted(deps)
              if d == f"{PACKAGE}.methods" or d.startswith(f"{PACKAGE}.methods.")]
  return bad


def test_the_package_has_no_import_cycle():
  cycle = find_cycle(import_graph())
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_experiments_have_no_import_cycle():
  graph = import_graph(package="experiments")
  assert "experiments.parity_bot" in graph and graph["experiments.parity_bot"]
  cycle = find_cycle(graph)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_library_never_imports_a_method():
  bad = library_imports_of_methods(import_graph())
  assert not bad, "library modules importing methods: " + "; ".join(bad)


def _write(root, files):
  for rel, text in files.items():
    path = root / PACKAGE / rel
    os.makedirs(path.parent, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("inside_function", [False, True])
def test_the_checks_catch_a_planted_cycle_and_a_library_import(tmp_path, inside_function):
  """The checks themselves: a cycle through an import inside a function, and
  privacy/ importing a method, are both found."""
  imp = ("def f():\n  from privreid_jax.methods import m\n" if inside_function
         else "from privreid_jax.methods import m\n")
  _write(tmp_path, {"__init__.py": "", "methods/__init__.py": "",
                    "methods/m.py": "from privreid_jax.privacy import attack\n",
                    "privacy/__init__.py": "", "privacy/attack.py": imp,
                    "ops/ok.py": "import numpy\nfrom privreid_jax.privacy import attack\n"})
  graph = import_graph(tmp_path)
  assert graph["privreid_jax.privacy.attack"] == {"privreid_jax.methods.m"}
  assert find_cycle(graph) == ["privreid_jax.methods.m", "privreid_jax.privacy.attack",
                               "privreid_jax.methods.m"]
  assert library_imports_of_methods(graph) == [
      "privreid_jax.privacy.attack -> privreid_jax.methods.m"]


def test_the_readme_layout_names_every_module():
  """README's layout section lists every file of the package (and no file that is gone)."""
  text = (ROOT / "README.md").read_text()
  layout = text[text.index("## Layout"):]
  layout = layout[:layout.index("```", layout.index("```") + 3)]
  listed = {line.split()[0] for line in layout.splitlines()
            if line.split() and line.split()[0].endswith(".py")}
  files = {p.name for p in (ROOT / PACKAGE).rglob("*.py") if p.name != "__init__.py"}
  assert not files - listed, f"README's layout lacks {sorted(files - listed)}"
  assert not listed - files, f"README's layout names missing files {sorted(listed - files)}"


def test_configs_import_only_the_package():
  """Every config loads with only privreid_jax importable: none imports `configs`."""
  for path in sorted((ROOT / "configs").glob("*.py")):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import)
               else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      assert not any(n == "configs" or n.startswith("configs.") for n in names), path.name


def test_every_config_and_variant_loads_from_its_path():
  """Loaded by file path (as --config=... does), each config and each of its variant
  names builds; an unknown variant lists the valid ones in one line."""
  import importlib.util
  from privreid_jax.methods.anonymization import config as anon_config
  from privreid_jax.methods.dual_stage import config as dual_config
  variants = {"synthetic": ("tiny",), "market": ("agw",),
              "anon_synthetic": anon_config.VARIANTS + ("tiny",),
              "anon_market": anon_config.VARIANTS,
              "dual_synthetic": dual_config.VARIANTS + ("tiny",),
              "dual_market": dual_config.VARIANTS, "real_small": ("val", "tiny"),
              "anon_real_small": anon_config.VARIANTS + ("tiny",),
              "dual_real_small": dual_config.VARIANTS + ("tiny",)}
  for path in sorted((ROOT / "configs").glob("*.py")):
    spec = importlib.util.spec_from_file_location(f"_cfg_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.get_config().method
    for v in variants.get(path.stem, ()):
      if v in ("mosaic", "blur", "noise") and path.stem.startswith("anon"):
        v = f"{v},stages"
      module.get_config(v)
    with pytest.raises(ValueError) as e:
      module.get_config("nonsense")
    assert "unknown variant 'nonsense'" in str(e.value) and "\n" not in str(e.value)
