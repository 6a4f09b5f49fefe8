"""Our prepared Graph + QuantPlan → a Core ML ML program (MIL), built op by op with coremltools'
MIL builder; no torch or ONNX converter in between.

The program computes in fp16 (what the ANE runs): float32 inputs are cast to fp16 once, every
op runs on fp16 tensors, outputs are cast back to float32. Weights come from the plan, never
from coremltools' quantizer:

- int8/uint8 per-channel or per-tensor → iOS16 `constexpr_affine_dequantize`
  (quantized_data = plan values, zero_point = plan zero points, scale = plan scales in fp16);
- int4/uint4 (any granularity) and per-block → iOS18 `constexpr_blockwise_shift_scale`
  (data = plan values, scale shaped like the weight with the blocked axis divided by the block:
  the plan's own convention; offset = zero points when any is non-zero);
- W8A8 plans (quantized activations) → iOS17 `quantize` + `dequantize` after every quantized
  activation with the plan's scale and zero point.

Naming is stable so a saved program can be checked against the graph: the op that produces an
ONNX tensor `t` is named `mil_name(t)` (`mil_name(t) + "_h"` for graph inputs/outputs, whose
float32 I/O casts carry the plain name); a weight's constexpr op is `mil_name(w)` (suffix
`_T` when it is stored transposed for `linear`, i.e. a MatMul weight [K, N] stored as [N, K]).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeq.errors import EdgeqError, UnsupportedOpError
from edgeq.ir.graph import Graph, Node
from edgeq.quant.plan import QuantPlan, TensorQuant

FP16_MAX = 65504.0
IOS_TARGETS = ("iOS16", "iOS17", "iOS18")


# MIL type names and keywords coremltools' sanitize pass renames (passes/defs/preprocess.py)
MIL_RESERVED = frozenset({
    "any", "bool", "program", "func", "tensor", "list", "dict", "tuple", "true", "false",
    "string", "bf16", "fp16", "fp32", "fp64", "int8", "int16", "int32", "int64", "uint8",
    "uint16", "uint32", "uint64", "state",
})  # fmt: skip


def mil_name(name: str) -> str:
    """A MIL-safe identifier for an ONNX tensor name (deterministic)."""
    out = re.sub(r"[^0-9A-Za-z_]", "_", name)
    if out in MIL_RESERVED:  # coremltools would rename these on save (silero VAD's `state`)
        return "v_" + out
    return out if out and not out[0].isdigit() else "v_" + out


def weight_op_name(weight: str, transposed: bool) -> str:
    return mil_name(weight) + ("_T" if transposed else "")


def fp16(arr: Any) -> np.ndarray:
    """float → fp16, saturating at ±65504 (a float-min mask fill must not become -inf: 0 × inf
    is NaN in the masked-out positions)."""
    a = np.asarray(arr, np.float32)
    return np.clip(a, -FP16_MAX, FP16_MAX).astype(np.float16)


@dataclass
class BuiltProgram:
    program: Any  # coremltools.converters.mil.mil.Program
    deployment_target: str
    inputs: dict[str, dict[str, Any]]  # onnx name -> {"name": mil name, "dtype": onnx dtype}
    outputs: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    weights: list[dict[str, Any]] = field(default_factory=list)  # what was compressed how


VALUE_PRESERVING = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity",
                    "MaxPool", "GlobalMaxPool", "Concat", "Slice", "Expand")  # fmt: skip


def requant_is_identity(graph: Graph, plan: QuantPlan, tensor: str) -> bool:
    """True when re-quantizing `tensor` cannot change it: it is produced by an op that only
    moves or selects values (reshape, transpose, max-pool, concat, slice...) from inputs that
    are already quantized with the same dtype, scale and zero point. The exporter leaves out
    its quantize/dequantize pair (identical math, fewer ops on the ANE)."""
    node = graph.producers().get(tensor)
    t = plan.tensors.get(tensor)
    if node is None or node.op_type not in VALUE_PRESERVING or t is None or not t.is_quantized:
        return False
    data = [node.inputs[0]] if node.op_type != "Concat" else [i for i in node.inputs if i]
    for name in data:
        src = plan.tensors.get(name)
        if (
            src is None
            or not src.is_quantized
            or src.role != "activation"
            or src.dtype != t.dtype
            or not np.array_equal(src.scale, t.scale)
            or not np.array_equal(src.zero_point, t.zero_point)
        ):
            return False
    return True


def required_target(plan: QuantPlan | None) -> str:
    """The lowest deployment target that runs the plan's weights and activations."""
    if plan is None:
        return "iOS16"
    target = "iOS16"
    for t in plan.quantized("weight"):
        if t.block is not None or t.dtype in ("int4", "uint4") or t.lut is not None:
            return "iOS18"
    if plan.quantized("activation"):
        target = "iOS17"
    return target


def _np_dtype_for_coreml(dtype: np.dtype) -> Any:
    from coremltools.converters.mil.mil import types

    if np.issubdtype(dtype, np.floating):
        return types.fp32
    if dtype == np.bool_:
        return types.bool
    return types.int32


class ProgramBuilder:
    """One pass over the graph's nodes, emitting MIL ops into a function."""

    def __init__(self, graph: Graph, plan: QuantPlan | None, deployment_target: str) -> None:
        self.graph = graph
        self.plan = plan
        self.target = deployment_target
        self.env: dict[str, Any] = {}  # onnx tensor name -> MIL Var
        self.io = set(graph.input_names) | set(graph.output_names)
        self.consumers = graph.consumers()
        self.producers = graph.producers()
        self.fused: set[str] = set()  # Add nodes folded into linear as its bias
        self.weight_cache: dict[tuple[str, bool], Any] = {}
        self.notes: list[str] = []
        self.weights: list[dict[str, Any]] = []
        acts = plan.quantized("activation") if plan is not None else []
        self.acts: dict[str, TensorQuant] = {t.name: t for t in acts}
        bad = [t for t in acts if t.dtype not in ("int8", "uint8")]
        if bad:
            raise EdgeqError(
                f"activation '{bad[0].name}' is {bad[0].dtype}; Core ML quantizes activations "
                "only to 8 bits (iOS17 quantize)",
                "use --act-bits 8 or 0 for --target ane",
            )

    # ---- naming ---------------------------------------------------------------------------
    def vname(self, tensor: str) -> str:
        return mil_name(tensor) + ("_h" if tensor in self.io else "")

    # ---- building -------------------------------------------------------------------------
    def build(self) -> BuiltProgram:
        import coremltools as ct
        from coremltools.converters.mil.mil import Builder as mb
        from coremltools.converters.mil.mil import Function, Placeholder, Program

        g = self.graph
        specs: dict[str, Any] = {}
        inputs: dict[str, dict[str, Any]] = {}
        for v in g.inputs:
            if not v.is_static:
                raise EdgeqError(f"input '{v.name}' has no fixed shape {v.shape}",
                                 "pass --input-shape NAME=1x3x224x224")  # fmt: skip
            name = mil_name(v.name)
            specs[name] = Placeholder(tuple(int(d) for d in v.shape),  # type: ignore[union-attr]
                                      dtype=_np_dtype_for_coreml(np.dtype(v.dtype)))  # fmt: skip
            inputs[v.name] = {"name": name, "dtype": str(np.dtype(v.dtype)),
                              "shape": list(v.shape)}  # type: ignore[arg-type]  # fmt: skip
        opset = getattr(ct.target, self.target)
        outputs: dict[str, dict[str, Any]] = {}
        with Function(specs, opset_version=opset) as func:
            for v in g.inputs:
                var = func.inputs[mil_name(v.name)]
                if np.issubdtype(np.dtype(v.dtype), np.floating):
                    var = mb.cast(x=var, dtype="fp16", name=self.vname(v.name))
                self.env[v.name] = self._activation(v.name, var)
            for node in g.nodes:
                if node.name in self.fused:
                    continue
                self._lower(node)
            results = []
            for v in g.outputs:
                var = self.env[v.name]
                name = mil_name(v.name)
                if var.dtype == _types().fp16:
                    var = mb.cast(x=var, dtype="fp32", name=name)
                else:
                    var = mb.identity(x=var, name=name)
                results.append(var)
                outputs[v.name] = {"name": name, "dtype": "float32",
                                   "shape": list(v.shape or ())}  # fmt: skip
            func.set_outputs(results)
        program = Program()
        program.add_function("main", func)
        return BuiltProgram(program, self.target, inputs, outputs, self.notes, self.weights)

    # ---- helpers --------------------------------------------------------------------------
    def _activation(self, tensor: str, var: Any) -> Any:
        """W8A8: quantize → dequantize with the plan's parameters (iOS17)."""
        from coremltools.converters.mil.mil import Builder as mb

        t = self.acts.get(tensor)
        if t is None or var.dtype != _types().fp16:
            return var
        if self.plan is not None and requant_is_identity(self.graph, self.plan, tensor):
            return var
        assert t.scale is not None and t.zero_point is not None
        np_dt = np.int8 if t.dtype == "int8" else np.uint8
        scale = np.float16(np.asarray(t.scale).reshape(()))
        zp = np.asarray(t.zero_point).reshape(()).astype(np_dt)
        base = self.vname(tensor)
        q = mb.quantize(input=var, scale=scale, zero_point=zp, output_dtype=t.dtype,
                        name=base + "_q")  # fmt: skip
        return mb.dequantize(input=q, scale=scale, zero_point=zp, name=base + "_dq")

    def _set(self, node: Node, var: Any, index: int = 0) -> None:
        self.env[node.outputs[index]] = self._activation(node.outputs[index], var)

    def _in(self, name: str, like: Any = None) -> Any:
        """A node input as a MIL Var or a numpy constant (fp16/int32)."""
        if name in self.env:
            return self.env[name]
        if name in self.graph.constants:
            arr = self.graph.constants[name]
            if np.issubdtype(arr.dtype, np.floating):
                if like is not None and like.dtype != _types().fp16:
                    return arr.astype(np.int32)
                return fp16(arr)
            if arr.dtype == np.bool_:
                return arr
            if like is not None and like.dtype == _types().fp16:
                return fp16(arr)
            return arr.astype(np.int32)
        raise EdgeqError(f"tensor '{name}' is neither computed nor a constant")

    def _const(self, name: str) -> np.ndarray:
        if name not in self.graph.constants:
            raise UnsupportedOpError(
                f"'{name}' must be a constant for the Core ML exporter",
                "prepare the model with fixed input shapes so it folds",
            )
        return self.graph.constants[name]

    def _shape(self, tensor: str) -> tuple[int, ...]:
        info = self.graph.info(tensor)
        if info is None or not info.is_static:
            raise EdgeqError(f"tensor '{tensor}' has no static shape",
                             "prepare the model with fixed input shapes")  # fmt: skip
        return tuple(int(d) for d in info.shape)  # type: ignore[union-attr]

    def _weight(self, name: str, transpose: bool = False) -> Any:
        """A weight as a MIL Var: constexpr decompression of the plan's integers, or fp16."""
        from coremltools.converters.mil.mil import Builder as mb
        from coremltools.converters.mil.mil.types.type_mapping import (
            np_int4_dtype,
            np_uint4_dtype,
        )

        key = (name, transpose)
        if key in self.weight_cache:
            return self.weight_cache[key]
        op_name = weight_op_name(name, transpose)
        t = self.plan.tensors.get(name) if self.plan is not None else None
        if t is None or t.role != "weight" or not t.is_quantized:
            arr = self._const(name)
            var = mb.const(val=fp16(arr.T if transpose else arr), name=op_name)
            self.weight_cache[key] = var
            return var
        if t.lut is not None:
            var = self._lut_weight(t, op_name, transpose)
            self.weight_cache[key] = var
            return var
        assert t.values is not None and t.scale is not None and t.zero_point is not None
        values, scale, zp = np.asarray(t.values), np.asarray(t.scale), np.asarray(t.zero_point)
        axis = t.axis
        if transpose:
            values = values.T
            if t.block is not None:
                scale, zp = scale.T, (zp.T if zp.ndim == 2 else zp)
            axis = None if axis is None else 1 - axis
        rank = values.ndim
        q = t.qdtype
        tiny = int(np.sum(np.abs(fp16(scale)) < np.finfo(np.float16).tiny))
        if tiny:
            self.notes.append(f"weight '{name}': {tiny} scale(s) below fp16's normal range "
                              "(stored subnormal or zero: those weights lose precision)")  # fmt: skip
        record = {"tensor": name, "op": "", "dtype": t.dtype, "granularity": t.granularity,
                  "block": t.block, "axis": axis, "transposed": transpose, "mil": op_name}  # fmt: skip
        if t.block is None and q.bits == 8:
            storage = np.int8 if q.signed else np.uint8
            var = mb.constexpr_affine_dequantize(
                quantized_data=values.astype(storage),
                zero_point=zp.astype(storage) if zp.ndim else storage(zp),
                scale=fp16(scale),
                axis=int(axis or 0),
                name=op_name,
            )
            record["op"] = "constexpr_affine_dequantize"
        else:
            if self.target != "iOS18":
                raise EdgeqError(
                    f"weight '{name}' is {t.dtype} {t.granularity}; that needs iOS18 "
                    f"(constexpr_blockwise_shift_scale), the deployment target is {self.target}",
                    "drop --deployment-target or use iOS18",
                )
            if t.block is None:  # per-channel / per-tensor: one "block" per channel
                shape = [1] * rank
                if axis is not None and scale.ndim:
                    shape[axis] = values.shape[axis]
                scale = scale.reshape(shape)
                zp = np.broadcast_to(zp.reshape(shape) if zp.ndim else zp, shape)
            if q.bits == 4:
                storage: Any = np_int4_dtype if q.signed else np_uint4_dtype
            else:
                storage = np.int8 if q.signed else np.uint8
            kwargs: dict[str, Any] = {"data": values.astype(storage), "scale": fp16(scale)}
            if np.any(zp != 0):
                kwargs["offset"] = np.asarray(zp).astype(storage)
            var = mb.constexpr_blockwise_shift_scale(**kwargs, name=op_name)
            record["op"] = "constexpr_blockwise_shift_scale"
        self.weights.append(record)
        self.weight_cache[key] = var
        return var

    def _lut_weight(self, t: Any, op_name: str, transpose: bool) -> Any:
        """A palettized weight: iOS18 constexpr_lut_to_dense of the plan's indices (uintN) and
        float16 tables ([*groups per dim, 2^bits, 1]: scalar palettization)."""
        from coremltools.converters.mil.mil import Builder as mb
        from coremltools.converters.mil.mil.types import type_mapping as tm

        if self.target != "iOS18":
            raise EdgeqError(f"weight '{t.name}' is palettized; that needs iOS18 "
                             f"(constexpr_lut_to_dense), the deployment target is {self.target}",
                             "drop --deployment-target or use iOS18")  # fmt: skip
        storage = {1: tm.np_uint1_dtype, 2: tm.np_uint2_dtype, 3: tm.np_uint3_dtype,
                   4: tm.np_uint4_dtype, 6: tm.np_uint6_dtype, 8: np.uint8}[t.qdtype.bits]  # fmt: skip
        indices, lut = np.asarray(t.values), np.asarray(t.lut)
        if transpose:
            indices, lut = indices.T, np.swapaxes(lut, 0, 1)
        var = mb.constexpr_lut_to_dense(indices=indices.astype(storage), lut=fp16(lut)[..., None],
                                        name=op_name)  # fmt: skip
        self.weights.append({"tensor": t.name, "op": "constexpr_lut_to_dense", "dtype": t.dtype,
                             "granularity": "lut", "block": t.block, "axis": t.axis,
                             "transposed": transpose, "mil": op_name})  # fmt: skip
        return var

    def _bias(self, name: str) -> np.ndarray:
        t = self.plan.tensors.get(name) if self.plan is not None else None
        if t is not None and t.role == "bias" and t.is_quantized:
            return fp16(t.dequantized())
        return fp16(self._const(name))

    # ---- lowering -------------------------------------------------------------------------
    def _lower(self, node: Node) -> None:
        fn = getattr(self, f"_op_{node.op_type}", None)
        if fn is None or node.domain not in ("", "ai.onnx"):
            raise UnsupportedOpError(
                f"{node}: op {node.op_type} has no Core ML lowering in edgeq",
                "keep it out of the exported graph (split the model) or file an issue",
            )
        fn(node)

    def _op_Conv(self, node: Node) -> None:
        from coremltools.converters.mil.mil import Builder as mb

        x = self._in(node.inputs[0])
        w = self._weight(node.inputs[1]) if node.inputs[1] in self.graph.constants else None
        if w is None:
            raise UnsupportedOpError(f"{node}: the Core ML exporter needs constant conv weights")
        kernel = self._const(node.inputs[1]).shape[2:]
        n = len(kernel)
        kwargs: dict[str, Any] = {
            "strides": list(node.attrs.get("strides", [1] * n)),
            "dilations": list(node.attrs.get("dilations", [1] * n)),
            "groups": int(node.attrs.get("group", 1)),
        }
        kwargs.update(_pads(node, n))
        if len(node.inputs) > 2 and node.inputs[2]:
            kwargs["bias"] = self._bias(node.inputs[2])
        self._set(node, mb.conv(x=x, weight=w, name=self.vname(node.outputs[0]), **kwargs))

    def _fusable_bias(self, node: Node) -> tuple[Node, str] | None:
        out = node.outputs[0]
        users = self.consumers.get(out, [])
        if len(users) != 1 or users[0].op_type != "Add" or out in self.graph.output_names:
            return None
        add = users[0]
        other = add.inputs[1] if add.inputs[0] == out else add.inputs[0]
        arr = self.graph.constants.get(other)
        n = self._const(node.inputs[1]).shape[1]
        if arr is None or arr.ndim != 1 or arr.shape[0] != n:
            return None
        return add, other

    def _op_MatMul(self, node: Node) -> None:
        from coremltools.converters.mil.mil import Builder as mb

        a, b = node.inputs[0], node.inputs[1]
        consts = self.graph.constants
        if b in consts and consts[b].ndim == 2 and a not in consts and len(self._shape(a)) <= 3:
            fused = self._fusable_bias(node)
            kwargs: dict[str, Any] = {}
            out_node, out = node, node.outputs[0]
            if fused is not None:
                add, bias = fused
                kwargs["bias"] = self._bias(bias)
                self.fused.add(add.name)
                out_node, out = add, add.outputs[0]
            var = mb.linear(x=self._in(a), weight=self._weight(b, transpose=True),
                            name=self.vname(out), **kwargs)  # fmt: skip
            self._set(out_node, var)
            return
        if b in consts and consts[b].ndim == 2 and a not in consts:  # rank > 3 input
            y = self._weight(b)
            x = self._in(a)
        else:
            x = self._in(a) if a in self.env else None
            y = self._in(b) if b in self.env else None
            x = x if x is not None else self._in(a, like=y)
            y = y if y is not None else self._in(b, like=x)
        self._set(node, mb.matmul(x=x, y=y, name=self.vname(node.outputs[0])))

    def _op_Gemm(self, node: Node) -> None:
        from coremltools.converters.mil.mil import Builder as mb

        if (
            float(node.attrs.get("alpha", 1.0)) != 1.0
            or float(node.attrs.get("beta", 1.0)) != 1.0
            or int(node.attrs.get("transA", 0))
            or node.inputs[1] not in self.graph.constants
        ):
            raise UnsupportedOpError(f"{node}: only Gemm with alpha=beta=1, transA=0 and "
                                     "constant B is lowered to Core ML linear")  # fmt: skip
        trans_b = bool(int(node.attrs.get("transB", 0)))
        kwargs: dict[str, Any] = {}
        if len(node.inputs) > 2 and node.inputs[2]:
            kwargs["bias"] = self._bias(node.inputs[2])
        var = mb.linear(x=self._in(node.inputs[0]), weight=self._weight(node.inputs[1], not trans_b),
                        name=self.vname(node.outputs[0]), **kwargs)  # fmt: skip
        self._set(node, var)

    def _binary(self, node: Node, op: str) -> None:
        from coremltools.converters.mil.mil import Builder as mb

        a, b = node.inputs[0], node.inputs[1]
        if a not in self.env and b not in self.env:
            raise UnsupportedOpError(f"{node}: both operands are constants (fold the graph first)")
        x = self._in(a) if a in self.env else None
        y = self._in(b) if b in self.env else None
        x = x if x is not None else self._in(a, like=y)
        y = y if y is not None else self._in(b, like=x)
        self._set(node, getattr(mb, op)(x=x, y=y, name=self.vname(node.outputs[0])))

    def _op_Add(self, node: Node) -> None:
        self._binary(node, "add")

    def _op_Sub(self, node: Node) -> None:
        self._binary(node, "sub")

    def _op_Mul(self, node: Node) -> None:
        self._binary(node, "mul")

    def _op_Div(self, node: Node) -> None:
        x = self.env.get(node.inputs[0])
        if x is not None and x.dtype != _types().fp16:
            raise UnsupportedOpError(f"{node}: integer Div has no exact Core ML lowering here")
        self._binary(node, "real_div")

    def _op_Pow(self, node: Node) -> None:
        self._binary(node, "pow")

    def _op_Max(self, node: Node) -> None:
        self._binary(node, "maximum")

    def _op_Min(self, node: Node) -> None:
        self._binary(node, "minimum")

    def _unary(self, node: Node, op: str, **kwargs: Any) -> None:
        from coremltools.converters.mil.mil import Builder as mb

        var = getattr(mb, op)(
            x=self._in(node.inputs[0]), name=self.vname(node.outputs[0]), **kwargs
        )
        self._set(node, var)

    def _op_Relu(self, node: Node) -> None:
        self._unary(node, "relu")

    def _op_Sigmoid(self, node: Node) -> None:
        self._unary(node, "sigmoid")

    def _op_Tanh(self, node: Node) -> None:
        self._unary(node, "tanh")

    def _op_Sqrt(self, node: Node) -> None:
        self._unary(node, "sqrt")

    def _op_Exp(self, node: Node) -> None:
        self._unary(node, "exp")

    def _op_Erf(self, node: Node) -> None:
        self._unary(node, "erf")

    def _op_Identity(self, node: Node) -> None:
        self._unary(node, "identity")

    def _op_HardSigmoid(self, node: Node) -> None:
        self._unary(node, "sigmoid_hard", alpha=np.float16(node.attrs.get("alpha", 0.2)),
                    beta=np.float16(node.attrs.get("beta", 0.5)))  # fmt: skip

    def _op_HardSwish(self, node: Node) -> None:
        from coremltools.converters.mil.mil import Builder as mb

        x = self._in(node.inputs[0])
        name = self.vname(node.outputs[0])
        gate = mb.sigmoid_hard(x=x, alpha=np.float16(1 / 6), beta=np.float16(0.5),
                               name=name + "_gate")  # fmt: skip
        self._set(node, mb.mul(x=x, y=gate, name=name))

    def _op_Gelu(self, node: Node) -> None:
        mode = "TANH_APPROXIMATION" if node.attrs.get("approximate", "none") == "tanh" else "EXACT"
        self._unary(node, "gelu", mode=mode)

    def _op_Softmax(self, node: Node) -> None:
        rank = len(self._shape(node.inputs[0]))
        axis = int(node.attrs.get("axis", -1 if self.graph.opset >= 13 else 1))
        if self.graph.opset < 13 and axis % rank != rank - 1:
            raise UnsupportedOpError(f"{node}: opset<13 Softmax over axes {axis}.. (flattening)")
        self._unary(node, "softmax", axis=axis)

    def _op_LayerNormalization(self, node: Node) -> None:
        from coremltools.converters.mil.mil import Builder as mb

        rank = len(self._shape(node.inputs[0]))
        axis = int(node.attrs.get("axis", -1)) % rank
        kwargs: dict[str, Any] = {"axes": list(range(axis, rank)),
                                  "epsilon": _fp16_epsilon(node.attrs.get("epsilon", 1e-5))}  # fmt: skip
        kwargs["gamma"] = fp16(self._const(node.inputs[1]))
        if len(node.inputs) > 2 and node.inputs[2]:
            kwargs["beta"] = fp16(self._const(node.inputs[2]))
        if len(node.outputs) > 1 and any(node.outputs[1:]):
            raise UnsupportedOpError(f"{node}: LayerNormalization mean/inv-std outputs")
        var = mb.layer_norm(x=self._in(node.inputs[0]), name=self.vname(node.outputs[0]), **kwargs)
        self._set(node, var)

    def _op_GlobalAveragePool(self, node: Node) -> None:
        rank = len(self._shape(node.inputs[0]))
        self._unary(node, "reduce_mean", axes=list(range(2, rank)), keep_dims=True)

    def _op_GlobalMaxPool(self, node: Node) -> None:
        rank = len(self._shape(node.inputs[0]))
        self._unary(node, "reduce_max", axes=list(range(2, rank)), keep_dims=True)

    def _pool(self, node: Node, op: str) -> None:
        kernel = list(node.attrs["kernel_shape"])
        n = len(kernel)
        if any(d != 1 for d in node.attrs.get("dilations", [1] * n)):
            raise UnsupportedOpError(f"{node}: dilated pooling")
        kwargs: dict[str, Any] = {"kernel_sizes": kernel,
                                  "strides": list(node.attrs.get("strides", [1] * n)),
                                  "ceil_mode": bool(node.attrs.get("ceil_mode", 0))}  # fmt: skip
        kwargs.update(_pads(node, n))
        if op == "avg_pool":
            kwargs["exclude_padding_from_average"] = not bool(
                node.attrs.get("count_include_pad", 0)
            )
        self._unary(node, op, **kwargs)

    def _op_AveragePool(self, node: Node) -> None:
        self._pool(node, "avg_pool")

    def _op_MaxPool(self, node: Node) -> None:
        if len(node.outputs) > 1 and node.outputs[1]:
            raise UnsupportedOpError(f"{node}: MaxPool indices output")
        self._pool(node, "max_pool")

    def _reshape_to_output(self, node: Node) -> None:
        self._unary(node, "reshape", shape=np.asarray(self._shape(node.outputs[0]), np.int32))

    _op_Reshape = _reshape_to_output
    _op_Flatten = _reshape_to_output
    _op_Squeeze = _reshape_to_output
    _op_Unsqueeze = _reshape_to_output

    def _op_Transpose(self, node: Node) -> None:
        rank = len(self._shape(node.inputs[0]))
        perm = list(node.attrs.get("perm", list(range(rank))[::-1]))
        self._unary(node, "transpose", perm=perm)

    def _op_Concat(self, node: Node) -> None:
        from coremltools.converters.mil.mil import Builder as mb

        vals = [self.env[i] for i in node.inputs if i in self.env]
        like = vals[0] if vals else None
        values = [self._in(i, like=like) for i in node.inputs if i]
        var = mb.concat(
            values=values, axis=int(node.attrs["axis"]), name=self.vname(node.outputs[0])
        )
        self._set(node, var)

    def _op_Slice(self, node: Node) -> None:
        shape = self._shape(node.inputs[0])
        rank = len(shape)
        starts = self._const(node.inputs[1]).astype(np.int64)
        ends = self._const(node.inputs[2]).astype(np.int64)
        axes = (self._const(node.inputs[3]).astype(np.int64) if len(node.inputs) > 3 and node.inputs[3]
                else np.arange(len(starts)))  # fmt: skip
        steps = (self._const(node.inputs[4]).astype(np.int64) if len(node.inputs) > 4 and node.inputs[4]
                 else np.ones(len(starts), np.int64))  # fmt: skip
        begin, end, stride = [0] * rank, list(shape), [1] * rank
        for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
            a = int(a) % rank
            if st <= 0:
                raise UnsupportedOpError(f"{node}: Slice with step {st} (only positive steps)")
            dim = shape[a]
            s = int(s) + dim if s < 0 else int(s)
            e = int(e) + dim if e < 0 else int(e)
            begin[a], end[a], stride[a] = min(max(s, 0), dim), min(max(e, 0), dim), int(st)
        self._unary(node, "slice_by_index", begin=np.asarray(begin, np.int32),
                    end=np.asarray(end, np.int32), stride=np.asarray(stride, np.int32))  # fmt: skip

    def _op_Gather(self, node: Node) -> None:
        from coremltools.converters.mil.mil import Builder as mb

        data, idx = node.inputs[0], node.inputs[1]
        axis = int(node.attrs.get("axis", 0))
        if data in self.graph.constants:
            table = (self._weight(data) if np.issubdtype(self.graph.constants[data].dtype, np.floating)
                     else self.graph.constants[data].astype(np.int32))  # fmt: skip
        else:
            table = self.env[data]
        if idx in self.graph.constants:
            arr = self.graph.constants[idx].astype(np.int64)
            dim = self._shape(data)[axis]
            indices: Any = np.where(arr < 0, arr + dim, arr).astype(np.int32)
        else:
            indices = self.env[idx]
        var = mb.gather(x=table, indices=indices, axis=axis, name=self.vname(node.outputs[0]))
        self._set(node, var)

    def _op_Cast(self, node: Node) -> None:
        from onnx import helper

        to = np.dtype(helper.tensor_dtype_to_np_dtype(int(node.attrs["to"])))
        if np.issubdtype(to, np.floating):
            dtype = "fp16"
        elif to == np.bool_:
            dtype = "bool"
        else:
            dtype = "int32"
        self._unary(node, "cast", dtype=dtype)

    def _op_Expand(self, node: Node) -> None:
        from coremltools.converters.mil.mil import Builder as mb

        x = self._in(node.inputs[0])
        in_shape = self._shape(node.inputs[0])
        out_shape = self._shape(node.outputs[0])
        name = self.vname(node.outputs[0])
        if len(in_shape) < len(out_shape):
            in_shape = (1,) * (len(out_shape) - len(in_shape)) + in_shape
            x = mb.reshape(x=x, shape=np.asarray(in_shape, np.int32), name=name + "_rank")
        reps = [o // i for i, o in zip(in_shape, out_shape, strict=True)]
        self._set(node, mb.tile(x=x, reps=np.asarray(reps, np.int32), name=name))

    def _reduce(self, node: Node, op: str) -> None:
        rank = len(self._shape(node.inputs[0]))
        if len(node.inputs) > 1 and node.inputs[1]:
            axes = [int(a) for a in self._const(node.inputs[1]).reshape(-1)]
        else:
            axes = [int(a) for a in node.attrs.get("axes", range(rank))]
        keep = bool(int(node.attrs.get("keepdims", 1)))
        self._unary(node, op, axes=[a % rank for a in axes], keep_dims=keep)

    def _op_ReduceSum(self, node: Node) -> None:
        self._reduce(node, "reduce_sum")

    def _op_ReduceMean(self, node: Node) -> None:
        self._reduce(node, "reduce_mean")

    def _op_ReduceMax(self, node: Node) -> None:
        self._reduce(node, "reduce_max")

    def _op_ReduceL2(self, node: Node) -> None:
        self._reduce(node, "reduce_l2_norm")

    def _op_Clip(self, node: Node) -> None:
        lo = node.attrs.get("min", -FP16_MAX)
        hi = node.attrs.get("max", FP16_MAX)
        if len(node.inputs) > 1 and node.inputs[1]:
            lo = float(self._const(node.inputs[1]).reshape(-1)[0])
        if len(node.inputs) > 2 and node.inputs[2]:
            hi = float(self._const(node.inputs[2]).reshape(-1)[0])
        self._unary(node, "clip", alpha=fp16(lo)[()], beta=fp16(hi)[()])

    # ---- issue #14: the common edge op set ---------------------------------------------------
    def _op_Split(self, node: Node) -> None:
        """One slice_by_index per output (the numpy evaluator and the ANE both take slices)."""
        from coremltools.converters.mil.mil import Builder as mb

        shape = self._shape(node.inputs[0])
        axis = int(node.attrs.get("axis", 0)) % len(shape)
        x = self._in(node.inputs[0])
        start = 0
        for k, out in enumerate(node.outputs):
            size = self._shape(out)[axis]
            begin, end = [0] * len(shape), list(shape)
            begin[axis], end[axis] = start, start + size
            var = mb.slice_by_index(x=x, begin=np.asarray(begin, np.int32),
                                    end=np.asarray(end, np.int32), name=self.vname(out))  # fmt: skip
            self._set(node, var, k)
            start += size

    def _op_Resize(self, node: Node) -> None:
        """nearest with integer factors → upsample_nearest_neighbor; linear → resize_bilinear
        with the sampling mode of ONNX's coordinate mode (half_pixel: UNALIGN_CORNERS,
        align_corners: STRICT_ALIGN_CORNERS, asymmetric: DEFAULT)."""
        from coremltools.converters.mil.mil import Builder as mb

        xs, ys = self._shape(node.inputs[0]), self._shape(node.outputs[0])
        if len(xs) != 4 or xs[:2] != ys[:2]:
            raise UnsupportedOpError(f"{node}: Core ML resizes H and W of 4-D tensors only")
        mode = _text(node.attrs.get("mode"), "nearest")
        ctm = _text(node.attrs.get("coordinate_transformation_mode"), "half_pixel")
        x, name = self._in(node.inputs[0]), self.vname(node.outputs[0])
        if mode == "nearest":
            factors = [ys[i] // xs[i] for i in (2, 3)]
            if any(ys[i] % xs[i] for i in (2, 3)) or ctm in ("align_corners", "tf_crop_and_resize"):
                raise UnsupportedOpError(f"{node}: nearest Resize to {ys[2:]} from {xs[2:]} ({ctm}) "
                                         "has no exact Core ML op (upsample_nearest_neighbor "
                                         "takes integer factors)", "resize by integer factors")  # fmt: skip
            var = mb.upsample_nearest_neighbor(x=x, scale_factor_height=factors[0],
                                               scale_factor_width=factors[1], name=name)  # fmt: skip
        elif mode == "linear":
            sampling = {"half_pixel": "UNALIGN_CORNERS", "pytorch_half_pixel": "UNALIGN_CORNERS",
                        "align_corners": "STRICT_ALIGN_CORNERS", "asymmetric": "DEFAULT"}.get(ctm)  # fmt: skip
            if sampling is None or (ctm == "pytorch_half_pixel" and min(ys[2:]) == 1):
                raise UnsupportedOpError(
                    f"{node}: linear Resize with {ctm} has no Core ML sampling mode"
                )
            var = mb.resize_bilinear(x=x, target_size_height=ys[2], target_size_width=ys[3],
                                     sampling_mode=sampling, name=name)  # fmt: skip
        else:
            raise UnsupportedOpError(
                f"{node}: Resize mode {mode} (Core ML has nearest and bilinear)"
            )
        self._set(node, var)

    def _op_ConvTranspose(self, node: Node) -> None:
        from coremltools.converters.mil.mil import Builder as mb

        if node.inputs[1] not in self.graph.constants:
            raise UnsupportedOpError(f"{node}: the Core ML exporter needs constant weights")
        kernel = self._const(node.inputs[1]).shape[2:]
        n = len(kernel)
        if _text(node.attrs.get("auto_pad"), "NOTSET") not in ("NOTSET", ""):
            raise UnsupportedOpError(f"{node}: ConvTranspose auto_pad")
        kwargs: dict[str, Any] = {
            "strides": list(node.attrs.get("strides", [1] * n)),
            "dilations": list(node.attrs.get("dilations", [1] * n)),
            "groups": int(node.attrs.get("group", 1)),
            "output_shape": np.asarray(self._shape(node.outputs[0]), np.int32),
        }
        kwargs.update(_pads(node, n))
        if len(node.inputs) > 2 and node.inputs[2]:
            kwargs["bias"] = self._bias(node.inputs[2])
        var = mb.conv_transpose(x=self._in(node.inputs[0]), weight=self._weight(node.inputs[1]),
                                name=self.vname(node.outputs[0]), **kwargs)  # fmt: skip
        self._set(node, var)

    def _op_Abs(self, node: Node) -> None:
        self._unary(node, "abs")

    def _op_Neg(self, node: Node) -> None:
        from coremltools.converters.mil.mil import Builder as mb

        x = self._in(node.inputs[0])
        self._set(node, mb.mul(x=x, y=np.float16(-1) if x.dtype == _types().fp16 else np.int32(-1),
                               name=self.vname(node.outputs[0])))  # fmt: skip

    def _op_Log(self, node: Node) -> None:
        self._unary(node, "log")

    def _op_Equal(self, node: Node) -> None:
        self._binary(node, "equal")

    def _op_Less(self, node: Node) -> None:
        self._binary(node, "less")

    def _op_Greater(self, node: Node) -> None:
        self._binary(node, "greater")

    def _op_GreaterOrEqual(self, node: Node) -> None:
        self._binary(node, "greater_equal")

    def _op_LessOrEqual(self, node: Node) -> None:
        self._binary(node, "less_equal")

    def _op_And(self, node: Node) -> None:
        self._binary(node, "logical_and")

    def _op_Or(self, node: Node) -> None:
        self._binary(node, "logical_or")

    def _op_Not(self, node: Node) -> None:
        self._unary(node, "logical_not")

    def _op_Where(self, node: Node) -> None:
        from coremltools.converters.mil.mil import Builder as mb

        cond = self._in(node.inputs[0])
        a = self._in(node.inputs[1]) if node.inputs[1] in self.env else None
        b = self._in(node.inputs[2]) if node.inputs[2] in self.env else None
        like = a if a is not None else b
        a = a if a is not None else self._in(node.inputs[1], like=like)
        b = b if b is not None else self._in(node.inputs[2], like=like)
        self._set(node, mb.select(cond=cond, a=a, b=b, name=self.vname(node.outputs[0])))

    def _op_LeakyRelu(self, node: Node) -> None:
        self._unary(node, "leaky_relu", alpha=np.float16(node.attrs.get("alpha", 0.01)))

    def _op_BatchNormalization(self, node: Node) -> None:
        if len([o for o in node.outputs if o]) != 1:
            raise UnsupportedOpError(f"{node}: training-mode BatchNormalization")
        vals = [fp16(self._const(n)) for n in node.inputs[1:5]]
        self._unary(node, "batch_norm", gamma=vals[0], beta=vals[1], mean=vals[2],
                    variance=vals[3], epsilon=_fp16_epsilon(node.attrs.get("epsilon", 1e-5)))  # fmt: skip

    def _op_Pad(self, node: Node) -> None:
        mode = _text(node.attrs.get("mode"), "constant")
        rank = len(self._shape(node.inputs[0]))
        if len(node.inputs) > 1 and node.inputs[1]:
            pads = [int(v) for v in self._const(node.inputs[1]).reshape(-1)]
        else:
            pads = [int(v) for v in node.attrs.get("pads", [])]
        axes = list(range(rank))
        if len(node.inputs) > 3 and node.inputs[3]:
            axes = [int(a) % rank for a in self._const(node.inputs[3]).reshape(-1)]
        widths = [0] * (2 * rank)
        for i, a in enumerate(axes):
            widths[2 * a], widths[2 * a + 1] = pads[i], pads[i + len(axes)]
        if any(v < 0 for v in widths) or mode not in ("constant", "reflect", "edge"):
            raise UnsupportedOpError(f"{node}: Pad mode {mode} or negative pads")
        value = 0.0
        if len(node.inputs) > 2 and node.inputs[2]:
            value = float(self._const(node.inputs[2]).reshape(-1)[0])
        self._unary(node, "pad", pad=np.asarray(widths, np.int32),
                    mode={"edge": "replicate"}.get(mode, mode), constant_val=np.float16(value))  # fmt: skip

    def _op_LSTM(self, node: Node) -> None:
        self._recurrent(node, lstm=True)

    def _op_GRU(self, node: Node) -> None:
        self._recurrent(node, lstm=False)

    def _recurrent(self, node: Node, lstm: bool) -> None:
        """ONNX LSTM/GRU unrolled over time into linear, sigmoid, tanh, mul and add (exact ONNX
        gate order; Core ML's own lstm runs on the CPU/GPU anyway, never on the ANE)."""
        from coremltools.converters.mil.mil import Builder as mb

        a = node.attrs
        gates = 4 if lstm else 3
        acts = [_text(v, "").lower() for v in a.get("activations") or []]
        if acts and acts[: gates - 1] != ["sigmoid", "tanh", "tanh"][: gates - 1]:
            raise UnsupportedOpError(f"{node}: {node.op_type} activations {acts}")
        if int(a.get("layout", 0)) or a.get("clip") is not None or (
            len(node.inputs) > 4 and node.inputs[4]) or (lstm and len(node.inputs) > 7 and node.inputs[7]):  # fmt: skip
            raise UnsupportedOpError(
                f"{node}: {node.op_type} with layout, clip, sequence_lens or peepholes"
            )
        seq, batch, _ = self._shape(node.inputs[0])
        w, r = self._const(node.inputs[1]), self._const(node.inputs[2])
        nd, hidden = r.shape[0], r.shape[-1]
        b = self._const(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else np.zeros(
            (nd, 2 * gates * hidden), np.float32)  # fmt: skip
        direction = _text(a.get("direction"), "forward")
        base = self.vname(node.outputs[0]) if node.outputs[0] else mil_name(node.name)
        x = self._in(node.inputs[0])
        h0 = self._in(node.inputs[5]) if len(node.inputs) > 5 and node.inputs[5] else None
        c0 = self._in(node.inputs[6]) if lstm and len(node.inputs) > 6 and node.inputs[6] else None
        lbr = int(a.get("linear_before_reset", 0))
        ys, hs, cs = [], [], []
        for d in range(nd):
            p = f"{base}_d{d}"
            xp = mb.linear(x=x, weight=fp16(w[d]), bias=fp16(b[d, : gates * hidden]), name=p + "_x")

            h = _initial_state(h0, d, batch, hidden, f"{p}_h0")
            cell = _initial_state(c0, d, batch, hidden, f"{p}_c0")
            rb = fp16(b[d, gates * hidden :])
            order = range(seq - 1, -1, -1) if direction == "reverse" or d == 1 else range(seq)
            outs: dict[int, Any] = {}
            for t in order:
                q = f"{p}_t{t}"
                xt = mb.squeeze(x=mb.slice_by_index(x=xp, begin=np.asarray([t, 0, 0], np.int32),
                                                    end=np.asarray([t + 1, batch, gates * hidden], np.int32),
                                                    name=q + "_xs"), axes=[0], name=q + "_xt")  # fmt: skip

                if lstm:
                    g = mb.add(x=xt, y=mb.linear(x=h, weight=fp16(r[d]), bias=rb, name=q + "_hr"),
                               name=q + "_g")  # fmt: skip
                    i = mb.sigmoid(x=_gate(g, 0, batch, hidden, q + "_i"), name=q + "_is")
                    o = mb.sigmoid(x=_gate(g, 1, batch, hidden, q + "_o"), name=q + "_os")
                    f = mb.sigmoid(x=_gate(g, 2, batch, hidden, q + "_f"), name=q + "_fs")
                    cc = mb.tanh(x=_gate(g, 3, batch, hidden, q + "_c"), name=q + "_ct")
                    cell = mb.add(x=mb.mul(x=f, y=cell, name=q + "_fc"),
                                  y=mb.mul(x=i, y=cc, name=q + "_ic"), name=q + "_cell")  # fmt: skip
                    h = mb.mul(x=o, y=mb.tanh(x=cell, name=q + "_tc"), name=q + "_h")
                else:
                    hr = mb.linear(x=h, weight=fp16(r[d]), bias=rb, name=q + "_hr")
                    z = mb.sigmoid(x=mb.add(x=_gate(xt, 0, batch, hidden, q + "_xz"), y=_gate(hr, 0, batch, hidden, q + "_hz"), name=q + "_z0"),
                                   name=q + "_z")  # fmt: skip
                    rg = mb.sigmoid(x=mb.add(x=_gate(xt, 1, batch, hidden, q + "_xr"), y=_gate(hr, 1, batch, hidden, q + "_hr1"), name=q + "_r0"),
                                    name=q + "_r")  # fmt: skip
                    if lbr:
                        hh = mb.add(x=_gate(xt, 2, batch, hidden, q + "_xh"), y=mb.mul(x=rg, y=_gate(hr, 2, batch, hidden, q + "_hh1"), name=q + "_rh"),
                                    name=q + "_hh")  # fmt: skip
                    else:
                        rh = mb.linear(x=mb.mul(x=rg, y=h, name=q + "_rgh"), weight=fp16(r[d][2 * hidden :]),
                                       bias=rb[2 * hidden :], name=q + "_rhl")  # fmt: skip
                        hh = mb.add(x=_gate(xt, 2, batch, hidden, q + "_xh"), y=rh, name=q + "_hh")
                    n_ = mb.tanh(x=hh, name=q + "_n")
                    # h = n + z * (h - n)
                    h = mb.add(x=n_, y=mb.mul(x=z, y=mb.sub(x=h, y=n_, name=q + "_d"), name=q + "_zd"),
                               name=q + "_h")  # fmt: skip
                outs[t] = h
            ys.append(mb.stack(values=[outs[t] for t in range(seq)], axis=0, name=p + "_y"))
            hs.append(h)
            cs.append(cell)
        results = [mb.stack(values=ys, axis=1, name=base),
                   mb.stack(values=hs, axis=0, name=base + "_hN"),
                   mb.stack(values=cs, axis=0, name=base + "_cN") if lstm else None]  # fmt: skip
        for k, out in enumerate(node.outputs):
            if out:
                var = results[k]
                if k > 0:
                    var = mb.identity(x=var, name=self.vname(out))
                self._set(node, var, k)


def _initial_state(v: Any, d: int, batch: int, hidden: int, name: str) -> Any:
    """Direction d of an ONNX [dirs, batch, hidden] initial state (zeros when absent)."""
    from coremltools.converters.mil.mil import Builder as mb

    if v is None:
        return mb.const(val=np.zeros((batch, hidden), np.float16), name=name)
    part = mb.slice_by_index(x=v, begin=np.asarray([d, 0, 0], np.int32),
                             end=np.asarray([d + 1, batch, hidden], np.int32), name=name + "_s")  # fmt: skip
    return mb.squeeze(x=part, axes=[0], name=name)


def _gate(v: Any, k: int, batch: int, hidden: int, name: str) -> Any:
    """Gate k (columns k*hidden ..) of a [batch, gates*hidden] tensor."""
    from coremltools.converters.mil.mil import Builder as mb

    return mb.slice_by_index(x=v, begin=np.asarray([0, k * hidden], np.int32),
                             end=np.asarray([batch, (k + 1) * hidden], np.int32), name=name)  # fmt: skip


def _text(value: Any, default: str) -> str:
    value = default if value is None else value
    return value.decode() if isinstance(value, bytes) else str(value)


def _fp16_epsilon(eps: float) -> np.float16:
    """A positive epsilon stays positive in fp16 (MiniLM's 1e-12 would round to 0 and a
    constant row would divide by zero): at least fp16's smallest subnormal, 2^-24."""
    return np.float16(max(float(eps), 2.0**-24)) if eps > 0 else np.float16(0)


def _pads(node: Node, n: int) -> dict[str, Any]:
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto == "VALID":
        return {"pad_type": "valid"}
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        if auto == "SAME_LOWER":
            raise UnsupportedOpError(f"{node}: auto_pad SAME_LOWER")
        return {"pad_type": "same"}
    pads = list(node.attrs.get("pads", [0] * (2 * n)))
    mil_pad = [p for i in range(n) for p in (pads[i], pads[i + n])]  # [b0, e0, b1, e1, ...]
    return {"pad_type": "custom", "pad": np.asarray(mil_pad, np.int32)}


def _types() -> Any:
    from coremltools.converters.mil.mil import types

    return types


def build_program(graph: Graph, plan: QuantPlan | None, deployment_target: str | None = None,
                  ) -> BuiltProgram:  # fmt: skip
    """The MIL program for `graph` (weights from `plan`; plan None = fp16 float baseline)."""
    need = required_target(plan)
    target = deployment_target or need
    if target not in IOS_TARGETS:
        raise EdgeqError(f"unknown Core ML deployment target '{target}'",
                         f"use one of {', '.join(IOS_TARGETS)}")  # fmt: skip
    if IOS_TARGETS.index(target) < IOS_TARGETS.index(need):
        raise EdgeqError(
            f"this plan needs deployment target {need} (int4/per-block weights need iOS18, "
            f"quantized activations iOS17), not {target}",
            f"use --deployment-target {need} or leave it out",
        )
    return ProgramBuilder(graph, plan, target).build()


__all__ = ["BuiltProgram", "build_program", "fp16", "mil_name", "requant_is_identity", "required_target",
           "weight_op_name"]  # fmt: skip


# how each lowering runs on Core ML, where it is not one MIL op of the same meaning
_DECOMPOSED = {"HardSwish": "sigmoid_hard · mul", "Split": "one slice_by_index per output",
               "LSTM": "unrolled over time (linear, sigmoid, tanh, mul, add)",
               "GRU": "unrolled over time (linear, sigmoid, tanh, mul, add)",
               "Neg": "mul by -1", "Expand": "tile"}  # fmt: skip


def op_support() -> dict[str, dict[str, Any]]:
    """ONNX op → {"kind": native | decomposed} for every op ProgramBuilder lowers."""
    ops = sorted(n.removeprefix("_op_") for n in dir(ProgramBuilder) if n.startswith("_op_"))
    return {op: {"kind": "decomposed" if op in _DECOMPOSED else "native",
                 **({"as": _DECOMPOSED[op]} if op in _DECOMPOSED else {})} for op in ops}  # fmt: skip
