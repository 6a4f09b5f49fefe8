"""Coverage matrix: every model × every target × bits 8 and 4.

Models: the committed exporter-made test graphs (`tests/graphs/`, made by
`tools/make_test_graphs.py` with torch.onnx.export, TorchScript and dynamo, opset 17/18), the
real models (PP-OCRv4 det/rec, PP-OCR cls, silero VAD and its LSTM sequence variant, MiniLM from
its safetensors), and all-MiniLM-L6-v2 exported by torch as a user would (both exporters; from
`make test-graphs`, listed as not run when absent).

Each cell: calibrate for the target (random normal / token feeds for the random-weight test
graphs, the real data for the real models), export, run the artifact on its runtime (Core ML:
edgeq's numpy MIL evaluator), and report parity (fraction of output elements within one
quantization step of the simulator; the worst output) and fidelity (cosine of artifact vs
float; the worst output). A cell the export refuses shows the one-line reason (the runtime rule).

    .venv/bin/python -m benchmarks.coverage [--models yolo,bert] [--targets rpi,ane] [--bits 8]
                                            [--calib 8] [--eval 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, md_table, write_results
from edgeq.errors import EdgeqError
from edgeq.export import evaluate_artifact
from edgeq.exporters import ExportOptions, get_exporter
from edgeq.pipeline import calibrate_model
from edgeq.quant.recipe import recipe_from_cli
from edgeq.targets import load_target

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = ROOT / "tests" / "graphs"
TORCH_MINILM = ROOT / "build" / "torch-graphs"
TARGETS = ("onnx", "qnn", "rpi", "tflm", "ane", "mlx")
Feeds = dict[str, np.ndarray]


@dataclass
class CoverageModel:
    name: str
    path: Callable[[], Path]
    input_shapes: dict[str, tuple[int, ...]]
    feeds: Callable[[int, str], list[Feeds]]
    input_values: dict[str, Any] | None = None


def graph_feeds(spec: dict[str, Any], n: int, split: str) -> list[Feeds]:
    """Feeds for a test graph from its manifest input table (the generator's conventions):
    normal floats, token ids, 0/1 masks with a padded tail of varying length."""
    rng = np.random.default_rng(1 if split == "eval" else 2)
    out = []
    for k in range(n):
        feed: Feeds = {}
        for name, s in spec.items():
            shape = tuple(s["shape"])
            if s["kind"] == "ids":
                feed[name] = rng.integers(1, s["high"], size=shape).astype(np.int64)
            elif s["kind"] == "mask":
                m = np.ones(shape, np.int64)
                m[..., max(1, shape[-1] - 1 - (k * 3) % shape[-1]) :] = 0
                feed[name] = m
            elif s["kind"] == "zeros":
                feed[name] = np.zeros(shape, np.int64)
            else:
                feed[name] = rng.standard_normal(shape).astype(np.float32)
        out.append(feed)
    return out


def graph_models() -> list[CoverageModel]:
    manifest = json.loads((GRAPHS / "manifest.json").read_text())
    models = []
    for file, row in sorted(manifest["graphs"].items()):
        if "error" in row or "duplicate_of" in row:
            continue
        spec = row["inputs"]
        models.append(CoverageModel(
            file.removesuffix(".onnx"), lambda f=file: GRAPHS / f,
            {k: tuple(v["shape"]) for k, v in spec.items()},
            lambda n, split, s=spec: graph_feeds(s, n, split),
        ))  # fmt: skip
    return models


def real_models() -> list[CoverageModel]:
    from examples.models import CASES

    work = Path(tempfile.gettempdir()) / "edgeq-models"
    models = [
        CoverageModel(
            c.name,
            lambda c=c: c.model_path(work),
            dict(c.input_shapes),
            c.make_feeds,
            dict(c.input_values) or None,
        )
        for c in CASES.values()
    ]
    minilm = CASES["minilm"]
    for exporter in ("torchscript", "dynamo"):
        path = TORCH_MINILM / f"minilm.{exporter}.op17.onnx"
        models.append(CoverageModel(f"minilm-torch-{exporter}", lambda p=path: p,
                                    dict(minilm.input_shapes), minilm.make_feeds))  # fmt: skip
    return models


def run_cell(model: CoverageModel, target: str, bits: int, calib: list[Feeds],
             evals: list[Feeds]) -> dict[str, Any]:  # fmt: skip
    t0 = time.perf_counter()
    cell: dict[str, Any] = {"model": model.name, "target": target, "bits": bits}
    try:
        run = calibrate_model(model.path(), calib, target, recipe_from_cli(bits=bits),
                              input_shapes=model.input_shapes, input_values=model.input_values,
                              samples=len(calib), report_samples=0)  # fmt: skip
        profile = load_target(target)
        exporter = get_exporter(profile.exporter)
        with tempfile.TemporaryDirectory(prefix="edgeq-coverage-") as tmp:
            art = exporter.export(run.graph, run.plan, profile,
                                  Path(tmp) / ("model" + exporter.suffix), ExportOptions())  # fmt: skip
            runner = exporter.open(art.path)
            rows = evaluate_artifact(
                run.graph, run.plan, runner, evals, profile.raw.get("output_dtype")
            )
        cell["status"] = "ok"
        cell["parity"] = min(r["vs_simulator"]["within_one_step"] for r in rows.values())
        cell["max_steps"] = max(r["vs_simulator"]["max_steps"] for r in rows.values())
        cell["cosine"] = min(r["vs_float"]["cosine"] for r in rows.values())
        cell["simulator_cosine"] = min(r["simulator_vs_float"]["cosine"] for r in rows.values())
        cell["notes"] = len(art.notes)
    except EdgeqError as exc:
        cell["status"] = "refused"
        cell["reason"] = str(exc).splitlines()[0][:300]
    except Exception as exc:  # a crash is a finding, never a refusal
        cell["status"] = "crash"
        cell["reason"] = f"{type(exc).__name__}: {exc}"[:300]
        cell["trace"] = traceback.format_exc()[-2000:]
    cell["seconds"] = round(time.perf_counter() - t0, 1)
    return cell


def cell_text(cell: dict[str, Any]) -> str:
    if cell["status"] == "ok":
        if cell["parity"] >= 0.99:
            return f"ok {100 * cell['parity']:.1f}% / cos {cell['cosine']:.3f}"
        steps = f", max {cell['max_steps']:.0f} steps" if "max_steps" in cell else ""
        sim = (
            f", simulator cos {cell['simulator_cosine']:.3f}" if "simulator_cosine" in cell else ""
        )
        return f"LOW PARITY {100 * cell['parity']:.1f}%{steps} / cos {cell['cosine']:.3f}{sim}"
    if cell["status"] == "not run":
        return "not run: " + cell["reason"]
    return f"{cell['status'].upper()}: {cell['reason'][:120]}"


def write(args: argparse.Namespace, argv: list[str] | None, models: list[CoverageModel],
          targets: list[str], bits: list[int], cells: list[dict[str, Any]]) -> tuple[dict[str, int], int]:  # fmt: skip
    """Write the matrix so far (called after every cell: a stopped run keeps its cells)."""
    rows = []
    for model in models:
        row: dict[str, Any] = {"model": model.name}
        for c in cells:
            if c["model"] == model.name:
                row[f"{c['target']} w{c['bits']}"] = cell_text(c)
        rows.append(row)
    columns = ["model"] + [f"{t} w{b}" for t in targets for b in bits]
    counts = {
        s: sum(c["status"] == s for c in cells) for s in ("ok", "refused", "crash", "not run")
    }
    low = sum(c["status"] == "ok" and c["parity"] < 0.99 for c in cells)
    md = (f"# Coverage: models × targets × bits\n\n`python -m benchmarks.coverage "
          f"{' '.join(argv or [])}`; {args.calib} calibration and {args.eval} evaluation samples "
          f"per model (random feeds for the random-weight test graphs, real data for real "
          f"models). Cell: parity (worst output's fraction within one step of the simulator) / "
          f"cosine of the artifact to float (worst output), or the refusal.\n\n"
          f"{counts['ok']} ok ({low} below 99% parity), {counts['refused']} refused, "
          f"{counts['crash']} crashed, {counts['not run']} not run.\n\n"
          + md_table(rows, columns))  # fmt: skip
    write_results(args.name, {"machine": machine(), "cells": cells, "args": vars(args)}, md)
    return counts, low


def merge(args: argparse.Namespace, argv: list[str] | None) -> int:
    from benchmarks.common import RESULTS

    by_key: dict[tuple[str, str, int], dict[str, Any]] = {}
    for name in args.merge.split(","):
        for cell in json.loads((RESULTS / f"{name}.json").read_text())["cells"]:
            by_key[(cell["model"], cell["target"], cell["bits"])] = cell
    cells = list(by_key.values())
    names = list(dict.fromkeys(c["model"] for c in cells))
    known = {m.name: m for m in graph_models() + real_models()}
    models = [known[n] for n in names if n in known]
    targets = [t for t in TARGETS if any(c["target"] == t for c in cells)]
    bits = sorted({c["bits"] for c in cells}, reverse=True)
    counts, low = write(args, argv, models, targets, bits, cells)
    print(f"{counts}; below 99% parity: {low}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated name substrings")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--bits", default="8,4")
    parser.add_argument("--calib", type=int, default=8)
    parser.add_argument("--eval", type=int, default=4)
    parser.add_argument("--name", default="coverage", help="results file name")
    parser.add_argument("--merge", default="",
                        help="comma-separated result names to combine into --name (later ones "
                             "override cells of earlier ones); runs nothing")  # fmt: skip
    argv = sys.argv[1:] if argv is None else argv  # recorded in the results' header
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args, argv)
    wanted = [m for m in args.models.split(",") if m]
    models = [m for m in graph_models() + real_models()
              if not wanted or any(w in m.name for w in wanted)]  # fmt: skip
    targets = [t for t in args.targets.split(",") if t]
    bits = [int(b) for b in args.bits.split(",") if b]
    cells: list[dict[str, Any]] = []
    for model in models:
        if not model.path().exists():
            for t in targets:
                for b in bits:
                    cells.append({"model": model.name, "target": t, "bits": b,
                                  "status": "not run", "reason": "run `make test-graphs` first"})  # fmt: skip
            continue
        calib, evals = model.feeds(args.calib, "calib"), model.feeds(args.eval, "eval")
        for t in targets:
            for b in bits:
                cell = run_cell(model, t, b, calib, evals)
                print(f"{model.name:32s} {t:5s} w{b}: {cell_text(cell)} ({cell['seconds']} s)",
                      flush=True)  # fmt: skip
                cells.append(cell)
                write(args, argv, models, targets, bits, cells)
    counts, low = write(args, argv, models, targets, bits, cells)
    print(f"\n{counts}; below 99% parity: {low}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
