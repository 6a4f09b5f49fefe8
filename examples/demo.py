"""`make demo`: the main job on the default example model, with its accuracy/latency table.

At this stage (foundation) the job is: load each real model, fix its shapes, fold/canonicalize
it, run it with edgeq's JAX interpreter on real inputs and compare with onnxruntime float32,
plus the task metric on the default model (PP-OCRv4 rec: character error rate on rendered
English text lines). As the exporters land this grows into: the default model exported to
every target, with accuracy and latency per artifact.
"""

from __future__ import annotations

import logging
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from benchmarks.common import interleaved_ms, median_ms
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


DEMO_TARGETS = ("onnx", "qnn", "rpi", "ane", "mlx")


def export_table(targets: tuple[str, ...] = DEMO_TARGETS, n_calib: int = 32,
                 n_lines: int = 50) -> Table:  # fmt: skip
    """Export the default model to every target (W8A8 where the target runs integer
    activations, its default weight-only plan otherwise) and check each artifact on its runtime:
    CER of float, of the simulator and of the artifact, latency against the float artifact of
    the same runtime, size against float."""
    from edgeq.errors import EdgeqError
    from edgeq.export import export_model
    from edgeq.exporters import ExportOptions, get_exporter
    from edgeq.ir.interpreter import Interpreter
    from edgeq.pipeline import graph_for_plan
    from edgeq.quant.plan import QuantPlan
    from edgeq.quant.simulate import Simulator
    from edgeq.targets import load_target

    case = CASES[DEFAULT_CASE]
    calib = case.make_feeds(n_calib, "calib")
    samples = rec_samples(n_lines, split="eval")
    refs = [s.text for s in samples]
    feeds = [{"x": rec_preprocess(s.image)} for s in samples]

    def cer(run) -> str:  # type: ignore[no-untyped-def]
        preds = [ctc_greedy_decode(next(iter(run(f).values()))) for f in feeds]
        return f"{character_error_rate(preds, refs):.2%}"

    table = Table(title=f"{case.description} exported to each target ({n_calib} calibration "
                        f"lines; CER on {n_lines} held-out rendered lines)")  # fmt: skip
    for col in ("target", "format", "plan", "size", "CER float", "CER sim.", "CER artifact",
                "ms q / float"):  # fmt: skip
        table.add_column(col)
    float_cer = None
    for target in targets:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                res = export_model(case.model_path(), target, Path(tmp) / "out", calib=calib,
                                   input_shapes=case.input_shapes, samples=n_calib,
                                   eval_samples=0, runs=1)  # fmt: skip
            except EdgeqError as exc:
                table.add_row(target, "not exported", str(exc)[:60], "", "", "", "", "")
                continue
            plan = QuantPlan.load(res.out / "plan")
            graph = graph_for_plan(case.model_path(), plan)
            float_cer = float_cer or cer(Interpreter(graph))
            exporter = get_exporter(load_target(target).exporter)
            runner = exporter.open(res.artifact)
            float_dir = Path(tmp) / "float"
            float_dir.mkdir()
            baseline = exporter.export(graph, None, load_target(target),
                                       float_dir / res.artifact.name, ExportOptions())  # fmt: skip
            float_runner = exporter.open(baseline.path)
            lat = interleaved_ms({"q": partial(runner, feeds[0]),
                                  "f": partial(float_runner, feeds[0])}, 20)  # fmt: skip
            kinds = {
                r: sorted({t.dtype for t in plan.quantized(r)}) for r in ("weight", "activation")
            }
            table.add_row(
                target, res.report["artifact"]["format"],
                f"w{'/'.join(k.removeprefix('u').removeprefix('int') for k in kinds['weight'])} "
                f"a{'/'.join(k.removeprefix('u').removeprefix('int') for k in kinds['activation']) or 'f'}",
                f"{res.report['artifact']['size_ratio']:.2f}x", float_cer,
                cer(Simulator(graph, plan)), cer(runner),
                f"{lat['q']:.1f} / {lat['f']:.1f}",
            )  # fmt: skip
        logging.getLogger(__name__).info("%s done in %.1fs", target, time.perf_counter() - t0)
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
    with console.status("exporting the default model to every target and checking each..."):
        console.print(export_table())
    with console.status("all example models: JAX vs onnxruntime..."):
        console.print(parity_table(work))


if __name__ == "__main__":
    main()
