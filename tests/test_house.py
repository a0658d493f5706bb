"""The house rules of issue #17 that a reader of the layout relies on: no module in otelgate/ or loadtests/ over 600
lines, and the static checker (``otelgate lint``) imports no deployment code (``otelgate.stacks``), directly or
through another module. Import cycles: tests/test_import_graph.py."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 600
STATIC_CHECKER = "otelgate.lint"
DEPLOYMENT_CODE = "otelgate.stacks"


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top in ("otelgate", "loadtests"):
        for path in sorted((REPO / top).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every otelgate/loadtests module ``name`` imports anywhere in its source (package parents included: importing
    ``a.b.c`` runs ``a`` and ``a.b`` too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    found: set[str] = set()
    for target in targets:
        parts = target.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in known)
    found.discard(name)
    return found


def test_no_module_is_over_600_lines() -> None:
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_the_static_checker_imports_no_deployment_code() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    todo = [m for m in modules if m == STATIC_CHECKER or m.startswith(STATIC_CHECKER + ".")]
    reached: set[str] = set()
    via: dict[str, str] = {}
    while todo:
        current = todo.pop()
        for target in graph[current] - reached:
            reached.add(target)
            via[target] = current
            todo.append(target)
    bad = sorted(m for m in reached if m == DEPLOYMENT_CODE or m.startswith(DEPLOYMENT_CODE + "."))
    chains = []
    for module in bad:
        chain, step = [module], module
        while step in via and not step.startswith(STATIC_CHECKER):
            step = via[step]
            chain.append(step)
        chains.append(" <- ".join(chain))
    assert bad == [], "otelgate lint reaches deployment code:\n" + "\n".join(chains)


def test_the_checks_see_what_they_must() -> None:
    """The two checks above are not vacuous: the tree has modules, and lint's graph is non-trivial."""
    modules = _modules()
    assert len(modules) > 50 and STATIC_CHECKER in modules and DEPLOYMENT_CODE in modules
    assert "otelgate.cluster_topology" in _imports("otelgate.lint", modules["otelgate.lint"], set(modules))
