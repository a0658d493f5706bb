"""No import cycle between otelgate's modules (nor loadtests'): the import graph is built from the source with ``ast``
(every ``import``/``from … import`` anywhere in a module, including the lazy ones inside functions, except those
under ``if TYPE_CHECKING:``) and must have no cycle. A lazy import still ties two modules together: a cycle through
one is a layering problem even when Python tolerates it at run time."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from otelgate import paths

ROOTS = ("otelgate", "loadtests")


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every package of :data:`ROOTS` under ``root``."""
    found: dict[str, Path] = {}
    for top in ROOTS:
        for path in sorted((root / top).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``name`` imports (``from pkg import sub`` counts as importing ``pkg.sub``
    when that is a module, else ``pkg`` itself)."""
    is_package = path.name == "__init__.py"
    edges: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            edges |= {alias.name for alias in node.names if alias.name in modules}
            continue
        base = node.module or ""
        if node.level:  # relative: resolve against this module's package
            package = name.split(".") if is_package else name.split(".")[:-1]
            package = package[:len(package) - node.level + 1]
            base = ".".join([*package, *([base] if base else [])])
        for alias in node.names:
            target = f"{base}.{alias.name}"
            if target in modules:
                edges.add(target)
            elif base in modules:
                edges.add(base)
    edges.discard(name)
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def import_graph(root: Path) -> dict[str, set[str]]:
    files = module_files(root)
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def test_no_import_cycle_between_otelgate_modules() -> None:
    assert paths.CHECKOUT is not None
    graph = import_graph(paths.CHECKOUT)
    assert len(graph) > 50, sorted(graph)  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# --- the checker itself can fail -------------------------------------------------------------------------------

def write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(("files", "expected"), [
    ({"otelgate/__init__.py": "", "otelgate/a.py": "from otelgate import b\n",
      "otelgate/b.py": "def f():\n    import otelgate.a\n"}, ["otelgate.a", "otelgate.b", "otelgate.a"]),
    ({"otelgate/__init__.py": "", "otelgate/s/__init__.py": "", "otelgate/s/x.py": "from . import y\n",
      "otelgate/s/y.py": "from .x import thing\n"}, ["otelgate.s.x", "otelgate.s.y", "otelgate.s.x"]),
])
def test_a_planted_cycle_is_found(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    write(tmp_path, {**files, "loadtests/__init__.py": ""})
    assert find_cycle(import_graph(tmp_path)) == expected


def test_type_checking_imports_do_not_count(tmp_path: Path) -> None:
    write(tmp_path, {"otelgate/__init__.py": "", "loadtests/__init__.py": "",
                     "otelgate/a.py": "from otelgate import b\n",
                     "otelgate/b.py": "from typing import TYPE_CHECKING\n"
                                      "if TYPE_CHECKING:\n    from otelgate import a\n"})
    assert find_cycle(import_graph(tmp_path)) is None
