"""Would this ONNX model run entirely on the Snapdragon HTP (onnxruntime's QNN execution provider)?

Reads any ONNX file (ours or another tool's) and lists every node that would leave the HTP and
why. The rules come from the `qnn` target profile and TARGETS.md:

- fixed shapes only (no symbolic or unknown input/output dims);
- no control flow (If/Loop/Scan) and only ops the QNN EP has builders for (`[ops] supported`);
- the HTP runs quantized graphs: every float input of a compute node must come from a
  DequantizeLinear (or be a shape/index tensor), every float output must feed a QuantizeLinear;
- activations uint8/uint16 (int8/int16 also accepted by the EP on v68+ but not preferred);
  weights int8/int4 symmetric (zero point 0); per-channel weights only on Conv (axis 0) and
  ConvTranspose (axis 1) — MatMul/Gemm weights per-tensor; blocked int4 weights need a block size
  that is a multiple of 8 and 16-bit activations around the MatMul.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgeq.targets import TargetProfile, load_target

QDQ = ("QuantizeLinear", "DequantizeLinear")
# ops whose float inputs at these positions are shapes/indices/scales, not activations
_NON_DATA_INPUTS = {
    "Reshape": {1}, "Slice": {1, 2, 3, 4}, "Resize": {1, 2, 3}, "Pad": {1, 2, 3}, "Expand": {1},
    "Tile": {1}, "Squeeze": {1}, "Unsqueeze": {1}, "Split": {1}, "TopK": {1}, "Gather": {1},
    "ReduceSum": {1}, "ReduceMean": {1}, "ReduceMax": {1}, "ReduceMin": {1}, "ReduceL2": {1},
    "ReduceProd": {1}, "Clip": {1, 2},
}  # fmt: skip
_ACT_OK = {onnx.TensorProto.UINT8, onnx.TensorProto.UINT16}
_ACT_ACCEPTED = {onnx.TensorProto.INT8, onnx.TensorProto.INT16}
_WEIGHT_OK = {onnx.TensorProto.INT8, onnx.TensorProto.INT4, onnx.TensorProto.INT16}
_PER_CHANNEL_AXIS = {"Conv": 0, "ConvTranspose": 1}


@dataclass(frozen=True)
class Violation:
    node: str
    op: str
    reason: str
    severity: str = "fallback"  # fallback (leaves the HTP) | warning (runs, but not ideal)

    def __str__(self) -> str:
        return f"{self.op} node '{self.node}': {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "reason": self.reason, "severity": self.severity}


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def check_qnn(model: onnx.ModelProto, profile: TargetProfile | None = None) -> list[Violation]:
    """Every reason a node of `model` would leave the QNN HTP (empty list: HTP-ready)."""
    profile = profile or load_target("qnn")
    with contextlib.suppress(Exception):  # shape inference is a help, not a requirement
        model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    out: list[Violation] = []
    init = {t.name: t for t in g.initializer}
    types = _elem_types(model)
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    for vi in [*g.input, *g.output]:
        dims = vi.type.tensor_type.shape.dim
        if not vi.type.tensor_type.HasField("shape") or any(
            not d.HasField("dim_value") for d in dims
        ):
            kind = "input" if vi in g.input else "output"
            out.append(Violation(vi.name, kind, "dynamic shape: the HTP needs fixed shapes "
                                 "(fix it with --input-shape)"))  # fmt: skip

    def float_tensor(name: str) -> bool:
        return types.get(name) in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)

    for n in g.node:
        name = n.name or (n.output[0] if n.output else n.op_type)
        if n.op_type in QDQ:
            out += _check_qdq(n, name, init, consumers, producers, types)
            continue
        if n.domain not in ("", "ai.onnx"):
            out.append(Violation(name, n.op_type, f"custom domain '{n.domain}' has no HTP builder"))
            continue
        if not profile.ops.runs(n.op_type):
            why = "control flow" if n.op_type in ("If", "Loop", "Scan") else "no QNN HTP op builder"
            out.append(Violation(name, n.op_type, f"{why}: runs on the CPU"))
            continue
        skip = _NON_DATA_INPUTS.get(n.op_type, set())
        for k, i in enumerate(n.input):
            if not i or k in skip or not float_tensor(i):
                continue
            p = producers.get(i)
            if p is None or p.op_type != "DequantizeLinear":
                what = "a float initializer" if i in init else f"float tensor '{i}'"
                out.append(Violation(name, n.op_type, f"input {k} is {what} (not quantized): "
                                     "the HTP runs quantized graphs only"))  # fmt: skip
                break
        for o in n.output:
            if o and float_tensor(o):
                users = consumers.get(o, [])
                if not users or any(u.op_type != "QuantizeLinear" for u in users):
                    out.append(Violation(name, n.op_type, f"output '{o}' is float (no "
                                         "QuantizeLinear after it): the HTP runs quantized graphs only"))  # fmt: skip
                    break
    return out


def _check_qdq(n: onnx.NodeProto, name: str, init: dict[str, onnx.TensorProto],
               consumers: dict[str, list[onnx.NodeProto]], producers: dict[str, onnx.NodeProto],
               types: dict[str, int]) -> list[Violation]:  # fmt: skip
    out: list[Violation] = []
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
    zp_name = n.input[2] if len(n.input) > 2 else ""
    scale_name = n.input[1] if len(n.input) > 1 else ""
    qtype = (
        types.get(zp_name, onnx.TensorProto.UINT8)
        if zp_name
        else attrs.get("output_dtype", onnx.TensorProto.UINT8)
    )
    is_weight = n.op_type == "DequantizeLinear" and n.input[0] in init
    if not is_weight and n.op_type == "DequantizeLinear" and n.input[0] in producers:
        return out  # the Q before it was checked
    if is_weight:
        users = consumers.get(n.output[0], [])
        zp = numpy_helper.to_array(init[zp_name]) if zp_name in init else np.zeros(1)
        per_axis = scale_name in init and numpy_helper.to_array(init[scale_name]).ndim > 0
        block = int(attrs.get("block_size", 0))
        if init[n.input[0]].data_type == onnx.TensorProto.INT32:
            return out  # bias
        if init[n.input[0]].data_type not in _WEIGHT_OK:
            out.append(Violation(name, n.op_type, f"weight '{n.input[0]}' has type "
                                 f"{onnx.TensorProto.DataType.Name(init[n.input[0]].data_type)}: "
                                 "HTP weights are int8/int4 (symmetric)"))  # fmt: skip
        if np.any(np.asarray(zp) != 0):
            out.append(Violation(name, n.op_type, f"weight '{n.input[0]}' is asymmetric "
                                 "(zero point != 0): HTP weights are symmetric"))  # fmt: skip
        for u in users:
            if block:
                if block % 8:
                    out.append(Violation(u.name or name, u.op_type, f"block size {block} "
                                         "is not a multiple of 8: 4-bit blockwise weights fall back"))  # fmt: skip
                ins = [producers.get(i) for i in u.input if i != n.output[0]]
                if any(p is not None and p.op_type == "DequantizeLinear"
                       and types.get(p.input[2] if len(p.input) > 2 else "") not in
                       (onnx.TensorProto.UINT16, onnx.TensorProto.INT16) for p in ins):  # fmt: skip
                    out.append(Violation(u.name or name, u.op_type, "4-bit blockwise weights need "
                                         "16-bit activations (--act-bits 16) on the HTP"))  # fmt: skip
            elif per_axis:
                axis = int(attrs.get("axis", 1))
                want = _PER_CHANNEL_AXIS.get(u.op_type)
                if want is None:
                    out.append(Violation(u.name or name, u.op_type, f"per-channel weights on "
                                         f"{u.op_type}: the HTP supports per-channel only on "
                                         "Conv (axis 0) and ConvTranspose (axis 1)"))  # fmt: skip
                elif axis % 4 != want:
                    out.append(Violation(u.name or name, u.op_type, f"per-channel axis {axis} "
                                         f"on {u.op_type}: the HTP wants axis {want}"))  # fmt: skip
        return out
    if qtype not in _ACT_OK:
        sev = "warning" if qtype in _ACT_ACCEPTED else "fallback"
        out.append(Violation(name, n.op_type, f"activation type "
                             f"{onnx.TensorProto.DataType.Name(qtype)}: the HTP prefers uint8/uint16",
                             sev))  # fmt: skip
    return out


def blocking(violations: list[Violation]) -> list[Violation]:
    return [v for v in violations if v.severity == "fallback"]


__all__ = ["Violation", "blocking", "check_qnn"]
