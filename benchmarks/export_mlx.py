"""MLX target benchmark (issue #6): 4-bit per-block-32 artifacts of PP-OCRv4 rec, PP-OCR cls and
MiniLM, run with MLX on this CPU, in one run:

- parity with the simulator (fraction of outputs within one step) and the task metric (rec CER,
  cls agreement with float, MiniLM mean cosine to float) for float, the simulator, the edgeq MLX
  artifact, and MLX's own round-to-nearest (`mx.quantize` at the same group size on the same
  layers, rows zero-padded to the group where the input dim is not a multiple of it);
- median latency of the 4-bit artifact (mx.quantized_matmul; and with weights dequantized at load)
  against the MLX float artifact;
- weight bytes: packed codes + scales + biases vs float32 for the quantized layers.

    .venv/bin/python -m benchmarks.export_mlx [--eval N] [--calib N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from benchmarks.common import machine, median_ms, write_results
from edgeq.exporters import ExportOptions, get_exporter
from edgeq.ir.graph import Graph
from edgeq.ir.interpreter import Interpreter
from edgeq.pipeline import calibrate_model
from edgeq.quant.recipe import LayerConfig, Recipe
from edgeq.quant.simulate import Simulator
from edgeq.targets import load_target
from edgeq.verify import compare
from examples.models import CASES, minilm_feeds

GROUP = 32
RECIPE = Recipe(
    base=LayerConfig(weight_bits=4, act_bits=0, granularity="per_block", block_size=GROUP)
)


def rtn_graph(graph: Graph, artifact: Path) -> Graph:
    """The graph with every weight edgeq quantized replaced by MLX round-to-nearest
    (`mx.quantize` → `mx.dequantize`, affine, GROUP, 4 bits) in the same MLX-order layout."""
    doc = json.loads((artifact / "graph.json").read_text())
    g = graph.copy()
    g.constants = dict(g.constants)
    for name, rec in doc["quantized"].items():
        w = np.asarray(graph.constants[name], np.float32)
        rows = np.transpose(w, rec["perm"]).reshape(-1, rec["k"])
        padded = np.pad(rows, ((0, 0), (0, rec["k_padded"] - rec["k"])))
        wq, s, b = mx.quantize(mx.array(padded), group_size=GROUP, bits=4)
        deq = np.array(mx.dequantize(wq, s, b, group_size=GROUP, bits=4))[:, : rec["k"]]
        mlx_shape = [w.shape[p] for p in rec["perm"]]
        g.constants[name] = np.transpose(deq.reshape(mlx_shape), np.argsort(rec["perm"]))
    return g


def artifact_weight_bytes(artifact: Path, graph: Graph) -> tuple[int, int]:
    """(float32 bytes, stored bytes: codes + scales + biases) of the quantized layers."""
    doc = json.loads((artifact / "graph.json").read_text())
    tensors = mx.load(str(artifact / "model.safetensors"))
    f32 = q = 0
    for name, rec in doc["quantized"].items():
        f32 += 4 * graph.constants[name].size
        q += sum(tensors[f"{rec['path']}.{k}"].nbytes for k in ("weight", "scales", "biases"))
    return f32, q


def run_case(name: str, n_calib: int, n_eval: int, work: Path, runs: int) -> dict[str, Any]:
    case = CASES[name]
    if name == "minilm":
        from examples.text import english_sentences

        evalf = minilm_feeds(english_sentences(n_eval, split="eval"))  # type: ignore[arg-type]
    else:
        evalf = case.make_feeds(n_eval, "eval")
    t0 = time.perf_counter()
    run = calibrate_model(case.model_path(), case.make_feeds(n_calib, "calib"), "mlx", RECIPE,
                          input_shapes=case.input_shapes, input_values=case.input_values,
                          samples=n_calib, report_samples=0)  # fmt: skip
    calib_s = time.perf_counter() - t0
    graph, plan = run.graph, run.plan
    exporter, profile = get_exporter("mlx"), load_target("mlx")
    paths = {k: work / f"{name}-{k}" for k in ("q", "q16", "float", "rtn")}
    t0 = time.perf_counter()
    art = exporter.export(graph, plan, profile, paths["q"], ExportOptions())
    export_s = time.perf_counter() - t0
    exporter.export(
        graph, plan, profile, paths["q16"], ExportOptions(extra={"scale_dtype": "float16"})
    )
    base = exporter.export(graph, None, profile, paths["float"], ExportOptions())
    exporter.export(rtn_graph(graph, paths["q"]), None, profile, paths["rtn"], ExportOptions())
    runners = {
        "float (JAX)": Interpreter(graph),
        "simulator (edgeq 4-bit)": Simulator(graph, plan),
        "MLX float": exporter.open(paths["float"]),
        "MLX edgeq 4-bit": exporter.open(paths["q"]),
        "MLX edgeq 4-bit, float16 scales": exporter.open(paths["q16"]),
        "MLX mx.quantize RTN 4-bit": exporter.open(paths["rtn"]),
    }
    outs = {k: [r(f) for f in evalf] for k, r in runners.items()}
    parity = compare(outs["MLX edgeq 4-bit"], outs["simulator (edgeq 4-bit)"], outs["float (JAX)"],
                     plan, graph.output_names)  # fmt: skip
    parity16 = compare(outs["MLX edgeq 4-bit, float16 scales"], outs["simulator (edgeq 4-bit)"],
                       outs["float (JAX)"], plan, graph.output_names)  # fmt: skip
    metrics = {k: task_metric(name, o, outs["float (JAX)"], case) for k, o in outs.items()}
    deq = exporter.open(paths["q"], kernels="dequantized")
    feed = evalf[0]
    latency = {
        "MLX float": median_ms(lambda: runners["MLX float"](feed), runs),
        "MLX edgeq 4-bit (quantized_matmul)": median_ms(lambda: runners["MLX edgeq 4-bit"](feed), runs),
        "MLX edgeq 4-bit (dequantized at load)": median_ms(lambda: deq(feed), runs),
    }  # fmt: skip
    f32, qb = artifact_weight_bytes(paths["q"], graph)
    _, qb16 = artifact_weight_bytes(paths["q16"], graph)
    return {
        "model": name, "calib_samples": n_calib, "eval_samples": len(evalf),
        "calib_s": round(calib_s, 1), "export_s": round(export_s, 2),
        "within_one_step": {k: v["vs_simulator"]["within_one_step"] for k, v in parity.items()},
        "within_one_step_fp16_scales": {
            k: v["vs_simulator"]["within_one_step"] for k, v in parity16.items()
        },
        "metric": metrics, "latency_ms": {k: round(v, 2) for k, v in latency.items()},
        "weight_bytes": {"fp32": f32, "stored": qb, "ratio": qb / f32, "stored_fp16_scales": qb16,
                         "ratio_fp16_scales": qb16 / f32},
        "artifact_bytes": {"q": art.size_bytes, "float": base.size_bytes},
        "notes": art.notes,
    }  # fmt: skip


def task_metric(name: str, outs: list[dict[str, np.ndarray]], ref: list[dict[str, np.ndarray]],
                case: Any) -> str:  # fmt: skip
    if name == "ppocr-rec":
        from examples.ocr import character_error_rate, ctc_greedy_decode, rec_samples

        texts = [s.text for s in rec_samples(len(outs), split="eval")]
        key = next(iter(outs[0]))
        preds = [ctc_greedy_decode(np.asarray(o[key])) for o in outs]
        return f"CER {character_error_rate(preds, texts):.2%}"
    if name == "ppocr-cls":
        key = next(iter(outs[0]))
        agree = np.mean(
            [np.argmax(o[key]) == np.argmax(r[key]) for o, r in zip(outs, ref, strict=True)]
        )
        return f"agreement with float {agree:.2%}"
    a = np.concatenate([np.asarray(o["sentence_embedding"]) for o in outs]).astype(np.float64)
    b = np.concatenate([np.asarray(r["sentence_embedding"]) for r in ref]).astype(np.float64)
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return f"cosine {cos.mean():.4f} (min {cos.min():.4f})"


def markdown(data: dict[str, Any]) -> str:
    lines = ["# MLX target: 4-bit per-block-32 artifacts on MLX CPU (issue #6)", "",
             f"{data['machine']}; group size {GROUP}; latency: median of {data['runs']} runs, same process.", ""]  # fmt: skip
    for row in data["cases"]:
        lines += [f"## {row['model']} ({row['eval_samples']} eval samples, {row['calib_samples']} calib)", "",
                  "| runner | metric |", "|---|---|"]  # fmt: skip
        lines += [f"| {k} | {v} |" for k, v in row["metric"].items()]
        par = ", ".join(f"{k}: {v:.2%}" for k, v in row["within_one_step"].items())
        par16 = ", ".join(f"{k}: {v:.2%}" for k, v in row["within_one_step_fp16_scales"].items())
        w = row["weight_bytes"]
        lines += ["", f"parity (MLX edgeq 4-bit within one step of the simulator): {par}; "
                  f"with float16 scales: {par16}", "",
                  f"weights: {w['stored'] / 1e6:.2f} MB stored vs {w['fp32'] / 1e6:.2f} MB fp32 = "
                  f"{w['ratio']:.3f}x (float16 scales: {w['ratio_fp16_scales']:.3f}x); artifact {row['artifact_bytes']['q'] / 1e6:.2f} MB vs float "
                  f"{row['artifact_bytes']['float'] / 1e6:.2f} MB", "",
                  "| latency | ms |", "|---|---|"]  # fmt: skip
        lines += [f"| {k} | {v} |" for k, v in row["latency_ms"].items()]
        lines += [""]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--eval", type=int, default=32)
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--models", default="ppocr-rec,ppocr-cls,minilm")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeq-mlx-bench-") as tmp:
        cases = [
            run_case(m, args.calib, args.eval, Path(tmp), args.runs) for m in args.models.split(",")
        ]
    data = {"machine": machine(), "group_size": GROUP, "runs": args.runs, "cases": cases}
    write_results("export_mlx", data, markdown(data))


if __name__ == "__main__":
    main()
