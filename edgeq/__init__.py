"""edgeq: one static post-training quantization plan, many edge runtimes.

The public API, for scripts that do what the CLI does::

    import edgeq
    graph = edgeq.load_model("rec.onnx")                      # Graph
    run = edgeq.calibrate("rec.onnx", "calib/", "onnx")       # CalibrationRun (.plan, .report)
    result = edgeq.export("rec.onnx", "onnx", "out/", calib="calib/")   # ExportResult
    result.passed, result.verdict.line(), result.report["task"]          # the verdict, metrics
    many = edgeq.export("rec.onnx", ["onnx", "rpi"], "out/", calib="calib/")  # MultiExportResult
    plan = edgeq.QuantPlan.load("out/plan")

Names resolve lazily, so `import edgeq` does not import JAX until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_API: dict[str, tuple[str, str]] = {
    "EdgeqError": ("edgeq.errors", "EdgeqError"),
    "Graph": ("edgeq.ir.graph", "Graph"),
    "Interpreter": ("edgeq.ir.interpreter", "Interpreter"),
    "load_model": ("edgeq.ir.onnx_io", "load_model"),
    "prepare": ("edgeq.ir.passes", "prepare"),
    "calibrate": ("edgeq.pipeline", "calibrate_model"),
    "CalibrationRun": ("edgeq.pipeline", "CalibrationRun"),
    "export": ("edgeq.export", "export_model"),
    "ExportResult": ("edgeq.export", "ExportResult"),
    "MultiExportResult": ("edgeq.export", "MultiExportResult"),
    "QuantPlan": ("edgeq.quant.plan", "QuantPlan"),
    "Recipe": ("edgeq.quant.recipe", "Recipe"),
    "TargetProfile": ("edgeq.targets", "TargetProfile"),
    "load_target": ("edgeq.targets", "load_target"),
    "available_targets": ("edgeq.targets", "available_targets"),
}

if TYPE_CHECKING:
    from edgeq.errors import EdgeqError
    from edgeq.export import ExportResult, MultiExportResult
    from edgeq.export import export_model as export
    from edgeq.ir.graph import Graph
    from edgeq.ir.interpreter import Interpreter
    from edgeq.ir.onnx_io import load_model
    from edgeq.ir.passes import prepare
    from edgeq.pipeline import CalibrationRun
    from edgeq.pipeline import calibrate_model as calibrate
    from edgeq.quant.plan import QuantPlan
    from edgeq.quant.recipe import Recipe
    from edgeq.targets import TargetProfile, available_targets, load_target


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'edgeq' has no attribute '{name}'")
    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


__all__ = [
    "CalibrationRun",
    "EdgeqError",
    "ExportResult",
    "Graph",
    "Interpreter",
    "MultiExportResult",
    "QuantPlan",
    "Recipe",
    "TargetProfile",
    "__version__",
    "available_targets",
    "calibrate",
    "export",
    "load_model",
    "load_target",
    "prepare",
]
