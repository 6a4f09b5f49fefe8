"""4-bit against 8-bit on onnxruntime CPU (issue #13): is a 4-bit artifact ever much slower than
the same target's 8-bit one?

For each model: edgeq `--bits 4` (target defaults since session 24: weight-only, blocks of 32
with float16 scales, every weight decoded by ops onnxruntime folds into float weights at load:
float MatMul/Conv; mixed precision), `--bits 4 --act-bits 8` (W4A8: int4 per channel, widened
to int8 by a Cast onnxruntime folds, so QLinearConv / QLinearMatMul run them — the session-23
default, `weights4_latency_s23.md`), `--bits 4 --act-bits 8 --granularity per_block` (blocks
decoded at load into float layers between Q/DQ pairs; before session 23 MatMulNBits for
MatMul/Gemm and a blocked DequantizeLinear before a float Conv, `weights4_latency_s22.md`) and
`--bits 8` (the target's W8A8 default) on the onnx target, onnxruntime's own 4-bit
(`MatMulNBitsQuantizer` RTN, blocks of 32 with zero points, MatMul weights only; at
accuracy_level 1, float compute, and 4, int8 compute on the activations quantized per block at
run time: the kernels a user of onnxruntime's 4-bit gets), and the float model, timed interleaved in one process (median ms, one intra-op thread), with the
artifacts' sizes. Calibration is small (latency does not depend on it beyond which layers mixed
precision keeps at 8 bits).

    .venv/bin/python -m benchmarks.weights4_latency [--models ppocr-rec,minilm] [--calib 16]

Results: benchmarks/results/weights4_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import interleaved_ms, machine, md_table, write_results
from benchmarks.weights4 import float_onnx
from edgeq.exporters import ExportOptions, get_exporter
from edgeq.exporters.onnx.qdq import OrtRunner
from edgeq.ir.onnx_io import load_model
from edgeq.pipeline import calibrate_model, prepare_for_quantization
from edgeq.quant.recipe import LayerConfig, Recipe
from edgeq.targets import load_target
from examples.models import CASES


def run_model(name: str, n_calib: int, rounds: int, work: Path) -> list[dict[str, Any]]:
    case = CASES[name]
    model_path = case.model_path(work)
    calib = case.make_feeds(n_calib, "calib")
    feed = case.make_feeds(1, "eval")[0]
    graph = prepare_for_quantization(load_model(model_path), case.input_shapes, case.input_values)
    paths = {"float": float_onnx(graph, work / f"{name}-float.onnx")}
    profile = load_target("onnx")
    exporter = get_exporter(profile.exporter)
    recipes = {
        "8-bit (W8A8 default)": Recipe(),
        "4-bit (--bits 4 default: weight-only, blocks of 32)": Recipe(
            base=LayerConfig(weight_bits=4)
        ),
        "4-bit W4A8 per channel (--act-bits 8)": Recipe(
            base=LayerConfig(weight_bits=4, act_bits=8)
        ),
        "4-bit W4A8 per block 32 (--act-bits 8 --granularity per_block)": Recipe(
            base=LayerConfig(weight_bits=4, act_bits=8, granularity="per_block")
        ),
    }
    for label, recipe in recipes.items():
        run = calibrate_model(model_path, calib, "onnx", recipe, input_shapes=case.input_shapes,
                              input_values=case.input_values, samples=n_calib, report_samples=0)  # fmt: skip
        art = exporter.export(run.graph, run.plan, profile, work / f"{name}-{len(paths)}.onnx",
                              ExportOptions())  # fmt: skip
        paths[label] = Path(art.path)
    for level in (1, 4):
        paths[f"onnxruntime MatMulNBits RTN (accuracy_level {level})"] = ort_nbits(
            paths["float"], level, work / f"{name}-nbits{level}.onnx"
        )
    runners = {k: OrtRunner(p, threads=1) for k, p in paths.items()}
    ms = interleaved_ms({k: (lambda r=r: r(feed)) for k, r in runners.items()}, rounds)
    base8 = ms["8-bit (W8A8 default)"]
    return [{"model": name, "artifact": k, "median_ms": round(v, 2),
             "vs_8bit": round(base8 / v, 3), "vs_float": round(ms["float"] / v, 3),
             "size_kb": round(os.path.getsize(paths[k]) / 1024, 1)} for k, v in ms.items()]  # fmt: skip


def ort_nbits(float_model: Path, accuracy_level: int, out: Path) -> Path:
    """onnxruntime's MatMulNBitsQuantizer (RTN, blocks of 32, asymmetric) on the float model."""
    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    cfg = mnq.DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=False,
                                           accuracy_level=accuracy_level)  # fmt: skip
    quant = mnq.MatMulNBitsQuantizer(onnx.load(str(float_model)), algo_config=cfg)
    quant.process()
    onnx.save(quant.model.model, str(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="ppocr-rec,minilm")
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgeq-w4lat-") as tmp:
        for m in args.models.split(","):
            rows += run_model(m, args.calib, args.rounds, Path(tmp))
    load = os.getloadavg()
    data = {"machine": machine(), "load_average": load, "args": vars(args), "rows": rows}
    cols = ["model", "artifact", "median_ms", "vs_8bit", "vs_float", "size_kb"]
    md = ("# 4-bit vs 8-bit ONNX artifacts on onnxruntime CPU (issue #13)\n\n"
          f"`python -m benchmarks.weights4_latency --models {args.models} --calib {args.calib} "
          f"--rounds {args.rounds}`; {data['machine']}; load average {load[0]:.1f}. Median ms of "
          "interleaved runs, one intra-op thread; vs_8bit / vs_float = speed relative to the "
          "8-bit artifact / the float model (>1 faster).\n\n" + md_table(rows, cols) + "\n")  # fmt: skip
    write_results("weights4_latency", data, md)


if __name__ == "__main__":
    main()
