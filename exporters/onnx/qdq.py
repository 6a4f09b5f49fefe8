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


def _zero_point(t: TensorQuant) -> np.ndarray:
    assert t.zero_point is not None
    return np.asarray(t.zero_point).astype(np.int64).astype(_storage(t))


def _dq_attrs(t: TensorQuant) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if t.axis is not None and np.ndim(t.scale) > 0:
        attrs["axis"] = int(t.axis)
        if t.block:
            attrs["block_size"] = int(t.block)
    return attrs


def qdq_graph(graph: Graph, plan: QuantPlan) -> Graph:
    """The prepared graph with the plan's quantization written as Q/DQ nodes (opset 21)."""
    g = upgrade_opset(graph, TARGET_OPSET)
    nodes: list[Node] = []
    producers = {out: node for node in g.nodes for out in node.outputs if out}
    renamed_inputs: dict[str, str] = {}
    prefix: list[Node] = []

    def params(t: TensorQuant, base: str) -> tuple[str, str]:
        s = g.unique_name(f"{base}_scale")
        g.constants[s] = np.asarray(t.scale, np.float32)
        z = g.unique_name(f"{base}_zero_point")
        g.constants[z] = _zero_point(t)
        return s, z

    # stored weights and biases: integer initializer → DequantizeLinear named as the float one
    for t in plan.tensors.values():
        if t.role not in ("weight", "bias") or not t.is_quantized or t.name not in g.constants:
            continue
        if t.values is None:
            raise EdgeqError(f"plan tensor '{t.name}' has no integer values", "re-calibrate")
        q = g.unique_name(f"{t.name}_quantized")
        g.constants[q] = np.asarray(t.values).astype(np.int64).astype(_storage(t))
        s, z = params(t, t.name)
        del g.constants[t.name]
        prefix.append(Node("DequantizeLinear", [q, s, z], [t.name],
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
    for node in g.nodes:
        node.inputs = [renamed_inputs.get(i, i) for i in node.inputs]
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
            nodes += [Node("QuantizeLinear", [pre, s, z], [q], g.unique_name(f"{out}_QuantizeLinear")),
                      Node("DequantizeLinear", [q, s, z], [out], g.unique_name(f"{out}_DequantizeLinear"))]  # fmt: skip
    g.nodes = prefix + nodes
    return g


def build_model(graph: Graph, plan: QuantPlan | None, profile: TargetProfile) -> onnx.ModelProto:
    g = qdq_graph(graph, plan) if plan is not None else upgrade_opset(graph, TARGET_OPSET)
    g.metadata = {
        **{k: v for k, v in graph.metadata.items() if not k.startswith("edgeq.")},
        "edgeq.version": __version__,
        "edgeq.target": profile.name,
        "edgeq.quantized": "true" if plan is not None else "false",
    }
    if plan is not None:
        g.metadata["edgeq.plan_hash"] = plan.plan_hash()
    model = graph_to_model(g, opset=TARGET_OPSET, ir_version=IR_VERSION)
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


EXPORTER = OnnxQdqExporter()

__all__ = ["EXPORTER", "IR_VERSION", "OrtRunner", "build_model", "qdq_graph"]
