"""TFLite exporter (targets rpi and tflm): full-integer .tflite files written directly with the
flatbuffer object API (no TensorFlow), run with LiteRT.

- `export(graph, plan, profile, out, options)`: plan None → the float32 model (the latency and
  size baseline); with a plan → int8 activations, per-axis int8 weights, int32 biases, every
  number taken from the plan (see `converter` for layouts, `ops` for the
  lowerings and the rules checked, `float_islands` for the float32 islands of ops with
  no int8 kernel). 4-bit plan weights become packed INT4 on FULLY_CONNECTED; a 16-bit plan
  becomes 16x8 mode (int16 activations, int8 weights, int64 biases).
- `open(path, use_xnnpack=True, num_threads=None)`: a Runner over
  `ai_edge_litert.interpreter.Interpreter`; feeds and outputs are in the ONNX graph's names,
  layouts (NCHW) and float32. Inputs are quantized with the input tensor's parameters and the
  plan's rounding; `use_xnnpack=False` runs LiteRT's reference kernels
  (`OpResolverType.BUILTIN_REF`) to tell delegate issues from model issues.

The I/O layout and quantization travel inside the file as metadata `edgeq`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.errors import EdgeqError, InputError
from edgeq.exporters import Artifact, ExportOptions, Runner, atomic_output, require_valid_plan
from edgeq.ir.graph import Graph
from edgeq.quant.plan import QuantPlan
from edgeq.quant.qtypes import round_half
from edgeq.targets import TargetProfile

from . import float_islands, ops  # noqa: F401  (register the lowerings into converter.HANDLERS)
from .builder import read_metadata, read_model
from .converter import Converter
from .support import check_micro_kernels


def convert(graph: Graph, plan: QuantPlan | None,
            profile: TargetProfile) -> tuple[bytes, dict[str, Any], list[str]]:  # fmt: skip
    """(flatbuffer bytes, I/O metadata, notes) for `graph` quantized by `plan` (None: float)."""
    conv = Converter(graph, plan, profile)
    model, io = conv.run()
    check_micro_kernels(model, profile)
    io["notes"] = conv.notes
    model.metadata["edgeq"] = json.dumps(io).encode()
    ins, outs = conv.io_tensors
    return model.pack(ins, outs), io, conv.notes


def _check_target(graph: Graph, plan: QuantPlan | None, profile: TargetProfile) -> None:
    if profile.name == "tflm" and plan is not None:
        for t in plan.tensors.values():
            if t.is_quantized and t.role == "activation" and t.dtype != "int8":
                raise EdgeqError(
                    f"tensor '{t.name}' is {t.dtype}; TFLite Micro runs int8 activations only",
                    "calibrate for target tflm with --act-bits 8",
                )
            if t.is_quantized and t.role == "weight" and t.dtype != "int8":
                raise EdgeqError(f"weight '{t.name}' is {t.dtype}; TFLite Micro takes int8 weights only",
                                 "use --bits 8 for target tflm")  # fmt: skip


class TFLiteExporter:
    format = "tflite"
    suffix = ".tflite"

    def export(self, graph: Graph, plan: QuantPlan | None, profile: TargetProfile, out: Path,
               options: ExportOptions) -> Artifact:  # fmt: skip
        require_valid_plan(plan)
        if plan is None and profile.name == "tflm":
            pass  # the float baseline of a firmware model still runs under LiteRT
        _check_target(graph, plan, profile)
        data, io, notes = convert(graph, plan, profile)

        def write(tmp: Path) -> None:
            tmp.write_bytes(data)

        atomic_output(Path(out), write)
        checks = {"inputs": io["inputs"], "outputs": io["outputs"]}
        return Artifact(Path(out), profile.name, self.format, plan is not None, list(notes), checks)

    def op_support(self, profile: TargetProfile) -> dict[str, dict[str, Any]]:
        from .support import op_support

        return op_support(profile)

    def refusal(self, op: str, profile: TargetProfile) -> str:
        from .support import refusal

        return refusal(op, profile)

    def open(self, path: Path, **kwargs: Any) -> Runner:
        return TFLiteRunner(Path(path), **kwargs)


class TFLiteRunner:
    """Feeds (ONNX names, NCHW, float) → outputs (ONNX names and layouts, float32)."""

    def __init__(
        self, path: Path, use_xnnpack: bool = True, num_threads: int | None = None
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if not path.is_file():
            raise InputError(f"'{path}' does not exist", "pass a .tflite written by edgeq export")
        data = path.read_bytes()
        try:
            self.io = read_metadata(read_model(data), "edgeq")
        except Exception as exc:  # not a flatbuffer at all
            raise InputError(f"'{path}' is not a valid .tflite file ({exc})",
                             "pass a .tflite written by edgeq export") from None  # fmt: skip
        if self.io is None:
            raise InputError(f"'{path}' has no edgeq I/O metadata",
                             "run .tflite files written by edgeq export")  # fmt: skip
        resolver = OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_REF
        self.interpreter = Interpreter(model_content=data, num_threads=num_threads,
                                       experimental_op_resolver_type=resolver)  # fmt: skip
        self.interpreter.allocate_tensors()
        by_name = {d["name"]: d for d in self.interpreter.get_input_details()}
        self.inputs = [(row, by_name[row["tensor"]]) for row in self.io["inputs"]]
        out_by_name = {d["name"]: d for d in self.interpreter.get_output_details()}
        self.outputs = [(row, out_by_name[row["tensor"]]) for row in self.io["outputs"]]
        self.rounding = self.io.get("rounding", "half_away")

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for row, detail in self.inputs:
            if row["name"] not in feeds:
                raise InputError(f"missing input '{row['name']}'",
                                 f"inputs: {[r['name'] for r, _ in self.inputs]}")  # fmt: skip
            x = np.asarray(feeds[row["name"]])
            if list(x.shape) != row["onnx_shape"]:
                raise InputError(f"input '{row['name']}' has shape {list(x.shape)}, the model "
                                 f"takes {row['onnx_shape']}")  # fmt: skip
            x = x.transpose(row["perm"])
            scale, zp = detail["quantization"]
            dtype = detail["dtype"]
            if np.issubdtype(dtype, np.integer) and scale:
                info = np.iinfo(dtype)
                q = round_half(x.astype(np.float32) / np.float32(scale), self.rounding) + zp
                x = np.clip(q, info.min, info.max)
            self.interpreter.set_tensor(detail["index"], np.ascontiguousarray(x.astype(dtype)))
        self.interpreter.invoke()
        result: dict[str, np.ndarray] = {}
        for row, detail in self.outputs:
            y = self.interpreter.get_tensor(detail["index"])
            scale, zp = detail["quantization"]
            if np.issubdtype(y.dtype, np.integer) and scale:
                y = (y.astype(np.float32) - np.float32(zp)) * np.float32(scale)
            result[row["name"]] = y.astype(np.float32).transpose(np.argsort(row["perm"]))
        return result


EXPORTER = TFLiteExporter()

__all__ = ["EXPORTER", "TFLiteExporter", "TFLiteRunner"]
