"""TFLite lowerings for ops without an int8 kernel that reproduces the simulator: Cast of
integer (mask) tensors, Expand, ReduceL2, Div of an activation by an activation, and MatMul
of two activations (registered into `converter.HANDLERS`).

Where LiteRT has no integer kernel the op runs as a small float32 island: DEQUANTIZE its
quantized inputs, compute in float32, QUANTIZE onto the plan's output encoding. That is
exactly what the simulator does (it computes every op in float on fake-quantized inputs and
fake-quantizes the output), so the plan's quantization points stay the same; every island is
listed in the artifact's notes.
"""

from __future__ import annotations

from typing import Any

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
    float_elementwise(c, node, "DIV", fb.DivOptionsT(), "Div of two activations")


def float_elementwise(c: Converter, node: Node, op: str, options: Any, what: str,
                      why: str = "no int8 TFLite kernel") -> None:  # fmt: skip
    """A binary elementwise op in float32: quantized inputs DEQUANTIZEd, constants as the
    simulator uses them, the result QUANTIZEd onto the plan's encoding (or left float where
    the plan keeps it float)."""
    names = [i for i in node.inputs if i]
    rank = len(c.shape(node.outputs[0]))
    perm = common_layout(c, names, rank)
    ins = []
    for n in names:
        if n in c.g.constants:
            arr = _planned(c, n)
            if arr.ndim == rank:
                arr = arr.transpose(perm)
            ins.append(c.m.const(n, arr, "float32"))
        else:
            p = perm if len(c.shape(n)) == rank else identity(len(c.shape(n)))
            ins.append(float_view(c, n, p))
    res = c.m.tensor(f"{node.outputs[0]}/{op.lower()}", [c.shape(node.outputs[0])[i] for i in perm],
                     "float32")  # fmt: skip
    c.emit(op, [t.index for t in ins], [res.index], "float32", options)
    float_result(c, node, res, perm, what, why)


def matmul_activations(c: Converter, node: Node) -> None:
    """MatMul of two activations (attention's Q·Kᵀ and P·V) as float32 BATCH_MATMUL between
    DEQUANTIZE and QUANTIZE. LiteRT's int8 BATCH_MATMUL requantizes with gemmlowp's two
    roundings (a rounding doubling high multiply, then a rounding right shift): the result is
    off the exactly rounded product by up to 2^-(shift+1) of a step, so ~0.2-0.4% of MiniLM's
    attention outputs land one step away from the simulator. The reference kernels always run
    it; under XNNPACK, MiniLM's Q·Kᵀ (K's zero point 0) rounded once and P·V (V's zero point
    24) twice, so which rounding a file gets depends on the plan. A step that far upstream of
    a 6-layer encoder decides the outputs (the parity check found the artifact 10% within one
    step of the simulator on MiniLM). In float32 both kernel sets compute what the simulator
    computes (float product of the dequantized operands, then one rounding). A float model
    gets the same BATCH_MATMUL without the DEQUANTIZE/QUANTIZE."""
    a, b = node.inputs[0], node.inputs[1]
    rank = len(c.shape(node.outputs[0]))
    ins, adj = [], [False, False]
    for k, name in enumerate((a, b)):
        if name in c.g.constants:
            ins.append(c.m.const(name, _planned(c, name), "float32"))
            continue
        r = len(c.shape(name))
        swapped = (*identity(r)[:-2], r - 1, r - 2)
        if r >= 2 and identity(r) not in c.layouts(name) and swapped in c.layouts(name):
            ins.append(float_view(c, name, swapped))  # already transposed: the kernel reads it so
            adj[k] = True
        else:
            ins.append(float_view(c, name, identity(r)))
    res = c.m.tensor(f"{node.outputs[0]}/matmul", list(c.shape(node.outputs[0])), "float32")
    opt = fb.BatchMatMulOptionsT()
    opt.adjX, opt.adjY = adj
    c.emit("BATCH_MATMUL", [t.index for t in ins], [res.index], "float32", opt)
    float_result(c, node, res, identity(rank), "MatMul of two activations",
                 "LiteRT's int8 BATCH_MATMUL rounds twice")  # fmt: skip


# int8 builtins whose LiteRT 2.3 kernels do not compute the quantized op (measured against
# round(f(x) / s) + z on random convolution outputs, XNNPACK and reference kernels alike):
# SQRT is no exact table (43% of outputs on the exact step, the rest one step off; in silero
# VAD's STFT magnitude those flips grew through the recurrence to 60% parity), and NEG negates
# the stored integers, ignoring both zero points (every output off by z_in + z_out steps).
INEXACT_INT8 = {"Sqrt": "SQRT", "Neg": "NEG"}


def unary_island(c: Converter, node: Node, x: str, builtin: str) -> None:
    """`builtin` (one of `INEXACT_INT8`) of an int8 tensor in float32 between DEQUANTIZE and
    QUANTIZE."""
    perm, _ = c.any_layout(x)
    xf = float_view(c, x, perm)
    res = c.m.tensor(f"{node.outputs[0]}/{builtin.lower()}", list(xf.shape), "float32")
    c.emit(builtin, [xf.index], [res.index], "float32")
    float_result(c, node, res, perm, node.op_type, f"LiteRT's int8 {builtin} is inexact")


def _planned(c: Converter, name: str) -> np.ndarray:
    """A constant as the simulator uses it: the plan's dequantized values where it is planned."""
    t = c.tq(name)
    if t is not None and t.is_quantized and t.values is not None:
        return t.dequantized().astype(np.float32)
    return c.g.constants[name].astype(np.float32)


@handles("LSTM", "GRU")
def recurrent(c: Converter, node: Node) -> None:
    """ONNX LSTM / GRU unrolled over time in float32 (FULLY_CONNECTED, LOGISTIC, TANH, MUL,
    ADD, STRIDED_SLICE, CONCATENATION), between DEQUANTIZE and QUANTIZE: TFLite has no GRU
    builtin, and its integer LSTM kernel needs the TF converter's own intermediate encodings;
    the simulator runs the recurrence in float on the quantized input, as this island does."""
    lstm = node.op_type == "LSTM"
    a = node.attrs
    g = 4 if lstm else 3
    acts = [
        str(v.decode() if isinstance(v, bytes) else v).lower() for v in a.get("activations") or []
    ]
    if acts and acts[: g - 1] != ["sigmoid", "tanh", "tanh"][: g - 1]:
        raise c.fail(node, f"{node.op_type} activations {acts} are not lowered", "use the defaults")
    if int(a.get("layout", 0)) or a.get("clip") is not None or (
        len(node.inputs) > 4 and node.inputs[4]) or (lstm and len(node.inputs) > 7 and node.inputs[7]):  # fmt: skip
        raise c.fail(node, f"{node.op_type} with layout, clip, sequence_lens or peepholes is not lowered",
                     "export the recurrence with the defaults")  # fmt: skip
    x = node.inputs[0]
    seq, batch, _ = c.shape(x)
    w, r = _planned(c, node.inputs[1]), _planned(c, node.inputs[2])
    nd, hidden = r.shape[0], r.shape[-1]
    has_b = len(node.inputs) > 3 and node.inputs[3]
    b = _planned(c, node.inputs[3]) if has_b else np.zeros((nd, 2 * g * hidden), np.float32)
    direction = a.get("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    base = node.outputs[0] or node.name
    xf = float_view(c, x, identity(3))
    lbr = int(a.get("linear_before_reset", 0))

    def tmp(label: str, shape: list[int]) -> Any:
        return c.m.tensor(f"{base}/{label}", shape, "float32")

    def fc(inp: Any, weight: np.ndarray, bias: np.ndarray, label: str, rows: int) -> Any:
        wt = c.m.const(f"{base}/{label}/w", weight, "float32")
        bt = c.m.const(f"{base}/{label}/b", bias, "float32")
        out = tmp(label, [rows, weight.shape[0]])
        opt = fb.FullyConnectedOptionsT()
        c.emit("FULLY_CONNECTED", [inp.index, wt.index, bt.index], [out.index], "float32", opt)
        return out

    def slice_cols(inp: Any, k: int, label: str) -> Any:
        out = tmp(label, [batch, hidden])
        tb = c.int_const(f"{base}/{label}/b", [0, k * hidden])
        te = c.int_const(f"{base}/{label}/e", [batch, (k + 1) * hidden])
        ts = c.int_const(f"{base}/{label}/s", [1, 1])
        c.emit("STRIDED_SLICE", [inp.index, tb.index, te.index, ts.index], [out.index], "float32",
               fb.StridedSliceOptionsT())  # fmt: skip
        return out

    def unary(op: str, inp: Any, label: str) -> Any:
        out = tmp(label, list(inp.shape))
        c.emit(op, [inp.index], [out.index], "float32")
        return out

    def binary(op: str, p: Any, q: Any, label: str) -> Any:
        out = tmp(label, list(p.shape))
        opt = {"ADD": fb.AddOptionsT, "MUL": fb.MulOptionsT, "SUB": fb.SubOptionsT}[op]()
        c.emit(op, [p.index, q.index], [out.index], "float32", opt)
        return out

    def state(k: int, label: str, d: int) -> Any:
        if len(node.inputs) > k and node.inputs[k] in c.g.constants:
            arr = _planned(c, node.inputs[k])[d]
            return c.m.const(f"{base}/{label}{d}/initial", arr, "float32")
        if len(node.inputs) > k and node.inputs[k]:
            s = float_view(c, node.inputs[k], identity(3))
            out = tmp(f"{label}{d}", [batch, hidden])
            tb = c.int_const(f"{base}/{label}{d}/b", [d, 0, 0])
            te = c.int_const(f"{base}/{label}{d}/e", [d + 1, batch, hidden])
            ts = c.int_const(f"{base}/{label}{d}/s", [1, 1, 1])
            opt = fb.StridedSliceOptionsT()
            opt.shrinkAxisMask = 1
            c.emit(
                "STRIDED_SLICE",
                [s.index, tb.index, te.index, ts.index],
                [out.index],
                "float32",
                opt,
            )
            return out
        return c.m.const(
            f"{base}/{label}{d}/zeros", np.zeros((batch, hidden), np.float32), "float32"
        )

    ys, hs, cs = [], [], []
    for d in range(nd):
        h, cell = state(5, "h0_", d), state(6, "c0_", d) if lstm else None
        steps = range(seq - 1, -1, -1) if direction == "reverse" or d == 1 else range(seq)
        outs: dict[int, Any] = {}
        for t in steps:
            p = f"d{d}t{t}"
            xt = tmp(f"{p}/x", [batch, xf.shape[2]])
            tb = c.int_const(f"{base}/{p}/xb", [t, 0, 0])
            te = c.int_const(f"{base}/{p}/xe", [t + 1, batch, xf.shape[2]])
            ts = c.int_const(f"{base}/{p}/xs", [1, 1, 1])
            opt = fb.StridedSliceOptionsT()
            opt.shrinkAxisMask = 1
            c.emit(
                "STRIDED_SLICE",
                [xf.index, tb.index, te.index, ts.index],
                [xt.index],
                "float32",
                opt,
            )
            xw = fc(xt, w[d], b[d, : g * hidden], f"{p}/xw", batch)
            hr = fc(h, r[d], b[d, g * hidden :], f"{p}/hr", batch)
            if lstm:
                gates = binary("ADD", xw, hr, f"{p}/g")
                i = unary("LOGISTIC", slice_cols(gates, 0, f"{p}/i"), f"{p}/is")
                o = unary("LOGISTIC", slice_cols(gates, 1, f"{p}/o"), f"{p}/os")
                f = unary("LOGISTIC", slice_cols(gates, 2, f"{p}/f"), f"{p}/fs")
                cc = unary("TANH", slice_cols(gates, 3, f"{p}/c"), f"{p}/ct")
                cell = binary("ADD", binary("MUL", f, cell, f"{p}/fc"), binary("MUL", i, cc, f"{p}/ic"),
                              f"{p}/cell")  # fmt: skip
                h = binary("MUL", o, unary("TANH", cell, f"{p}/tc"), f"{p}/h")
            else:
                z = unary("LOGISTIC", binary("ADD", slice_cols(xw, 0, f"{p}/xz"), slice_cols(hr, 0, f"{p}/hz"),
                                             f"{p}/z0"), f"{p}/z")  # fmt: skip
                rg = unary("LOGISTIC", binary("ADD", slice_cols(xw, 1, f"{p}/xr"), slice_cols(hr, 1, f"{p}/hr1"),
                                              f"{p}/r0"), f"{p}/r")  # fmt: skip
                if lbr:
                    hh = binary("ADD", slice_cols(xw, 2, f"{p}/xh"),
                                binary("MUL", rg, slice_cols(hr, 2, f"{p}/hh1"), f"{p}/rh"), f"{p}/hh")  # fmt: skip
                else:
                    rh = fc(binary("MUL", rg, h, f"{p}/rgh"), r[d][2 * hidden :],
                            b[d, g * hidden + 2 * hidden :], f"{p}/rhl", batch)  # fmt: skip
                    hh = binary("ADD", slice_cols(xw, 2, f"{p}/xh"), rh, f"{p}/hh")
                n_ = unary("TANH", hh, f"{p}/n")
                h = binary(
                    "ADD",
                    n_,
                    binary("MUL", z, binary("SUB", h, n_, f"{p}/dh"), f"{p}/zd"),
                    f"{p}/h",
                )
            outs[t] = h
        ys.append([outs[t] for t in range(seq)])
        hs.append(h)
        cs.append(cell)

    # Y [seq, dirs, batch, hidden], Y_h / Y_c [dirs, batch, hidden]: CONCATENATION then RESHAPE
    def stacked(parts: list[Any], shape: list[int], label: str) -> Any:
        cat = tmp(f"{label}/cat", [len(parts) * batch, hidden])
        opt = fb.ConcatenationOptionsT()
        opt.axis = 0
        c.emit("CONCATENATION", [t.index for t in parts], [cat.index], "float32", opt)
        out = tmp(label, shape)
        shape_t = c.int_const(f"{base}/{label}/shape", shape)
        ropt = fb.ReshapeOptionsT()
        ropt.newShape = shape
        c.emit("RESHAPE", [cat.index, shape_t.index], [out.index], "float32", ropt)
        return out

    results = [stacked([ys[d][t] for t in range(seq) for d in range(nd)], [seq, nd, batch, hidden], "y"),
               stacked(hs, [nd, batch, hidden], "y_h"),
               stacked(cs, [nd, batch, hidden], "y_c") if lstm else None]  # fmt: skip
    for k, out in enumerate(node.outputs):
        if not out or (out not in c.consumers and out not in c.g.output_names):
            continue
        sub = Node(node.op_type, node.inputs, [out], node.name)
        float_result(c, sub, results[k], identity(len(c.shape(out))), f"{node.op_type} (unrolled)")


# erf(z) ≈ z·P(z²)/Q(z²) on z clamped to [-4, 4]: the float32 rational approximation XLA
# evaluates for the simulator's erf (within 5e-7 of it on a dense grid over [-6, 6])
ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
         -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
         -1.60960333262415e-02)  # fmt: skip
ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
         -7.37332916720468e-03, -1.42647390514189e-02)  # fmt: skip


def gelu_island(c: Converter, node: Node) -> None:
    """GELU where the runtime has no GELU kernel (TFLite Micro): float32 between DEQUANTIZE and
    QUANTIZE with MUL, ADD, MINIMUM, MAXIMUM, DIV (TANH for the tanh form), computing what the
    simulator computes: 0.5·x·(1 + erf(x/√2)) with erf as the float32 rational approximation
    above, or 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) for approximate="tanh". (The tanh form
    for an erf GELU is within 5e-4 of it, but that put 0.3-2% of MiniLM's GELU outputs one
    step off the simulator, which the encoder amplified.)"""
    x = node.inputs[0]
    perm, _ = c.any_layout(x)
    xf = float_view(c, x, perm)
    shape = list(xf.shape)
    y = node.outputs[0]
    count = iter(range(1_000))

    def op(name: str, ins: list[Any]) -> Any:
        out = c.m.tensor(f"{y}/{name.lower()}{next(count)}", shape, "float32")
        opt = {"MUL": fb.MulOptionsT, "ADD": fb.AddOptionsT, "DIV": fb.DivOptionsT}.get(name)
        c.emit(name, [t.index for t in ins], [out.index], "float32", opt() if opt else None)
        return out

    def k(v: float) -> Any:
        return c.m.const(f"{y}/k{next(count)}", np.asarray(v, np.float32), "float32")

    approx = node.attrs.get("approximate", "none")
    if (approx.decode() if isinstance(approx, bytes) else approx) == "tanh":
        x3 = op("MUL", [op("MUL", [xf, xf]), xf])
        inner = op("ADD", [xf, op("MUL", [x3, k(0.044715)])])
        scaled = op("MUL", [inner, k(float(np.sqrt(2 / np.pi)))])
        one_plus = op("ADD", [op("TANH", [scaled]), k(1.0)])
        what = "Gelu (tanh form)"
    else:
        z = op("MINIMUM", [op("MAXIMUM", [op("MUL", [xf, k(float(np.float32(1 / np.sqrt(2))))]),
                                          k(-4.0)]), k(4.0)])  # fmt: skip
        z2 = op("MUL", [z, z])

        def horner(coefficients: tuple[float, ...]) -> Any:
            acc = k(coefficients[0])
            for a in coefficients[1:]:
                acc = op("ADD", [op("MUL", [acc, z2]), k(a)])
            return acc

        erf = op("DIV", [op("MUL", [z, horner(ERF_P)]), horner(ERF_Q)])
        one_plus = op("ADD", [erf, k(1.0)])
        what = "Gelu (erf form)"
    res = op("MUL", [op("MUL", [xf, k(0.5)]), one_plus])
    float_result(c, node, res, perm, what, "TFLite Micro has no GELU kernel")
