"""The package's layers, read from its source: imports go one way, no cycles, small modules.

contract < telemetry < tracing < adapters < apps    (the root package re-exports the public API)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "otel_callbacks"
LAYERS = ["contract", "telemetry", "tracing", "adapters", "apps"]
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> str | None:
    """The layer of a module; None for the root package and ``__main__`` (the public facade)."""
    parts = module.split(".")[1:]
    if not parts or parts == ["__main__"]:
        return None
    if parts[0] in ("hooks", "semconv", "config", "version"):
        return "contract"
    if parts[0] in ("telemetry", "tracing", "apps"):
        return parts[0]
    if parts[0] in ("registry", "ultralytics", "instrumentor", "package"):
        return "adapters"
    raise AssertionError(f"{module} belongs to no layer: add it to test_layers.layer")


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of import nodes under ``if TYPE_CHECKING:`` (annotations only, never executed)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for statement in node.body for n in ast.walk(statement)}
    return skipped


def imports(module: str) -> set[str]:
    """Modules of this package that ``module`` imports anywhere in its file (functions included)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    skipped = _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: imports(module) for module in MODULES}


def test_every_module_is_in_a_layer_and_imports_only_its_own_or_lower_layers():
    upward = []
    for module, targets in GRAPH.items():
        mine = layer(module)
        for target in targets:
            theirs = layer(target)
            if mine is not None and (theirs is None or LAYERS.index(theirs) > LAYERS.index(mine)):
                upward.append(f"{module} ({mine}) imports {target} ({theirs or 'the facade'})")
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state:
            cycle = visit(module)
            assert cycle is None, " -> ".join(cycle)


def test_the_checker_sees_imports_inside_functions():
    assert "otel_callbacks.ultralytics.dropin" in GRAPH["otel_callbacks.apps.demo"], "a function's import"
    assert "otel_callbacks.tracing.engines" not in GRAPH["otel_callbacks.tracing.runs"], "TYPE_CHECKING"


def test_no_module_is_over_about_300_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_importing_the_package_leaves_protobuf_until_a_file_or_exporter_needs_it():
    code = "import sys, otel_callbacks; print('google.protobuf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "start-up stays light: the encoders load with the embedded file"
