"""Core ML exporter for the Apple Neural Engine (`--target ane`): an ML program (.mlpackage),
fp16 compute, weights from the QuantPlan (int8 per-channel via iOS16
constexpr_affine_dequantize, int4 per-block via iOS18 constexpr_blockwise_shift_scale),
optional W8A8 via iOS17 quantize/dequantize. See `build` for the lowering.

Running: on macOS `open` uses Core ML's predict (`mac`); elsewhere it runs the saved
program with edgeq's numpy MIL evaluator (`evaluate`), which is what Linux CI checks.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeq.errors import EdgeqError, InputError
from edgeq.exporters import (
    Artifact,
    ExportOptions,
    Feeds,
    Runner,
    atomic_output,
    require_valid_plan,
)
from edgeq.exporters.coreml.build import build_program
from edgeq.exporters.coreml.check import check_ops, check_weights
from edgeq.exporters.coreml.evaluate import MILProgramEvaluator, SavedProgram

if TYPE_CHECKING:
    from edgeq.ir.graph import Graph
    from edgeq.quant.plan import QuantPlan
    from edgeq.targets import TargetProfile

log = logging.getLogger(__name__)
IO_KEY = "edgeq.io"


def _convert(program: Any, deployment_target: str) -> Any:
    """MIL program → MLModel (not loaded: Core ML's runtime exists only on macOS). The default
    optimization pipeline is skipped: the program is already fp16 and ANE-shaped, and the
    checks rely on its ops staying as built."""
    import coremltools as ct

    quiet = io.StringIO()  # coremltools draws tqdm progress bars on stderr
    with contextlib.redirect_stderr(quiet):
        return ct.convert(
            program,
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16,
            minimum_deployment_target=getattr(ct.target, deployment_target),
            pass_pipeline=ct.PassPipeline.EMPTY,
            skip_model_load=True,
        )


class CoreMLExporter:
    format = "mlpackage"
    suffix = ".mlpackage"

    def export(self, graph: Graph, plan: QuantPlan | None, profile: TargetProfile, out: Path,
               options: ExportOptions) -> Artifact:  # fmt: skip
        require_valid_plan(plan)
        t0 = time.perf_counter()
        built = build_program(graph, plan, options.deployment_target)
        meta = {"inputs": built.inputs, "outputs": built.outputs,
                "deployment_target": built.deployment_target}  # fmt: skip

        def write(tmp: Path) -> None:
            model = _convert(built.program, built.deployment_target)
            model.user_defined_metadata[IO_KEY] = json.dumps(meta)
            model.user_defined_metadata["edgeq.target"] = profile.name
            if plan is not None:
                model.user_defined_metadata["edgeq.plan_hash"] = plan.plan_hash()
            model.short_description = f"edgeq export for {profile.name} ({built.deployment_target})"
            model.save(str(tmp))

        atomic_output(out, write)
        notes = list(built.notes)
        notes.append(f"deployment target {built.deployment_target}, fp16 compute; Linux checks "
                     "run the saved program in edgeq's numpy MIL evaluator (predict needs macOS)")  # fmt: skip
        checks: dict[str, Any] = {"ops": check_ops(out, graph, plan)}
        if plan is not None:
            checks["weights"] = check_weights(out, graph, plan)
        checks["export_seconds"] = round(time.perf_counter() - t0, 3)
        for key in ("ops", "weights"):
            if key in checks and not checks[key]["ok"]:
                raise EdgeqError(
                    f"the saved Core ML program fails the {key} check: {checks[key]['failures'][:3]}",
                    "this is an edgeq bug: please report it with the model",
                )
        return Artifact(Path(out), profile.name, self.format, plan is not None, notes, checks)

    def op_support(self, profile: TargetProfile) -> dict[str, dict[str, Any]]:
        from .build import op_support

        return op_support()

    def refusal(self, op: str, profile: TargetProfile) -> str:
        return f"no Core ML (MIL) lowering for {op} in edgeq"

    def weight_storage(self, path: Path, graph: Graph) -> dict[str, dict[str, int]]:
        from edgeq.exporters.coreml.check import weight_storage

        return weight_storage(path, graph)

    def open(self, path: Path, **kwargs: Any) -> Runner:
        """`numpy=True` forces the numpy evaluator (also on macOS); `compute_units` passes
        through to Core ML on macOS (default CPU_AND_NE)."""
        path = Path(path)
        prog = SavedProgram(path)
        if IO_KEY not in prog.metadata:
            raise InputError(f"'{path}' was not written by edgeq (no {IO_KEY} metadata)",
                             "export it with `edgeq export --target ane`")  # fmt: skip
        meta = json.loads(prog.metadata[IO_KEY])
        if sys.platform == "darwin" and not kwargs.get("numpy"):
            from edgeq.exporters.coreml.mac import coreml_runner

            predict = coreml_runner(path, kwargs.get("compute_units", "CPU_AND_NE"))
            return _Runner(predict, meta)
        runner = _Runner(predict=MILProgramEvaluator(path), meta=meta)
        # a check of the saved program, not Core ML: its timings say nothing about a device
        runner.stand_in = "edgeq's numpy MIL evaluator stands in for Core ML (predict needs macOS)"
        return runner


class _Runner:
    """Feeds by ONNX name (int64 ids become int32), outputs float32 by ONNX name."""

    stand_in: str | None = None  # why latency on this runner means nothing (numpy evaluator)

    def __init__(self, predict: Any, meta: dict[str, Any]) -> None:
        self.predict = predict
        self.inputs = meta["inputs"]
        self.outputs = meta["outputs"]

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        args: dict[str, np.ndarray] = {}
        for name, info in self.inputs.items():
            if name not in feeds:
                raise InputError(f"missing input '{name}'", f"inputs: {', '.join(self.inputs)}")
            arr = np.asarray(feeds[name])
            if list(arr.shape) != list(info["shape"]):
                raise InputError(f"input '{name}' has shape {arr.shape}, the model takes "
                                 f"{tuple(info['shape'])}")  # fmt: skip
            floating = np.issubdtype(np.dtype(info["dtype"]), np.floating)
            args[info["name"]] = arr.astype(np.float32 if floating else np.int32)
        res = self.predict(args)
        return {name: np.asarray(res[info["name"]], np.float32).reshape(info["shape"])
                for name, info in self.outputs.items()}  # fmt: skip


EXPORTER = CoreMLExporter()

__all__ = ["EXPORTER", "CoreMLExporter"]
