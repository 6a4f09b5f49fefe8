"""Issue #4 benchmark: ONNX QDQ artifacts (targets onnx and qnn) on onnxruntime CPU.

    python -m benchmarks.export_onnx [--models ppocr-rec,minilm] [--calib 32] [--eval 48]

For each model and configuration: export through `edgeq.export.export_model` (calibration
split), then on the disjoint evaluation split run the artifact on onnxruntime, the simulator and
float: parity (fraction of output elements within one quantization step of the simulator), the
task metric for artifact and simulator (rec CER, cls accuracy against float's decision, det
text-pixel F1 against float's map, MiniLM mean cosine to float embeddings), size versus the
float model. Latency (W8A8, onnx target): the float model, edgeq's artifact and the model
onnxruntime's own quantize_static makes from the same calibration samples, timed interleaved
in one process. Writes benchmarks/results/export_onnx.{json,md}.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import interleaved_ms, machine, md_table, write_results
from benchmarks.ort_baseline import ort_quantize_static
from edgeq.export import export_model
from edgeq.exporters import ExportOptions
from edgeq.exporters.onnx.qdq import OrtRunner
from edgeq.ir.interpreter import Interpreter
from edgeq.quant.recipe import LayerConfig, Recipe
from edgeq.quant.simulate import Simulator
from edgeq.verify import compare
from examples.models import CASES

THREADS = 1  # intra-op threads for the latency rows (set by --threads)
CONFIGS: dict[str, list[tuple[str, str, Recipe]]] = {}
W8A8 = Recipe()
W4_ONLY = Recipe(
    base=LayerConfig(weight_bits=4, act_bits=0, granularity="per_block", block_size=32)
)
W4A8 = Recipe(base=LayerConfig(weight_bits=4, act_bits=8))
W4A16 = Recipe(base=LayerConfig(weight_bits=4, act_bits=16, granularity="per_block", block_size=32))
for m in ("ppocr-det", "ppocr-rec", "ppocr-cls", "minilm"):
    CONFIGS[m] = [("W8A8", "onnx", W8A8), ("W8A8", "qnn", W8A8)]
for m in ("ppocr-rec", "minilm"):
    CONFIGS[m] += [("W4 weight-only (block 32)", "onnx", W4_ONLY), ("W4A8", "qnn", W4A8),
                   ("W4A16 (block 32)", "qnn", W4A16)]  # fmt: skip


COLUMNS = [
    "model",
    "config",
    "target",
    "artifact_metric",
    "simulator_metric",
    "within_1_step",
    "size_vs_float",
    "qnn_htp_ready",
    "qnn_fallback_nodes",
    "export_s",
]


def task_metric(name: str, n_eval: int) -> tuple[list[dict[str, np.ndarray]], Callable[..., str]]:
    """Evaluation feeds and `metric(outputs, float_outputs) -> str` for a model."""
    case = CASES[name]
    if name == "ppocr-rec":
        from examples.ocr import (
            character_error_rate,
            ctc_greedy_decode,
            rec_preprocess,
            rec_samples,
        )

        samples = rec_samples(n_eval, split="eval")
        refs = [s.text for s in samples]

        def cer(outs: list[dict[str, np.ndarray]], _: Any) -> str:
            preds = [ctc_greedy_decode(next(iter(o.values()))) for o in outs]
            return f"CER {character_error_rate(preds, refs):.2%}"

        return [{"x": rec_preprocess(s.image)} for s in samples], cer
    feeds = case.make_feeds(n_eval, "eval")
    if name == "ppocr-cls":

        def agree(outs: list[dict[str, np.ndarray]], ref: list[dict[str, np.ndarray]]) -> str:
            a = [int(np.argmax(next(iter(o.values())))) for o in outs]
            b = [int(np.argmax(next(iter(o.values())))) for o in ref]
            return f"agreement with float {np.mean(np.equal(a, b)):.2%}"

        return feeds, agree
    if name == "ppocr-det":

        def f1(outs: list[dict[str, np.ndarray]], ref: list[dict[str, np.ndarray]]) -> str:
            p = np.concatenate([next(iter(o.values())).ravel() > 0.3 for o in outs])
            r = np.concatenate([next(iter(o.values())).ravel() > 0.3 for o in ref])
            tp = float(np.sum(p & r))
            return f"text-pixel F1 vs float {2 * tp / max(float(p.sum() + r.sum()), 1):.4f}"

        return feeds, f1

    def cosine(outs: list[dict[str, np.ndarray]], ref: list[dict[str, np.ndarray]]) -> str:
        a = np.concatenate([o["sentence_embedding"] for o in outs])
        b = np.concatenate([o["sentence_embedding"] for o in ref])
        cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return f"cosine {cos.mean():.4f}"

    return feeds, cosine


def bench_model(
    name: str, n_calib: int, n_eval: int, rounds: int, work: Path
) -> list[dict[str, Any]]:
    case = CASES[name]
    calib = case.make_feeds(n_calib, "calib")
    evalf, metric = task_metric(name, n_eval)
    rows: list[dict[str, Any]] = []
    float_out = None
    for label, target, recipe in CONFIGS[name]:
        out = work / f"{name}-{target}-{label.split()[0]}"
        t0 = time.perf_counter()
        res = export_model(case.model_path(), target, out, calib=calib, recipe=recipe,
                           input_shapes=case.input_shapes, input_values=case.input_values,
                           samples=n_calib, eval_samples=0, runs=1,
                           options=ExportOptions(allow_fallback=True))  # fmt: skip
        seconds = time.perf_counter() - t0
        from edgeq.pipeline import graph_for_plan
        from edgeq.quant.plan import QuantPlan

        plan = QuantPlan.load(out / "plan")
        graph = graph_for_plan(case.model_path(), plan)
        art = OrtRunner(res.artifact)
        sim = Simulator(graph, plan)
        if float_out is None:
            ref = Interpreter(graph)
            float_out = [ref(f) for f in evalf]
        art_out = [art(f) for f in evalf]
        sim_out = [sim(f) for f in evalf]
        cmp = compare(art_out, sim_out, float_out, plan, graph.output_names)
        checks = res.report["artifact"]["checks"].get("qnn", {})
        rows.append({
            "model": name, "config": label, "target": target,
            "artifact_metric": metric(art_out, float_out), "simulator_metric": metric(sim_out, float_out),
            "within_1_step": " / ".join(f"{r['vs_simulator']['within_one_step']:.2%}" for r in cmp.values()),
            "size_vs_float": f"{res.report['artifact']['size_ratio']:.3f}x",
            "qnn_htp_ready": checks.get("htp_ready", "") if target == "qnn" else "",
            "qnn_fallback_nodes": sum(v["severity"] == "fallback" for v in checks.get("violations", [])) if target == "qnn" else "",
            "export_s": round(seconds, 1),
        })  # fmt: skip
        print(rows[-1], flush=True)
        if label == "W8A8" and target == "onnx":
            ortq = ort_quantize_static(case.model_path(), case.input_shapes, calib,
                                       work / f"{name}-ortq.onnx")  # fmt: skip
            ort_run = OrtRunner(ortq, threads=THREADS)
            ort_out = [ort_run(f) for f in evalf]
            rows.append({"model": name, "config": "W8A8 onnxruntime quantize_static (MinMax)",
                         "target": "onnx", "artifact_metric": metric(ort_out, float_out)})  # fmt: skip
            float_run = OrtRunner(_float_model(case, work), threads=THREADS)
            art_t = OrtRunner(res.artifact, threads=THREADS)
            feed = evalf[0]
            lat = interleaved_ms({"float": partial(float_run, feed), "edgeq": partial(art_t, feed),
                                  "ort": partial(ort_run, feed)}, rounds)  # fmt: skip
            rows.append({"model": name, "config": f"latency W8A8 (onnxruntime CPU, {THREADS} thread(s), median ms)",
                         "target": "onnx",
                         "artifact_metric": f"float {lat['float']:.2f} / edgeq {lat['edgeq']:.2f} / "
                                            f"quantize_static {lat['ort']:.2f}",
                         "simulator_metric": f"edgeq vs float {lat['float'] / lat['edgeq']:.2f}x, "
                                             f"vs quantize_static {lat['ort'] / lat['edgeq']:.2f}x"})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def _float_model(case: Any, work: Path) -> Path:
    """The float model with the same fixed shapes (what a user runs today)."""
    import onnx

    m = onnx.load(str(case.model_path()))
    for inp in m.graph.input:
        if inp.name in case.input_shapes:
            for dim, v in zip(
                inp.type.tensor_type.shape.dim, case.input_shapes[inp.name], strict=True
            ):
                dim.Clear()
                dim.dim_value = int(v)
    path = work / f"{case.name}-float.onnx"
    onnx.save(m, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="ppocr-cls,ppocr-rec,minilm,ppocr-det")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--eval", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--latency-only",
        action="store_true",
        help="only the W8A8 onnx latency rows (results in export_onnx_latency.*)",
    )
    args = ap.parse_args()
    global THREADS
    THREADS = args.threads
    if args.latency_only:
        for m in CONFIGS:
            CONFIGS[m] = [c for c in CONFIGS[m] if c[0] == "W8A8" and c[1] == "onnx"]
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            n_eval = min(args.eval, 4) if name == "ppocr-det" else args.eval
            rows += bench_model(name, args.calib, n_eval, args.rounds, Path(tmp))
            data = {"machine": machine(), "calib_samples": args.calib, "eval_samples": args.eval,
                    "rows": rows, "seconds": round(time.perf_counter() - t0)}  # fmt: skip
            md = ("# ONNX QDQ export (issue #4)\n\n"
                  f"{args.calib} calibration samples, {args.eval} held-out evaluation samples "
                  "(det: 4 pages); parity = output elements within one quantization step of the "
                  "simulator; machine: " + str(machine()) + "\n\n" + md_table(rows, COLUMNS) + "\n")  # fmt: skip
            write_results("export_onnx_latency" if args.latency_only else "export_onnx", data, md)


if __name__ == "__main__":
    main()
