"""ONNX QDQ exporter: the plan as QuantizeLinear/DequantizeLinear pairs (targets onnx, qnn).

- every quantized activation T: producer → Q(s, zp) → DQ(s, zp) → T (the name is kept, so
  consumers and graph outputs are untouched; a quantized graph input gets Q/DQ after it);
- every quantized weight: stored integers (int8, or int4 packed two per byte by onnx) →
  DequantizeLinear (per-tensor, per-channel with `axis`, or blocked with `block_size`);
- every quantized bias: int32 values → DequantizeLinear (scale s_in × s_w, zero point 0);
- opset 21 (int4/int16 Q/DQ and blocked DQ need it), IR version 10 (onnxruntime 1.31 refuses
  IR 14, onnx 1.23's default); metadata records the edgeq version, target and plan hash.

The float baseline (plan=None) is the same graph at opset 21 without Q/DQ.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from edgeq import __version__
from edgeq.errors import EdgeqError
from edgeq.exporters import Artifact, ExportOptions, Runner, atomic_output, require_valid_plan
from edgeq.ir.graph import Graph, Node
from edgeq.ir.onnx_io import graph_to_model
from edgeq.ir.opset import TARGET_OPSET, upgrade_opset
from edgeq.quant.plan import QuantPlan, TensorQuant
from edgeq.targets import TargetProfile

log = logging.getLogger(__name__)
IR_VERSION = 10


def _storage(t: TensorQuant) -> np.dtype:
    if t.dtype in ("int4", "uint4"):
        import ml_dtypes

        return np.dtype(ml_dtypes.int4 if t.dtype == "int4" else ml_dtypes.uint4)
    return t.qdtype.storage


def _zero_point(t: TensorQuant, storage: np.dtype | None = None) -> np.ndarray:
    assert t.zero_point is not None
    return np.asarray(t.zero_point).astype(np.int64).astype(storage or _storage(t))


def _widened(t: TensorQuant) -> np.dtype:
    """The 8-bit type that holds a 4-bit tensor's integers exactly (int4 → int8, uint4 → uint8)."""
    return np.dtype(np.int8 if t.qdtype.signed else np.uint8)


def _dq_attrs(t: TensorQuant) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if t.axis is not None and np.ndim(t.scale) > 0:
        attrs["axis"] = int(t.axis)
        if t.block:
            attrs["block_size"] = int(t.block)
    return attrs


NBITS_BLOCKS = (16, 32, 64, 128, 256)


def matmul_nbits_weights(g: Graph, plan: QuantPlan) -> dict[str, TensorQuant]:
    """4-bit weights that onnxruntime runs with its 4-bit kernel (com.microsoft MatMulNBits):
    a constant [K, N] MatMul weight, blocked along K (power-of-two block ≥ 16), read only by
    MatMuls as their second input."""
    readers: dict[str, list[Node]] = {}
    for node in g.nodes:
        for i in node.inputs:
            readers.setdefault(i, []).append(node)
    out = {}
    for t in plan.quantized("weight"):
        users = readers.get(t.name, [])
        if (
            t.qdtype.bits == 4
            and t.block in NBITS_BLOCKS
            and t.axis == 0
            and t.name in g.constants
            and g.constants[t.name].ndim == 2
            and users
            and all(
                u.op_type == "MatMul" and u.inputs[1] == t.name and u.inputs[0] != t.name
                for u in users
            )
            and t.name not in g.output_names
        ):
            out[t.name] = t
    return out


def _matmul_nbits(g: Graph, node: Node, t: TensorQuant) -> Node:
    """MatMul(A, W) as MatMulNBits(A, B, scales[, zero_points]): unsigned 4-bit codes
    (q + 8 for int4) packed two per byte (element 2i low nibble), one row per output column,
    ceil(K/block) blocks (the partial last one padded with its zero point); fp32 compute
    (accuracy_level 1: the dequantized weights exactly, as the simulator)."""
    assert t.values is not None and t.scale is not None and t.zero_point is not None and t.block
    k, n = g.constants[t.name].shape
    block = int(t.block)
    n_blocks = -(-k // block)
    offset = 8 if t.qdtype.signed else 0
    zp = np.asarray(t.zero_point, np.int64).reshape(n_blocks, n).T + offset  # [N, blocks]
    codes = np.asarray(t.values, np.int64).T + offset  # [N, K]
    padded = np.repeat(zp, block, axis=1)
    padded[:, :k] = codes
    nib = padded.reshape(n, n_blocks, block).astype(np.uint8)
    packed = (nib[..., 0::2] | (nib[..., 1::2] << 4)).astype(np.uint8)
    base = t.name
    names = [g.unique_name(f"{base}_nbits_{x}") for x in ("B", "scales", "zero_points")]
    g.constants[names[0]] = packed
    g.constants[names[1]] = np.asarray(t.scale, np.float32).reshape(n_blocks, n).T.reshape(-1)
    inputs = [node.inputs[0], names[0], names[1]]
    if np.any(zp != 8):
        zpad = np.full((n, n_blocks + n_blocks % 2), 8, np.uint8)
        zpad[:, :n_blocks] = zp
        g.constants[names[2]] = (zpad[:, 0::2] | (zpad[:, 1::2] << 4)).reshape(-1).astype(np.uint8)
        inputs.append(names[2])
    attrs = {"K": int(k), "N": int(n), "bits": 4, "block_size": block, "accuracy_level": 1}
    return Node("MatMulNBits", inputs, list(node.outputs), g.unique_name(f"{node.name}_nbits"),
                attrs, domain="com.microsoft")  # fmt: skip


def _folded_blocks(g: Graph, t: TensorQuant, q: str, s: str, z: str | None) -> list[Node]:
    """Nodes that decode blocked weight `t` from its stored codes `q`, scales `s` and zero
    points `z` (laid out as a blocked DequantizeLinear reads them) with ops onnxruntime folds
    into a float initializer when it loads the model (float16 scales, where the plan's are
    float16 values, stored as such and cast): Cast the codes to float, widen each
    block's scale and zero point to its `block` rows (Unsqueeze, Expand, Reshape, and a Slice
    for a partial last block), subtract, multiply — the float arithmetic of DequantizeLinear,
    so the same values. A blocked DequantizeLinear is not folded (it would run on every call,
    slower than the float layer it feeds)."""
    assert t.axis is not None and t.block and t.values is not None
    shape = list(np.shape(t.values))
    axis = int(t.axis) % len(shape)
    k, block = shape[axis], int(t.block)
    n_blocks = -(-k // block)
    nodes: list[Node] = []

    def const(base: str, value: np.ndarray) -> str:
        name = g.unique_name(f"{t.name}_{base}")
        g.constants[name] = value
        return name

    def node(op: str, inputs: list[str], base: str, **attrs: Any) -> str:
        out = g.unique_name(f"{t.name}_{base}")
        nodes.append(Node(op, inputs, [out], f"{out}_{op}", attrs))
        return out

    wide = [*shape[:axis], n_blocks, block, *shape[axis + 1 :]]
    flat = [*shape[:axis], n_blocks * block, *shape[axis + 1 :]]
    axes = const("block_axis", np.array([axis + 1], np.int64))
    size = const("block_shape", np.array(wide, np.int64))
    flat_shape = const("padded_shape", np.array(flat, np.int64))

    def per_row(name: str, base: str) -> str:  # [.., n_blocks, ..] → [.., k, ..]
        v = node("Unsqueeze", [name, axes], f"{base}_unsqueezed")
        v = node("Expand", [v, size], f"{base}_expanded")
        v = node("Reshape", [v, flat_shape], f"{base}_rows")
        if n_blocks * block != k:
            v = node("Slice", [v, const("slice_start", np.array([0], np.int64)),
                               const("slice_end", np.array([k], np.int64)),
                               const("slice_axis", np.array([axis], np.int64))], f"{base}_cut")  # fmt: skip
        return v

    scale = np.asarray(g.constants[s])
    if np.array_equal(scale.astype(np.float16).astype(np.float32), scale):
        g.constants[s] = scale.astype(np.float16)  # the plan's float16 scales: half the bits
        s = node("Cast", [s], "scale_float", to=onnx.TensorProto.FLOAT)
    codes = node("Cast", [q], "codes_float", to=onnx.TensorProto.FLOAT)
    if z is not None:
        zf = node("Cast", [z], "zero_point_float", to=onnx.TensorProto.FLOAT)
        codes = node("Sub", [codes, per_row(zf, "zero_point")], "centered")
    nodes.append(
        Node("Mul", [codes, per_row(s, "scale")], [t.name], g.unique_name(f"{t.name}_Mul"))
    )
    return nodes


def _folded_channels(g: Graph, t: TensorQuant, q: str, s: str, z: str | None) -> list[Node]:
    """Nodes that decode per-channel (or per-tensor) weight `t` from its stored codes `q`,
    scales `s` and zero points `z` with ops onnxruntime folds into a float initializer at load:
    Cast the codes to float, subtract the zero point, multiply by the scale (reshaped to
    broadcast along the weight's axis) — DequantizeLinear's arithmetic, so the same values. For
    a weight whose layer reads a float input (weight-only plans, and the 8-bit layers of a
    weight-only 4-bit plan): no integer kernel can take it, and a DequantizeLinear would run on
    every call."""
    assert t.values is not None
    shape = list(np.shape(t.values))
    nodes: list[Node] = []

    def node(op: str, inputs: list[str], base: str, **attrs: Any) -> str:
        out = g.unique_name(f"{t.name}_{base}")
        nodes.append(Node(op, inputs, [out], f"{out}_{op}", attrs))
        return out

    def broadcast(name: str) -> None:
        value = np.asarray(g.constants[name])
        if t.axis is not None and value.ndim == 1:
            along = [1] * len(shape)
            along[int(t.axis) % len(shape)] = value.shape[0]
            g.constants[name] = value.reshape(along)

    broadcast(s)
    codes = node("Cast", [q], "codes_float", to=onnx.TensorProto.FLOAT)
    if z is not None:
        broadcast(z)
        zf = node("Cast", [z], "zero_point_float", to=onnx.TensorProto.FLOAT)
        codes = node("Sub", [codes, zf], "centered")
    nodes.append(Node("Mul", [codes, s], [t.name], g.unique_name(f"{t.name}_Mul")))
    return nodes


def _float_layer_weights(g: Graph, quantized: set[str]) -> set[str]:
    """The constants whose every reader reads its other, non-constant inputs in float (none
    of them quantized by the plan): layers that run as float layers on onnxruntime."""
    readers: dict[str, list[Node]] = {}
    for node in g.nodes:
        for i in node.inputs:
            if i in g.constants:
                readers.setdefault(i, []).append(node)
    return {
        name for name, nodes in readers.items()
        if not any(i in quantized for n in nodes for i in n.inputs if i and i not in g.constants)
    }  # fmt: skip


def _own_channel_dq(g: Graph, nodes: list[Node], folded: set[str],
                    quantized_as: Mapping[str, tuple[str, str, str]]) -> list[Node]:  # fmt: skip
    """`nodes` with each Conv/ConvTranspose/Gemm whose weight is `folded` reading its
    quantized input through a DequantizeLinear of its own with the tensor's one scale and zero
    point repeated per channel (axis 1): the same values. onnxruntime's WeightBiasQuantization
    re-quantizes the float weight of such a layer to per-tensor int8 (dropping the plan's
    4-bit blocks: PP-OCRv4 rec in blocks went from 1.7% to 6.6% CER) when its input comes
    from a per-tensor DequantizeLinear; a per-channel one it leaves alone."""
    out: list[Node] = []
    for node in nodes:
        x = node.inputs[0] if node.inputs else ""
        info = g.info(x) if x else None
        if (
            node.op_type in ("Conv", "ConvTranspose", "Gemm")
            and len(node.inputs) > 1
            and node.inputs[1] in folded
            and x in quantized_as
            and info is not None
            and info.shape is not None
            and len(info.shape) > 1
            and isinstance(info.shape[1], int)
        ):
            q, s, z = quantized_as[x]
            channels = int(info.shape[1])
            sc, zc = g.unique_name(f"{x}_channel_scale"), g.unique_name(f"{x}_channel_zero_point")
            g.constants[sc] = np.full(channels, np.asarray(g.constants[s]), np.float32)
            g.constants[zc] = np.full(channels, np.asarray(g.constants[z]), g.constants[z].dtype)
            dq = g.unique_name(f"{x}_for_{node.name}")
            g.value_info[dq] = type(info)(dq, info.dtype, info.shape)
            out.append(
                Node("DequantizeLinear", [q, sc, zc], [dq], f"{dq}_DequantizeLinear", {"axis": 1})
            )
            node.inputs = [dq, *node.inputs[1:]]
        out.append(node)
    return out


def qdq_graph(graph: Graph, plan: QuantPlan, use_nbits: bool = False,
              omit_zero_points: bool = False, widen_int4: bool = False,
              fold_blocks: bool = False) -> Graph:  # fmt: skip
    """The prepared graph with the plan's quantization written as Q/DQ nodes (opset 21);
    `use_nbits`: blocked 4-bit MatMul weights as com.microsoft MatMulNBits (onnxruntime's
    kernel); `widen_int4`: 4-bit weights without blocks stored as int4 and widened by a Cast to
    int8 before their DequantizeLinear (onnxruntime folds the Cast at load, and its QDQ fusion
    takes only 8-bit weights into QLinearConv / QLinearMatMul / MatMulIntegerToFloat);
    `fold_blocks`: other blocked weights decoded by ops onnxruntime folds at load
    (`_folded_blocks`) instead of a blocked DequantizeLinear, and so are the weights of layers
    that read float inputs (`_folded_channels`: no integer kernel takes them)."""
    g = upgrade_opset(graph, TARGET_OPSET)
    _omit_unread_optional_outputs(g)
    nodes: list[Node] = []
    producers = {out: node for node in g.nodes for out in node.outputs if out}
    renamed_inputs: dict[str, str] = {}
    prefix: list[Node] = []

    def params(t: TensorQuant, base: str, storage: np.dtype | None = None) -> tuple[str, str]:
        s = g.unique_name(f"{base}_scale")
        g.constants[s] = np.asarray(t.scale, np.float32)
        z = g.unique_name(f"{base}_zero_point")
        g.constants[z] = _zero_point(t, storage)
        return s, z

    nbits = matmul_nbits_weights(g, plan) if use_nbits else {}
    folded: set[str] = set()  # weights decoded by ops folded at load
    quantized_as: dict[str, tuple[str, str, str]] = {}  # dequantized activation → (Q out, s, z)
    float_layers = (
        _float_layer_weights(g, {t.name for t in plan.quantized("activation")})
        if fold_blocks
        else set()
    )
    # stored weights and biases: integer initializer → DequantizeLinear named as the float one
    for t in plan.tensors.values():
        if t.role not in ("weight", "bias") or not t.is_quantized or t.name not in g.constants:
            continue
        if t.name in nbits:
            continue  # stored packed for MatMulNBits below
        if t.values is None:
            raise EdgeqError(f"plan tensor '{t.name}' has no integer values", "re-calibrate")
        q = g.unique_name(f"{t.name}_quantized")
        g.constants[q] = np.asarray(t.values).astype(np.int64).astype(_storage(t))
        float_layer = t.role == "weight" and not t.block and t.name in float_layers
        widen = widen_int4 and t.role == "weight" and t.qdtype.bits == 4 and not t.block
        widen = widen and not float_layer
        if widen:  # int4 initializer → Cast → the int8 tensor the DequantizeLinear reads
            q4, q = q, g.unique_name(f"{t.name}_quantized_int8")
            to = onnx.helper.np_dtype_to_tensor_dtype(_widened(t))
            prefix.append(Node("Cast", [q4], [q], g.unique_name(f"{t.name}_Cast"), {"to": to}))
        s, z = params(t, t.name, _widened(t) if widen else None)
        del g.constants[t.name]
        dq_inputs = [q, s, z]
        if (
            t.role == "weight"
            and ((t.qdtype.bits == 4 and not widen) or omit_zero_points or float_layer)
            and not np.any(np.asarray(t.zero_point))
        ):
            del g.constants[z]  # symmetric weights: the default zero point 0, not stored
            dq_inputs = [q, s]
        if fold_blocks and t.role == "weight" and t.block and t.axis is not None:
            prefix += _folded_blocks(g, t, q, s, dq_inputs[2] if len(dq_inputs) > 2 else None)
            folded.add(t.name)
            continue
        if float_layer:
            prefix += _folded_channels(g, t, q, s, dq_inputs[2] if len(dq_inputs) > 2 else None)
            continue
        prefix.append(Node("DequantizeLinear", dq_inputs, [t.name],
                           g.unique_name(f"{t.name}_DequantizeLinear"), _dq_attrs(t)))  # fmt: skip

    acts = {t.name: t for t in plan.quantized("activation")}
    for v in g.inputs:
        t = acts.get(v.name)
        if t is None:
            continue
        s, z = params(t, v.name)
        q, dq = g.unique_name(f"{v.name}_QuantizeLinear_Output"), g.unique_name(f"{v.name}_dq")
        prefix += [Node("QuantizeLinear", [v.name, s, z], [q], g.unique_name(f"{v.name}_QuantizeLinear")),
                   Node("DequantizeLinear", [q, s, z], [dq], g.unique_name(f"{v.name}_DequantizeLinear"))]  # fmt: skip
        renamed_inputs[v.name] = dq
        quantized_as[dq] = (q, s, z)
        g.value_info.setdefault(dq, type(v)(dq, v.dtype, v.shape))
    for node in g.nodes:
        node.inputs = [renamed_inputs.get(i, i) for i in node.inputs]
        if node.op_type == "MatMul" and node.inputs[1] in nbits:
            node = _matmul_nbits(g, node, nbits[node.inputs[1]])
        nodes.append(node)
        for k, out in enumerate(node.outputs):
            t = acts.get(out)
            if t is None or producers.get(out) is not node:
                continue
            info = g.info(out)
            if info is not None and not np.issubdtype(info.dtype, np.floating):
                continue
            pre = g.unique_name(f"{out}_float")
            node.outputs[k] = pre
            if info is not None:
                g.value_info[pre] = type(info)(pre, info.dtype, info.shape)
            s, z = params(t, out)
            q = g.unique_name(f"{out}_QuantizeLinear_Output")
            quantized_as[out] = (q, s, z)
            nodes += [Node("QuantizeLinear", [pre, s, z], [q], g.unique_name(f"{out}_QuantizeLinear")),
                      Node("DequantizeLinear", [q, s, z], [out], g.unique_name(f"{out}_DequantizeLinear"))]  # fmt: skip
    g.nodes = prefix + _own_channel_dq(g, nodes, folded, quantized_as)
    for name in nbits:  # the float weights MatMulNBits replaced are read by no node now
        if not any(name in node.inputs for node in g.nodes):
            g.constants.pop(name, None)
    return g


def _omit_unread_optional_outputs(g: Graph) -> None:
    """Name no tensor that nothing reads where the op lets it be omitted (an LSTM's `Y` when
    only its last state is used): left named, it is a float tensor (or a Q/DQ pair) that leads
    nowhere, which the QNN HTP takes for a float output and leaves on the CPU."""
    read = {i for node in g.nodes for i in node.inputs} | set(g.output_names)
    for node in g.nodes:
        if node.domain not in ("", "ai.onnx") or all(o in read for o in node.outputs if o):
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, TARGET_OPSET)
        except onnx.defs.SchemaError:
            continue
        optional = onnx.defs.OpSchema.FormalParameterOption.Optional
        for k, out in enumerate(node.outputs):
            if (
                out
                and out not in read
                and k < len(schema.outputs)
                and schema.outputs[k].option == optional
            ):
                node.outputs[k] = ""
                g.value_info.pop(out, None)


def build_model(graph: Graph, plan: QuantPlan | None, profile: TargetProfile) -> onnx.ModelProto:
    nbits, omit = bool(profile.raw.get("matmul_nbits")), bool(profile.raw.get("omit_zero_points"))
    widen, fold = bool(profile.raw.get("widen_int4")), bool(profile.raw.get("fold_blocks"))
    g = (
        qdq_graph(graph, plan, nbits, omit, widen, fold)
        if plan is not None
        else upgrade_opset(graph, TARGET_OPSET)
    )
    g.metadata = {
        **{k: v for k, v in graph.metadata.items() if not k.startswith("edgeq.")},
        "edgeq.version": __version__,
        "edgeq.target": profile.name,
        "edgeq.quantized": "true" if plan is not None else "false",
    }
    if plan is not None:
        g.metadata["edgeq.plan_hash"] = plan.plan_hash()
    extra = {"com.microsoft": 1} if any(n.domain == "com.microsoft" for n in g.nodes) else None
    model = graph_to_model(g, opset=TARGET_OPSET, ir_version=IR_VERSION, extra_opsets=extra)
    try:
        onnx.checker.check_model(model, full_check=False)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise EdgeqError(f"the exported ONNX model is invalid: {first}",
                         "report this with the model: it is an edgeq bug") from None  # fmt: skip
    return model


class OnnxQdqExporter:
    format = "onnx"
    suffix = ".onnx"

    def export(self, graph: Graph, plan: QuantPlan | None, profile: TargetProfile, out: Path,
               options: ExportOptions) -> Artifact:  # fmt: skip
        require_valid_plan(plan)
        model = build_model(graph, plan, profile)
        notes: list[str] = []
        checks: dict[str, Any] = {}
        if plan is not None and profile.name == "qnn":
            from edgeq.exporters.onnx.qnn_check import blocking, check_qnn

            found = check_qnn(model, profile)
            violations = blocking(found)
            checks["qnn"] = {"violations": [v.as_dict() for v in found],
                             "htp_ready": not violations}  # fmt: skip
            if violations and not options.allow_fallback:
                v = violations[0]
                raise EdgeqError(
                    f"{len(violations)} node(s) would leave the QNN HTP, first: {v}",
                    "see `edgeq check MODEL --target qnn`; pass --allow-fallback to accept CPU fallback",
                )
            notes += [f"falls back to CPU: {v}" for v in violations]
        atomic_output(Path(out), lambda tmp: tmp.write_bytes(model.SerializeToString()))
        return Artifact(Path(out), profile.name, self.format, plan is not None, notes, checks)

    def op_support(self, profile: TargetProfile) -> dict[str, dict[str, Any]]:
        """onnxruntime runs every standard op as written; on qnn the HTP runs those with a QNN
        op builder (the profile's list, from onnxruntime's op_builder_factory.cc)."""
        from edgeq.ir.ops.registry import supported_ops

        return {op: {"kind": "native"} for op in supported_ops() if profile.ops.runs(op)}

    def refusal(self, op: str, profile: TargetProfile) -> str:
        if profile.name == "qnn":
            return ("no QNN HTP op builder in onnxruntime's QNN EP (op_builder_factory.cc): "
                    "the node would fall back to the CPU")  # fmt: skip
        return f"edgeq's interpreter has no {op}"

    def open(self, path: Path, *, optimize: bool = True, threads: int | None = None,
             **_: Any) -> Runner:  # fmt: skip
        return OrtRunner(Path(path), optimize=optimize, threads=threads)

    def weight_storage(self, path: Path, graph: Graph) -> dict[str, dict[str, int]]:
        return weight_storage(path)


class OrtRunner:
    """An artifact on onnxruntime's CPU provider: feeds in, float32 outputs out."""

    def __init__(self, path: Path, *, optimize: bool = True, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            first = str(exc).strip().splitlines()[0][:300]
            raise EdgeqError(f"onnxruntime cannot load '{path}': {first}",
                             "re-export the artifact with this edgeq version") from None  # fmt: skip
        self._types = {i.name: i.type for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        dtypes = {"tensor(float)": np.float32, "tensor(int64)": np.int64,
                  "tensor(int32)": np.int32, "tensor(double)": np.float64}  # fmt: skip
        inputs = {k: np.asarray(feeds[k], dtypes.get(t)) for k, t in self._types.items()}
        values = self.session.run(self.output_names, inputs)
        return {
            n: np.asarray(v, np.float32) for n, v in zip(self.output_names, values, strict=True)
        }


_BITS = {onnx.TensorProto.FLOAT: 32, onnx.TensorProto.FLOAT16: 16, onnx.TensorProto.DOUBLE: 64,
         onnx.TensorProto.INT8: 8, onnx.TensorProto.UINT8: 8, onnx.TensorProto.INT4: 4,
         onnx.TensorProto.UINT4: 4, onnx.TensorProto.INT16: 16, onnx.TensorProto.UINT16: 16,
         onnx.TensorProto.INT32: 32}  # fmt: skip
# op -> index of its weight operand
_WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "MatMul": 1, "Gemm": 1, "Gather": 0}


_CODES = (
    onnx.TensorProto.INT4,
    onnx.TensorProto.UINT4,
    onnx.TensorProto.INT8,
    onnx.TensorProto.UINT8,
)


def _constant_inputs(node: onnx.NodeProto, producers: Mapping[str, onnx.NodeProto],
                     init: Mapping[str, onnx.TensorProto]) -> list[str]:  # fmt: skip
    """The initializers a node's inputs are computed from (walking back through producers),
    in the order first reached (the codes first); empty where a graph input feeds it (not a
    constant: an activation)."""
    found: list[str] = []
    seen: set[str] = set()
    stack = list(reversed(node.input))
    while stack:
        name = stack.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        if name in init:
            found.append(name)
        elif name in producers:
            stack.extend(reversed(producers[name].input))
        else:
            return []
    return found


def weight_storage(path: str | Path) -> dict[str, dict[str, int]]:
    """Stored bits of every layer weight of an ONNX artifact, read from the file itself: per
    weight operand of Conv/ConvTranspose/MatMul/Gemm/Gather (and MatMulNBits), its elements
    and the bits of what stores it (a float initializer, or the integer, scale and zero-point
    initializers of its DequantizeLinear — through the Cast that widens an int4 initializer —
    or of the ops that decode folded blocks, or MatMulNBits' packed codes, scales, zero
    points)."""
    model = onnx.load(str(path))
    init = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}

    def bits(name: str) -> int:
        t = init[name]
        return int(np.prod(t.dims)) * _BITS.get(t.data_type, 32)

    out: dict[str, dict[str, int]] = {}
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            stored = sum(bits(i) for i in node.input[1:4] if i in init)
            out[node.input[1]] = {"elements": int(attrs["K"]) * int(attrs["N"]), "bits": stored}
            continue
        k = _WEIGHT_INPUT.get(node.op_type)
        if k is None or len(node.input) <= k:
            continue
        name = node.input[k]
        if name in out:
            continue
        if name in init and init[name].data_type in (
            onnx.TensorProto.FLOAT,
            onnx.TensorProto.FLOAT16,
        ):
            out[name] = {"elements": int(np.prod(init[name].dims)), "bits": bits(name)}
            continue
        dq = producers.get(name)
        if dq is not None and dq.op_type == "Mul":  # blocks decoded by ops folded at load
            found = _constant_inputs(dq, producers, init)
            codes = [i for i in found if init[i].data_type in _CODES]
            if codes:
                out[name] = {"elements": int(np.prod(init[codes[0]].dims)),
                             "bits": sum(bits(i) for i in found
                                         if init[i].data_type != onnx.TensorProto.INT64)}  # fmt: skip
            continue
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        stored = list(dq.input)
        cast = producers.get(stored[0])  # an int4 initializer widened to int8 for the kernels
        if cast is not None and cast.op_type == "Cast" and cast.input[0] in init:
            stored[0] = cast.input[0]
        if stored[0] in init:
            elements = int(np.prod(init[stored[0]].dims))
            out[name] = {"elements": elements, "bits": sum(bits(i) for i in stored if i in init)}
    return out


EXPORTER = OnnxQdqExporter()

__all__ = ["EXPORTER", "IR_VERSION", "OrtRunner", "build_model", "qdq_graph", "weight_storage"]
