"""The layers of docs/architecture.md hold: imports point down, never up, never in a circle.

Every import of every module counts — at module level or inside a function (a lazy import is
still a dependency) — except those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "notifykit"

LAYERS = [
    ("wire", {"notifykit.wire", "notifykit.errors"}),
    ("model", {"notifykit.model", "notifykit.protocols", "notifykit.topics", "notifykit.envelope"}),
    (
        "implementations",
        {"notifykit.memory", "notifykit.jwt", "notifykit.redis", "notifykit.recovery"},
    ),
    (
        "hub and gateway",
        {
            "notifykit.connection",
            "notifykit.gateway",
            "notifykit.hub",
            "notifykit.router",
            "notifykit.session",
            "notifykit.auth",
            "notifykit.metrics",
            "notifykit.connlog",
            "notifykit.limits",
        },
    ),
    ("adapters and tools", {"notifykit.adapters", "notifykit.testing"}),
    ("edges", {"notifykit.cli", "notifykit.client", "notifykit.__main__"}),
]
"""From the bottom up; a module belongs to the layer of its longest matching prefix."""
CORE = {"wire", "model", "implementations", "hub and gateway"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best, found = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    return found


def runtime_imports(path: Path, module: str) -> set[str]:
    """The notifykit modules ``path`` imports when it runs (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("notifykit"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("notifykit"):
                found.add(target)
                # `from . import jwt` names a module too
                found.update(f"{target}.{a.name}" for a in node.names if _is_module(target, a.name))
    found.discard(module)
    return found


def _is_module(package: str, name: str) -> bool:
    base = PACKAGE.parent.joinpath(*package.split("."))
    return (base / f"{name}.py").exists() or (base / name / "__init__.py").exists()


GRAPH = {
    module_name(path): runtime_imports(path, module_name(path))
    for path in sorted(PACKAGE.rglob("*.py"))
}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_every_module_belongs_to_a_layer(module: str) -> None:
    if module == "notifykit":
        return  # the package's face re-exports from the core
    assert layer_of(module) >= 0, f"{module} is in no layer of docs/architecture.md"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_layers(module: str) -> None:
    if module == "notifykit":
        return
    mine = layer_of(module)
    for imported in GRAPH[module]:
        theirs = layer_of(imported)
        assert theirs <= mine, (
            f"{module} ({LAYERS[mine][0]}) imports {imported} ({LAYERS[theirs][0]})"
        )


def test_the_core_imports_nothing_from_the_web_layer_or_the_edges() -> None:
    for module, imports in GRAPH.items():
        if module != "notifykit" and LAYERS[layer_of(module)][0] in CORE:
            for imported in imports:
                assert LAYERS[layer_of(imported)][0] in CORE, f"{module} imports {imported}"


def test_the_import_graph_has_no_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(GRAPH.get(module, ())):
            if imported not in GRAPH:
                continue
            if state.get(imported) == 1:
                cycle = [*path[path.index(imported) :], imported]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
