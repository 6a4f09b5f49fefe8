"""Which ONNX ops each target runs, derived from the lowerings its exporter has (not declared
by hand): `op_support(target)` asks the target's exporter (`Exporter.op_support(profile)`)
and applies the profile's runtime rules (`[ops] unsupported`, the QNN HTP's op builders,
TFLite Micro's kernels). `refusals(graph, target)` lists every node an export would refuse,
with the runtime rule; `edgeq inspect`, `edgeq check` and every export (before calibrating)
use it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from edgeq.errors import UnsupportedOpError
from edgeq.exporters import get_exporter
from edgeq.ir.graph import Graph
from edgeq.targets import load_target

KINDS = ("native", "decomposed", "float island")


@cache
def op_support(target: str) -> dict[str, dict[str, Any]]:
    """ONNX op → {"kind": native | decomposed | float island, ...} for `target`."""
    profile = load_target(target)
    table = get_exporter(profile.exporter).op_support(profile)
    return {op: row for op, row in table.items() if profile.ops.runs(op)}


def refusal(op: str, target: str) -> str:
    profile = load_target(target)
    if op in profile.ops.unsupported:
        return f"{profile.runtime} does not run {op} (target profile rule)"
    return str(get_exporter(profile.exporter).refusal(op, profile))


def refusals(graph: Graph, target: str) -> list[str]:
    """One line per node (op type, name) that `target` cannot run, with the reason."""
    table = op_support(target)
    lines = []
    for node in graph.walk_nodes():
        if node.op_type not in table or node.domain not in ("", "ai.onnx"):
            lines.append(f"{node.op_type} ({node.name or node.outputs[0]}): "
                         f"{refusal(node.op_type, target)}")  # fmt: skip
    return lines


def require_support(graph: Graph, target: str) -> None:
    """Raise before any calibration when `target` cannot run some node of `graph`."""
    lines = refusals(graph, target)
    if lines:
        more = f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
        raise UnsupportedOpError(
            f"target '{target}' cannot run {len(lines)} node(s): {'; '.join(lines[:3])}{more}",
            f"`edgeq inspect MODEL --target {target}` lists them; export for another target",
        )


__all__ = ["KINDS", "op_support", "refusal", "refusals", "require_support"]
