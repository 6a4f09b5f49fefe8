"""`make demo`: the main job on the default example model, with its accuracy/latency table.

At this stage (foundation) the job is: load each real model, fix its shapes, fold/canonicalize
it, run it with edgeq's JAX interpreter on real inputs and compare with onnxruntime float32,
plus the task metric on the default model (PP-OCRv4 rec: character error rate on rendered
English text lines). As the exporters land this grows into: the default model exported to
every target, with accuracy and latency per artifact.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from benchmarks.common import median_ms
from edgeq import Interpreter, load_model, prepare
from edgeq.summary import summarize
from examples.models import CASES, DEFAULT_CASE
from examples.ocr import character_error_rate, ctc_greedy_decode, rec_preprocess, rec_samples

console = Console()


def default_model_accuracy(n_lines: int = 32) -> Table:
    case = CASES[DEFAULT_CASE]
    path = case.model_path()
    graph = prepare(load_model(path), case.input_shapes)
    interp = Interpreter(graph)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    samples = rec_samples(n_lines, split="eval")
    refs = [s.text for s in samples]
    ours, theirs = [], []
    for s in samples:
        x = rec_preprocess(s.image)
        ours.append(ctc_greedy_decode(interp({"x": x})[graph.output_names[0]]))
        theirs.append(ctc_greedy_decode(sess.run(None, {"x": x})[0]))
    table = Table(title=f"{case.description}: {n_lines} rendered English text lines (eval split)")
    for col in ("runtime", "CER", "exact lines", "example"):
        table.add_column(col)
    for name, preds in (("edgeq JAX (float)", ours), ("onnxruntime (float)", theirs)):
        exact = sum(p == r for p, r in zip(preds, refs, strict=True))
        table.add_row(name, f"{character_error_rate(preds, refs):.2%}", f"{exact}/{n_lines}",
                      f"{refs[0]!r} → {preds[0]!r}")  # fmt: skip
    return table


def quantized_accuracy(n_calib: int = 64, n_lines: int = 100) -> Table:
    """Calibrate the default model for the ONNX Runtime target (W8A8, per-channel weights) and
    compare the simulated integer model with float on the task metric."""
    from edgeq.pipeline import calibrate_model
    from edgeq.simulate import Simulator

    case = CASES[DEFAULT_CASE]
    t0 = time.perf_counter()
    run = calibrate_model(case.model_path(), case.make_feeds(n_calib, "calib"), "onnx",
                          input_shapes=case.input_shapes, report_samples=0)  # fmt: skip
    seconds = time.perf_counter() - t0
    samples = rec_samples(n_lines, split="eval")
    refs = [s.text for s in samples]
    table = Table(title=f"{case.description}: W8A8 plan for --target onnx "
                        f"({n_calib} calibration lines, {seconds:.1f}s), {n_lines} eval lines")  # fmt: skip
    for col in ("model", "CER", "JAX ms"):
        table.add_column(col)
    out = run.graph.output_names[0]
    for name, model in (
        ("float", Interpreter(run.graph)),
        ("W8A8 (simulated)", Simulator(run.graph, run.plan)),
    ):
        preds = [ctc_greedy_decode(model({"x": rec_preprocess(s.image)})[out]) for s in samples]
        x = {"x": rec_preprocess(samples[0].image)}
        table.add_row(
            name,
            f"{character_error_rate(preds, refs):.2%}",
            f"{median_ms(lambda m=model, x=x: m(x), 10):.1f}",
        )
    return table


def parity_table(work: Path) -> Table:
    table = Table(title="edgeq JAX interpreter vs onnxruntime float32 (real inputs, this CPU)")
    for col in ("model", "ops", "params", "MACs", "rel. max err", "JAX ms", "ORT ms", "compile s"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, case in CASES.items():
        path = case.model_path(work)
        graph = prepare(load_model(path), case.input_shapes, case.input_values)
        summary = summarize(graph, targets=[])
        interp = Interpreter(graph)
        t0 = time.perf_counter()
        interp.compile()
        compile_s = time.perf_counter() - t0
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        consts = {k: np.array(v, np.int64) for k, v in case.input_values.items()}
        worst = 0.0
        feeds = case.make_feeds(2, "eval")
        for feed in feeds:
            ours = interp(feed)
            ref = sess.run(graph.output_names, {**feed, **consts})
            for o, r in zip(graph.output_names, ref, strict=True):
                worst = max(worst, float(np.abs(ours[o] - r).max() / max(np.abs(r).max(), 1e-12)))
        jax_ms = median_ms(lambda f=feeds[0], run=interp: run(f), 10)
        ort_ms = median_ms(lambda f=feeds[0], s=sess, c=consts: s.run(None, {**f, **c}), 10)
        table.add_row(
            name, str(len(graph.nodes)), f"{summary.parameters / 1e6:.2f}M",
            f"{(summary.macs or 0) / 1e6:.0f}M", f"{worst:.1e}", f"{jax_ms:.1f}", f"{ort_ms:.1f}",
            f"{compile_s:.1f}",
        )  # fmt: skip
    return table


def main() -> None:
    work = Path(tempfile.gettempdir()) / "edgeq-models"
    work.mkdir(parents=True, exist_ok=True)
    with console.status("default model: PP-OCRv4 rec on rendered text lines..."):
        console.print(default_model_accuracy())
    with console.status("calibrating the default model (W8A8, --target onnx)..."):
        console.print(quantized_accuracy())
    with console.status("all example models: JAX vs onnxruntime..."):
        console.print(parity_table(work))
    console.print("Exporters (edgeq export to onnx/qnn/rpi/tflm/ane/mlx) land with issues #4–#6.")


if __name__ == "__main__":
    main()
