"""The layout says where things live: no module-level import circles, no reflection over
models, the argument checks and the suite under their own names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: package folders and the dotted names they are installed as
PACKAGES = {ROOT / "effdyn": "effdyn", ROOT / "solvers": "effdyn.solvers"}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, dotted in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([dotted, *parts])] = path
    return out


def _module_level_imports(name: str, path: Path, known: set, lazy: bool = False) -> set:
    """effdyn modules imported at module level by ``name`` (with ``lazy``, also those
    imported inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rsplit(".", 1)[0]
    found = set()

    def resolve(module, level):
        if level == 0:
            return module
        base = package.split(".")
        base = base[: len(base) - (level - 1)]
        return ".".join(base + ([module] if module else []))

    def visit(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                if lazy:
                    visit(node.body)
                continue  # lazy imports inside functions do not make circles at import time
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                target = resolve(node.module, node.level)
                found.add(target)
                for alias in node.names:  # `from . import x` imports the submodule x
                    found.add(f"{target}.{alias.name}")
            if isinstance(node, ast.ClassDef):
                visit(node.body)
            elif lazy and isinstance(node, (ast.For, ast.While)):
                visit(node.body)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(getattr(node, "body", []))
                visit(getattr(node, "orelse", []))
                visit(getattr(node, "finalbody", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return {m for m in found if m in known and m != name}


def _graph(lazy=False):
    mods = _modules()
    known = set(mods)
    return {name: _module_level_imports(name, path, known, lazy) for name, path in mods.items()}


def _cycles(graph):
    cycles, state, stack = [], {}, []

    def dfs(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in state:
                dfs(v)
        stack.pop()
        state[u] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    return cycles


def _package_edges_only(cycle):
    # a package's __init__ importing its own submodule, which imports a sibling through the
    # package, is how Python packages work; a circle between two real modules is not
    return all(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(cycle, cycle[1:]))


def test_no_module_level_import_circles():
    graph = _graph()
    assert "effdyn.models.base" in graph and "effdyn.solvers._solve" in graph
    bad = [c for c in _cycles(graph) if not _package_edges_only(c)]
    assert not bad, "import circles: " + "; ".join(" -> ".join(c) for c in bad)


#: The layers, lowest first: a module may import (even lazily, inside a function) only
#: from its own layer or below. Saving/loading methods of the results (GDTrajectory.save,
#: Solution.load) reach up into effdyn.results lazily by design and are the one exception.
LAYERS = [
    ("effdyn._checks", "effdyn._json", "effdyn._jit", "effdyn._jax", "effdyn.errors", "effdyn.outcomes",
     "effdyn._names", "effdyn.progress", "effdyn.io", "effdyn.kernels", "effdyn.data"),
    ("effdyn.problems", "effdyn.spectrum", "effdyn.engine_jax.tracker", "effdyn.engine_jax.compiled",
     "effdyn.engine_jax.sdcp"),
    # handover: GD's state as a value the models start from (it reads problems and spectrum only)
    ("effdyn.models", "effdyn.registry", "effdyn.handover"),
    ("effdyn.solvers", "effdyn.solution", "effdyn.reference", "effdyn.diagnostics", "effdyn.engine_jax"),
    ("effdyn.results", "effdyn.plotting", "effdyn.validation", "effdyn.sweep", "effdyn.cli", "effdyn.demo",
     "effdyn.__main__"),
]
_LAZY_EXCEPTIONS = {("effdyn.reference", "effdyn.results"), ("effdyn.solution", "effdyn.results")}


def _layer(module):
    """The layer of the longest prefix that names ``module`` or a package holding it."""
    best, length = None, -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = i, len(prefix)
    return best


def test_lower_layers_do_not_import_higher_ones_even_lazily():
    graph = _graph(lazy=True)
    bad = []
    for src, targets in graph.items():
        ls = _layer(src)
        for dst in targets:
            ld = _layer(dst)
            if ls is None or ld is None or ld <= ls:
                continue
            if any(src.startswith(a) and dst.startswith(b) for a, b in _LAZY_EXCEPTIONS):
                continue
            bad.append(f"{src} -> {dst}")
    assert not bad, bad


def test_the_circle_detector_finds_circles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("folder", ["effdyn", "solvers"])
def test_no_reflection_over_models(folder):
    # run state is explicit data (RunState.to_dict); nothing digs through a model's attributes
    offenders = []
    for path in (ROOT / folder).rglob("*.py"):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if "vars(model" in line or "vars(self.model" in line or "__dict__" in line and "model" in line:
                offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not offenders, offenders


def test_layout_names():
    # one meaning per name: the suite's engine, its case data, and the argument checks
    assert (ROOT / "effdyn" / "validation" / "runner.py").is_file()
    assert (ROOT / "effdyn" / "_checks.py").is_file()
    assert (ROOT / "effdyn" / "models" / "sdcp.py").is_file() and not (ROOT / "effdyn" / "sdcp.py").exists()
    assert not (ROOT / "solvers" / "_checkpoint.py").read_text().count("import pickle")
