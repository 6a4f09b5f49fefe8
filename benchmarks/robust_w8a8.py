"""Issue #15: default W8A8 on trained models edgeq was not tuned on, against onnxruntime's
`quantize_static` (MinMax, Percentile, Entropy), in one run.

For every fixture (`examples.tasks.TASKS`: PP-OCRv4 rec and MiniLM, which the defaults were
tuned on, plus PP-OCRv5 rec/det, the PicoDet layout detector, YOLOv8n and the page-orientation
classifier, which they were not), calibrate with edgeq's defaults for each target, export, run
the artifact on its runtime (onnxruntime for onnx/qnn, LiteRT for rpi) on the held-out `eval`
split, and score it with the fixture's task metric beside float; quantize_static runs on the
same calibration samples (QDQ, per-channel int8 weights, uint8 activations). Writes
benchmarks/results/robust_w8a8.{json,md,png}.

    .venv/bin/python -m benchmarks.robust_w8a8 [--cases a,b] [--targets onnx,qnn,rpi]
        [--calib 32] [--skip-ort] [--merge]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, machine, md_table, write_results
from edgeq.exporters import ExportOptions, get_exporter
from edgeq.ir.interpreter import Interpreter
from edgeq.pipeline import calibrate_model
from edgeq.quant.recipe import Recipe
from edgeq.targets import load_target
from examples.models import CASES
from examples.tasks import TASKS

EVAL = {"ppocr-rec": 100, "minilm": 48, "ppocrv5-rec": 100, "ppocrv5-det": 8,
        "layout-cdla": 12, "yolov8n-320": 12, "orientation": 32}  # fmt: skip
TUNED = {"ppocr-rec": "tuned before (#3)", "minilm": "tuned before (#3)",
         "ppocrv5-rec": "decided defaults", "yolov8n-320": "decided defaults",
         "layout-cdla": "confirm", "ppocrv5-det": "confirm", "orientation": "confirm"}  # fmt: skip


def _edgeq(
    case: str, target: str, calib: list[dict], feeds: list[dict], work: Path
) -> dict[str, Any]:
    c = CASES[case]
    t0 = time.perf_counter()
    run = calibrate_model(c.model_path(work), calib, target, Recipe(), input_shapes=c.input_shapes,
                          input_values=c.input_values, report_samples=0)  # fmt: skip
    seconds = time.perf_counter() - t0
    profile = load_target(target)
    exporter = get_exporter(profile.exporter)
    path = work / f"{case}-{target}{exporter.suffix}"
    art = exporter.export(run.graph, run.plan, profile, path, ExportOptions())
    runner = exporter.open(art.path)
    rare = run.plan.calibration.get("rare_values", {})
    return {"outputs": [runner(f) for f in feeds], "calib_s": round(seconds, 1), "graph": run.graph,
            "rare_tail": rare.get("tail"), "rare_sqnr": rare.get("output_sqnr_db")}  # fmt: skip


def _ort(
    case: str,
    method: str,
    calib: list[dict],
    feeds: list[dict],
    work: Path,
    options: dict[str, Any],
) -> dict[str, Any]:
    import onnxruntime as ort

    from benchmarks.ort_baseline import ort_quantize_static

    c = CASES[case]
    t0 = time.perf_counter()
    out = ort_quantize_static(c.model_path(work), c.input_shapes, calib, work / f"{case}-ort-{method}.onnx",
                              method, **options)  # fmt: skip
    seconds = time.perf_counter() - t0
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    inputs = {i.name for i in sess.get_inputs()}
    outs = [dict(zip(names, sess.run(None, {k: v for k, v in f.items() if k in inputs}), strict=True))
            for f in feeds]  # fmt: skip
    return {"outputs": outs, "calib_s": round(seconds, 1)}


def _row(case: str, method: str, target: str, score: dict[str, float], base: dict[str, float],
         extra: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    task = TASKS[case]
    delta = score["metric"] - base["metric"]
    worse = -delta if task.higher_better else delta
    ok = score["cosine"] >= 0.99 if not task.ground_truth else worse <= 1.0
    return {"case": case, "method": method, "target": target, "metric": task.metric,
            "value": round(score["metric"], 2), "float": round(base["metric"], 2),
            "loss_pts": round(worse, 2), "cosine": round(score["cosine"], 4),
            "goal": "ok" if ok else "MISS",
            "extra": ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in score.items() if k not in ("metric", "cosine")),
            **extra}  # fmt: skip


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    methods = list(dict.fromkeys(f"{r['method']}/{r['target']}" for r in rows))
    fig, axes = plt.subplots(len(cases), 1, figsize=(10, 2.2 * len(cases)), squeeze=False)
    for ax, case in zip(axes[:, 0], cases, strict=True):
        vals = {f"{r['method']}/{r['target']}": r for r in rows if r["case"] == case}
        xs = [m for m in methods if m in vals]
        ys = [
            max(vals[m]["loss_pts"], 0.0) if vals[m].get("loss_pts") is not None else np.nan
            for m in xs
        ]
        colors = ["tab:green" if vals[m]["goal"] == "ok" else "tab:red" for m in xs]
        ax.bar(range(len(xs)), ys, color=colors)
        ax.set_xticks(range(len(xs)), xs, rotation=20, ha="right", fontsize=7)
        ax.set_ylabel("loss (points)")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax.set_title(f"{case}: {TASKS[case].metric} loss vs float ({TUNED[case]})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", default=",".join(TASKS))
    parser.add_argument("--targets", default="onnx,qnn,rpi")
    parser.add_argument("--ort", default="MinMax,Percentile,Entropy")
    parser.add_argument("--calib", type=int, default=32)
    parser.add_argument("--eval", type=int, default=0,
                        help="held-out samples per case (0: the case's default in EVAL)")  # fmt: skip
    parser.add_argument("--skip-ort", action="store_true")
    parser.add_argument("--ort-stride", type=int, default=0,
                        help="onnxruntime's CalibStridedMinMax (0: off): calibrate that many "
                        "samples at a time, which bounds the memory of its Percentile/Entropy "
                        "calibration on big detectors")  # fmt: skip
    parser.add_argument("--ort-pre-process", action="store_true",
                        help="run onnxruntime's quant_pre_process first, as its quantizer advises")  # fmt: skip
    parser.add_argument("--name", default="robust_w8a8")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of an earlier run that this run does not redo")  # fmt: skip
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeq-robust-"))
    ort_options: dict[str, Any] = {}
    if args.ort_stride:
        ort_options["stride"] = args.ort_stride
    if args.ort_pre_process:
        ort_options["pre_process"] = True
    rows: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    if args.merge and (RESULTS / f"{args.name}.json").exists():
        kept = json.loads((RESULTS / f"{args.name}.json").read_text())["rows"]
    for case in args.cases.split(","):
        task, c = TASKS[case], CASES[case]
        calib = c.make_feeds(args.calib, "calib")
        feeds, labels = task.data(args.eval or EVAL[case])
        float_out: list[dict] | None = None
        base: dict[str, float] | None = None
        runs = [("edgeq default", t) for t in args.targets.split(",")]
        if not args.skip_ort:
            runs += [(f"ort {m}", "onnx") for m in args.ort.split(",")]
        for method, target in runs:
            try:
                if method.startswith("edgeq"):
                    res = _edgeq(case, target, calib, feeds, work)
                    if float_out is None:
                        ref = Interpreter(res["graph"])
                        float_out = [ref(f) for f in feeds]
                        base = task.score(float_out, labels, float_out)
                else:
                    res = _ort(case, method.split()[1], calib, feeds, work, ort_options)
                    if float_out is None:
                        raise RuntimeError("no float reference (every edgeq run failed)")
                assert base is not None
                score = task.score(res["outputs"], labels, float_out)
                if "rare_sqnr" in res:  # the rare-value cut the pipeline chose, and why
                    sq = res["rare_sqnr"] or {}
                    score = {**score, "rare_tail": str(res["rare_tail"]),
                             **{f"sqnr_db@{k}": v for k, v in sq.items()}}  # fmt: skip
                if not method.startswith("edgeq"):
                    score = {**score, **{f"ort_{k}": v for k, v in ort_options.items()}}
                rows.append(_row(case, method, target, score, base, {"calib_s": res["calib_s"],
                                 "tuned": TUNED[case]}))  # fmt: skip
            except Exception as exc:
                msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
                rows.append({"case": case, "method": method, "target": target, "goal": "error",
                             "error": msg, "tuned": TUNED[case], "loss_pts": None})  # fmt: skip
                traceback.print_exc()
            print(rows[-1], flush=True)
            _write(args, _merged(kept, rows))  # every row on disk at once: a cut run keeps its rows
    md = _write(args, _merged(kept, rows))
    print(md)


def _merged(kept: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(r: dict[str, Any]) -> tuple[str, str, str]:
        return r["case"], r["method"], r["target"]

    redone = {key(r) for r in rows}
    order = list(TASKS)
    out = [r for r in kept if key(r) not in redone] + rows
    return sorted(out, key=lambda r: order.index(r["case"]) if r["case"] in order else len(order))


def _write(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    cols = ["case", "tuned", "method", "target", "metric", "value", "float", "loss_pts", "cosine",
            "goal", "calib_s", "extra", "error"]  # fmt: skip
    md = ("# W8A8 on models the defaults were not tuned on (issue #15)\n\n"
          f"{machine()}; {args.calib} calibration samples (calib split), evaluation on the disjoint "
          "eval split; edgeq artifacts run on their runtime (onnxruntime CPU for onnx/qnn, "
          "LiteRT/XNNPACK for rpi). Goal: loss ≤ 1 point of float's task metric, or output cosine "
          "≥ 0.99 where the metric has no ground truth (MiniLM, YOLOv8n on photos). calib_s is "
          "calibration time on a shared, loaded 2-core machine (compare within a row set only).\n\n"
          f"Command: `python -m benchmarks.robust_w8a8 {' '.join(sys.argv[1:])}`\n\n")  # fmt: skip
    md += md_table(rows, cols) + f"\n![chart]({args.name}.png)\n"
    old = RESULTS / f"{args.name}.md"
    if args.merge and old.exists():  # the notes written under an earlier run's chart stay
        notes = old.read_text().split(f"![chart]({args.name}.png)\n", 1)
        md += notes[1] if len(notes) == 2 else ""
    write_results(args.name, {"machine": machine(), "rows": rows}, md)
    chart([r for r in rows if r.get("loss_pts") is not None], RESULTS / f"{args.name}.png")
    return md


if __name__ == "__main__":
    main()
