"""Exporters: one module per artifact format, registered by name.

A target profile names its exporter (`exporter = "onnx_qdq"` in targets/onnx.toml). An exporter
turns (prepared Graph, QuantPlan, TargetProfile) into an artifact on disk and can open that
artifact on its runtime:

- `export(graph, plan, profile, out, options) -> Artifact` writes the artifact at `out` (a file
  or a folder, written to a temp name and renamed into place). `plan=None` writes the float
  baseline of the same format (the latency/size reference on the same runtime).
- `open(path, **kwargs) -> Runner`: a callable taking feeds named and shaped as the prepared
  graph's inputs (NCHW where the ONNX model is NCHW) and returning float32 outputs named and
  shaped as the graph's outputs. Layout changes and (de)quantization of I/O happen inside.

Modules are imported lazily so an optional runtime (coremltools, mlx, ai-edge-litert) is only
needed for the targets that use it.
"""

from __future__ import annotations

import importlib
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgeq.errors import EdgeqError, InputError
from edgeq.outputs import atomic_output

if TYPE_CHECKING:
    from edgeq.ir.graph import Graph
    from edgeq.quant.plan import QuantPlan
    from edgeq.targets import TargetProfile

Feeds = Mapping[str, np.ndarray]
Runner = Callable[[Feeds], dict[str, np.ndarray]]


@dataclass(frozen=True)
class ExportOptions:
    """Options every exporter understands (unknown ones are ignored by the others)."""

    allow_fallback: bool = False  # qnn: write even if some nodes would leave the accelerator
    deployment_target: str | None = None  # coreml: iOS16/iOS17/iOS18 (default: from the plan)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Artifact:
    path: Path  # the file or folder written
    target: str
    format: str  # onnx | tflite | mlpackage | mlx
    quantized: bool
    notes: list[str] = field(default_factory=list)  # fallbacks, rewrites, what was not checked
    checks: dict[str, Any] = field(default_factory=dict)  # e.g. the QNN compatibility report

    @property
    def size_bytes(self) -> int:
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


class Exporter(Protocol):
    format: str
    suffix: str  # ".onnx", ".tflite", ".mlpackage", "" (folder)

    def export(self, graph: Graph, plan: QuantPlan | None, profile: TargetProfile, out: Path,
               options: ExportOptions) -> Artifact: ...  # fmt: skip

    def open(self, path: Path, **kwargs: Any) -> Runner: ...


# name -> module path; each module defines EXPORTER (an Exporter)
_MODULES: dict[str, str] = {
    "onnx_qdq": "edgeq.exporters.onnx.qdq",
    "tflite": "edgeq.exporters.tflite.exporter",
    "coreml": "edgeq.exporters.coreml.exporter",
    "mlx": "edgeq.exporters.mlx.exporter",
}
# optional runtimes and the extra that installs each
_EXTRAS = {"coremltools": "coreml", "mlx": "mlx", "ai_edge_litert": "tflite"}


def register_exporter(name: str, module: str) -> None:
    _MODULES[name] = module


def get_exporter(name: str) -> Exporter:
    if name not in _MODULES:
        raise InputError(f"unknown exporter '{name}'", f"exporters: {', '.join(sorted(_MODULES))}")
    try:
        module = importlib.import_module(_MODULES[name])
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        extra = _EXTRAS.get(missing)
        if extra is None:
            raise
        raise EdgeqError(
            f"exporter '{name}' needs the Python package '{missing}', which is not installed",
            f"pip install 'edgeq[{extra}]'",
        ) from None
    return module.EXPORTER  # type: ignore[no-any-return]


def require_valid_plan(plan: QuantPlan | None) -> None:
    """The exporter boundary: a plan with a NaN, zero or negative scale, an out-of-range zero
    point or integers that would wrap never becomes an artifact. Plans are checked when loaded;
    every exporter calls this first all the same (an API caller may build a plan by hand)."""
    if plan is not None:
        from edgeq.quant.plan_check import check_numbers

        check_numbers(plan, "the plan given to the exporter")


def exporter_for_artifact(path: Path) -> Exporter:
    """The exporter that can open an existing artifact, from its file name / folder content."""
    path = Path(path)
    if path.suffix == ".onnx":
        return get_exporter("onnx_qdq")
    if path.suffix == ".tflite":
        return get_exporter("tflite")
    if path.suffix == ".mlpackage":
        return get_exporter("coreml")
    if path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return get_exporter("mlx")
    raise InputError(
        f"'{path}' is not an artifact edgeq can run (.onnx, .tflite, .mlpackage or an MLX folder)",
        "pass the file or folder written by `edgeq export`",
    )


def median_latency_ms(run: Runner, feeds: Feeds, runs: int, warmup: int = 3) -> dict[str, float]:
    """p50/p90 wall time of `run(feeds)` in ms over `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        run(feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"p50_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))]}


__all__ = [
    "Artifact",
    "ExportOptions",
    "Exporter",
    "Feeds",
    "Runner",
    "atomic_output",
    "exporter_for_artifact",
    "get_exporter",
    "median_latency_ms",
    "register_exporter",
    "require_valid_plan",
]
