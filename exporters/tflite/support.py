"""What the TFLite lowerings can run, derived from the lowering table (`converter.HANDLERS`)
and the builtins each lowering emits, and the TFLite Micro rule: a .tflite runs on a
microcontroller only if MicroMutableOpResolver has a kernel for every builtin in it
(`micro_kernels` in targets/tflm.toml, from tflite-micro's micro_mutable_op_resolver.h)."""

from __future__ import annotations

from typing import Any

from . import float_islands, ops  # noqa: F401  (register the lowerings)
from .converter import HANDLERS
from .ops import _BINARY, _REDUCE, _UNARY

# builtins a lowering may emit on an int8 model, for the lowerings that emit more than the
# one builtin named by their table (_UNARY, _BINARY, _REDUCE)
EMITS: dict[str, tuple[str, ...]] = {
    "Conv": ("CONV_2D", "DEPTHWISE_CONV_2D", "PAD"),
    "ConvTranspose": ("TRANSPOSE_CONV",),
    "MatMul": ("FULLY_CONNECTED", "DEQUANTIZE", "BATCH_MATMUL", "QUANTIZE"), "Gemm": ("FULLY_CONNECTED",),
    "Div": ("MUL", "DEQUANTIZE", "DIV", "QUANTIZE"),
    "HardSigmoid": ("MUL", "ADD"), "HardSwish": ("HARD_SWISH", "MUL", "ADD"),
    "Clip": ("RELU6", "RELU", "RELU_N1_TO_1", "MAXIMUM", "MINIMUM", "QUANTIZE"),
    "Softmax": ("SOFTMAX",), "MaxPool": ("MAX_POOL_2D", "PADV2"),
    "AveragePool": ("AVERAGE_POOL_2D", "PAD"), "Resize": ("RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR"),
    "Upsample": ("RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR"),
    "Reshape": ("RESHAPE",), "Flatten": ("RESHAPE",), "Squeeze": ("RESHAPE",), "Unsqueeze": ("RESHAPE",),
    "Transpose": ("TRANSPOSE",), "Concat": ("CONCATENATION",), "Slice": ("STRIDED_SLICE",),
    "Gather": ("GATHER",), "Split": ("SPLIT_V",), "Identity": (), "Pad": ("PADV2", "MIRROR_PAD"), "Pow": ("MUL", "DEQUANTIZE", "SQRT", "QUANTIZE"),
    "Sqrt": ("DEQUANTIZE", "SQRT", "QUANTIZE"), "Neg": ("DEQUANTIZE", "NEG", "QUANTIZE"),
    "Where": ("SELECT_V2",), "Equal": ("EQUAL",), "Less": ("LESS",), "Greater": ("GREATER",),
    "GreaterOrEqual": ("GREATER_EQUAL",), "LessOrEqual": ("LESS_EQUAL",),
    "And": ("LOGICAL_AND",), "Or": ("LOGICAL_OR",), "Not": ("LOGICAL_NOT",),
    "LayerNormalization": ("DEQUANTIZE", "MEAN", "SUB", "MUL", "ADD", "RSQRT", "QUANTIZE"),
    "BatchNormalization": ("DEPTHWISE_CONV_2D",),
    "Cast": ("CAST", "QUANTIZE"), "Expand": ("BROADCAST_TO",),
    "ReduceL2": ("DEQUANTIZE", "MUL", "SUM", "SQRT", "QUANTIZE"),
    "ReduceSum": ("DEQUANTIZE", "SUM", "QUANTIZE"),
    "LSTM": ("DEQUANTIZE", "STRIDED_SLICE", "FULLY_CONNECTED", "ADD", "MUL", "LOGISTIC", "TANH",
             "CONCATENATION", "RESHAPE", "QUANTIZE"),
    "GRU": ("DEQUANTIZE", "STRIDED_SLICE", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "LOGISTIC",
            "TANH", "CONCATENATION", "RESHAPE", "QUANTIZE"),
}  # fmt: skip
DECOMPOSED = {"Pow": "x**2 as MUL(x, x), x**0.5 as SQRT in float32 (other exponents refused)",
              "HardSigmoid": "MUL + ADD (int8 saturation clips to [0, 1])",
              "Div": "MUL by the int8 reciprocal of a constant; two activations divide as a float island",
              "Clip": "MAXIMUM/MINIMUM where it is no RELU/RELU6",
              "BatchNormalization": "1x1 DEPTHWISE_CONV_2D"}  # fmt: skip
FLOAT_ISLANDS = {"LayerNormalization", "ReduceL2", "LSTM", "GRU", "Sqrt", "Neg"}


def builtins_for(op: str, profile: Any = None) -> tuple[str, ...]:
    micro = profile.raw.get("micro_kernels") if profile is not None else None
    if op == "Gelu" and micro is not None and "GELU" not in micro:
        # float island: the erf form (MAXIMUM/MINIMUM/DIV), the tanh form (TANH)
        return ("DEQUANTIZE", "MUL", "ADD", "MAXIMUM", "MINIMUM", "DIV", "TANH", "QUANTIZE")
    if op in EMITS:
        return EMITS[op]
    for table in (_UNARY, _REDUCE):
        if op in table:
            return (table[op],)
    if op in _BINARY:
        return (_BINARY[op][0],)
    return ()


def kind(op: str, profile: Any) -> str:
    micro = profile.raw.get("micro_kernels")
    if op in FLOAT_ISLANDS or (op == "Gelu" and micro is not None and "GELU" not in micro):
        return "float island"
    if op in DECOMPOSED or (op == "HardSwish" and profile.raw.get("hardswish") == "lowered"):
        return "decomposed"
    return "native"


def op_support(profile: Any) -> dict[str, dict[str, Any]]:
    """ONNX op → {"kind": native | decomposed | float island} for every op this target's
    TFLite lowering runs; on TFLite Micro only ops whose builtins all have micro kernels."""
    micro = profile.raw.get("micro_kernels")
    result: dict[str, dict[str, Any]] = {}
    for op in sorted(HANDLERS):
        emits = builtins_for(op, profile)
        if micro is not None:
            missing = [b for b in emits if b not in micro]
            # ops with alternatives (Conv: CONV_2D or DEPTHWISE; Clip: RELU6 or MAXIMUM) need
            # only those they emit; the per-artifact check in the exporter is exact
            if missing and all(b in missing for b in emits):
                continue
        result[op] = {"kind": kind(op, profile), "builtins": list(emits)}
    return result


def refusal(op: str, profile: Any) -> str:
    """Why `op` does not run on this target, in the runtime's terms."""
    micro = profile.raw.get("micro_kernels")
    emits = builtins_for(op, profile)
    if op in HANDLERS and micro is not None:
        missing = [b for b in emits if b not in micro]
        return (f"TFLite Micro has no kernel for {', '.join(missing)} "
                "(MicroMutableOpResolver, tflite-micro)")  # fmt: skip
    if op == "Erf":
        return "TFLite has no ERF builtin (GELU is its own builtin)"
    return f"no TFLite lowering for {op} in edgeq"


def check_micro_kernels(model: Any, profile: Any) -> None:
    """Every builtin in the written model must have a TFLite Micro kernel (tflm only)."""
    micro = profile.raw.get("micro_kernels")
    if micro is None:
        return
    from ai_edge_litert import schema_py_generated as fb

    from edgeq.errors import UnsupportedOpError

    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    used = sorted({names.get(oc.builtinCode, str(oc.builtinCode)) for oc in model.opcode_list})
    missing = [b for b in used if b not in micro]
    if missing:
        raise UnsupportedOpError(
            f"the model needs TFLite builtins {', '.join(missing)}, which TFLite Micro has no "
            "kernel for (MicroMutableOpResolver)",
            "export for target rpi (LiteRT), or replace the ops that need them",
        )


__all__ = ["EMITS", "builtins_for", "check_micro_kernels", "op_support", "refusal"]
