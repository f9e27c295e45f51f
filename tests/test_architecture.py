"""The layer rules of docs/architecture.md, checked on the source: no cycles, imports point down the flow."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "range_dist"

#: Lowest first; a module may import its own layer and the layers before it (docs/architecture.md).
LAYERS = ("errors", "util", "config", "geo", "locations", "stac", "chips", "encoders", "database", "retrieval",
          "grid", "cube", "jobs", "executors", "assets", "analysis", "testing", "demo", "cli")

#: Imports that point up the flow on purpose, each with its reason (at most 2).
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> list[tuple[str, str]]:
    """(importer, imported) for every import of a range_dist module, lazy ones included."""
    edges = []
    for path in PACKAGE.rglob("*.py"):
        importer = _module(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("range_dist"):
                edges.append((importer, node.module))
            elif isinstance(node, ast.Import):
                edges += [(importer, a.name) for a in node.names if a.name.startswith("range_dist")]
    return edges


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__main__" else None


def test_every_package_has_a_layer() -> None:
    top = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
           if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert top - {"__main__"} == set(LAYERS)


def test_imports_point_down_the_flow() -> None:
    upward = []
    for importer, imported in _imports():
        a, b = _layer(importer), _layer(imported)
        if a is None or b is None or a == b:
            continue
        if LAYERS.index(b) > LAYERS.index(a) and (importer, imported) not in ALLOWED_UPWARD:
            upward.append(f"{importer} -> {imported}")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)
    assert len(ALLOWED_UPWARD) <= 2


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    modules = {_module(p) for p in PACKAGE.rglob("*.py")}
    for importer, imported in _imports():
        # "from range_dist.x import y" may name the package; y may be a submodule
        if importer != imported and imported in modules:
            graph[importer].add(imported)
    # a package's __init__ importing its own submodules is not a cycle of the flow
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module)


def test_only_the_ray_executor_imports_ray() -> None:
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "ray" or n.startswith("ray.") for n in names):
                importers.add(_module(path))
    assert importers == {"range_dist.executors.ray_executor"}
