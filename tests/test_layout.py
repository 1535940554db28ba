"""The package's import graph: layers depend one way, and nothing imports itself in a circle.

Every ``import`` in rtlab's source counts, also those inside functions (a lazy import still
ties two modules together); imports under ``if TYPE_CHECKING:`` do not (they never run).
``from package import name`` depends on the submodule ``package.name`` when there is one,
else on the package's ``__init__``, whose namespace the name comes from.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import rtlab

ROOT = Path(rtlab.__file__).resolve().parent


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if _is_type_checking(node):
            for child in node.orelse:  # the body never runs
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module name -> the rtlab modules it imports (see the module docstring)."""
    modules = {_module_name(path)[0]: path for path in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                base = package.split(".")
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                # "from package import submodule" needs the submodule; any other name comes
                # from the package's own namespace, so it needs the package's __init__.
                candidates = [
                    f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem for alias in node.names
                ]
            targets |= {c for c in candidates if c in modules and c != name}
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
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
            connect(node)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_in_a_circle():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_serving_does_not_import_evaluation_code():
    graph = import_graph()
    server = [m for m in graph if m.startswith("rtlab.server") and m != "rtlab.server.client"]
    for module in server:
        evaluation = sorted(m for m in reachable(graph, module) if m.startswith("rtlab.eval"))
        assert not evaluation, f"{module} imports {evaluation}"


def test_layers_depend_one_way():
    """The streaming core knows nothing of evaluation or the front ends; evaluation knows
    nothing of the front ends; the plugin API (backends, policies, decoders) nothing of
    the core."""
    graph = import_graph()
    rules = {
        "rtlab.core": ("rtlab.eval", "rtlab.server", "rtlab.cli"),
        "rtlab.eval": ("rtlab.server", "rtlab.cli"),
        "rtlab.backends": ("rtlab.core", "rtlab.eval", "rtlab.server", "rtlab.cli"),
        "rtlab.policies": ("rtlab.core", "rtlab.eval", "rtlab.server", "rtlab.cli"),
    }
    for layer, forbidden in rules.items():
        for module in (m for m in graph if m == layer or m.startswith(layer + ".")):
            wrong = sorted(t for t in graph[module] if t.startswith(forbidden))
            assert not wrong, f"{module} imports {wrong}"


def test_importing_rtlab_and_its_command_line_stays_light():
    code = (
        "import sys, rtlab, rtlab.cli; "
        "heavy = [m for m in ('numpy', 'tornado', 'faster_whisper', 'jiwer') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
