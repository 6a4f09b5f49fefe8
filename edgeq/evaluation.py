"""Evaluating one exported artifact: per-layer error of the plan, the artifact's outputs against
the simulator and float, the task metric, and latency within a time budget.

Used by `edgeq.export`; pure orchestration over the simulator, the exporters' runners and
`edgeq.metrics` (no printing: progress goes through a callback, noise into the log).
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeq.ir.graph import Graph
from edgeq.quant.plan import QuantPlan
from edgeq.quant.qtypes import sqnr_db
from edgeq.quant.simulate import layer_sqnr

log = logging.getLogger(__name__)
native_log = logging.getLogger("edgeq.native")
Feeds = Mapping[str, np.ndarray]
Progress = Callable[[str, int, int], None]


@contextlib.contextmanager
def native_output_to_log(what: str) -> Iterator[None]:
    """Send what native libraries write to stderr (LiteRT's "INFO: Created TensorFlow Lite
    XNNPACK delegate", ...) into the log (`edgeq.native`, INFO: shown with --verbose and kept
    in export.log) instead of the user's terminal."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr file descriptor (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            for line in text.splitlines():
                if line.strip() and "\x1b" not in line:
                    native_log.info("%s: %s", what, line.strip())


@dataclass
class LayerEvaluation:
    """The simulated forward over the evaluation feeds, with errors propagated."""

    rows: list[dict[str, Any]]  # per-layer SQNR, worst first (the `edgeq report` rows)
    reference: list[dict[str, np.ndarray]]  # float outputs per feed
    simulated: list[dict[str, np.ndarray]]  # simulator outputs per feed
    first_values: dict[str, np.ndarray] = field(default_factory=dict)  # float taps, feed 0


def evaluate_layers(graph: Graph, plan: QuantPlan, feeds: Sequence[Feeds],
                    reference: Callable[[Feeds], Mapping[str, Any]] | None = None) -> LayerEvaluation:  # fmt: skip
    """Per-layer SQNR of the plan against float (one tapped forward of each), keeping the graph
    outputs of both and the first feed's float values of every tapped tensor (histograms).
    `reference`: a float forward of `graph` tapping every tensor the plan quantizes (see
    `quantized_activations`), shared by the plans of several targets."""
    ref_out: list[dict[str, np.ndarray]] = []
    sim_out: list[dict[str, np.ndarray]] = []
    first: dict[str, np.ndarray] = {}
    outputs = graph.output_names

    def keep(a: Mapping[str, Any], b: Mapping[str, Any]) -> None:
        if not ref_out:
            first.update({k: np.asarray(v) for k, v in a.items()})
        ref_out.append({k: np.asarray(a[k]) for k in outputs})
        sim_out.append({k: np.asarray(b[k]) for k in outputs})

    rows = layer_sqnr(graph, plan, list(feeds), on_sample=keep, reference=reference)
    return LayerEvaluation(rows, ref_out, sim_out, first)


def quantized_activations(graph: Graph, plan: QuantPlan) -> list[str]:
    """The tensors `layer_sqnr` taps for `plan` (quantized activations, not inputs/outputs)."""
    skip = {*graph.input_names, *graph.output_names}
    return [t.name for t in plan.quantized("activation") if t.name not in skip]


def weight_errors(graph: Graph, plan: QuantPlan) -> list[dict[str, Any]]:
    """Each stored weight's own quantization error: SQNR (dB) of the dequantized integers
    against the float weight, with its bits and granularity; worst first."""
    rows = []
    for t in plan.quantized("weight"):
        w = graph.constants.get(t.name)
        if w is None or t.values is None:
            continue
        try:
            dq = t.dequantized()
        except (AssertionError, ValueError):
            continue
        if dq.shape != np.shape(w):
            continue
        rows.append({"tensor": t.name, "node": t.node, "role": "weight", "bits": t.qdtype.bits,
                     "dtype": t.dtype, "granularity": t.granularity,
                     "sqnr_db": round(float(sqnr_db(w, dq)), 2),
                     "elements": int(np.size(w))})  # fmt: skip
    rows.sort(key=lambda r: r["sqnr_db"])
    return rows


def activation_rows(plan: QuantPlan, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The per-layer SQNR rows with each tensor's bits (0 = float)."""
    out = []
    for r in rows:
        t = plan.get(r["tensor"])
        bits = t.qdtype.bits if t is not None and t.is_quantized else 0
        out.append({**r, "role": "output" if r.get("output") else "activation", "bits": bits,
                    "dtype": t.dtype if t is not None else "float32"})  # fmt: skip
    return out


def run_artifact(runner: Callable[[Feeds], dict[str, np.ndarray]], feeds: Sequence[Feeds],
                 label: str, progress: Progress | None = None) -> list[dict[str, np.ndarray]]:  # fmt: skip
    out = []
    for i, f in enumerate(feeds):
        if progress is not None:
            progress(label, i, len(feeds))
        with native_output_to_log(label) if i == 0 else contextlib.nullcontext():
            out.append(runner(f))
    return out


def timed_latency(runners: Mapping[str, Callable[[Feeds], Any]], feeds: Feeds,
                  budget_s: float, max_runs: int, min_runs: int = 3) -> dict[str, dict[str, float]]:  # fmt: skip
    """p50/p90 ms of each runner, interleaved (one call of each per round, so load changes hit
    both alike), after one warm-up call each; rounds stop at `max_runs` or when `budget_s` is
    spent (but never below `min_runs`)."""
    for run in runners.values():
        run(feeds)
    times: dict[str, list[float]] = {k: [] for k in runners}
    start = time.perf_counter()
    while True:
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(feeds)
            times[name].append((time.perf_counter() - t0) * 1e3)
        n = len(next(iter(times.values())))
        if n >= max_runs or (n >= min_runs and time.perf_counter() - start >= budget_s):
            break
    out = {}
    for name, ts in times.items():
        ts.sort()
        out[name] = {"p50_ms": statistics.median(ts), "p90_ms": ts[int(0.9 * (len(ts) - 1))],
                     "runs": len(ts)}  # fmt: skip
    return out


def value_histograms(graph: Graph, plan: QuantPlan, names: Sequence[str],
                     values: Mapping[str, np.ndarray], bins: int = 60) -> list[dict[str, Any]]:  # fmt: skip
    """Histograms of float values (activations from one sample; weights) with the quantization
    grid's representable range, for the report's charts."""
    out = []
    for name in names:
        t = plan.get(name)
        x = graph.constants.get(name) if t is not None and t.role == "weight" else values.get(name)
        if x is None or t is None:
            continue
        x = np.asarray(x, np.float64).ravel()
        x = x[np.isfinite(x)]
        if not x.size:
            continue
        lo, hi = _grid_range(t)
        span_lo, span_hi = (
            float(min(x.min(), lo if lo is not None else x.min())),
            float(max(x.max(), hi if hi is not None else x.max())),
        )
        counts, edges = np.histogram(
            x, bins=bins, range=(span_lo, span_hi if span_hi > span_lo else span_lo + 1)
        )
        clipped = float(np.mean((x < lo) | (x > hi))) if lo is not None and hi is not None else 0.0
        out.append({"tensor": name, "role": t.role, "bits": t.qdtype.bits if t.is_quantized else 0,
                    "counts": counts.tolist(), "edges": edges.tolist(), "grid": [lo, hi],
                    "clipped": clipped, "min": float(x.min()), "max": float(x.max())})  # fmt: skip
    return out


def _grid_range(t: Any) -> tuple[float | None, float | None]:
    """The real range the tensor's integer grid covers (widest over channels)."""
    if not t.is_quantized or t.scale is None or t.zero_point is None:
        return None, None
    q = t.qdtype
    s = np.asarray(t.scale, np.float64)
    z = np.asarray(t.zero_point, np.float64)
    lo, hi = (q.qmin - z) * s, (q.qmax - z) * s
    return float(np.min(lo)), float(np.max(hi))


__all__ = [
    "LayerEvaluation",
    "activation_rows",
    "evaluate_layers",
    "native_output_to_log",
    "run_artifact",
    "timed_latency",
    "value_histograms",
    "weight_errors",
]
