"""Issue #2 benchmark: per real model, JAX vs onnxruntime parity on real inputs, JAX compile time
and steady-state latency beside onnxruntime's on this CPU (measured in one run).

    python -m benchmarks.foundation [--samples 8] [--runs 20] [--models ppocr-rec,minilm]

Writes benchmarks/results/foundation.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.common import machine, md_table, median_ms, write_results
from edgeq import Interpreter, load_model, prepare
from edgeq.ir.graph import Graph
from examples.models import CASES


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12))


def float64_copy(graph: Graph) -> Graph:
    g = graph.copy()
    g.constants = {
        k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in g.constants.items()
    }
    for v in g.inputs:
        if v.dtype == np.float32:
            v.dtype = np.dtype(np.float64)
    return g


def bench_case(name: str, work: Path, samples: int, runs: int) -> dict[str, object]:
    case = CASES[name]
    path = case.model_path(work)
    t0 = time.perf_counter()
    graph = prepare(load_model(path), case.input_shapes, case.input_values)
    prepare_s = time.perf_counter() - t0
    interp = Interpreter(graph)
    t0 = time.perf_counter()
    interp.compile()
    compile_s = time.perf_counter() - t0
    exact = Interpreter(float64_copy(graph))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess_noopt = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feeds = case.make_feeds(samples, "eval")
    consts = {k: np.array(v, np.int64) for k, v in case.input_values.items()}
    err_ort = err_noopt = err_f64 = ort_f64 = 0.0
    outs = graph.output_names
    for feed in feeds:
        ours = interp(feed)
        ort_feed = {**feed, **consts}
        ref = dict(zip(outs, sess.run(outs, ort_feed), strict=True))
        ref_no = dict(zip(outs, sess_noopt.run(outs, ort_feed), strict=True))
        f64 = exact(
            {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feed.items()}
        )
        for o in outs:
            err_ort = max(err_ort, rel(ours[o], ref[o]))
            err_noopt = max(err_noopt, rel(ours[o], ref_no[o]))
            err_f64 = max(err_f64, rel(ours[o], f64[o]))
            ort_f64 = max(ort_f64, rel(ref[o], f64[o]))
    feed = feeds[0]
    jax_ms = median_ms(lambda: interp(feed), runs)
    ort_ms = median_ms(lambda: sess.run(outs, {**feed, **consts}), runs)
    return {
        "model": name,
        "samples": len(feeds),
        "nodes_onnx": len(load_model(path).nodes),
        "nodes_prepared": len(graph.nodes),
        "prepare_s": round(prepare_s, 2),
        "jax_compile_s": round(compile_s, 2),
        "jax_ms": round(jax_ms, 2),
        "ort_ms": round(ort_ms, 2),
        "jax_over_ort": round(jax_ms / ort_ms, 2),
        "relerr_vs_ort": f"{err_ort:.2e}",
        "relerr_vs_ort_noopt": f"{err_noopt:.2e}",
        "relerr_vs_float64": f"{err_f64:.2e}",
        "ort_relerr_vs_float64": f"{ort_f64:.2e}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeq-bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = [bench_case(m, args.work, args.samples, args.runs) for m in args.models.split(",")]
    cols = list(rows[0])
    md = (
        "# Foundation benchmark (issue #2)\n\n"
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}\n\n"
        "relerr = max|a-b| / max|b| over all outputs and real eval samples. `vs_ort`: onnxruntime "
        "float32 default session; `vs_ort_noopt`: graph optimizations off; `vs_float64`: the same "
        "prepared graph evaluated by edgeq in float64 (exact-math reference); "
        "`ort_relerr_vs_float64`: onnxruntime's own distance to that reference. Latency: median "
        "of steady-state runs, batch 1, same process.\n\n" + md_table(rows, cols)
    )
    write_results("foundation", {"machine": machine(), "rows": rows}, md)
    print(md)


if __name__ == "__main__":
    main()
