"""The package layering, read from the source with `ast`: no import cycle, no import upwards,
no use of another module's `_private` names.

The architecture is only real if it is checked. A lazy import inside a function counts like
any other (a cycle dodged by a lazy import is still a cycle), and so does a string-free
`import recjax.x.y`. The last test plants each kind of violation in a throwaway package and
shows that the checks catch it, so a green run means something.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "recjax"

# Low to high: a module may import its own layer and those before it. The bottom row is the
# top-level modules every package may use; the online packages (serve, stream, search) sit on
# top with main. `__init__` is recjax/__init__.py itself.
LAYERS = (
    ("__init__", "errors", "fingerprint", "jsonio", "sharding", "allocator", "distributed"),
    ("features",),
    ("input", "datasets"),
    ("embedding",),
    ("layers",),
    ("models",),
    ("tasks",),
    ("export",),
    ("train",),
    ("config",),
    ("replay",),
    ("main", "serve", "stream", "search"),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
  """Dotted module name -> file, for every module of the package at `root`."""
  out = {}
  for path in sorted(root.rglob("*.py")):
    parts = (root.name, *path.relative_to(root).with_suffix("").parts)
    out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return out


def imports(path: pathlib.Path, package: str, known: dict) -> list[tuple[str, int, ast.AST]]:
  """(imported module of `package`, line, node) for every import in the file, nested ones
  included. `from a.b import c` is the module a.b.c when that is a module, else a.b."""
  found = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found += [(a.name, node.lineno, node) for a in node.names
                if a.name.split(".")[0] == package]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
        node.module.split(".")[0] == package):
      for alias in node.names:
        full = f"{node.module}.{alias.name}"
        found.append((full if full in known else node.module, node.lineno, node))
  return found


def graph(root: pathlib.Path) -> dict[str, set[str]]:
  known = modules(root)
  return {name: {target for target, _, _ in imports(path, root.name, known) if target != name}
          for name, path in known.items()}


def cycle(edges: dict[str, set[str]]) -> list[str]:
  """One import cycle as [a, b, ..., a], or [] when the graph has none (depth-first search
  with the path on a stack)."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(edges.get(node, ())):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state and (found := visit(nxt)):
        return found
    state[node] = "done"
    stack.pop()
    return []

  for node in sorted(edges):
    if node not in state and (found := visit(node)):
      return found
  return []


def layer(module: str) -> str:
  """recjax.input.pipeline -> input; recjax.config -> config; recjax -> __init__."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(root: pathlib.Path) -> list[str]:
  """Every import of a higher layer, and every module whose layer the table lacks."""
  found = []
  for name, targets in graph(root).items():
    if layer(name) not in RANK:
      found.append(f"{name}: package {layer(name)!r} is not in LAYERS")
      continue
    found += [f"{name} imports {t} ({layer(name)} is below {layer(t)})" for t in sorted(targets)
              if RANK.get(layer(t), -1) > RANK[layer(name)]]
  return found


def private_uses(root: pathlib.Path) -> list[str]:
  """`from recjax.x import _y`, and `x._y` where x names a recjax module imported here."""
  known, found = modules(root), []
  for name, path in known.items():
    module_aliases = set()
    for target, line, node in imports(path, root.name, known):
      if isinstance(node, ast.ImportFrom):
        for alias in node.names:
          if alias.name.startswith("_") and not alias.name.startswith("__"):
            found.append(f"{path.name}:{line}: imports {node.module}.{alias.name}")
          if f"{node.module}.{alias.name}" in known:
            module_aliases.add(alias.asname or alias.name)
      else:
        module_aliases |= {a.asname or a.name.split(".")[0] for a in node.names}
    for node in ast.walk(ast.parse(path.read_text())):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in module_aliases and node.attr.startswith("_")
          and not node.attr.startswith("__")):
        found.append(f"{path.name}:{node.lineno}: uses {node.value.id}.{node.attr}")
  return found


def test_recjax_has_no_import_cycle():
  assert cycle(graph(ROOT)) == []


def test_recjax_imports_only_its_own_layer_or_lower():
  assert upward_imports(ROOT) == []


def test_no_module_uses_another_modules_private_names():
  assert private_uses(ROOT) == []


def _plant(tmp_path, files: dict[str, str]) -> pathlib.Path:
  root = tmp_path / "recjax"
  for name, text in {"__init__.py": "", "errors.py": "", "features/__init__.py": "",
                     "input/__init__.py": "", "train/__init__.py": "", **files}.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)
  return root


@pytest.mark.parametrize("files, check, expected", [
    ({"input/a.py": "def f():\n  from recjax.input import b\n",
      "input/b.py": "from recjax.input import a\n"},
     lambda root: cycle(graph(root)), ["recjax.input.a", "recjax.input.b", "recjax.input.a"]),
    ({"features/spec.py": "from recjax.train import loop\n", "train/loop.py": ""},
     upward_imports, ["recjax.features.spec imports recjax.train.loop (features is below train)"]),
    ({"features/spec.py": "import recjax.serving.x\n", "serving/__init__.py": "",
      "serving/x.py": ""},
     upward_imports, ["recjax.serving: package 'serving' is not in LAYERS",
                      "recjax.serving.x: package 'serving' is not in LAYERS"]),
    ({"input/a.py": "from recjax.features import spec\nx = spec._table\n",
      "features/spec.py": "_table = {}\n"},
     private_uses, ["a.py:2: uses spec._table"]),
    ({"input/a.py": "from recjax.features.spec import _table\n",
      "features/spec.py": "_table = {}\n"},
     private_uses, ["a.py:1: imports recjax.features.spec._table"]),
], ids=["cycle through a lazy import", "upward import", "unknown package", "private attribute",
        "private import"])
def test_a_planted_violation_is_caught(tmp_path, files, check, expected):
  root = _plant(tmp_path, files)
  assert check(root) == expected
  clean = _plant(tmp_path / "clean", {})
  assert cycle(graph(clean)) == [] and upward_imports(clean) == [] == private_uses(clean)
