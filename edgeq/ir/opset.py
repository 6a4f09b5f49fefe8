"""Rewrite a graph's op forms to a newer ONNX opset (exporters write opset 21).

A prepared graph keeps its model's opset (11–21) but may hold canonical ops from newer opsets
(HardSwish 14, LayerNormalization 17, Gelu 20). Exporters write one opset, so ops whose form
changed in between are rewritten here: attributes that became inputs (Squeeze/Unsqueeze/
ReduceSum/Split at 13, the other Reduce ops at 18, Slice 10, Pad/Clip 11) and Softmax-family
semantics (before 13 they flatten to 2-D at `axis`). Every other op whose schema changed between
the two opsets only gained types; an op with a semantic change not handled here is refused.
"""

from __future__ import annotations

import numpy as np
import onnx

from edgeq.errors import EdgeqError
from edgeq.ir.graph import Graph, Node

TARGET_OPSET = 21

_AXES_TO_INPUT = {  # op -> opset where the `axes` attribute became input 1
    "Squeeze": 13, "Unsqueeze": 13, "ReduceSum": 13,
    **{op: 18 for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                         "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")},
}  # fmt: skip
_SOFTMAX_FAMILY = ("Softmax", "LogSoftmax", "Hardmax")
# ops whose schema changed with a semantic difference that is not rewritten here
_UNHANDLED = {"Upsample", "TopK", "Scan", "BatchNormalization"}


def _since(op: str, opset: int, domain: str = "") -> int | None:
    try:
        return int(onnx.defs.get_schema(op, opset, domain).since_version)
    except onnx.defs.SchemaError:
        return None


def upgrade_opset(graph: Graph, target: int = TARGET_OPSET) -> Graph:
    """A copy of `graph` whose nodes are valid at opset `target`."""
    g = graph.copy()
    source = g.opset
    if source > target:
        raise EdgeqError(f"the graph uses opset {source}, newer than {target}")
    nodes: list[Node] = []
    for node in g.nodes:
        if node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        nodes.extend(_upgrade_node(g, node, source, target))
    g.nodes = nodes
    g.opset = target
    return g


def _const(g: Graph, base: str, value: np.ndarray) -> str:
    name = g.unique_name(base)
    g.constants[name] = value
    return name


def _upgrade_node(g: Graph, node: Node, source: int, target: int) -> list[Node]:
    op = node.op_type
    if _since(op, target) is None:
        raise EdgeqError(f"{node} ({op}) does not exist at opset {target}",
                         f"replace it with its opset-{target} equivalent before export")  # fmt: skip
    # an op first introduced above the source opset (a canonical op we inserted) is already
    # in its newest form as long as it did not change again before `target`
    if _since(op, source) == _since(op, target):
        return [node]
    if op in _AXES_TO_INPUT and "axes" in node.attrs:
        axes = np.asarray(node.attrs.pop("axes"), np.int64)
        inputs = [node.inputs[0], _const(g, f"{node.name or op}_axes", axes)]
        node.inputs = inputs + node.inputs[2:]
        return [node]
    if op in _AXES_TO_INPUT:
        return [node]  # axes already an input, or absent (all axes): same meaning
    if op == "Split":
        split = node.attrs.pop("split", None)
        if split is not None:
            node.inputs = [
                node.inputs[0],
                _const(g, f"{node.name}_split", np.asarray(split, np.int64)),
            ]
        elif len(node.inputs) < 2 or not node.inputs[1]:
            node.attrs["num_outputs"] = len(node.outputs)
        return [node]
    if op in _SOFTMAX_FAMILY:
        return _upgrade_softmax(g, node, source)
    if op == "Slice" and "starts" in node.attrs:
        starts = np.asarray(node.attrs.pop("starts"), np.int64)
        ends = np.asarray(node.attrs.pop("ends"), np.int64)
        axes = node.attrs.pop("axes", None)
        extra = (
            [_const(g, f"{node.name}_axes", np.asarray(axes, np.int64))] if axes is not None else []
        )
        node.inputs = [node.inputs[0], _const(g, f"{node.name}_starts", starts),
                       _const(g, f"{node.name}_ends", ends), *extra]  # fmt: skip
        return [node]
    if op == "Pad" and "pads" in node.attrs:
        pads = _const(g, f"{node.name}_pads", np.asarray(node.attrs.pop("pads"), np.int64))
        value = node.attrs.pop("value", None)
        info = g.info(node.inputs[0])
        dtype = info.dtype if info is not None else np.float32
        fill = (
            [_const(g, f"{node.name}_value", np.asarray(value, dtype))] if value is not None else []
        )
        node.inputs = [node.inputs[0], pads, *fill]
        return [node]
    if op == "Clip" and ("min" in node.attrs or "max" in node.attrs):
        lo, hi = node.attrs.pop("min", None), node.attrs.pop("max", None)
        node.inputs = [
            node.inputs[0],
            _const(g, f"{node.name}_min", np.asarray(lo, np.float32)) if lo is not None else "",
            _const(g, f"{node.name}_max", np.asarray(hi, np.float32)) if hi is not None else "",
        ]
        while node.inputs and not node.inputs[-1]:
            node.inputs.pop()
        return [node]
    if op == "BatchNormalization":
        for key in ("spatial", "is_test", "consumed_inputs"):
            node.attrs.pop(key, None)
        return [node]
    if op in _UNHANDLED:
        raise EdgeqError(f"{node}: {op} changed meaning between opset {source} and {target} "
                         "and edgeq does not rewrite it",
                         "export the model at a newer opset from its framework")  # fmt: skip
    return [node]  # type-only schema changes


def _upgrade_softmax(g: Graph, node: Node, source: int) -> list[Node]:
    if source >= 13:
        return [node]
    info = g.info(node.inputs[0])
    if info is None or not info.is_static:
        raise EdgeqError(f"{node}: opset-{source} {node.op_type} needs a static input shape "
                         "to be rewritten for opset 13+", "fix the input shapes with --input-shape")  # fmt: skip
    shape = tuple(int(d) for d in info.shape)  # type: ignore[union-attr, arg-type]
    axis = int(node.attrs.get("axis", 1)) % max(len(shape), 1)
    if axis == len(shape) - 1:
        node.attrs["axis"] = -1
        return [node]
    # old semantics: flatten to [prod(shape[:axis]), prod(shape[axis:])], op over dim 1
    flat = g.unique_name(f"{node.outputs[0]}_2d")
    out2d = g.unique_name(f"{node.outputs[0]}_2d_out")
    shape2d = _const(
        g, f"{node.name}_shape2d", np.array([int(np.prod(shape[:axis])), -1], np.int64)
    )
    back = _const(g, f"{node.name}_shape", np.array(shape, np.int64))
    return [
        Node("Reshape", [node.inputs[0], shape2d], [flat], g.unique_name(f"{node.name}_flatten")),
        Node(node.op_type, [flat], [out2d], node.name, {"axis": 1}),
        Node("Reshape", [out2d, back], list(node.outputs), g.unique_name(f"{node.name}_restore")),
    ]


__all__ = ["TARGET_OPSET", "upgrade_opset"]
