"""Core ML (`--target ane`) export of PP-OCRv4 rec, PP-OCR cls and MiniLM, weight-only int4
per-block 32 (`--bits 4`) and int8 per-channel (`--bits 8`).

Per model x bits: artifact size (weight.bin and whole .mlpackage) vs the fp32 weight bytes of
the prepared graph, the weights-exact check, the saved program run by edgeq's numpy MIL
evaluator (fp16 intermediates) vs the simulator (max abs, within one step, task metric: rec
CER, cls agreement, MiniLM cosine vs float), and the export time. Core ML's own predict needs
macOS and is not run here.

    .venv/bin/python -m benchmarks.export_coreml [--calib 16] [--eval 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, write_results
from edgeq.exporters import ExportOptions, get_exporter
from edgeq.ir.interpreter import Interpreter
from edgeq.pipeline import calibrate_model
from edgeq.quant.recipe import LayerConfig, Recipe
from edgeq.quant.simulate import Simulator
from edgeq.targets import load_target
from edgeq.verify import output_step, within_step
from examples.models import CASES


def fp32_weight_bytes(graph: Any) -> int:
    return sum(4 * a.size for a in graph.constants.values() if np.issubdtype(a.dtype, np.floating))


def task_metric(model: str, outs: list[dict[str, np.ndarray]], refs: list[dict[str, Any]]) -> str:
    if model == "ppocr-rec":
        from examples.ocr import character_error_rate, ctc_greedy_decode

        name = next(iter(outs[0]))
        cer_art = character_error_rate([ctc_greedy_decode(o[name]) for o in outs],
                                       [ctc_greedy_decode(np.asarray(r[name])) for r in refs])  # fmt: skip
        return f"CER vs float decode {cer_art:.2%}"
    if model == "ppocr-cls":
        name = next(iter(outs[0]))
        agree = np.mean(
            [
                np.argmax(o[name]) == np.argmax(np.asarray(r[name]))
                for o, r in zip(outs, refs, strict=True)
            ]
        )
        return f"argmax agreement with float {agree:.0%}"
    a = np.concatenate([o["sentence_embedding"] for o in outs])
    b = np.concatenate([np.asarray(r["sentence_embedding"]) for r in refs])
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return f"cosine vs float {cos.mean():.4f} (min {cos.min():.4f})"


CONFIGS = {  # label -> recipe (None: the fp16 float baseline, no plan)
    "fp16 float": None,
    "bits 4": Recipe(base=LayerConfig(weight_bits=4)),
    "bits 8": Recipe(base=LayerConfig(weight_bits=8)),
    "W8A8": Recipe(base=LayerConfig(weight_bits=8, act_bits=8)),
}


def run_case(model: str, config: str, n_calib: int, n_eval: int, work: Path) -> dict[str, Any]:
    case = CASES[model]
    path = case.model_path(work)
    evalf = case.make_feeds(n_eval, "eval")
    recipe = CONFIGS[config]
    t0 = time.perf_counter()
    if recipe is None:
        from edgeq.ir.onnx_io import load_model
        from edgeq.pipeline import prepare_for_quantization

        graph = prepare_for_quantization(load_model(path), case.input_shapes, case.input_values)
        plan = None
    else:
        run = calibrate_model(path, case.make_feeds(n_calib, "calib"), "ane", recipe,
                              input_shapes=case.input_shapes, input_values=case.input_values,
                              report_samples=0)  # fmt: skip
        graph, plan = run.graph, run.plan
    calib_s = time.perf_counter() - t0
    exporter = get_exporter("coreml")
    out = work / f"{model}-{config.replace(' ', '')}.mlpackage"
    t0 = time.perf_counter()
    art = exporter.export(graph, plan, load_target("ane"), out, ExportOptions())
    export_s = time.perf_counter() - t0
    runner = exporter.open(out)
    ref = Interpreter(graph)
    sim = Simulator(graph, plan) if plan is not None else ref
    t0 = time.perf_counter()
    outs = [runner(f) for f in evalf]
    eval_s = (time.perf_counter() - t0) / max(len(evalf), 1)
    sims = [{k: np.asarray(v) for k, v in sim(f).items()} for f in evalf]
    refs = [ref(f) for f in evalf] if plan is not None else sims
    rows: dict[str, Any] = {}
    for name in graph.output_names:
        a = np.stack([o[name] for o in outs])
        s = np.stack([x[name] for x in sims])
        step, source = output_step(plan, name, list(s))
        rows[name] = {"max_abs_vs_sim": float(np.max(np.abs(a - s))),
                      "within_step_vs_sim": within_step(a, s, step), "step": step,
                      "step_source": source}  # fmt: skip
    f32 = fp32_weight_bytes(graph)
    weights = art.checks.get("weights", {})
    from edgeq.exporters.coreml.evaluate import WEIGHTS

    wbin = (out / WEIGHTS).stat().st_size if (out / WEIGHTS).is_file() else 0
    return {
        "model": model, "config": config,
        "weights_exact": weights.get("ok", "n/a"),
        "weights_checked": weights.get("weights_checked", 0),
        "ops_check": art.checks["ops"]["ok"],
        "fp32_weight_bytes": f32, "weight_bin_bytes": wbin, "package_bytes": art.size_bytes,
        "weight_ratio": wbin / f32, "package_ratio": art.size_bytes / f32,
        "outputs": rows,
        "task_artifact": task_metric(model, outs, refs),
        "task_simulator": task_metric(model, sims, refs) if plan is not None else "(is float)",
        "calib_s": round(calib_s, 1), "export_s": round(export_s, 2),
        "numpy_eval_s_per_sample": round(eval_s, 2),
        "mil_ops": art.checks["ops"]["mil_ops"], "opset": art.checks["ops"]["opset"],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--eval", type=int, default=4)
    ap.add_argument("--models", default="ppocr-cls,ppocr-rec,minilm")
    ap.add_argument("--configs", default="fp16 float,bits 4,bits 8,W8A8")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeq-coreml-") as tmp:
        for model in args.models.split(","):
            for config in args.configs.split(","):
                if config == "W8A8" and model == "minilm":
                    continue  # 8-bit LayerNorm inputs (ane has no 16-bit activations): not useful
                rows.append(run_case(model, config, args.calib, args.eval, Path(tmp)))
    md = [
        "# Core ML (ane) export: size, weights-exact, numpy-evaluated program vs simulator", "",
        f"calibration {args.calib} samples, evaluation {args.eval} held-out samples; the saved "
        "program is run by edgeq's numpy MIL evaluator (fp16 intermediates), not by Core ML "
        "(predict needs macOS). 'fp16 float' is the float baseline program (plan None) compared "
        "with edgeq's float32 JAX forward; the other rows compare with the simulator. Task "
        "metrics compare with the float32 JAX forward's outputs (rec: CER of the greedy CTC "
        "decode against the float decode).", "",
        "| model | config | weights exact | weight.bin / fp32 weights | .mlpackage / fp32 | max abs vs sim | within 1 step vs sim | task (artifact) | task (simulator) | export s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        o = (
            next(iter(r["outputs"].values()))
            if r["model"] != "minilm"
            else r["outputs"]["sentence_embedding"]
        )
        md.append(
            f"| {r['model']} | {r['config']} | {r['weights_exact']} ({r['weights_checked']}) | "
            f"{r['weight_ratio']:.3f} ({r['weight_bin_bytes'] / 1e6:.2f} MB of {r['fp32_weight_bytes'] / 1e6:.2f}) | "
            f"{r['package_ratio']:.3f} | {o['max_abs_vs_sim']:.3g} | {o['within_step_vs_sim']:.2%} | "
            f"{r['task_artifact']} | {r['task_simulator']} | {r['export_s']} |"
        )  # fmt: skip
    write_results("export_coreml", {"machine": machine(), "calib": args.calib,
                                    "eval": args.eval, "rows": rows}, "\n".join(md) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
