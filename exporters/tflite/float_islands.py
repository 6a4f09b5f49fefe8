"""TFLite lowerings for ops without an int8 kernel: Cast of integer (mask) tensors, Expand,
ReduceL2, and Div of an activation by an activation (registered into `converter.HANDLERS`).

Where LiteRT has no integer kernel the op runs as a small float32 island: DEQUANTIZE its
quantized inputs, compute in float32, QUANTIZE onto the plan's output encoding. That is
exactly what the simulator does (it computes every op in float on fake-quantized inputs and
fake-quantizes the output), so the plan's quantization points stay the same; every island is
listed in the artifact's notes.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from edgeq.ir.graph import Node

from .converter import Converter, handles, identity
from .lowering import common_layout, float_result, float_view, reduce_axes, same_quant


@handles("Cast")
def cast(c: Converter, node: Node) -> None:
    """Integer → float (e.g. Cast(attention_mask)): CAST to float32, then QUANTIZE with the
    plan's encoding (the simulator fake-quantizes the cast value the same way). Integer →
    integer is a relabeling (all integer tensors are int32 in the file)."""
    x, y = node.inputs[0], node.outputs[0]
    perm, xt = c.any_layout(x)
    if not c.is_float(y):
        if c.is_float(x):
            raise c.fail(node, "Cast from float to an integer type is not lowered",
                         "keep index tensors integer from the graph inputs")  # fmt: skip
        c.alias(y, xt, perm)
        return
    if c.is_float(x):
        c.alias(y, xt, perm)  # float → float: same values
        return
    f = c.m.tensor(f"{y}/float", xt.shape, "float32")
    c.emit("CAST", [xt.index], [f.index], xt.dtype)
    if c.quantized:
        out = c.new(y, perm)
        c.emit("QUANTIZE", [f.index], [out.index], "float32")
    else:
        c.alias(y, f, perm)


@handles("Expand")
def expand(c: Converter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    same_quant(c, node, x, y, "BROADCAST_TO")
    ys = c.shape(y)
    xt = c.get(x)
    if list(xt.shape) == list(ys):
        c.alias(y, xt, identity(len(ys)))
        return
    shape_t = c.int_const(f"{node.name}/shape", list(ys))
    out = c.new(y, identity(len(ys)), quant=xt.quant, dtype=xt.dtype)
    c.emit("BROADCAST_TO", [xt.index, shape_t.index], [out.index], xt.dtype)


@handles("ReduceL2")
def reduce_l2(c: Converter, node: Node) -> None:
    """sqrt(sum(x*x)) as MUL, SUM, SQRT in float32."""
    x = node.inputs[0]
    rank = len(c.shape(x))
    axes, keep = reduce_axes(c, node, rank)
    perm = identity(rank)
    xf = float_view(c, x, perm)
    sq = c.m.tensor(f"{node.outputs[0]}/square", xf.shape, "float32")
    c.emit("MUL", [xf.index, xf.index], [sq.index], "float32", fb.MulOptionsT())
    out_shape = [1 if i in axes else d for i, d in enumerate(xf.shape)] if keep else [
        d for i, d in enumerate(xf.shape) if i not in axes]  # fmt: skip
    total = c.m.tensor(f"{node.outputs[0]}/sum", out_shape, "float32")
    opt = fb.ReducerOptionsT()
    opt.keepDims = keep
    axes_t = c.int_const(f"{node.name}/axes", axes)
    c.emit("SUM", [sq.index, axes_t.index], [total.index], "float32", opt)
    root = c.m.tensor(f"{node.outputs[0]}/sqrt", out_shape, "float32")
    c.emit("SQRT", [total.index], [root.index], "float32")
    float_result(c, node, root, identity(len(out_shape)), "ReduceL2")


def divide_activations(c: Converter, node: Node) -> None:
    """Div of two activations (mean pooling by the token count, L2 normalize): LiteRT's DIV
    has no int8 kernel, so it divides in float32."""
    names = [i for i in node.inputs if i]
    rank = len(c.shape(node.outputs[0]))
    perm = common_layout(c, names, rank)
    ins = []
    for n in names:
        if n in c.g.constants:
            t = c.tq(n)
            arr = c.g.constants[n].astype(np.float32)
            if t is not None and t.is_quantized and t.values is not None:
                arr = t.dequantized().astype(np.float32)  # the simulator's value
            if arr.ndim == rank:
                arr = arr.transpose(perm)
            ins.append(c.m.const(n, arr, "float32"))
        else:
            p = perm if len(c.shape(n)) == rank else identity(len(c.shape(n)))
            ins.append(float_view(c, n, p))
    res = c.m.tensor(f"{node.outputs[0]}/div", [c.shape(node.outputs[0])[i] for i in perm],
                     "float32")  # fmt: skip
    opt = fb.DivOptionsT()
    c.emit("DIV", [t.index for t in ins], [res.index], "float32", opt)
    float_result(c, node, res, perm, "Div of two activations")
