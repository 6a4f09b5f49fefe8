"""Core ML on a Mac: predict, latency and where each op runs (CPU / GPU / Neural Engine).

NOT RUN in edgeq's CI (Linux has no Core ML runtime); written for the devicetest `xcode`
transport and for users on macOS 14.4+ with coremltools installed. Every function here needs
macOS; elsewhere they raise an EdgeqError naming the platform.

- `coreml_runner(path, compute_units)`: a callable feeds (MIL input names) -> outputs, via
  `MLModel.predict` with the chosen compute units (default CPU_AND_NE).
- `latency_ms(path, feeds, compute_units, runs)`: median/p90 predict latency after warm-up.
- `compute_plan_report(path, compute_units)`: per op, the preferred device from
  `MLComputePlan` (macOS 14.4+) and its estimated cost; the share of ops on the ANE.
- `device_report(path, feeds)`: the three together, as a JSON-able dict (what the xcode
  transport writes back).
"""

from __future__ import annotations

import platform
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.errors import EdgeqError

COMPUTE_UNITS = ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")


def _require_mac() -> None:
    if sys.platform != "darwin":
        raise EdgeqError(
            f"Core ML prediction needs macOS (this is {platform.system()})",
            "run on a Mac, or use the numpy MIL evaluator: EXPORTER.open(path, numpy=True)",
        )


def _units(name: str) -> Any:
    import coremltools as ct

    if name not in COMPUTE_UNITS:
        raise EdgeqError(f"unknown compute units '{name}'", f"use one of {COMPUTE_UNITS}")
    return getattr(ct.ComputeUnit, name)


def coreml_runner(path: str | Path, compute_units: str = "CPU_AND_NE",
                  ) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:  # fmt: skip
    _require_mac()
    import coremltools as ct

    model = ct.models.MLModel(str(path), compute_units=_units(compute_units))

    def predict(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = model.predict(dict(feeds))
        return {k: np.asarray(v) for k, v in out.items()}

    return predict


def latency_ms(path: str | Path, feeds: Mapping[str, np.ndarray],
               compute_units: str = "CPU_AND_NE", runs: int = 50,
               warmup: int = 5) -> dict[str, float]:  # fmt: skip
    """Median and p90 of `predict` wall time (includes Core ML's I/O copies). The first call
    (model compilation for the ANE) is reported separately as `first_ms`."""
    t0 = time.perf_counter()
    run = coreml_runner(path, compute_units)
    run(feeds)
    first = (time.perf_counter() - t0) * 1e3
    from edgeq.exporters import median_latency_ms

    return {"first_ms": first, **median_latency_ms(run, feeds, runs, warmup), "runs": runs}


def compute_plan_report(path: str | Path, compute_units: str = "CPU_AND_NE") -> dict[str, Any]:
    """Which device Core ML prefers for every op of the program (MLComputePlan, macOS 14.4+)."""
    _require_mac()
    from coremltools.models.compute_device import (
        MLCPUComputeDevice,
        MLGPUComputeDevice,
        MLNeuralEngineComputeDevice,
    )
    from coremltools.models.compute_plan import MLComputePlan
    from coremltools.models.utils import compile_model

    compiled = compile_model(str(path))
    plan = MLComputePlan.load_from_path(path=compiled, compute_units=_units(compute_units))
    program = plan.model_structure.program
    if program is None:
        raise EdgeqError(f"'{path}' is not an ML program")
    rows: list[dict[str, Any]] = []

    def device_name(dev: Any) -> str:
        if isinstance(dev, MLNeuralEngineComputeDevice):
            return "ANE"
        if isinstance(dev, MLGPUComputeDevice):
            return "GPU"
        if isinstance(dev, MLCPUComputeDevice):
            return "CPU"
        return type(dev).__name__

    for op in program.functions["main"].block.operations:
        if op.operator_name in ("const",) or op.operator_name.startswith("constexpr_"):
            continue
        usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
        cost = plan.get_estimated_cost_for_mlprogram_operation(op)
        rows.append({
            "op": op.operator_name,
            "outputs": [o.name for o in op.outputs],
            "device": device_name(usage.preferred_compute_device) if usage else "none",
            "supported": sorted({device_name(d) for d in usage.supported_compute_devices}) if usage else [],
            "cost": float(cost.weight) if cost is not None else None,
        })  # fmt: skip
    devices = Counter(r["device"] for r in rows)
    cost_on = Counter()
    for r in rows:
        cost_on[r["device"]] += r["cost"] or 0.0
    total = sum(cost_on.values()) or 1.0
    return {
        "compute_units": compute_units,
        "ops": len(rows),
        "ops_by_device": dict(devices),
        "ane_op_share": devices.get("ANE", 0) / max(len(rows), 1),
        "ane_cost_share": cost_on.get("ANE", 0.0) / total,
        "off_ane": [r for r in rows if r["device"] != "ANE"][:50],
        "per_op": rows,
    }


def device_report(path: str | Path, feeds: Mapping[str, np.ndarray],
                  compute_units: str = "CPU_AND_NE", runs: int = 50) -> dict[str, Any]:  # fmt: skip
    """Latency on `compute_units` and on CPU_ONLY, plus the compute plan: what the xcode
    transport returns for an .mlpackage. `feeds` use the program's (MIL) input names."""
    _require_mac()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "latency": latency_ms(path, feeds, compute_units, runs),
        "latency_cpu_only": latency_ms(path, feeds, "CPU_ONLY", runs),
        "compute_plan": compute_plan_report(path, compute_units),
    }


__all__ = ["COMPUTE_UNITS", "compute_plan_report", "coreml_runner", "device_report", "latency_ms"]
