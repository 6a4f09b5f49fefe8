"""What `edgeq inspect` reports: I/O, op histogram, parameters, MACs, unfixed dims, op support."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeq.ir.graph import Graph, Node
from edgeq.ir.ops.registry import is_supported
from edgeq.support import op_support
from edgeq.targets import available_targets, load_target


@dataclass(frozen=True)
class TensorSummary:
    name: str
    dtype: str
    shape: tuple[int | str, ...] | None


@dataclass(frozen=True)
class ModelSummary:
    inputs: list[TensorSummary]
    outputs: list[TensorSummary]
    op_histogram: dict[str, int]
    parameters: int
    parameter_bytes: int
    macs: int | None  # None while shapes are not fixed
    unfixed: dict[str, list[str]]  # input -> its symbolic dims
    unsupported_by_edgeq: list[str]  # "Op (node)"
    unsupported_by_target: dict[str, list[str]] = field(default_factory=dict)
    fallback_by_target: dict[str, list[str]] = field(default_factory=dict)
    opset: int = 0


def _shape(graph: Graph, name: str) -> tuple[int, ...] | None:
    info = graph.info(name)
    if info is None or not info.is_static:
        return None
    return tuple(int(d) for d in info.shape or ())


def node_macs(graph: Graph, node: Node) -> int:
    """Multiply-accumulates of one node (0 for ops without a matmul-like core)."""
    op = node.op_type
    if op in ("Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU"):
        x = _shape(graph, node.inputs[0])
        w = _shape(graph, node.inputs[1])
        y = _shape(graph, node.outputs[0])
        if x is None or w is None or y is None:
            return 0
        group = int(node.attrs.get("group", 1))
        if op == "Conv":
            return int(np.prod(y)) * (w[1] * int(np.prod(w[2:])))
        if op == "ConvTranspose":
            return int(np.prod(x)) * (w[1] * int(np.prod(w[2:]))) // max(group, 1) * group
        if op == "MatMul":
            return int(np.prod(y)) * x[-1]
        if op == "Gemm":
            k = x[0] if node.attrs.get("transA", 0) else x[-1]
            return int(np.prod(y)) * k
        # recurrent: seq * batch * dirs * gates*H * (I + H)
        r = _shape(graph, node.inputs[2])
        if r is None:
            return 0
        seq, batch = (x[0], x[1]) if not node.attrs.get("layout", 0) else (x[1], x[0])
        return seq * batch * w[0] * w[1] * (w[2] + r[2])
    return 0


def summarize(graph: Graph, targets: list[str] | None = None) -> ModelSummary:
    def ts(v: object) -> TensorSummary:
        return TensorSummary(v.name, str(v.dtype), v.shape)  # type: ignore[attr-defined]

    static = all(v.is_static for v in graph.inputs)
    unsupported = [
        f"{n.op_type} ({n.name})"
        for n in graph.walk_nodes()
        if not is_supported(n.op_type, n.domain)
    ]
    by_target: dict[str, list[str]] = {}
    fallback: dict[str, list[str]] = {}
    hist = graph.op_histogram()
    for t in targets if targets is not None else available_targets():
        profile = load_target(t)
        runs = op_support(t)
        missing = [op for op in hist if op not in runs]
        if missing:
            by_target[t] = missing
        slow = [op for op in hist if op in profile.ops.fallback]
        if slow:
            fallback[t] = slow
    params = [a for a in graph.constants.values() if np.issubdtype(a.dtype, np.floating)]
    return ModelSummary(
        inputs=[ts(v) for v in graph.inputs],
        outputs=[ts(v) for v in graph.outputs],
        op_histogram=hist,
        parameters=int(sum(a.size for a in params)),
        parameter_bytes=int(sum(a.nbytes for a in graph.constants.values())),
        macs=sum(node_macs(graph, n) for n in graph.nodes) if static and graph.value_info else None,
        unfixed={
            v.name: [str(d) for d in v.shape or ("?",) if not isinstance(d, int)]
            for v in graph.inputs
            if not v.is_static
        },
        unsupported_by_edgeq=unsupported,
        unsupported_by_target=by_target,
        fallback_by_target=fallback,
        opset=graph.opset,
    )
