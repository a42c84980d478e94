"""Imports point down the layers: no import circle, not even through a function-level import.

The graph is read from the source (every ``import`` of a fksteer module, at module level or inside
a function; those under ``if TYPE_CHECKING`` are left out, they never run). A circle through a
function-level import works at run time, which is why it goes unnoticed: this test notices it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``root``, by dotted name (a package by its own name)."""
    files = {}
    for path in sorted((root / package.replace(".", "/")).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def _runs(node: ast.AST) -> bool:
    """False for ``if TYPE_CHECKING:`` blocks (imports for annotations only)."""
    return not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))


def _imported(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, files: dict[str, Path]
) -> set[str]:
    """The modules among ``files`` an import statement of ``module`` imports: for each name of
    ``from a.b import c, d``, the submodule ``a.b.c`` when it is one, else ``a.b``."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in files}
    base = node.module or ""
    if node.level:  # relative: from the package of the module, up level - 1
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([base] if base else []))
    targets = {f"{base}.{alias.name}" for alias in node.names}
    return {t if t in files else base for t in targets} & set(files)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports anywhere in its code.

    ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``; a
    module's own package is never an edge (importing a submodule imports its package anyway).
    """
    files = module_files(root, package)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        stack = [ast.parse(path.read_text())]
        while stack:
            node = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    graph[name] |= _imported(child, name, path.name == "__init__.py", files)
                elif _runs(child):
                    stack.append(child)
        parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] -= parents | {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_anywhere_in_the_package():
    graph = import_graph(SRC, "fksteer")
    assert len(graph) > 100  # the whole package was read
    assert circles(graph) == []


def test_the_rewards_layers_point_down():
    graph = import_graph(SRC, "fksteer")
    layers = ["base", "names", "compose", "registry"]  # each may import only those before it
    for i, layer in enumerate(layers):
        imported = {m.rpartition(".")[2] for m in graph[f"fksteer.rewards.{layer}"]}
        assert imported & set(layers) <= set(layers[:i]), layer
    assert not any(m.startswith("fksteer.commands") for m in graph["fksteer.bench.records"])


@pytest.mark.parametrize("inner", [True, False])
def test_a_circle_is_found_at_module_and_at_function_level(tmp_path, inner):
    package = tmp_path / "toy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text(
        "def up():\n    from toy.high import thing\n    return thing\n"
        if inner
        else "from toy import high\n"
    )
    (package / "high.py").write_text("from toy.low import up\nthing = 1\n")
    (package / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toy import high\n"
    )
    graph = import_graph(tmp_path, "toy")
    assert circles(graph) == [["toy.high", "toy.low"]]
    assert graph["toy.typed"] == set()  # annotations-only imports never run


def test_every_name_of_a_multi_name_import_is_an_edge(tmp_path):
    package = tmp_path / "toy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "other.py").write_text("")
    (package / "low.py").write_text("from toy import other, high\n")  # the circle: 2nd name
    (package / "high.py").write_text("from toy.low import thing\n")
    graph = import_graph(tmp_path, "toy")
    assert graph["toy.low"] == {"toy.other", "toy.high"}
    assert circles(graph) == [["toy.high", "toy.low"]]
