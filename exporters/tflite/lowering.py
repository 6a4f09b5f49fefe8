"""What every TFLite lowering shares: scale checks, layout choice, Reduce* axes, float views.

The lowering modules (`ops` for builtins with integer kernels, `float_islands` for ops that run
in float32 between DEQUANTIZE and QUANTIZE) register handlers into the table the converter
owns (`converter.HANDLERS`) and import their common helpers from here, never from each other.
"""

from __future__ import annotations

from edgeq.ir.graph import Node

from .builder import Tensor
from .converter import Converter, Perm, identity


def same_quant(c: Converter, node: Node, a: str, b: str, what: str) -> None:
    if not c.quantized:
        return
    qa, qb = c.qparams(a), c.qparams(b)
    if qa is not None and not qa.same(qb):
        raise c.fail(node, f"TFLite {what} needs the same scale/zero point in and out, but the plan "
                     f"has {a}: {qa.scale[0]:.6g}/{qa.zero_point[0]} and {b}: "
                     f"{qb.scale[0] if qb else float('nan'):.6g}/{qb.zero_point[0] if qb else 0}",
                     f"calibrate with target '{c.profile.name}' (it shares these scales)")  # fmt: skip


def common_layout(c: Converter, names: list[str], rank: int) -> Perm:
    acts = [n for n in names if n not in c.g.constants]
    for n in acts:
        if len(c.shape(n)) != rank:
            return identity(rank)
    if not acts:
        return identity(rank)
    perms = [set(c.layouts(n)) for n in acts]
    common = set.intersection(*perms)
    if identity(rank) in common:
        return identity(rank)
    if common:
        return next(iter(common))
    return next(iter(perms[0]))


def reduce_axes(c: Converter, node: Node, rank: int) -> tuple[list[int], bool]:
    """(sorted non-negative reduced axes, keepdims) of a Reduce* node, attribute or input form."""
    keep = bool(int(node.attrs.get("keepdims", 1)))
    if len(node.inputs) > 1 and node.inputs[1]:
        axes = [int(a) for a in c.g.constants[node.inputs[1]].reshape(-1)]
    else:
        axes = [int(a) for a in node.attrs.get("axes", range(rank))]
    return sorted(a % rank for a in axes), keep


def float_view(c: Converter, name: str, perm: Perm) -> Tensor:
    """`name` in layout `perm` as a float32 tensor (DEQUANTIZE once when it is quantized)."""
    t = c.get(name, perm)
    if t.quant is None or t.dtype == "float32":
        return t
    f = c.m.tensor(f"{name}/float", t.shape, "float32")
    c.emit("DEQUANTIZE", [t.index], [f.index], t.dtype)
    return f


def float_result(c: Converter, node: Node, cur: Tensor, perm: Perm, what: str,
                 why: str = "no int8 TFLite kernel") -> None:  # fmt: skip
    """Register float32 `cur` as the node's output, QUANTIZEd onto the plan's encoding."""
    y = node.outputs[0]
    if not c.quantized:
        c.alias(y, cur, perm)
        return
    if c.planned_float(y):  # the plan keeps it float (a residual sum): no QUANTIZE
        c.alias(y, cur, perm)
        c.notes.append(f"{node}: {what} stays float32 (the plan keeps {y} float)")
        return
    out = c.new(y, perm)
    c.emit("QUANTIZE", [cur.index], [out.index], "float32")
    c.notes.append(f"{node}: {what} runs in float32 between DEQUANTIZE and QUANTIZE ({why})")
