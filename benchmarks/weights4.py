"""4-bit weights, edgeq against the peers, in one run on the same calibration/evaluation split
(issue #13).

Models: PP-OCRv4 rec (CER on held-out rendered lines) and all-MiniLM-L6-v2 (mean cosine of
sentence embeddings to float on held-out sentences). Every row reports bits per weight with one
accounting: stored bits of every layer weight (MatMul/Gemm/Conv/Gather tables: codes, scales,
zero points or biases, and float weights at the width they are stored) over their count.

- edgeq: `--bits 4` with the target's defaults, exported and evaluated as an artifact on its
  runtime (onnx: onnxruntime CPU; ane: edgeq's numpy MIL evaluator of the saved program, fp16;
  mlx: MLX CPU), bits per weight read from the artifact; plus variants on onnx (the old plain
  per-channel min-max RTN, RTN on the default grid, GPTQ without mixed precision), ane LUT
  and, for MiniLM, the embedding table kept float. Time per phase from the plan.
- peers, each at the same group size, their dequantized weights written into the float ONNX
  model and run on onnxruntime (identical runtime for everyone):
  MLX `mx.quantize` (affine RTN, float16 scales/biases as mlx-lm stores them; rows padded to the
  group) on every layer; coremltools 9 `linear_quantize_weights` int4 per-block symmetric and
  asymmetric (its default weight_threshold 2048, and 0 = every layer) and `palettize_weights`
  4-bit k-means per tensor and per grouped channel (16), on edgeq's float Core ML program;
  onnxruntime `MatMulNBitsQuantizer` (its default RTN, symmetric and not, HQQ, and GPTQ on the
  calibration samples; HQQ and GPTQ import torch: without it their rows report the error).

    .venv/bin/python -m benchmarks.weights4 [--models ppocr-rec,minilm] [--calib 128] [--eval 200]

Results: benchmarks/results/weights4.{md,json} and weights4_<model>.png (accuracy vs bits per
weight).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from benchmarks.common import RESULTS, machine, md_table, peak_rss_mb, write_results
from edgeq.algorithms.data_aware import weight_sizes
from edgeq.algorithms.grids import MatrixView
from edgeq.export import export_model
from edgeq.exporters import ExportOptions, get_exporter
from edgeq.ir.graph import Graph
from edgeq.ir.onnx_io import load_model
from edgeq.pipeline import calibrate_model, prepare_for_quantization
from edgeq.quant.plan import QuantPlan, TensorQuant
from edgeq.quant.planner import weight_operand
from edgeq.quant.recipe import LayerConfig, Recipe
from edgeq.targets import load_target
from examples.models import CASES

Feeds = dict[str, np.ndarray]


# ---- metrics ------------------------------------------------------------------------------------
def metric_fn(
    model: str, n_eval: int, reference: list[dict[str, np.ndarray]]
) -> Callable[[list[Any]], float]:
    if model == "ppocr-rec":
        from examples.ocr import character_error_rate, ctc_greedy_decode, rec_samples

        texts = [s.text for s in rec_samples(n_eval, split="eval")]

        def cer(outs: list[Any]) -> float:
            key = next(iter(outs[0]))
            return 100 * character_error_rate(
                [ctc_greedy_decode(np.asarray(o[key])) for o in outs], texts
            )

        return cer
    ref = np.concatenate([np.asarray(r["sentence_embedding"], np.float64) for r in reference])

    def cosine(outs: list[Any]) -> float:
        a = np.concatenate([np.asarray(o["sentence_embedding"], np.float64) for o in outs])
        return float(
            np.mean(np.sum(a * ref, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(ref, axis=1)))
        )

    return cosine


# ---- weight layout helpers ----------------------------------------------------------------------
def views(graph: Graph) -> dict[str, MatrixView]:
    """Every layer weight as [rows, K] with the contraction (group) axis last."""
    out = {}
    for node in graph.nodes:
        w = weight_operand(node, graph)
        if w is not None and node.inputs[w[0]] not in out:
            name = node.inputs[w[0]]
            out[name] = MatrixView(tuple(graph.constants[name].shape), w[1], w[2], "per_channel")
    return out


def float_onnx(graph: Graph, path: Path, constants: Mapping[str, np.ndarray] | None = None) -> Path:
    g = graph.copy()
    g.constants.update(
        {k: np.asarray(v, g.constants[k].dtype) for k, v in (constants or {}).items()}
    )
    get_exporter("onnx_qdq").export(g, None, load_target("onnx"), path, ExportOptions())
    return path


def ort_outputs(path: Path, feeds: Sequence[Feeds]) -> list[dict[str, np.ndarray]]:
    from edgeq.exporters.onnx.qdq import OrtRunner

    run = OrtRunner(path)
    return [run(f) for f in feeds]


# ---- peers --------------------------------------------------------------------------------------
def mlx_rtn(graph: Graph, group: int) -> tuple[dict[str, np.ndarray], float]:
    """mx.quantize affine RTN on every layer weight (float16 in, as mlx-lm stores models), rows
    zero-padded to the group; (dequantized weights, stored bits)."""
    import mlx.core as mx

    out, bits = {}, 0.0
    for name, v in views(graph).items():
        m = v.to_matrix(graph.constants[name].astype(np.float32))
        k = m.shape[1]
        kp = -(-k // group) * group
        padded = np.pad(m, ((0, 0), (0, kp - k))).astype(np.float16)
        wq, s, b = mx.quantize(mx.array(padded), group_size=group, bits=4)
        deq = np.array(mx.dequantize(wq, s, b, group_size=group, bits=4).astype(mx.float32))[:, :k]
        out[name] = v.from_matrix(deq)
        bits += 8 * (wq.nbytes + s.nbytes + b.nbytes)
    return out, bits


def coreml_peer(
    graph: Graph, work: Path, kind: str, model_name: str, **config: Any
) -> tuple[dict[str, np.ndarray], float]:
    """coremltools 9 on edgeq's float (fp16) Core ML program of `model_name` (one per model: the
    second model once reused the first one's program, so nothing of it was quantized):
    `linear` (linear_quantize_weights) or `palettize` (palettize_weights); weights decoded from
    the saved program."""
    import coremltools as ct
    import coremltools.optimize as cto

    from edgeq.exporters.coreml.build import weight_op_name
    from edgeq.exporters.coreml.check import stored_bits
    from edgeq.exporters.coreml.evaluate import _CONSTEXPR, SavedProgram

    src = work / f"{model_name}-float.mlpackage"
    if not src.exists():
        get_exporter("coreml").export(graph, None, load_target("ane"), src,
                                      ExportOptions(deployment_target="iOS18"))  # fmt: skip
    model = ct.models.MLModel(str(src), skip_model_load=True)
    if kind == "linear":
        op = cto.coreml.OpLinearQuantizerConfig(dtype="int4", granularity="per_block", **config)
        out_model = cto.coreml.linear_quantize_weights(
            model, cto.coreml.OptimizationConfig(global_config=op)
        )
    else:
        op = cto.coreml.OpPalettizerConfig(mode="kmeans", nbits=4, **config)
        out_model = cto.coreml.palettize_weights(
            model, cto.coreml.OptimizationConfig(global_config=op)
        )
    dst = work / f"{model_name}-{kind}-{abs(hash(str(config)))}.mlpackage"
    out_model.save(str(dst))
    prog = SavedProgram(dst)
    by_name = {o.name: op for op in prog.ops for o in op.outputs}
    bits = 0
    weights: dict[str, np.ndarray] = {}
    for name in views(graph):
        for trans in (True, False):
            base = weight_op_name(name, trans)
            op_ = (
                by_name.get(base + "_quantized")
                or by_name.get(base + "_palettized")
                or by_name.get(base)
            )
            if op_ is None:
                continue
            args = {k: prog.value(a.arguments[0].value) for k, a in op_.inputs.items()
                    if a.arguments[0].WhichOneof("binding") == "value"}  # fmt: skip
            if op_.type == "const":
                value = prog.value(op_.attributes["val"])
            else:
                value = _CONSTEXPR[op_.type](args)
            value = np.asarray(value, np.float32)
            if op_.type != "const":  # compressed: count what it stores; float ones stay float
                weights[name] = value.T if trans else value
                bits += stored_bits(op_)
            break
    return weights, float(bits)


def ort_peer(
    graph: Graph, work: Path, group: int, algo: str, symmetric: bool, calib: Sequence[Feeds]
) -> tuple[dict[str, np.ndarray], float]:
    """onnxruntime MatMulNBitsQuantizer on the float model (MatMul weights only); its
    MatMulNBits weights decoded back, other layers stay float32. GPTQ reads the calibration
    samples (its CalibrationDataReader)."""
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter(calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            feed = next(self.items, None)
            return None if feed is None else {k: np.asarray(v) for k, v in feed.items()}

        def rewind(self) -> None:
            self.items = iter(calib)

    src = float_onnx(graph, work / "float.onnx")
    model = onnx.load(src)
    config: Any = None
    if algo == "hqq":
        config = mnq.HQQWeightOnlyQuantConfig(block_size=group, bits=4)
    elif algo == "gptq":
        config = mnq.GPTQWeightOnlyQuantConfig(calibration_data_reader=Reader(), block_size=group)
    quant = mnq.MatMulNBitsQuantizer(model, bits=4, block_size=group, is_symmetric=symmetric,
                                     algo_config=config)  # fmt: skip
    quant.process()
    qmodel = quant.model.model
    init = {t.name: t for t in qmodel.graph.initializer}
    matmul_out = {n.outputs[0]: n.inputs[1] for n in graph.nodes if n.op_type == "MatMul"}
    weights, bits = {}, 0.0
    for n in qmodel.graph.node:
        name = matmul_out.get(n.output[0])
        if n.op_type != "MatMulNBits" or name is None:
            continue
        weights[name] = _nbits_weight(n, init)
        bits += sum(8 * numpy_helper.to_array(init[i]).nbytes for i in n.input[1:4] if i in init)
    return weights, bits


def _nbits_weight(node: onnx.NodeProto, init: Mapping[str, onnx.TensorProto]) -> np.ndarray:
    """The float weight [K, N] a MatMulNBits node multiplies by, as onnxruntime itself decodes
    it: the node alone (float32 compute) applied to the K x K identity. Its zero points may be
    packed 4-bit codes (RTN, GPTQ) or float values (HQQ); this reads either as the kernel does."""
    import onnxruntime as ort

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    k = int(attrs["K"])
    used = [i for i in node.input[1:] if i in init]
    single = helper.make_node("MatMulNBits", ["A", *node.input[1:]], ["Y"], domain="com.microsoft",
                              **{**attrs, "accuracy_level": 0})  # fmt: skip
    graph = helper.make_graph([single], "decode", [helper.make_tensor_value_info("A", onnx.TensorProto.FLOAT, [k, k])],
                              [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)],
                              [init[i] for i in used])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("com.microsoft", 1)])  # fmt: skip
    model.ir_version = 10
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"A": np.eye(k, dtype=np.float32)})[0], np.float32)


def peer_bpw(
    graph: Graph, quantized: Mapping[str, np.ndarray], bits: float, float_bits: int
) -> float:
    sizes = weight_sizes(graph)
    rest = sum(e for n, e in sizes.items() if n not in quantized) * float_bits
    return (bits + rest) / sum(sizes.values())


# ---- edgeq ----------------------------------------------------------------------------------------
def edgeq_row(case: Any, model_path: Path, target: str, recipe: Recipe, calib: list[Feeds],
              evalf: list[Feeds], work: Path, metric: Callable[[list[Any]], float],
              edit: Callable[[QuantPlan], QuantPlan] | None = None) -> dict[str, Any]:  # fmt: skip
    """Calibrate, export for `target`, run the artifact on its runtime."""
    t0 = time.perf_counter()
    run = calibrate_model(model_path, calib, target, recipe, input_shapes=case.input_shapes,
                          input_values=case.input_values, samples=len(calib), report_samples=0)  # fmt: skip
    calib_s = time.perf_counter() - t0
    plan = edit(run.plan) if edit else run.plan
    plan_dir = work / f"plan-{target}-{abs(hash(str(recipe)))}"
    plan.save(plan_dir)
    out = work / f"out-{target}-{abs(hash(str(recipe)))}-{edit is not None}"
    t0 = time.perf_counter()
    result = export_model(model_path, target, out, plan_dir=plan_dir, runs=2, eval_samples=0)
    export_s = time.perf_counter() - t0
    exporter = get_exporter(load_target(target).exporter)
    runner = exporter.open(result.artifact)
    outs = [runner(f) for f in evalf]
    w = result.report["weights"]
    secs = plan.calibration.get("weights", {}).get("seconds", {})
    mixed = plan.calibration.get("mixed_precision", {})
    return {
        "metric": metric(outs), "bpw": w["bits_per_weight"],
        "eight_bit_layers": len(mixed.get("eight_bit", [])),
        "seconds": {"calibrate_total": round(calib_s, 1), "calibration": plan.calibration.get("seconds"), "phases": plan.calibration.get("phases"),
                    "gptq_forward": secs.get("layerwise_forward"), "gptq_hessian": secs.get("layerwise_hessian"),
                    "gptq_solve": secs.get("layerwise_solve"), "rtn": secs.get("rtn"),
                    "mixed_precision": mixed.get("seconds"), "export_and_check": round(export_s, 1)},
    }  # fmt: skip


def float_tables(graph: Graph) -> Callable[[QuantPlan], QuantPlan]:
    """An edit leaving the plan's embedding tables (Gather weights) float."""
    tables = {
        n.inputs[0] for n in graph.nodes if n.op_type == "Gather" and n.inputs[0] in graph.constants
    }

    def edit(plan: QuantPlan) -> QuantPlan:
        tensors = dict(plan.tensors)
        for name in tables & set(tensors):
            tensors[name] = TensorQuant(name, "float", "float32", reason="embedding kept float",
                                        node=tensors[name].node)  # fmt: skip
        return replace(plan, tensors=tensors)

    return edit


# ---- one model -------------------------------------------------------------------------------------
def run_model(
    name: str,
    n_calib: int,
    n_eval: int,
    group: int,
    work: Path,
    quick: bool,
    peers_only: bool = False,
) -> dict[str, Any]:
    case = CASES[name]
    model_path = case.model_path(work)
    calib = case.make_feeds(n_calib, "calib")
    evalf = case.make_feeds(n_eval, "eval")
    graph = prepare_for_quantization(load_model(model_path), case.input_shapes, case.input_values)
    fpath = float_onnx(graph, work / f"{name}-float.onnx")
    reference = ort_outputs(fpath, evalf)
    metric = metric_fn(name, n_eval, reference)
    rows: list[dict[str, Any]] = [{"method": "float (onnxruntime)", "group": "-", "metric": metric(reference),
                                   "bpw": 32.0}]  # fmt: skip

    def add(method: str, fn: Callable[[], dict[str, Any]], who: str) -> None:
        t0 = time.perf_counter()
        try:
            row = fn()
        except Exception as exc:  # a peer that does not run here is reported, not fatal
            row = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            traceback.print_exc()
        row.setdefault("seconds_total", round(time.perf_counter() - t0, 1))
        rows.append({"method": method, "who": who, "group": row.pop("group", group), **row})
        print(name, rows[-1], flush=True)

    def peer(
        fn: Callable[[], tuple[dict[str, np.ndarray], float]], float_bits: int = 32
    ) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            weights, bits = fn()
            path = float_onnx(graph, work / f"{name}-peer.onnx", weights)
            return {"metric": metric(ort_outputs(path, evalf)), "bpw": peer_bpw(graph, weights, bits, float_bits),
                    "layers_quantized": len(weights)}  # fmt: skip

        return run

    d4 = LayerConfig(weight_bits=4)
    for target in ("onnx", "ane", "mlx") if not peers_only else ():
        add(f"edgeq --bits 4 --target {target} (defaults)",
            lambda t=target: edgeq_row(case, model_path, t, Recipe(base=d4), calib, evalf, work, metric),
            "edgeq")  # fmt: skip
    if not quick and not peers_only:
        variants = [
            ("edgeq onnx: plain per-channel min-max RTN (old default)",
             Recipe(base=LayerConfig(weight_bits=4, granularity="per_channel", method="rtn",
                                     weight_method="minmax"), mixed_precision="off")),
            ("edgeq onnx: RTN, MSE grid, no mixed precision",
             Recipe(base=LayerConfig(weight_bits=4, method="rtn"), mixed_precision="off")),
            ("edgeq onnx: GPTQ, no mixed precision", Recipe(base=d4, mixed_precision="off")),
        ]  # fmt: skip
        for label, recipe in variants:
            add(
                label,
                lambda r=recipe: edgeq_row(case, model_path, "onnx", r, calib, evalf, work, metric),
                "edgeq",
            )
        add("edgeq ane: --weight-format lut (4-bit k-means per 16 channels)",
            lambda: edgeq_row(case, model_path, "ane", Recipe(base=LayerConfig(weight_bits=4, weight_format="lut")),
                              calib, evalf, work, metric), "edgeq")  # fmt: skip
    if name == "minilm" and not peers_only:
        add("edgeq --bits 4 --target onnx, embeddings float",
            lambda: edgeq_row(case, model_path, "onnx", Recipe(base=d4), calib, evalf, work, metric,
                              float_tables(graph)), "edgeq")  # fmt: skip
    add("MLX mx.quantize RTN (affine, every layer)", peer(lambda: mlx_rtn(graph, group)), "peer")
    for mode in ("linear_symmetric", "linear"):
        for threshold in (2048, 0):
            add(f"coremltools linear_quantize_weights int4 {mode} per_block (weight_threshold {threshold})",
                peer(lambda m=mode, t=threshold: coreml_peer(graph, work, "linear", name, mode=m,
                                                            block_size=group, weight_threshold=t), 16),
                "peer")  # fmt: skip
    add("coremltools palettize_weights kmeans 4-bit per_tensor (weight_threshold 0)",
        peer(lambda: coreml_peer(graph, work, "palettize", name, granularity="per_tensor", weight_threshold=0), 16),
        "peer")  # fmt: skip
    add("coremltools palettize_weights kmeans 4-bit per_grouped_channel 16 (weight_threshold 0)",
        peer(lambda: coreml_peer(graph, work, "palettize", name, granularity="per_grouped_channel", group_size=16,
                                 weight_threshold=0), 16), "peer")  # fmt: skip
    for algo, sym in (("rtn", True), ("rtn", False), ("hqq", False), ("gptq", False)):
        add(f"onnxruntime MatMulNBitsQuantizer {algo.upper()}{' symmetric' if sym else ''} (MatMul only)",
            peer(lambda a=algo, s=sym: ort_peer(graph, work, group, a, s, calib)), "peer")  # fmt: skip
    return {"model": name, "calib_samples": n_calib, "eval_samples": n_eval, "group": group, "rows": rows,
            "metric": "CER % (lower is better)" if name == "ppocr-rec" else "mean cosine to float (higher is better)"}  # fmt: skip


def plot(result: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for row in result["rows"]:
        if "error" in row or row["bpw"] > 20:
            continue
        color = "tab:red" if row.get("who") == "edgeq" else "tab:blue"
        ax.scatter(row["bpw"], row["metric"], color=color, s=30)
        ax.annotate(row["method"][:48], (row["bpw"], row["metric"]), fontsize=6, xytext=(3, 2),
                    textcoords="offset points")  # fmt: skip
    flt = result["rows"][0]["metric"]
    ax.axhline(flt, color="gray", linestyle="--", linewidth=0.8, label=f"float {flt:.4g}")
    ax.set_xlabel("average bits per weight (scales and zero points included)")
    ax.set_ylabel(result["metric"])
    ax.set_title(
        f"{result['model']}: 4-bit weights, edgeq (red) vs peers (blue), group {result['group']}"
    )
    if result["model"] == "ppocr-rec":
        ax.set_yscale("log")
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    path = RESULTS / f"weights4_{result['model']}.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def markdown(data: dict[str, Any]) -> str:
    lines = ["# 4-bit weights: edgeq vs peers (issue #13)", "",
             f"`python -m benchmarks.weights4 {data['args']}`; {data['machine']}; peak RSS {data['peak_rss_mb']:.0f} MB.",
             "Bits per weight: stored bits of every layer weight (codes, scales, zero points/biases; float "
             "weights at their stored width: 32 in ONNX, 16 in Core ML) over their count. edgeq rows are "
             "artifacts on their runtime; peer rows are the peer's dequantized weights in the float ONNX "
             "model on onnxruntime.", ""]  # fmt: skip
    for res in data["results"]:
        lines += [f"## {res['model']} ({res['calib_samples']} calibration, {res['eval_samples']} held-out samples; "
                  f"metric: {res['metric']})", "", f"![{res['model']}](weights4_{res['model']}.png)", ""]  # fmt: skip
        table = []
        for r in res["rows"]:
            table.append({"method": r["method"], "group": r.get("group", ""),
                          "metric": f"{r['metric']:.4f}" if "metric" in r else r.get("error", ""),
                          "bits/weight": f"{r['bpw']:.3f}" if "bpw" in r else "",
                          "8-bit layers": r.get("eight_bit_layers", ""),
                          "time s": r.get("seconds", {}).get("calibrate_total", r.get("seconds_total", ""))})  # fmt: skip
        lines += [
            md_table(table, ["method", "group", "metric", "bits/weight", "8-bit layers", "time s"]),
            "",
        ]
        times = [r for r in res["rows"] if r.get("who") == "edgeq" and "seconds" in r]
        if times:
            lines += ["edgeq time per phase (s):", ""]
            lines += [f"- {r['method']}: {r['seconds']}" for r in times]
            lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="ppocr-rec,minilm")
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--eval", type=int, default=200)
    ap.add_argument("--group", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="defaults and peers only")
    ap.add_argument("--peers-only", action="store_true", help="only the peers' rows")
    ap.add_argument("--out", default="weights4", help="results name (run models in parallel)")
    ap.add_argument("--merge", default="", help="NAME,NAME: join earlier results into --out")
    args = ap.parse_args()
    if args.merge:  # one table from runs made in parallel (one model each)
        parts = [json.loads((RESULTS / f"{n}.json").read_text()) for n in args.merge.split(",")]
        data = {"machine": parts[0]["machine"], "args": "; ".join(p["args"] for p in parts),
                "peak_rss_mb": max(p["peak_rss_mb"] for p in parts),
                "results": [r for p in parts for r in p["results"]]}  # fmt: skip
        write_results(args.out, data, markdown(data))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="edgeq-weights4-") as tmp:
        for m in args.models.split(","):
            res = run_model(m, args.calib, args.eval if m == "ppocr-rec" else min(args.eval, 100),
                            args.group, Path(tmp), args.quick, args.peers_only)  # fmt: skip
            plot(res)
            results.append(res)
            data = {"machine": machine(), "args": " ".join(f"--{k} {v}" for k, v in vars(args).items()
                                                           if k not in ("out", "merge")),
                    "peak_rss_mb": peak_rss_mb(), "results": results}  # fmt: skip
            write_results(args.out, data, markdown(data))


if __name__ == "__main__":
    main()
