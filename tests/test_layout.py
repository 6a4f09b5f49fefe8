"""The folders show the pipeline, and imports keep pointing one way.

Walks every `import` statement (module level and inside functions) of edgeq's own modules and
checks two rules: no module imports itself back through others (no cycles), and the core rooms
(`edgeq.ir`, `edgeq.quant`, `edgeq.algorithms`) never import exporters, calibration sources,
device transports, the CLI or the orchestration modules on top of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# folder -> dotted package (setuptools package-dir in pyproject.toml)
PACKAGES = {
    "edgeq": "edgeq",
    "exporters": "edgeq.exporters",
    "calibration": "edgeq.calibration",
    "targets": "edgeq.targets",
    "device_tests": "edgeq.device_tests",
    "examples": "edgeq.examples",
}
CORE = ("edgeq.ir", "edgeq.quant", "edgeq.algorithms")
# what a room may import from edgeq (besides itself); `edgeq` alone is the package's
# `__version__`. Dependencies point down: cli -> pipeline/export -> exporters -> quant -> ir.
BASE = ("edgeq.errors", "edgeq.files", "edgeq.outputs", "edgeq.interrupts")
ALLOWED = {
    "edgeq.ir": (*BASE, "edgeq.ir"),
    "edgeq.quant": (*BASE, "edgeq.ir", "edgeq.quant", "edgeq.targets"),
    "edgeq.algorithms": (*BASE, "edgeq.ir", "edgeq.quant", "edgeq.algorithms"),
    "edgeq.exporters": (
        *BASE,
        "edgeq",
        "edgeq.ir",
        "edgeq.quant",
        "edgeq.algorithms",
        "edgeq.targets",
        "edgeq.exporters",
    ),
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if folder == "device_tests" and path.name.startswith(("test_", "conftest")):
                continue
            found[".".join([package, *parts])] = path
    return found


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:` (never executed)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the edgeq modules it imports (every import statement that runs, lazy ones too)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if _is_package(path) else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from pkg import submodule` imports the submodule
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]  # fmt: skip
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_the_checker_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_rooms_exist() -> None:
    graph = import_graph()
    for room in (*CORE, "edgeq.cli", "edgeq.exporters.onnx", "edgeq.exporters.tflite",
                 "edgeq.exporters.coreml", "edgeq.exporters.mlx"):  # fmt: skip
        assert room in graph, room
    prefixes = ("onnx_", "qnn_", "tflite_", "coreml_", "mlx_")
    flat = [p.name for p in (ROOT / "exporters").glob("*.py") if p.name.startswith(prefixes)]
    assert not flat, f"format-prefixed modules belong in their format's folder: {flat}"


def test_no_module_imports_in_a_circle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_rooms_import_only_downward() -> None:
    """Core rooms never import exporters, calibration sources, devices, the CLI or the
    orchestration; exporters never import the orchestration, the CLI or calibration sources."""
    bad = []
    for module, edges in import_graph().items():
        room = next((r for r in ALLOWED if module == r or module.startswith(r + ".")), None)
        if room is None:
            continue
        for target in edges:
            if not any(target == a or (a != "edgeq" and target.startswith(a + "."))
                       for a in ALLOWED[room]):  # fmt: skip
                bad.append(f"{module} imports {target}")
    assert not bad, "\n".join(sorted(bad))


def test_algorithms_register_by_name() -> None:
    from edgeq.algorithms import available_algorithms, get_algorithm
    from edgeq.algorithms.refine import refine_ranges
    from edgeq.errors import InputError

    assert get_algorithm("refine", "ranges").run is refine_ranges
    assert "refine" in available_algorithms("ranges")
    try:
        get_algorithm("no-such-algorithm")
    except InputError as exc:
        assert "refine" in str(exc)  # the error lists what is registered
    else:
        raise AssertionError("unknown algorithm accepted")
