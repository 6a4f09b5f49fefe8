"""TFLite (target rpi): int8 vs float32 .tflite on LiteRT, per model, in one run.

For ppocr-cls, ppocr-rec, ppocr-det and MiniLM: calibrate for rpi, export int8 and float32,
then measure median latency of both with XNNPACK (interleaved, same process), the size ratio,
parity with the simulator (fraction of output elements within one quantization step) with
XNNPACK and with the reference kernels, and the task metric of the artifact vs the simulator
(rec CER, cls agreement with the simulator's argmax, MiniLM cosine to float). A model whose
export fails is reported with the one-line error.

    .venv/bin/python -m benchmarks.export_tflite [--models cls,rec] [--calib 16] [--eval 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import md_table, write_results
from edgeq.errors import EdgeqError
from edgeq.exporters import ExportOptions, get_exporter
from edgeq.pipeline import calibrate_model
from edgeq.quant.recipe import LayerConfig, Recipe
from edgeq.quant.simulate import Simulator
from edgeq.targets import load_target
from edgeq.verify import output_step, within_step
from examples.models import CASES

NAMES = {"cls": "ppocr-cls", "rec": "ppocr-rec", "det": "ppocr-det", "minilm": "minilm"}


def interleaved_ms(a: Any, b: Any, feed: dict[str, np.ndarray], runs: int) -> tuple[float, float]:
    for _ in range(3):
        a(feed), b(feed)
    ta, tb = [], []
    for _ in range(runs):
        for fn, acc in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn(feed)
            acc.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ta), statistics.median(tb)


def parity(
    outs: list[dict[str, np.ndarray]], sims: list[dict[str, np.ndarray]], plan: Any
) -> float:
    worst = 1.0
    for name in sims[0]:
        ref = [np.asarray(s[name]) for s in sims]
        step, _ = output_step(plan, name, ref)
        got = np.concatenate([o[name].ravel() for o in outs])
        worst = min(worst, within_step(got, np.concatenate([r.ravel() for r in ref]), step))
    return worst


def task_metric(key: str, outs: list[dict[str, np.ndarray]], sims: list[dict[str, np.ndarray]],
                floats: list[dict[str, np.ndarray]] | None) -> dict[str, Any]:  # fmt: skip
    name = next(iter(sims[0]))
    if key == "rec":
        from examples.ocr import ctc_greedy_decode

        a = [ctc_greedy_decode(o[name]) for o in outs]
        s = [ctc_greedy_decode(np.asarray(x[name])) for x in sims]
        from examples.ocr import character_error_rate

        return {"metric": "CER of artifact text vs simulator text",
                "value": round(100 * character_error_rate(a, s), 2)}  # fmt: skip
    if key == "cls":
        agree = np.mean([np.argmax(o[name]) == np.argmax(np.asarray(x[name])) for o, x in zip(outs, sims, strict=True)])  # fmt: skip
        return {
            "metric": "cls argmax agreement with simulator (%)",
            "value": round(100 * float(agree), 2),
        }
    if key == "minilm" and floats is not None:
        name = "sentence_embedding"

        def cos(u: dict[str, np.ndarray], f: dict[str, np.ndarray]) -> float:
            x, y = np.ravel(u[name]), np.ravel(np.asarray(f[name]))
            return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))

        art = np.mean([cos(o, f) for o, f in zip(outs, floats, strict=True)])
        sim = np.mean([cos(x, f) for x, f in zip(sims, floats, strict=True)])
        return {"metric": "mean cosine to float: artifact / simulator",
                "value": f"{art:.4f} / {sim:.4f}"}  # fmt: skip
    if key == "det":
        a = np.concatenate([(o[name] > 0.3).ravel() for o in outs])
        s = np.concatenate([(np.asarray(x[name]) > 0.3).ravel() for x in sims])
        return {"metric": "det mask (p>0.3) pixel agreement with simulator (%)",
                "value": round(100 * float(np.mean(a == s)), 3)}  # fmt: skip
    return {}


def bench(key: str, n_calib: int, n_eval: int, runs: int, work: Path) -> dict[str, Any]:
    case = CASES[NAMES[key]]
    row: dict[str, Any] = {"model": case.name}
    t0 = time.perf_counter()
    feeds = case.make_feeds(n_calib, "calib")
    evals = case.make_feeds(n_eval, "eval")
    try:
        run = calibrate_model(case.model_path(work), feeds, "rpi",
                              Recipe(base=LayerConfig(act_observer="minmax")),
                              input_shapes=case.input_shapes, input_values=case.input_values,
                              samples=n_calib, report_samples=0)  # fmt: skip
        row["calibrate_s"] = round(time.perf_counter() - t0, 1)
        exporter = get_exporter("tflite")
        profile = load_target("rpi")
        q_art = exporter.export(
            run.graph, run.plan, profile, work / f"{key}.tflite", ExportOptions()
        )
        f_art = exporter.export(
            run.graph, None, profile, work / f"{key}_f32.tflite", ExportOptions()
        )
    except EdgeqError as exc:
        row["error"] = str(exc)
        return row
    row["int8_MB"] = round(q_art.size_bytes / 1e6, 3)
    row["size_ratio"] = round(q_art.size_bytes / f_art.size_bytes, 3)
    q_run, f_run = exporter.open(q_art.path), exporter.open(f_art.path)
    q_ms, f_ms = interleaved_ms(q_run, f_run, evals[0], runs)
    row.update(int8_ms=round(q_ms, 2), float_ms=round(f_ms, 2), speedup=round(f_ms / q_ms, 2))
    sim = Simulator(run.graph, run.plan)
    sims = [sim(f) for f in evals]
    outs_x = [q_run(f) for f in evals]
    outs_r = [exporter.open(q_art.path, use_xnnpack=False)(f) for f in evals[:2]]
    row["parity_xnnpack_%"] = round(100 * parity(outs_x, sims, run.plan), 3)
    row["parity_reference_%"] = round(100 * parity(outs_r, sims[:2], run.plan), 3)
    if len(sims[0]) > 1:  # per output (XNNPACK), e.g. MiniLM's hidden states and embedding
        row["parity_by_output_%"] = {
            name: round(100 * parity([{name: o[name]} for o in outs_x],
                                     [{name: x[name]} for x in sims], run.plan), 3)
            for name in sims[0]
        }  # fmt: skip
    floats = [f_run(f) for f in evals] if key == "minilm" else None
    m = task_metric(key, outs_x, sims, floats)
    row["task_metric"] = f"{m.get('metric', '')}: {m.get('value', '')}"
    row["notes"] = len(q_art.notes)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="cls,rec,det,minilm")
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--eval", type=int, default=8)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-tflite-") as tmp:
        for key in args.models.split(","):
            rows.append(bench(key, args.calib, args.eval, args.runs, Path(tmp)))
    data = {"settings": vars(args), "rows": rows}
    cols = ["model", "int8_ms", "float_ms", "speedup", "int8_MB", "size_ratio", "parity_xnnpack_%",
            "parity_reference_%", "parity_by_output_%", "task_metric", "calibrate_s", "error"]  # fmt: skip
    md = ("# TFLite export (target rpi): int8 vs float32 on LiteRT/XNNPACK\n\n"
          f"calibration {args.calib} samples, evaluation {args.eval} held-out samples, "
          f"latency: median of {args.runs} interleaved runs (XNNPACK, default threads); "
          "parity: fraction of output elements within one quantization step of the simulator "
          "(reference kernels on 2 samples).\n\n" + md_table(rows, cols))  # fmt: skip
    write_results("export_tflite", data, md)


if __name__ == "__main__":
    main()
