"""Linux checks of a saved .mlpackage against the graph and the plan it was made from.

- `check_weights`: every quantized weight of the plan is a constexpr op in the saved program
  whose stored integers equal the plan's values exactly, whose zero points equal the plan's,
  and whose scales equal the plan's scales rounded to fp16 (the program's compute dtype).
  Values are read from weight.bin by edgeq's own blob parser, not by coremltools.
- `check_ops`: every graph node is produced by the MIL op its lowering promises (Conv → conv,
  MatMul with a constant weight → linear, HardSwish → sigmoid_hard·mul, ...), in graph order,
  and, for W8A8 plans, every quantized activation passes through quantize → dequantize.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.exporters.coreml.build import fp16, mil_name, requant_is_identity, weight_op_name
from edgeq.exporters.coreml.evaluate import SavedProgram
from edgeq.ir.graph import Graph
from edgeq.quant.plan import QuantPlan

# ONNX op -> MIL op types that may produce its output
EXPECTED_MIL: dict[str, tuple[str, ...]] = {
    "Conv": ("conv",), "MatMul": ("linear", "matmul"), "Gemm": ("linear",),
    "Add": ("add", "linear"), "Sub": ("sub",), "Mul": ("mul",), "Div": ("real_div",),
    "Pow": ("pow",), "Max": ("maximum",), "Min": ("minimum",), "Relu": ("relu",),
    "Sigmoid": ("sigmoid",), "Tanh": ("tanh",), "Sqrt": ("sqrt",), "Exp": ("exp",),
    "Erf": ("erf",), "Identity": ("identity",), "HardSigmoid": ("sigmoid_hard",),
    "HardSwish": ("mul",), "Gelu": ("gelu",), "Softmax": ("softmax",),
    "LayerNormalization": ("layer_norm",), "GlobalAveragePool": ("reduce_mean",),
    "GlobalMaxPool": ("reduce_max",), "AveragePool": ("avg_pool",), "MaxPool": ("max_pool",),
    "Reshape": ("reshape",), "Flatten": ("reshape",), "Squeeze": ("reshape",),
    "Unsqueeze": ("reshape",), "Transpose": ("transpose",), "Concat": ("concat",),
    "Slice": ("slice_by_index",), "Gather": ("gather",), "Cast": ("cast",),
    "Expand": ("tile",), "ReduceSum": ("reduce_sum",), "ReduceMean": ("reduce_mean",),
    "ReduceMax": ("reduce_max",), "ReduceL2": ("reduce_l2_norm",), "Clip": ("clip",),
    "Split": ("slice_by_index",), "Resize": ("upsample_nearest_neighbor", "resize_bilinear"),
    "ConvTranspose": ("conv_transpose",), "Abs": ("abs",), "Neg": ("mul",), "Log": ("log",),
    "Equal": ("equal",), "Less": ("less",), "Greater": ("greater",),
    "GreaterOrEqual": ("greater_equal",), "LessOrEqual": ("less_equal",),
    "And": ("logical_and",), "Or": ("logical_or",), "Not": ("logical_not",),
    "Where": ("select",), "LSTM": ("stack",), "GRU": ("stack",), "LeakyRelu": ("leaky_relu",),
    "BatchNormalization": ("batch_norm",), "Pad": ("pad",),
}  # fmt: skip
# MIL's own graph passes (run when the program is saved) fuse patterns into single ops: a
# Sigmoid·Mul becomes `silu`, an erf/tanh GELU `gelu`, a MatMul + bias Add `linear`, a Conv +
# bias Add / scale Mul one `conv`. The fused op carries the last node's output name; the inner
# nodes' names disappear. Both are accepted (and counted as fused in the report).
MIL_FUSIONS: dict[str, tuple[str, ...]] = {
    "Mul": ("silu", "gelu", "conv", "linear", "batch_norm", "scale"),
    "Add": ("conv", "linear", "conv_transpose", "batch_norm", "gelu", "add"),
    "Sub": ("conv", "linear"), "Div": ("gelu", "conv", "linear"),
    "Relu": ("conv",), "Clip": ("conv", "relu6"),
}  # fmt: skip
FUSED_OPS = frozenset({"silu", "gelu", "linear", "conv", "conv_transpose", "batch_norm",
                       "relu6", "layer_norm"})  # fmt: skip


def _vname(graph: Graph, tensor: str) -> str:
    io = set(graph.input_names) | set(graph.output_names)
    return mil_name(tensor) + ("_h" if tensor in io else "")


def _transposed(graph: Graph, weight: str) -> bool:
    """Whether the exporter stores this weight transposed (linear takes W as [N, K])."""
    for node in graph.nodes:
        if weight not in node.inputs:
            continue
        if node.op_type == "MatMul":
            return True
        if node.op_type == "Gemm":
            return not int(node.attrs.get("transB", 0))
    return False


def _op_args(prog: SavedProgram, op: Any) -> dict[str, Any]:
    args = {k: prog.value(v) for k, v in op.attributes.items() if k != "name"}
    for k, arg in op.inputs.items():
        b = arg.arguments[0]
        if b.WhichOneof("binding") == "value":
            args[k] = prog.value(b.value)
    return args


def check_weights(path: str | Path, graph: Graph, plan: QuantPlan) -> dict[str, Any]:
    prog = SavedProgram(path)
    producers = prog.producers()
    failures: list[str] = []
    ops: Counter[str] = Counter()
    checked = 0
    for t in plan.quantized("weight"):
        trans = _transposed(graph, t.name)
        op = producers.get(weight_op_name(t.name, trans)) or producers.get(
            weight_op_name(t.name, False)
        )
        if op is None:
            failures.append(f"{t.name}: no constexpr op in the program")
            continue
        trans = op.outputs[0].name.endswith("_T") and trans
        checked += 1
        ops[op.type] += 1
        a = _op_args(prog, op)
        if t.lut is not None:
            failures += _check_lut(t, op.type, a, trans)
            continue
        assert t.values is not None and t.scale is not None and t.zero_point is not None
        values = np.asarray(t.values)
        scale = np.asarray(t.scale, np.float32)
        zp = np.asarray(t.zero_point)
        if op.type == "constexpr_affine_dequantize":
            data, s, z = a["quantized_data"], a["scale"], a["zero_point"]
            if trans:
                data = data.T
            ok_s = np.array_equal(np.asarray(s).reshape(-1), fp16(scale).reshape(-1))
            ok_z = np.array_equal(
                np.broadcast_to(np.asarray(z, np.int64), zp.shape), zp.astype(np.int64)
            )
            if t.block is not None or t.qdtype.bits != 8:
                failures.append(f"{t.name}: {t.dtype} {t.granularity} stored as 8-bit affine")
        elif op.type == "constexpr_blockwise_shift_scale":
            data, s = a["data"], np.asarray(a["scale"])
            z = np.asarray(a.get("offset", np.zeros(s.shape, np.int64)), np.int64)
            if trans:
                data, s, z = data.T, s.T, z.T
            want_s = fp16(scale)
            if t.block is None:
                shape = [1] * values.ndim
                if t.axis is not None and scale.ndim:
                    shape[t.axis] = -1
                want_s = want_s.reshape(shape)
                zp = zp.reshape(shape) if zp.ndim else zp
            ok_s = s.shape == np.broadcast_shapes(s.shape, want_s.shape) and np.array_equal(
                s, np.broadcast_to(want_s, s.shape)
            )
            ok_z = np.array_equal(z, np.broadcast_to(zp.astype(np.int64), z.shape))
            bits = (
                4
                if op.inputs["data"].arguments[0].value.type.tensorType.dataType in (25, 35)
                else 8
            )
            if bits != t.qdtype.bits:
                failures.append(f"{t.name}: stored as {bits}-bit, plan says {t.dtype}")
        else:
            failures.append(f"{t.name}: produced by {op.type}, not a constexpr op")
            continue
        if data.shape != values.shape or not np.array_equal(
            data.astype(np.int64), values.astype(np.int64)
        ):
            failures.append(f"{t.name}: stored integers differ from the plan's")
        if not ok_s:
            failures.append(f"{t.name}: stored scales differ from fp16(plan scales)")
        if not ok_z:
            failures.append(f"{t.name}: stored zero points differ from the plan's")
    return {
        "weights_checked": checked,
        "weights_expected": len(plan.quantized("weight")),
        "exact": checked - len({f.split(":")[0] for f in failures}) if checked else 0,
        "ok": not failures and checked == len(plan.quantized("weight")),
        "failures": failures[:20],
        "constexpr_ops": dict(ops),
        "weight_bin_bytes": len(prog.blob),
    }


def _check_lut(t: Any, op_type: str, a: dict[str, Any], trans: bool) -> list[str]:
    """A palettized weight: constexpr_lut_to_dense whose indices equal the plan's and whose
    table equals the plan's (float16 already, so exactly)."""
    if op_type != "constexpr_lut_to_dense":
        return [f"{t.name}: palettized in the plan, stored by {op_type}"]
    indices, table = np.asarray(a["indices"]), np.asarray(a["lut"])[..., 0]
    if trans:
        indices, table = indices.T, np.swapaxes(table, 0, 1)
    out = []
    if indices.shape != np.shape(t.values) or not np.array_equal(
        indices.astype(np.int64), np.asarray(t.values, np.int64)
    ):
        out.append(f"{t.name}: stored indices differ from the plan's")
    if not np.array_equal(table.astype(np.float32), fp16(np.asarray(t.lut)).astype(np.float32)):
        out.append(f"{t.name}: stored look-up table differs from the plan's")
    return out


def check_ops(path: str | Path, graph: Graph, plan: QuantPlan | None = None) -> dict[str, Any]:
    prog = SavedProgram(path)
    index = {o.name: i for i, op in enumerate(prog.ops) for o in op.outputs}
    by_name = {o.name: op for op in prog.ops for o in op.outputs}
    failures: list[str] = []
    consumers = graph.consumers()
    last = -1
    matched = fusions = 0
    for node in graph.nodes:
        out = node.outputs[0]
        name = _vname(graph, out)
        op = by_name.get(name)
        expected = EXPECTED_MIL.get(node.op_type, ())
        if op is None and node.op_type == "MatMul":  # fused with its bias Add into linear
            users = consumers.get(out, [])
            fused = by_name.get(_vname(graph, users[0].outputs[0])) if len(users) == 1 else None
            if fused is not None and fused.type == "linear" and users[0].op_type == "Add":
                matched += 1
                continue
        if op is None:  # fused by MIL into the op that consumes it
            users = consumers.get(out, [])
            fused_into = [by_name.get(_vname(graph, u.outputs[0])) for u in users]
            if users and all(f is not None and f.type in FUSED_OPS for f in fused_into):
                matched += 1
                fusions += 1
                continue
            failures.append(f"{node}: no MIL op named '{name}'")
            continue
        if op.type not in expected and op.type in MIL_FUSIONS.get(node.op_type, ()):
            matched += 1
            fusions += 1
            continue
        if op.type not in expected:
            failures.append(f"{node}: produced by MIL {op.type}, expected {'/'.join(expected)}")
            continue
        if node.op_type == "HardSwish" and (name + "_gate") not in by_name:
            failures.append(f"{node}: no sigmoid_hard gate")
            continue
        fused = node.op_type == "Add" and op.type == "linear"
        if not fused:
            if index[name] < last:
                failures.append(f"{node}: out of graph order in the program")
            last = index[name]
        matched += 1
    if plan is not None:
        for t in plan.quantized("activation"):
            if requant_is_identity(graph, plan, t.name):
                continue
            base = _vname(graph, t.name)
            q, dq = by_name.get(base + "_q"), by_name.get(base + "_dq")
            if q is None or q.type != "quantize" or dq is None or dq.type != "dequantize":
                failures.append(f"activation {t.name}: no quantize/dequantize pair")
    hist = Counter(op.type for op in prog.ops if op.type != "const")
    return {
        "nodes": len(graph.nodes),
        "matched": matched,
        "fused_by_mil": fusions,
        "ok": not failures,
        "failures": failures[:20],
        "mil_ops": dict(sorted(hist.items(), key=lambda kv: -kv[1])),
        "opset": prog.opset,
    }


def weight_storage(path: str | Path, graph: Graph) -> dict[str, dict[str, int]]:
    """Stored bits of every layer weight (MatMul/Gemm/Conv/ConvTranspose/Gather tables) of a
    saved program, read from the program itself: the op that produces the weight (a const, or
    a constexpr decompression) and the dtype bits × elements of every constant it stores."""
    from edgeq.quant.planner import weight_operand

    prog = SavedProgram(path)
    producers = prog.producers()
    out: dict[str, dict[str, int]] = {}
    for node in graph.nodes:
        w = weight_operand(node, graph)
        if w is None or node.inputs[w[0]] in out:
            continue
        name = node.inputs[w[0]]
        op = producers.get(weight_op_name(name, True)) or producers.get(weight_op_name(name, False))
        if op is None:
            continue
        out[name] = {"elements": int(graph.constants[name].size), "bits": stored_bits(op)}
    return out


def stored_bits(op: Any) -> int:
    """Bits of every constant a weight op stores (a const's value, or a constexpr's inputs)."""
    from edgeq.exporters.coreml.evaluate import _DTYPES, _tensor_type

    # a const keeps its tensor in `val`; iOS16's constexpr_affine_dequantize keeps
    # quantized_data, scale and zero_point as attributes (its `axis` and `name` are no data);
    # iOS18's constexpr ops bind theirs as input values
    values = [v for k, v in op.attributes.items()
              if k in ("val", "quantized_data", "scale", "zero_point")]  # fmt: skip
    values += [arg.arguments[0].value for arg in op.inputs.values()
               if arg.arguments[0].WhichOneof("binding") == "value"]  # fmt: skip
    total = 0
    for v in values:
        dtype, shape = _tensor_type(v.type)
        total += int(np.prod(shape)) * _DTYPES[dtype][2]
    return total


__all__ = [
    "EXPECTED_MIL",
    "MIL_FUSIONS",
    "check_ops",
    "check_weights",
    "stored_bits",
    "weight_storage",
]
