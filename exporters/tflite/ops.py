"""ONNX op → TFLite builtin lowerings (registered into `converter.HANDLERS`).

Each handler reads its operands' layouts, emits builtins, and registers its outputs'
realizations. Quantized rules checked here (the export fails rather than change numbers):
weights int8 with zero point 0 on the kernel's channel axis, int32 bias with scale
s_in*s_w, shared scales for pooling/concat/reshape/transpose/slice/resize/pad/gather, fixed
SOFTMAX/LOGISTIC (1/256, -128) and TANH (1/128, 0) outputs.
"""

from __future__ import annotations

import math

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from edgeq.ir.graph import Node

from .builder import QParams, Tensor
from .converter import NHWC, Converter, handles, identity
from .float_islands import (
    INEXACT_INT8,
    divide_activations,
    float_elementwise,
    gelu_island,
    matmul_activations,
    unary_island,
)
from .lowering import common_layout, float_view, reduce_axes, same_quant

ACT = fb.ActivationFunctionType
PAD = fb.Padding
FIXED = {"Softmax": ((0.00390625, -128),), "Sigmoid": ((0.00390625, -128),),
         "Tanh": ((0.0078125, 0),)}  # fmt: skip
FIXED16 = {"Softmax": (3.0517578125e-05, 0), "Sigmoid": (3.0517578125e-05, 0),
           "Tanh": (3.0517578125e-05, 0)}  # fmt: skip


# ---- helpers ------------------------------------------------------------------------------
_NP = {"int8": np.int8, "int16": np.int16}


def _bounds(dtype: str) -> tuple[int, int]:
    info = np.iinfo(_NP[dtype])
    return int(info.min), int(info.max)


def _act_of(c: Converter, name: str) -> str:
    return c.act_dtype(name)


def _spatial_padding(c: Converter, node: Node, x: str, kernel: tuple[int, int],
                     strides: tuple[int, int], dilations: tuple[int, int],
                     pad_value: float | None = None) -> tuple[Tensor, int]:  # fmt: skip
    """x in NHWC and the TFLite padding mode, with an explicit PAD where ONNX pads are neither
    VALID nor TFLite's SAME split (TFLite's SAME puts the odd pixel at the bottom/right)."""
    shape = c.shape(x)
    pads = list(node.attrs.get("pads", [0, 0, 0, 0]))
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    same = []
    for i in range(2):
        size, k, s, d = shape[2 + i], kernel[i], strides[i], dilations[i]
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        same.append((total // 2, total - total // 2))
    if auto in ("SAME_UPPER",):
        pads = [same[0][0], same[1][0], same[0][1], same[1][1]]
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    elif auto not in ("NOTSET", ""):
        raise c.fail(node, f"auto_pad {auto} has no TFLite equivalent", "use explicit pads")
    xt = c.get(x, NHWC)
    if not any(pads):
        return xt, PAD.VALID
    if (pads[0], pads[2]) == same[0] and (pads[1], pads[3]) == same[1]:
        return xt, PAD.SAME
    if pad_value is False:  # type: ignore[comparison-overlap]
        raise c.fail(node, f"pads {pads} are neither VALID nor TFLite SAME and cannot be padded "
                     "explicitly (the average would count the padding)",
                     "use count_include_pad=1 or symmetric SAME padding")  # fmt: skip
    padded_shape = [xt.shape[0], xt.shape[1] + pads[0] + pads[2], xt.shape[2] + pads[1] + pads[3],
                    xt.shape[3]]  # fmt: skip
    out = c.m.tensor(f"{x}/pad", padded_shape, xt.dtype, xt.quant)
    paddings = c.int_const(
        f"{x}/paddings", [[0, 0], [pads[0], pads[2]], [pads[1], pads[3]], [0, 0]]
    )
    if pad_value is None:
        c.emit("PAD", [xt.index, paddings.index], [out.index], xt.dtype)
    else:
        if xt.quant is not None:
            qmin = -128 if xt.dtype == "int8" else -32768
            value = c.m.const(f"{x}/padvalue", np.asarray([qmin]), xt.dtype, xt.quant)
        else:
            value = c.m.const(f"{x}/padvalue", np.asarray([pad_value], np.float32), "float32")
        c.emit("PADV2", [xt.index, paddings.index, value.index], [out.index], xt.dtype)
    return out, PAD.VALID


def _weight(c: Converter, node: Node, name: str, channel_axis: int, layout: tuple[int, ...],
            int4: bool = False) -> tuple[np.ndarray, str, QParams | None]:  # fmt: skip
    """Weight data transposed by `layout`, its dtype, and its per-axis quantization (the
    channel axis moved with the transpose). A 4-bit plan weight is written as packed INT4
    where the kernel reproduces the simulator (`int4`: FULLY_CONNECTED v10, exact under
    XNNPACK and the reference kernels); elsewhere its [-8, 7] integers are stored as int8
    with the same scales (exact, no size saving). CONV_2D v7 with an INT4 filter runs in
    LiteRT 2.3, but put ~5% of a test conv's outputs one step above the simulator (both
    kernel sets; the same values stored as int8 were exact), so convolutions keep int8."""
    if c.plan is None:
        return c.g.constants[name].astype(np.float32).transpose(layout), "float32", None
    t = c.tq(name)
    if t is None or not t.is_quantized or t.values is None or t.role != "weight":
        raise c.fail(node, f"weight '{name}' is not quantized in the plan",
                     f"calibrate for target '{c.profile.name}'")  # fmt: skip
    if t.block is not None:
        raise c.fail(node, f"weight '{name}' is quantized per block ({t.block})",
                     "TFLite int8 kernels take per-channel weights: use --granularity per_channel")  # fmt: skip
    if t.dtype not in ("int8", "int4"):
        raise c.fail(node, f"weight '{name}' is {t.dtype}; TFLite takes int8 or int4 weights",
                     "use --bits 8 or --bits 4")  # fmt: skip
    if np.any(np.asarray(t.zero_point) != 0):
        raise c.fail(node, f"weight '{name}' has a non-zero zero point",
                     "TFLite needs symmetric weights (zero point 0)")  # fmt: skip
    if t.axis is not None and t.axis != channel_axis:
        raise c.fail(node, f"weight '{name}' is quantized along axis {t.axis}, the kernel's "
                     f"channel axis is {channel_axis}", "re-calibrate for this target")  # fmt: skip
    values = np.asarray(t.values).astype(np.int8).transpose(layout)
    axis = list(layout).index(channel_axis) if t.axis is not None else 0
    wtype = "int8"
    if t.dtype == "int4":
        if int4 and c.profile.quant.w4 == "int4":
            wtype = "int4"
        else:
            c.notes.append(f"{node}: 4-bit weight '{name}' stored as int8 (no int4 kernel for "
                           f"this op in LiteRT); same values and scales")  # fmt: skip
    return values, wtype, QParams.of(t.scale, t.zero_point, axis)


def _bias(c: Converter, node: Node, name: str | None, x: Tensor, w: QParams | None,
          channels: int) -> Tensor:  # fmt: skip
    if c.plan is None:
        data = c.g.constants[name] if name else np.zeros(channels, np.float32)
        return c.m.const(name or f"{node.name}/bias", np.broadcast_to(data, (channels,)), "float32")
    assert x.quant is not None and w is not None
    expected = np.float64(x.quant.scale[0]) * np.broadcast_to(
        np.asarray(w.scale, np.float64), (channels,)
    )
    if name is None:
        values = np.zeros(channels, np.int32)
    else:
        t = c.tq(name)
        if t is None or t.role != "bias" or t.values is None or t.scale is None:
            raise c.fail(node, f"bias '{name}' is not an int32 bias in the plan"
                         f"{' (' + t.reason + ')' if t is not None and t.reason else ''}",
                         "TFLite full-integer kernels need an int32 bias; re-calibrate for this target")  # fmt: skip
        got = np.broadcast_to(np.asarray(t.scale, np.float64), (channels,))
        # atol: denormal scales of dead channels (weights ~1e-40) lose float32 digits
        if not np.allclose(got, expected, rtol=1e-5, atol=float(np.finfo(np.float32).tiny)):
            raise c.fail(node, f"bias '{name}' scale is not input scale x weight scale",
                         "re-calibrate: TFLite derives the bias scale as s_in*s_w")  # fmt: skip
        values = np.broadcast_to(np.asarray(t.values, np.int64), (channels,)).astype(np.int32)
    # 16x8 kernels (int16 activations) take an int64 bias
    btype = "int64" if x.dtype == "int16" else "int32"
    return c.m.const(name or f"{node.name}/bias", values.astype(btype), btype,
                     QParams.of(expected.astype(np.float32), np.zeros(channels, np.int64), 0))  # fmt: skip


def _ints(node: Node, key: str, default: list[int]) -> list[int]:
    return [int(v) for v in node.attrs.get(key, default)]


# ---- convolutions -------------------------------------------------------------------------
@handles("Conv")
def conv(c: Converter, node: Node) -> None:
    x, w_name = node.inputs[0], node.inputs[1]
    b_name = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    if w_name not in c.g.constants or c.g.constants[w_name].ndim != 4:
        raise c.fail(node, "only 2-D convolutions with constant weights are lowered",
                     "fold the weights (prepare the graph) or reshape 1-D convs to 2-D")  # fmt: skip
    w = c.g.constants[w_name]
    out_ch, _, kh, kw = w.shape
    in_ch = c.shape(x)[1]
    group = int(node.attrs.get("group", 1))
    depthwise = group > 1 and group == in_ch and w.shape[1] == 1 and out_ch % in_ch == 0
    if group != 1 and not depthwise:
        raise c.fail(node, f"grouped convolution (group={group}) has no int8 TFLite kernel here",
                     "use group=1 or depthwise convolutions")  # fmt: skip
    strides = _ints(node, "strides", [1, 1])
    dil = _ints(node, "dilations", [1, 1])
    xt, padding = _spatial_padding(c, node, x, (kh, kw), (strides[0], strides[1]), (dil[0], dil[1]))
    layout = (1, 2, 3, 0) if depthwise else (0, 2, 3, 1)
    data, wtype, wq = _weight(c, node, w_name, 0, layout)  # int4 CONV_2D v7: see _weight
    wt = c.m.const(w_name, data, wtype, wq)
    bt = _bias(c, node, b_name, xt, wq, out_ch)
    out = c.new(node.outputs[0], NHWC)
    act = _act_of(c, x)
    if depthwise:
        opt = fb.DepthwiseConv2DOptionsT()
        opt.depthMultiplier = out_ch // in_ch
        name = "DEPTHWISE_CONV_2D"
    else:
        opt = fb.Conv2DOptionsT()
        name = "CONV_2D"
    opt.padding, opt.strideH, opt.strideW = padding, strides[0], strides[1]
    opt.dilationHFactor, opt.dilationWFactor = dil[0], dil[1]
    opt.fusedActivationFunction = ACT.NONE
    c.emit(name, [xt.index, wt.index, bt.index], [out.index], act, opt,
           weight=wtype, dilation=dil != [1, 1])  # fmt: skip


@handles("ConvTranspose")
def conv_transpose(c: Converter, node: Node) -> None:
    x, w_name = node.inputs[0], node.inputs[1]
    b_name = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    w = c.g.constants.get(w_name)
    if w is None or w.ndim != 4 or int(node.attrs.get("group", 1)) != 1:
        raise c.fail(node, "only 2-D, group=1 ConvTranspose with constant weights is lowered",
                     "use group=1")  # fmt: skip
    if any(_ints(node, "dilations", [1, 1])[i] != 1 for i in range(2)) or any(
        _ints(node, "output_padding", [0, 0])
    ):
        raise c.fail(
            node, "dilations/output_padding have no TRANSPOSE_CONV equivalent", "remove them"
        )
    _, out_ch, kh, kw = w.shape
    strides = _ints(node, "strides", [1, 1])
    out_shape = c.shape(node.outputs[0])
    in_shape = c.shape(x)
    pads = _ints(node, "pads", [0, 0, 0, 0])
    if not any(pads) and all(
        out_shape[2 + i] == (in_shape[2 + i] - 1) * strides[i] + (kh, kw)[i] for i in range(2)
    ):
        padding = PAD.VALID
    elif all(out_shape[2 + i] == in_shape[2 + i] * strides[i] for i in range(2)):
        padding = PAD.SAME
    else:
        raise c.fail(node, f"pads {pads} are neither VALID nor SAME", "use symmetric SAME pads")
    xt = c.get(x, NHWC)
    data, wtype, wq = _weight(c, node, w_name, 1, (1, 2, 3, 0))  # [I,O,kh,kw] -> [O,kh,kw,I]
    wt = c.m.const(w_name, data, wtype, wq)
    bt = _bias(c, node, b_name, xt, wq, out_ch)
    out = c.new(node.outputs[0], NHWC)
    shape_t = c.int_const(f"{node.name}/output_shape", [out_shape[i] for i in NHWC])
    opt = fb.TransposeConvOptionsT()
    opt.padding, opt.strideH, opt.strideW = padding, strides[0], strides[1]
    opt.fusedActivationFunction = ACT.NONE
    c.emit("TRANSPOSE_CONV", [shape_t.index, wt.index, xt.index, bt.index], [out.index],
           _act_of(c, x), opt, weight=wtype, bias=True)  # fmt: skip


# ---- fully connected / matmul -------------------------------------------------------------
def _fused_bias_add(c: Converter, node: Node) -> tuple[str | None, str]:
    """(bias constant, output name) for MatMul + Add(const 1-D) fused into one FC."""
    out = node.outputs[0]
    users = c.consumers.get(out, [])
    if len(users) != 1 or users[0].op_type != "Add" or out in c.g.output_names:
        return None, out
    add = users[0]
    other = add.inputs[1] if add.inputs[0] == out else add.inputs[0]
    if other not in c.g.constants or c.g.constants[other].ndim != 1:
        return None, out
    if c.plan is not None:
        t = c.tq(other)
        if t is None or t.role != "bias":
            if c.tq(out) is not None and c.tq(out).role == "float":  # type: ignore[union-attr]
                raise c.fail(node, f"the plan fuses '{out}' with its Add but '{other}' is not an int32 bias",
                             "re-calibrate for this target")  # fmt: skip
            return None, out
    c.skip.add(add.name)
    return other, add.outputs[0]


@handles("MatMul", "Gemm")
def matmul(c: Converter, node: Node) -> None:
    a, b = node.inputs[0], node.inputs[1]
    gemm = node.op_type == "Gemm"
    if gemm:
        if float(node.attrs.get("alpha", 1.0)) != 1.0 or int(node.attrs.get("transA", 0)):
            raise c.fail(node, "Gemm with alpha != 1 or transA is not lowered", "fold it first")
        if len(node.inputs) > 2 and node.inputs[2] and float(node.attrs.get("beta", 1.0)) != 1.0:
            raise c.fail(node, "Gemm with beta != 1 is not lowered", "fold it first")
    if b in c.g.constants and c.g.constants[b].ndim == 2 and a not in c.g.constants:
        trans_b = gemm and int(node.attrs.get("transB", 0)) == 1
        if gemm:
            bias_name = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
            out_name = node.outputs[0]
        else:
            bias_name, out_name = _fused_bias_add(c, node)
        channel_axis = 0 if trans_b else 1
        layout = (0, 1) if trans_b else (1, 0)
        data, wtype, wq = _weight(c, node, b, channel_axis, layout, int4=True)
        n = data.shape[0]
        xt = c.get(a)
        wt = c.m.const(b, data, wtype, wq)
        bt = _bias(c, node, bias_name, xt, wq, n)
        out = c.new(out_name)
        opt = fb.FullyConnectedOptionsT()
        opt.fusedActivationFunction = ACT.NONE
        opt.keepNumDims = len(xt.shape) > 2
        c.emit("FULLY_CONNECTED", [xt.index, wt.index, bt.index], [out.index], _act_of(c, a), opt,
               weight=wtype, keep_num_dims=opt.keepNumDims)  # fmt: skip
        return
    if gemm:
        raise c.fail(node, "Gemm without a constant 2-D weight is not lowered", "use MatMul")
    matmul_activations(c, node)


# ---- elementwise ----------------------------------------------------------------------------
_BINARY = {"Add": ("ADD", fb.AddOptionsT), "Sub": ("SUB", fb.SubOptionsT),
           "Mul": ("MUL", fb.MulOptionsT), "Div": ("DIV", fb.DivOptionsT),
           "Max": ("MAXIMUM", None), "Min": ("MINIMUM", None)}  # fmt: skip


@handles("Add", "Sub", "Mul", "Div", "Max", "Min")
def binary(c: Converter, node: Node) -> None:
    out_name = node.outputs[0]
    rank = len(c.shape(out_name))
    names = [i for i in node.inputs if i]
    op, opt_cls = _BINARY[node.op_type]
    if c.quantized and any(c.planned_float(n) for n in (out_name, *names)):
        float_elementwise(c, node, op, opt_cls() if opt_cls else None, node.op_type,
                          "the plan keeps the residual sum float")  # fmt: skip
        return
    if node.op_type == "Div" and c.quantized:
        if names[1] not in c.g.constants:
            divide_activations(c, node)
            return
        _div_by_const(c, node, rank)
        return
    perm = common_layout(c, names, rank)
    ins = []
    act = c.act_dtype(out_name)
    for n in names:
        if n in c.g.constants:
            ins.append(c.const_operand(n, rank, perm, act))
        elif len(c.shape(n)) == rank:
            ins.append(c.get(n, perm))
        else:
            ins.append(c.get(n))
    out = c.new(out_name, perm)
    opt = None
    if opt_cls is not None:
        opt = opt_cls()
        opt.fusedActivationFunction = ACT.NONE
    c.emit(op, [t.index for t in ins], [out.index], out.dtype, opt)


def _div_by_const(c: Converter, node: Node, rank: int) -> None:
    x, d = node.inputs[0], node.inputs[1]
    t = c.tq(d)
    if t is None or t.values is None or not t.is_quantized:
        raise c.fail(node, f"divisor '{d}' is not quantized in the plan", "re-calibrate")
    recip = 1.0 / t.dequantized().astype(np.float64)
    scale = float(np.max(np.abs(recip))) / 127.0
    q = np.clip(np.round(recip / scale), -127, 127).astype(np.int8)
    exact = bool(np.allclose(q * scale, recip, rtol=1e-6))
    if not exact:
        c.notes.append(f"{node}: division by a constant became a multiplication by its int8 "
                       "reciprocal (not exact for non-scalar divisors)")  # fmt: skip
    perm = c.any_layout(x)[0] if len(c.shape(x)) == rank else identity(rank)
    if q.size == 1:
        q = q.reshape(())
    else:
        q = q.reshape((1,) * (rank - q.ndim) + q.shape).transpose(perm)
    xt = c.get(x, perm)
    ct = c.m.const(f"{d}/reciprocal", q.astype(_NP[xt.dtype]), xt.dtype, QParams.of(scale, 0))
    out = c.new(node.outputs[0], perm)
    opt = fb.MulOptionsT()
    c.emit("MUL", [xt.index, ct.index], [out.index], out.dtype, opt)


_UNARY = {"Sigmoid": "LOGISTIC", "Tanh": "TANH", "HardSwish": "HARD_SWISH", "Relu": "RELU",
          "Gelu": "GELU", "LeakyRelu": "LEAKY_RELU", "Sqrt": "SQRT", "Exp": "EXP",
          "Abs": "ABS", "Neg": "NEG"}  # fmt: skip
_FUSABLE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL",
            "TRANSPOSE_CONV", "CONCATENATION"}  # fmt: skip


def _try_fuse(c: Converter, node: Node, act: int) -> bool:
    """Fold a Relu/Relu6 into its producer's fused activation when that changes no number."""
    x, y = node.inputs[0], node.outputs[0]
    if x in c.g.output_names or len(c.consumers.get(x, [])) != 1 or x in c.g.input_names:
        return False
    reals = c.layouts(x)
    if len(reals) != 1:
        return False
    perm, t = next(iter(reals.items()))
    op = c.maker.get(t.index)
    if op is None or op.builtinOptions is None:
        return False
    from ai_edge_litert import schema_py_generated as fbs

    names = {v: k for k, v in vars(fbs.BuiltinOperator).items() if not k.startswith("_")}
    code = c.m.opcode_list[op.opcodeIndex].builtinCode
    if names.get(code) not in _FUSABLE or op.builtinOptions.fusedActivationFunction != ACT.NONE:
        return False
    if c.quantized and not (c.qparams(x) or QParams((1.0,), (0,))).same(c.qparams(y)):
        return False
    op.builtinOptions.fusedActivationFunction = act
    c.alias(y, t, perm)
    return True


@handles("Sigmoid", "Tanh", "HardSwish", "Relu", "Gelu", "LeakyRelu", "Sqrt", "Exp", "Abs", "Neg")
def unary(c: Converter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    if node.op_type == "Relu" and _try_fuse(c, node, ACT.RELU):
        return
    if node.op_type == "HardSwish" and _hard_swish_lowered(c, node):
        return
    if node.op_type in INEXACT_INT8 and c.quantized:
        unary_island(c, node, x, INEXACT_INT8[node.op_type])
        return
    micro = c.profile.raw.get("micro_kernels")
    if node.op_type == "Gelu" and micro is not None and "GELU" not in micro:
        gelu_island(c, node)
        return
    if c.quantized and node.op_type in FIXED:
        q = c.qparams(y)
        want = FIXED[node.op_type][0] if c.act_dtype(y) == "int8" else FIXED16[node.op_type]
        if q is None or not q.same(QParams.of(want[0], want[1])):
            raise c.fail(node, f"TFLite {_UNARY[node.op_type]} needs the fixed output encoding "
                         f"scale {want[0]}, zero point {want[1]}; the plan has "
                         f"{q.scale[0] if q else None}/{q.zero_point[0] if q else None}",
                         f"calibrate for target '{c.profile.name}' (it fixes this encoding)")  # fmt: skip
    perm, _ = c.any_layout(x)
    xt = c.get(x, perm)
    out = c.new(y, perm)
    opt = None
    if node.op_type == "Gelu":
        opt = fb.GeluOptionsT()
        approx = node.attrs.get("approximate", "none")
        opt.approximate = (approx.decode() if isinstance(approx, bytes) else approx) == "tanh"
    elif node.op_type == "LeakyRelu":
        opt = fb.LeakyReluOptionsT()
        opt.alpha = float(node.attrs.get("alpha", 0.01))
    c.emit(_UNARY[node.op_type], [xt.index], [out.index], xt.dtype, opt)


@handles("Identity")
def identity_op(c: Converter, node: Node) -> None:
    perm, t = c.any_layout(node.inputs[0])
    c.alias(node.outputs[0], t, perm)


@handles("Clip")
def clip(c: Converter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]

    def bound(i: int, key: str, default: float) -> float:
        if len(node.inputs) > i and node.inputs[i]:
            return float(c.g.constants[node.inputs[i]].reshape(-1)[0])
        return float(node.attrs.get(key, default))

    lo, hi = bound(1, "min", -math.inf), bound(2, "max", math.inf)
    builtin = {(0.0, 6.0): ("RELU6", ACT.RELU6), (0.0, math.inf): ("RELU", ACT.RELU),
               (-1.0, 1.0): ("RELU_N1_TO_1", ACT.RELU_N1_TO_1)}.get((lo, hi))  # fmt: skip
    if builtin is not None:
        if _try_fuse(c, node, builtin[1]):
            return
        perm, xt = c.any_layout(x)
        out = c.new(y, perm)
        c.emit(builtin[0], [xt.index], [out.index], xt.dtype)
        return
    perm, xt = c.any_layout(x)
    cur = xt
    for value, op in ((lo, "MAXIMUM"), (hi, "MINIMUM")):
        if math.isinf(value):
            continue
        k = c.scalar_const(f"{node.name}/{op.lower()}", value, x)
        if c.quantized:  # the bound on x's own grid, so the comparison is exact
            assert xt.quant is not None
            s, z = xt.quant.scale[0], xt.quant.zero_point[0]
            lo_q, hi_q = _bounds(xt.dtype)
            qv = int(np.clip(round(value / s) + z, lo_q, hi_q))
            k = c.m.const(f"{node.name}/{op.lower()}", np.asarray(qv), xt.dtype, xt.quant)
        nxt = c.m.tensor(f"{y}/{op.lower()}", cur.shape, cur.dtype, cur.quant)
        c.emit(op, [cur.index, k.index], [nxt.index], cur.dtype)
        cur = nxt
    if c.quantized and not (xt.quant and xt.quant.same(c.qparams(y))):
        out = c.new(y, perm)
        c.emit("QUANTIZE", [cur.index], [out.index], cur.dtype, requantize=True)
    else:
        c.alias(y, cur, perm)


def _hard_swish_lowered(c: Converter, node: Node) -> bool:
    """XNNPACK has no int8 HARD_SWISH (LiteRT 2.3 leaves it to the reference kernel, which
    splits the delegated graph at every activation). Where the target asks for it
    (`hardswish = "lowered"` in the profile), x * hardsigmoid(x) runs as MUL + ADD + MUL, all
    delegated. The hard-sigmoid gate in between is an internal tensor on the grid
    (1/255, -128), which holds 0 and 1 exactly: on the (1/256, -128) grid of a HardSigmoid
    output the gate saturated at 255/256, scaling every x >= 3 by 0.996 (a systematic
    negative bias that cost ppocr-rec ~0.5 CER points against the simulator). Its rounding
    (at most 1/510) is the only difference from the simulator's exact HardSwish. In 16x8 mode
    the gate is (1/32767, 0) and the ADD's fused RELU clips it at 0."""
    if not c.quantized or c.profile.raw.get("hardswish", "builtin") != "lowered":
        return False
    x, y = node.inputs[0], node.outputs[0]
    perm, xt = c.any_layout(x)
    gate = f"{y}/hardsigmoid"
    gq = QParams.of(1 / 255, -128) if xt.dtype == "int8" else QParams.of(1 / 32767, 0)
    h = _hard_sigmoid_int(c, node, xt, 1 / 6, 0.5, gq, c.m.tensor(gate, xt.shape, xt.dtype, gq))
    out = c.new(y, perm)
    c.emit("MUL", [xt.index, h.index], [out.index], xt.dtype, fb.MulOptionsT())
    return True


def _hard_sigmoid_int(c: Converter, node: Node, xt: Tensor, alpha: float, beta: float,
                      yq: QParams, out: Tensor) -> Tensor:  # fmt: skip
    """clip(alpha*x + beta, 0, 1) into `out` (encoding `yq`): MUL by alpha with output scale
    alpha*s_x (the integers stay x's), ADD beta rounding once onto `yq`. The clip is the
    int8 saturation of a [0, 1] grid, or (int16, zero point 0) a fused RELU plus saturation."""
    assert xt.quant is not None
    dt = _NP[xt.dtype]
    mq = QParams.of(alpha * xt.quant.scale[0], xt.quant.zero_point[0])
    a = c.m.const(f"{node.name}/alpha", np.asarray(127, dt), xt.dtype, QParams.of(alpha / 127, 0))
    scaled = c.m.tensor(f"{out.index}/scaled", xt.shape, xt.dtype, mq)
    c.emit("MUL", [xt.index, a.index], [scaled.index], xt.dtype, fb.MulOptionsT())
    b = c.m.const(f"{node.name}/beta", np.asarray(int(np.sign(beta)) * 127, dt), xt.dtype,
                  QParams.of(abs(beta) / 127 if beta else 1.0, 0))  # fmt: skip
    opt = fb.AddOptionsT()
    lo = (_bounds(xt.dtype)[0] - yq.zero_point[0]) * yq.scale[0]
    opt.fusedActivationFunction = ACT.RELU if lo < -1e-6 else ACT.NONE
    c.emit("ADD", [scaled.index, b.index], [out.index], xt.dtype, opt)
    return out


@handles("HardSigmoid")
def hard_sigmoid(c: Converter, node: Node) -> None:
    """clip(alpha*x + beta, 0, 1) as MUL + ADD. Quantized: the MUL output gets scale
    alpha*s_x and x's zero point, so its integers equal x's (no rounding is added); the ADD
    writes the plan's output encoding, whose int8 saturation is the clip to [0, 1)."""
    x, y = node.inputs[0], node.outputs[0]
    alpha, beta = float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
    perm, xt = c.any_layout(x)
    if c.quantized:
        assert xt.quant is not None
        yq = c.qparams(y)
        assert yq is not None
        q_lo, q_hi = _bounds(c.act_dtype(y))
        lo = (q_lo - yq.zero_point[0]) * yq.scale[0]
        hi = (q_hi - yq.zero_point[0]) * yq.scale[0]
        if (lo < -1e-6 and c.act_dtype(y) == "int8") or lo < -1.0 - 1e-6 or hi > 1.0 + 1e-6:
            raise c.fail(node, f"output range [{lo:.4g}, {hi:.4g}] is wider than [0, 1]; the int8 "
                         "lowering relies on saturation to clip", "calibrate for this target")  # fmt: skip
        _hard_sigmoid_int(c, node, xt, alpha, beta, yq, c.new(y, perm))
        c.notes.append(f"{node}: HardSigmoid lowered to MUL (exact: scale alpha*s_x) + ADD "
                       "(one rounding onto the plan's output encoding, saturating at [0, 1))")  # fmt: skip
        return
    a = c.scalar_const(f"{node.name}/alpha", alpha, x)
    b = c.scalar_const(f"{node.name}/beta", beta, x)
    scaled = c.m.tensor(f"{y}/scaled", xt.shape, "float32")
    c.emit("MUL", [xt.index, a.index], [scaled.index], "float32", fb.MulOptionsT())
    shifted = c.m.tensor(f"{y}/shifted", xt.shape, "float32")
    c.emit("ADD", [scaled.index, b.index], [shifted.index], "float32", fb.AddOptionsT())
    out = c.new(y, perm)
    c.emit("RELU_0_TO_1", [shifted.index], [out.index], "float32")


@handles("Softmax")
def softmax(c: Converter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    rank = len(c.shape(x))
    axis = int(node.attrs.get("axis", -1)) % rank
    if c.quantized:
        q, want = c.qparams(y), FIXED["Softmax"][0]
        if c.act_dtype(y) == "int16":
            want = FIXED16["Softmax"]
        if q is None or not q.same(QParams.of(*want)):
            raise c.fail(node, f"TFLite SOFTMAX needs output scale {want[0]}, zero point {want[1]}",
                         f"calibrate for target '{c.profile.name}'")  # fmt: skip
    perm = next((p for p in c.layouts(x) if p[-1] == axis), None)
    if perm is None:
        perm = identity(rank) if axis == rank - 1 else tuple(
            [i for i in range(rank) if i != axis] + [axis])  # fmt: skip
    xt = c.get(x, perm)
    out = c.new(y, perm)
    opt = fb.SoftmaxOptionsT()
    opt.beta = 1.0
    c.emit("SOFTMAX", [xt.index], [out.index], xt.dtype, opt)


# ---- pooling / reductions / resize ---------------------------------------------------------
@handles("MaxPool", "AveragePool")
def pool(c: Converter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    if len(node.outputs) > 1 and node.outputs[1]:
        raise c.fail(node, "MaxPool indices output has no TFLite equivalent", "drop it")
    k = _ints(node, "kernel_shape", [1, 1])
    s = _ints(node, "strides", [1, 1])
    d = _ints(node, "dilations", [1, 1])
    if len(k) != 2 or d != [1, 1]:
        raise c.fail(node, "only 2-D pooling without dilation is lowered", "use 2-D pooling")
    is_max = node.op_type == "MaxPool"
    same_quant(c, node, x, y, "MAX_POOL_2D" if is_max else "AVERAGE_POOL_2D")
    pad_value: float | bool | None = -3.4e38 if is_max else (
        None if int(node.attrs.get("count_include_pad", 0)) else False)  # fmt: skip
    xt, padding = _spatial_padding(c, node, x, (k[0], k[1]), (s[0], s[1]), (1, 1), pad_value)  # type: ignore[arg-type]
    out = c.new(y, NHWC)
    expect = [xt.shape[0], 0, 0, xt.shape[3]]
    for i in range(2):
        size = xt.shape[1 + i]
        expect[1 + i] = -(-size // s[i]) if padding == PAD.SAME else (size - k[i]) // s[i] + 1
    if list(out.shape) != expect:
        raise c.fail(node, f"output shape {list(out.shape)} differs from TFLite's {expect} "
                     "(ceil_mode?)", "use ceil_mode=0 or explicit pads")  # fmt: skip
    opt = fb.Pool2DOptionsT()
    opt.padding, opt.strideH, opt.strideW = padding, s[0], s[1]
    opt.filterHeight, opt.filterWidth = k[0], k[1]
    opt.fusedActivationFunction = ACT.NONE
    c.emit("MAX_POOL_2D" if is_max else "AVERAGE_POOL_2D", [xt.index], [out.index], xt.dtype, opt)


_REDUCE = {"GlobalAveragePool": "MEAN", "GlobalMaxPool": "REDUCE_MAX", "ReduceMean": "MEAN",
           "ReduceMax": "REDUCE_MAX", "ReduceSum": "SUM", "ReduceMin": "REDUCE_MIN"}  # fmt: skip


@handles(*_REDUCE)
def reduce(c: Converter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    rank = len(c.shape(x))
    if node.op_type.startswith("Global"):
        axes, keep = list(range(2, rank)), True
    else:
        axes, keep = reduce_axes(c, node, rank)
    if node.op_type in ("GlobalMaxPool", "ReduceMax", "ReduceMin"):
        same_quant(c, node, x, y, _REDUCE[node.op_type])
    perm, xt = c.any_layout(x)
    t_axes = [perm.index(a) for a in axes]
    if keep:
        out_perm = perm
    else:
        rem = [a for a in perm if a not in axes]
        order = sorted(rem)
        out_perm = tuple(order.index(a) for a in rem)
    out = c.new(y, out_perm)
    axes_t = c.int_const(f"{node.name}/axes", t_axes)
    opt = fb.ReducerOptionsT()
    opt.keepDims = keep
    if _REDUCE[node.op_type] == "SUM" and out.quant is not None:
        # LiteRT 2.3's reference int8 SUM returns wrong values (XNNPACK's is right) and an
        # int8 MEAN rounds twice (mean in input units, then rescale): sum in float32
        xf = float_view(c, x, perm)
        res = c.m.tensor(f"{y}/sum", out.shape, "float32")
        c.emit("SUM", [xf.index, axes_t.index], [res.index], "float32", opt)
        c.emit("QUANTIZE", [res.index], [out.index], "float32")
        c.notes.append(f"{node}: ReduceSum runs in float32 between DEQUANTIZE and QUANTIZE "
                       "(LiteRT's reference int8 SUM is wrong)")  # fmt: skip
        return
    c.emit(_REDUCE[node.op_type], [xt.index, axes_t.index], [out.index], xt.dtype, opt)


@handles("Resize", "Upsample")
def resize(c: Converter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    same_quant(c, node, x, y, "RESIZE")
    xs, ys = c.shape(x), c.shape(y)
    if len(xs) != 4 or xs[:2] != ys[:2]:
        raise c.fail(node, "only spatial resizing of 4-D tensors is lowered", "resize H and W only")
    mode = node.attrs.get("mode", "nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    ctm = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
    nearest = node.attrs.get("nearest_mode", "round_prefer_floor")
    nearest = nearest.decode() if isinstance(nearest, bytes) else nearest
    integer_up = all(ys[i] % xs[i] == 0 for i in (2, 3))
    align, half = ctm == "align_corners", ctm in ("half_pixel", "pytorch_half_pixel")
    if mode == "nearest":
        if integer_up and ctm != "align_corners":
            align, half = False, False  # every ONNX rounding picks floor(i / factor) here
        elif not (ctm == "asymmetric" and nearest == "floor"):
            raise c.fail(node, f"nearest resize with {ctm}/{nearest} has no exact TFLite mode",
                         "use integer upscaling or asymmetric/floor")  # fmt: skip
        op, opt = "RESIZE_NEAREST_NEIGHBOR", fb.ResizeNearestNeighborOptionsT()
    elif mode == "linear":
        if ctm not in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"):
            raise c.fail(node, f"linear resize with {ctm} has no TFLite mode", "use half_pixel")
        op, opt = "RESIZE_BILINEAR", fb.ResizeBilinearOptionsT()
    else:
        raise c.fail(node, f"resize mode {mode} has no TFLite kernel", "use nearest or linear")
    opt.alignCorners, opt.halfPixelCenters = align, half
    xt = c.get(x, NHWC)
    size = c.int_const(f"{node.name}/size", [ys[2], ys[3]])
    out = c.new(y, NHWC)
    c.emit(op, [xt.index, size.index], [out.index], xt.dtype, opt, half_pixel=half)


# ---- shape ops -----------------------------------------------------------------------------
@handles("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(c: Converter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    same_quant(c, node, x, y, "RESHAPE")
    ys = c.shape(y)
    perm, xt = c.any_layout(x)
    xs = c.shape(x)
    squeezed = [d for d in xs if d != 1]
    if (
        perm != identity(len(xs))
        and [xs[i] for i in perm if xs[i] != 1] == squeezed
        and [d for d in ys if d != 1] == squeezed
    ):
        pass  # only unit dims move: the data order is the same in either layout
    else:
        xt = c.get(x)
    shape_t = c.int_const(f"{node.name}/shape", list(ys))
    out = c.new(y)
    opt = fb.ReshapeOptionsT()
    opt.newShape = list(ys)
    c.emit("RESHAPE", [xt.index, shape_t.index], [out.index], xt.dtype, opt)


@handles("Transpose")
def transpose(c: Converter, node: Node) -> None:
    """A relabeling: the same TFLite tensor realizes the output in a composed layout."""
    x, y = node.inputs[0], node.outputs[0]
    same_quant(c, node, x, y, "TRANSPOSE")
    rank = len(c.shape(x))
    p = tuple(int(i) for i in node.attrs.get("perm", list(reversed(range(rank)))))
    inv = np.argsort(p)
    for q, t in list(c.layouts(x).items()):
        c.alias(y, t, tuple(int(inv[i]) for i in q))


@handles("Concat")
def concat(c: Converter, node: Node) -> None:
    y = node.outputs[0]
    names = [i for i in node.inputs if i]
    rank = len(c.shape(y))
    axis = int(node.attrs["axis"]) % rank
    perm = common_layout(c, names, rank)
    ins = []
    for n in names:
        if n in c.g.constants:
            arr = c.g.constants[n].transpose(perm)
            t = c.tq(n)
            if c.quantized:
                yq = c.qparams(y)
                assert yq is not None
                lo_q, hi_q = _bounds(c.act_dtype(y))
                qv = np.clip(np.round(arr / yq.scale[0]) + yq.zero_point[0], lo_q, hi_q)
                ins.append(c.m.const(n, qv.astype(_NP[c.act_dtype(y)]), c.act_dtype(y), yq))
            else:
                ins.append(c.m.const(n, arr.astype(np.float32), "float32"))
            del t
        else:
            t = c.get(n, perm)
            yq = c.qparams(y) if c.quantized else None
            if yq is not None and (t.dtype != c.act_dtype(y) or not (t.quant and t.quant.same(yq))):
                # an input with its own encoding (a fixed Sigmoid/Softmax encoding joined with
                # wider values; the plan says so): one QUANTIZE onto the output's encoding
                r = c.m.tensor(f"{n}/requantized", t.shape, c.act_dtype(y), yq)
                c.emit("QUANTIZE", [t.index], [r.index], c.act_dtype(y), requantize=True)
                c.notes.append(f"{node}: input {n} requantized onto the Concat's encoding")
                t = r
            ins.append(t)
    out = c.new(y, perm)
    opt = fb.ConcatenationOptionsT()
    opt.axis = perm.index(axis)
    opt.fusedActivationFunction = ACT.NONE
    c.emit("CONCATENATION", [t.index for t in ins], [out.index], out.dtype, opt)


@handles("Slice")
def slice_op(c: Converter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    same_quant(c, node, x, y, "STRIDED_SLICE")
    xs = c.shape(x)
    rank = len(xs)

    def const(i: int) -> list[int] | None:
        if len(node.inputs) > i and node.inputs[i]:
            return [int(v) for v in c.g.constants[node.inputs[i]].reshape(-1)]
        return None

    starts, ends = const(1), const(2)
    if starts is None or ends is None:
        raise c.fail(node, "Slice needs constant starts/ends", "fold the graph first")
    axes = const(3) or list(range(len(starts)))
    steps = const(4) or [1] * len(starts)
    begin, end, stride = [0] * rank, list(xs), [1] * rank
    for st, en, ax, sp in zip(starts, ends, axes, steps, strict=True):
        if sp <= 0:
            raise c.fail(node, "negative slice steps are not lowered", "use positive steps")
        ax %= rank
        lo, hi, _ = slice(st, en, sp).indices(xs[ax])
        begin[ax], end[ax], stride[ax] = lo, max(hi, lo), sp
    perm, xt = c.any_layout(x)
    out = c.new(y, perm)
    tb = c.int_const(f"{node.name}/begin", [begin[i] for i in perm])
    te = c.int_const(f"{node.name}/end", [end[i] for i in perm])
    ts = c.int_const(f"{node.name}/strides", [stride[i] for i in perm])
    opt = fb.StridedSliceOptionsT()
    c.emit("STRIDED_SLICE", [xt.index, tb.index, te.index, ts.index], [out.index], xt.dtype, opt)


@handles("Gather")
def gather(c: Converter, node: Node) -> None:
    data, idx, y = node.inputs[0], node.inputs[1], node.outputs[0]
    axis = int(node.attrs.get("axis", 0))
    rank = len(c.shape(data))
    axis %= rank
    if idx in c.g.constants:
        it = c.int_const(f"{node.name}/indices", c.g.constants[idx])
    else:
        it = c.get(idx)
    if data in c.g.constants:
        table = c.g.constants[data]
        if c.quantized:
            t = c.tq(data)
            if t is None or not t.is_quantized or t.values is None:
                raise c.fail(node, f"table '{data}' is not quantized in the plan", "re-calibrate")
            if np.ndim(t.scale) != 0:
                raise c.fail(node, f"table '{data}' is quantized per row; TFLite GATHER keeps one "
                             "scale per tensor", "calibrate with Gather per-tensor (target rpi does)")  # fmt: skip
            tq = QParams.of(t.scale, t.zero_point)
            values = np.asarray(t.values).astype(np.int8)
            yq = c.qparams(y)
            assert yq is not None
            if not tq.same(yq):
                # the lookup's output encoding differs from the table's: requantize the rows
                # offline (elementwise, exactly the simulator's rounding) rather than with a
                # QUANTIZE op (XNNPACK's int8 requantize flipped ~3% of a test's values)
                from edgeq.quant.qtypes import round_half

                q = round_half(t.dequantized().astype(np.float64) / yq.scale[0],
                               c.plan.rounding if c.plan else "half_away") + yq.zero_point[0]  # fmt: skip
                ydt = c.act_dtype(y)
                values, tq = np.clip(q, *_bounds(ydt)).astype(_NP[ydt]), yq
            dt = c.m.const(data, values, "int16" if values.dtype == np.int16 else "int8", tq)
        else:
            dt = c.m.const(data, table.astype(np.float32), "float32")
        out = c.new(y)
        c.emit("GATHER", [dt.index, it.index], [out.index], dt.dtype, _gather_opt(axis))
        return
    same_quant(c, node, data, y, "GATHER")
    xt = c.get(data)
    out = c.new(y)
    c.emit("GATHER", [xt.index, it.index], [out.index], xt.dtype, _gather_opt(axis))


def _gather_opt(axis: int) -> object:
    opt = fb.GatherOptionsT()
    opt.axis = axis
    return opt


@handles("LayerNormalization")
def layer_norm(c: Converter, node: Node) -> None:
    """mean/variance/rsqrt as MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL, MUL, ADD. TFLite has no
    integer LayerNorm kernel, and int8 intermediates (x - mean, its square) without their own
    statistics cost most of the precision, so quantized graphs run this block in float
    between DEQUANTIZE and QUANTIZE (noted in the artifact; not integer-only)."""
    x, y = node.inputs[0], node.outputs[0]
    rank = len(c.shape(x))
    axis = int(node.attrs.get("axis", -1)) % rank
    if axis != rank - 1:
        raise c.fail(node, "LayerNormalization over more than the last axis is not lowered",
                     "normalize over the last axis")  # fmt: skip
    eps = float(node.attrs.get("epsilon", 1e-5))
    xt = c.get(x)
    shape = list(xt.shape)
    if c.quantized:
        xt = float_view(c, x, identity(rank))  # a residual sum the plan keeps float: as is
        c.notes.append(f"{node}: LayerNormalization runs in float32 between DEQUANTIZE and "
                       "QUANTIZE (no integer kernel)")  # fmt: skip
    keep = [*shape[:-1], 1]

    def tmp(label: str, shp: list[int]) -> object:
        return c.m.tensor(f"{y}/{label}", shp, "float32")

    axes = c.int_const(f"{node.name}/axes", [rank - 1])
    red = fb.ReducerOptionsT()
    red.keepDims = True
    mean = tmp("mean", keep)
    c.emit("MEAN", [xt.index, axes.index], [mean.index], "float32", red)  # type: ignore[attr-defined]
    d = tmp("centered", shape)
    c.emit("SUB", [xt.index, mean.index], [d.index], "float32", fb.SubOptionsT())  # type: ignore[attr-defined]
    sq = tmp("square", shape)
    c.emit("MUL", [d.index, d.index], [sq.index], "float32", fb.MulOptionsT())  # type: ignore[attr-defined]
    var = tmp("var", keep)
    c.emit("MEAN", [sq.index, axes.index], [var.index], "float32", red)  # type: ignore[attr-defined]
    e = c.m.const(f"{node.name}/eps", np.asarray(eps, np.float32), "float32")
    ve = tmp("var_eps", keep)
    c.emit("ADD", [var.index, e.index], [ve.index], "float32", fb.AddOptionsT())  # type: ignore[attr-defined]
    rs = tmp("rstd", keep)
    c.emit("RSQRT", [ve.index], [rs.index], "float32")  # type: ignore[attr-defined]
    n = tmp("normed", shape)
    c.emit("MUL", [d.index, rs.index], [n.index], "float32", fb.MulOptionsT())  # type: ignore[attr-defined]
    cur = n
    for k, (op, opt_cls) in ((1, ("MUL", fb.MulOptionsT)), (2, ("ADD", fb.AddOptionsT))):
        if len(node.inputs) > k and node.inputs[k]:
            t = c.tq(node.inputs[k])
            arr = c.g.constants[node.inputs[k]].astype(np.float32)
            if t is not None and t.is_quantized and t.values is not None:
                arr = t.dequantized().astype(np.float32)  # the simulator's values
            ct = c.m.const(node.inputs[k], arr.reshape(-1), "float32")
            nxt = tmp(op.lower(), shape)
            c.emit(op, [cur.index, ct.index], [nxt.index], "float32", opt_cls())  # type: ignore[attr-defined]
            cur = nxt
    if c.quantized and not c.planned_float(y):
        out = c.new(y)
        c.emit("QUANTIZE", [cur.index], [out.index], "float32")  # type: ignore[attr-defined]
    else:  # float graphs, and an output the plan keeps float (smoothing.smooth_copies)
        c.alias(y, cur, identity(rank))  # type: ignore[arg-type]


@handles("BatchNormalization")
def batch_norm(c: Converter, node: Node) -> None:
    """Inference BatchNorm y = x*s + b (s = gamma/sqrt(var+eps), b = beta - mean*s, from the
    plan's values of the constants, as the simulator uses them) as a 1x1 DEPTHWISE_CONV_2D:
    per-channel int8 weights with scale |s|/127 hold s exactly (q = +-127), the int32 bias
    holds b, and the output is rounded once onto the plan's encoding."""
    x, y = node.inputs[0], node.outputs[0]
    if len(c.shape(x)) != 4:
        raise c.fail(node, "only 4-D BatchNormalization is lowered", "fold it into a conv")

    def value(i: int) -> np.ndarray:
        t = c.tq(node.inputs[i])
        if t is not None and t.is_quantized and t.values is not None:
            return t.dequantized().astype(np.float64)
        return c.g.constants[node.inputs[i]].astype(np.float64)

    gamma, beta, mean, var = (value(i) for i in range(1, 5))
    s = gamma / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
    b = beta - mean * s
    ch = s.shape[0]
    xt = c.get(x, NHWC)
    out = c.new(y, NHWC)
    if c.quantized:
        assert xt.quant is not None
        ws = np.where(s != 0, np.abs(s) / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.round(s / ws), -127, 127).astype(np.int8)
        wt = c.m.const(f"{node.name}/scale", q.reshape(1, 1, 1, ch), "int8",
                       QParams.of(ws, np.zeros(ch, np.int64), 3))  # fmt: skip
        bs = (np.float64(xt.quant.scale[0]) * ws.astype(np.float64)).astype(np.float32)
        bq = np.clip(np.round(b / bs.astype(np.float64)), -(2**31 - 1), 2**31 - 1).astype(np.int32)
        bt = c.m.const(f"{node.name}/shift", bq, "int32", QParams.of(bs, np.zeros(ch, np.int64), 0))
        wtype = "int8"
    else:
        wt = c.m.const(f"{node.name}/scale", s.astype(np.float32).reshape(1, 1, 1, ch), "float32")
        bt = c.m.const(f"{node.name}/shift", b.astype(np.float32), "float32")
        wtype = "float32"
    opt = fb.DepthwiseConv2DOptionsT()
    opt.padding, opt.strideH, opt.strideW, opt.depthMultiplier = PAD.VALID, 1, 1, 1
    opt.dilationHFactor = opt.dilationWFactor = 1
    opt.fusedActivationFunction = ACT.NONE
    c.emit("DEPTHWISE_CONV_2D", [xt.index, wt.index, bt.index], [out.index], xt.dtype, opt,
           weight=wtype)  # fmt: skip


@handles("Split")
def split(c: Converter, node: Node) -> None:
    """SPLIT_V along the axis in the input's current layout; every output shares the input's
    scale (TFLite's SPLIT/SPLIT_V keep the quantization)."""
    x = node.inputs[0]
    outs = [o for o in node.outputs if o]
    if len(outs) != len(node.outputs):
        raise c.fail(node, "a Split with unused outputs is not lowered", "keep every output")
    for o in outs:
        same_quant(c, node, x, o, "SPLIT_V")
    rank = len(c.shape(x))
    axis = int(node.attrs.get("axis", 0)) % rank
    perm, xt = c.any_layout(x)
    sizes = [c.shape(o)[axis] for o in outs]
    sizes_t = c.int_const(f"{node.name}/sizes", sizes)
    axis_t = c.m.const(f"{node.name}/axis", np.asarray(perm.index(axis), np.int32), "int32")
    tensors = [c.new(o, perm) for o in outs]
    opt = fb.SplitVOptionsT()
    opt.numSplits = len(outs)
    c.emit("SPLIT_V", [xt.index, sizes_t.index, axis_t.index], [t.index for t in tensors],
           xt.dtype, opt)  # fmt: skip


@handles("Pad")
def pad(c: Converter, node: Node) -> None:
    """Constant-mode Pad as PADV2 with the fill on the output's grid (same scale in and out)."""
    x, y = node.inputs[0], node.outputs[0]
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("constant", "reflect"):
        raise c.fail(node, f"Pad mode {mode} is not lowered", "use constant or reflect padding")
    same_quant(c, node, x, y, "PADV2" if mode == "constant" else "MIRROR_PAD")
    xs = c.shape(x)
    rank = len(xs)
    if len(node.inputs) > 1 and node.inputs[1]:
        pads = [int(v) for v in c.g.constants[node.inputs[1]].reshape(-1)]
    else:
        pads = [int(v) for v in node.attrs.get("pads", [])]
    axes = list(range(rank))
    if len(node.inputs) > 3 and node.inputs[3]:
        axes = [int(a) % rank for a in c.g.constants[node.inputs[3]].reshape(-1)]
    widths = [[0, 0] for _ in range(rank)]
    for i, a in enumerate(axes):
        widths[a] = [pads[i], pads[i + len(axes)]]
    if any(v < 0 for w in widths for v in w):
        raise c.fail(node, "negative pads (cropping) are not lowered", "use Slice")
    fill = 0.0
    if len(node.inputs) > 2 and node.inputs[2]:
        fill = float(c.g.constants[node.inputs[2]].reshape(-1)[0])
    perm, xt = c.any_layout(x)
    paddings = c.int_const(f"{node.name}/paddings", [widths[i] for i in perm])
    out = c.new(y, perm)
    if mode == "reflect":
        opt = fb.MirrorPadOptionsT()
        opt.mode = fb.MirrorPadMode.REFLECT
        c.emit("MIRROR_PAD", [xt.index, paddings.index], [out.index], xt.dtype, opt)
        return
    if xt.quant is not None:
        lo_q, hi_q = _bounds(xt.dtype)
        q = int(np.clip(round(fill / xt.quant.scale[0]) + xt.quant.zero_point[0], lo_q, hi_q))
        value = c.m.const(f"{node.name}/value", np.asarray([q]), xt.dtype, xt.quant)
    else:
        value = c.m.const(f"{node.name}/value", np.asarray([fill], np.float32), "float32")
    c.emit("PADV2", [xt.index, paddings.index, value.index], [out.index], xt.dtype)


_COMPARE = {"Equal": "EQUAL", "Less": "LESS", "Greater": "GREATER",
            "GreaterOrEqual": "GREATER_EQUAL", "LessOrEqual": "LESS_EQUAL"}  # fmt: skip
_LOGIC = {"And": "LOGICAL_AND", "Or": "LOGICAL_OR", "Not": "LOGICAL_NOT"}


@handles(*_COMPARE, *_LOGIC)
def compare_logic(c: Converter, node: Node) -> None:
    """Comparisons (bool out; quantized operands must share one encoding, as TFLite's int8
    comparisons compare the integers) and logical ops on bool tensors."""
    y = node.outputs[0]
    names = [i for i in node.inputs if i]
    rank = len(c.shape(y))
    perm = common_layout(c, names, rank)
    ins = []
    acts = [n for n in names if n not in c.g.constants]
    ref = c.qparams(acts[0]) if acts and node.op_type in _COMPARE else None
    for n in names:
        if n in c.g.constants:
            arr = c.g.constants[n]
            if ref is not None and np.issubdtype(arr.dtype, np.floating):
                lo_q, hi_q = _bounds(c.act_dtype(acts[0]))
                q = np.clip(np.round(arr / ref.scale[0]) + ref.zero_point[0], lo_q, hi_q)
                if not np.allclose((q - ref.zero_point[0]) * ref.scale[0], arr):
                    raise c.fail(node, f"constant '{n}' is not on the compared tensor's int8 grid",
                                 "compare integer tensors or exact grid values")  # fmt: skip
                arr = q.astype(_NP[c.act_dtype(acts[0])])
                dtype, quant = c.act_dtype(acts[0]), ref
            elif arr.dtype == np.bool_:
                dtype, quant = "bool", None
            elif np.issubdtype(arr.dtype, np.floating):
                dtype, quant = "float32", None
            else:
                arr, dtype, quant = arr.astype(np.int32), "int32", None
            if arr.ndim == rank:
                arr = arr.transpose(perm)
            ins.append(c.m.const(f"{node.name}/{n}", np.asarray(arr), dtype, quant))
        else:
            if ref is not None and not ref.same(c.qparams(n)):
                raise c.fail(node, "compared tensors have different encodings",
                             "calibrate so both sides share one scale")  # fmt: skip
            ins.append(c.get(n, perm) if len(c.shape(n)) == rank else c.get(n))
    out = c.new(y, perm, dtype="bool")
    op = _COMPARE.get(node.op_type) or _LOGIC[node.op_type]
    c.emit(op, [t.index for t in ins], [out.index], ins[0].dtype)


@handles("Where")
def where(c: Converter, node: Node) -> None:
    """SELECT_V2: both value operands and the output share one encoding."""
    cond, a, b = node.inputs
    y = node.outputs[0]
    rank = len(c.shape(y))
    perm = common_layout(c, [cond, a, b], rank)
    yq = c.qparams(y)
    ins = []
    for n in (cond, a, b):
        if n in c.g.constants:
            arr = c.g.constants[n]
            if n != cond and yq is not None:
                lo_q, hi_q = _bounds(c.act_dtype(y))
                arr = np.clip(np.round(arr / yq.scale[0]) + yq.zero_point[0], lo_q, hi_q)
                arr, dtype, quant = arr.astype(_NP[c.act_dtype(y)]), c.act_dtype(y), yq
            elif arr.dtype == np.bool_:
                dtype, quant = "bool", None
            else:
                arr, dtype, quant = arr.astype(np.float32), "float32", None
            if arr.ndim == rank:
                arr = arr.transpose(perm)
            ins.append(c.m.const(f"{node.name}/{n}", np.asarray(arr), dtype, quant))
        else:
            if n != cond:
                same_quant(c, node, n, y, "SELECT_V2")
            ins.append(c.get(n, perm) if len(c.shape(n)) == rank else c.get(n))
    out = c.new(y, perm)
    c.emit("SELECT_V2", [t.index for t in ins], [out.index], out.dtype)


@handles("Pow")
def power(c: Converter, node: Node) -> None:
    """x ** 2 → MUL(x, x) (silero VAD's STFT magnitude), x ** 0.5 → SQRT (in float32 on an
    int8 model: see `unary_island`); one rounding onto the output's encoding, as the simulator.
    Other exponents have no TFLite int8 kernel."""
    x, e = node.inputs[0], node.inputs[1]
    arr = c.g.constants.get(e)
    value = float(arr.reshape(-1)[0]) if arr is not None and arr.size == 1 else None
    if value not in (2.0, 0.5):
        raise c.fail(node, f"Pow with exponent {value if value is not None else 'a tensor'} has no "
                     "TFLite kernel (int8 POW does not exist)", "use x*x or Sqrt")  # fmt: skip
    if value == 0.5 and c.quantized:
        unary_island(c, node, x, INEXACT_INT8["Sqrt"])
        return
    perm, xt = c.any_layout(x)
    out = c.new(node.outputs[0], perm)
    if value == 2.0:
        c.emit("MUL", [xt.index, xt.index], [out.index], xt.dtype, fb.MulOptionsT())
    else:
        c.emit("SQRT", [xt.index], [out.index], xt.dtype)
