"""MiniLM 4-bit, group 32, weight-only: edgeq's GPTQ against a plain reference GPTQ (issue #13).

Every row is dequantized weights written into the float ONNX model and run on onnxruntime
(activations float), scored by the mean cosine of sentence embeddings to float on held-out
sentences, with the embedding tables RTN-quantized (asymmetric min-max g32) or left float:

- RTN: asymmetric min-max per block of 32 on every MatMul;
- reference GPTQ: `tests/gptq_reference.py`'s transcription of the paper (min-max params per
  group, dampening 0.01, act-order with static groups), sequential: each MatMul's Hessian
  from the non-padding tokens of its input, computed by onnxruntime with every earlier MatMul
  already quantized;
- edgeq: the plan's weights from `calibrate_model(..., "ane", --bits 4, mixed precision off)`,
  symmetric (the ane default before 931830c) and asymmetric (after).

    .venv/bin/python -m benchmarks.gptq_reference [--calib 64] [--eval 100] [--full]

Results: benchmarks/results/gptq_reference.{md,json}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from benchmarks.common import machine, md_table, write_results
from benchmarks.weights4 import float_onnx, metric_fn, ort_outputs, views
from edgeq.ir.onnx_io import load_model
from edgeq.pipeline import calibrate_model, prepare_for_quantization
from edgeq.quant.recipe import LayerConfig, Recipe
from examples.models import CASES
from tests.gptq_reference import gptq_reference, minmax_params

Feeds = dict[str, np.ndarray]
G = 32


def rtn(m: np.ndarray, symmetric: bool = False) -> np.ndarray:
    """Min-max round to nearest per block of G columns, dequantized."""
    qmin, qmax = (-8, 7) if symmetric else (0, 15)
    out = np.empty(m.shape, np.float64)
    for g0 in range(0, m.shape[1], G):
        blk = m[:, g0 : g0 + G]
        s, z = minmax_params(blk, qmin, qmax, symmetric)
        q = np.clip(np.round(blk / s[:, None]) + z[:, None], qmin, qmax)
        out[:, g0 : g0 + G] = (q - z[:, None]) * s[:, None]
    return out


def gptq(w: np.ndarray, h: np.ndarray, static: bool, act_order: bool, symmetric: bool,
         damp: float = 0.01) -> np.ndarray:  # fmt: skip
    """The paper's column loop (tests/gptq_reference.py) with groups of G columns, params
    from the original weights (`static`) or at each group's first column; dequantized."""
    qmin, qmax = (-8, 7) if symmetric else (0, 15)
    return gptq_reference(w, h, np.arange(w.shape[1]) // G, qmin, qmax, symmetric, damp,
                          act_order, static_groups=static, dequantize=True)  # fmt: skip


def run_all(n_calib: int, n_eval: int, full: bool, work: Path) -> dict[str, Any]:
    case = CASES["minilm"]
    model_path = case.model_path(work)
    calib, evalf = case.make_feeds(n_calib, "calib"), case.make_feeds(n_eval, "eval")
    graph = prepare_for_quantization(load_model(model_path), case.input_shapes, case.input_values)
    fpath = float_onnx(graph, work / "float.onnx")
    metric = metric_fn("minilm", n_eval, ort_outputs(fpath, evalf))
    v = views(graph)
    tables = {n.inputs[0] for n in graph.nodes if n.op_type == "Gather" and n.inputs[0] in v}
    matmuls = [n for n in graph.nodes if n.op_type in ("MatMul", "Gemm") and n.inputs[1] in v]

    def mat(name: str) -> np.ndarray:
        return v[name].to_matrix(graph.constants[name].astype(np.float64))

    emb_rtn = {n: v[n].from_matrix(rtn(mat(n))).astype(np.float32) for n in tables}

    def score(weights: dict[str, np.ndarray]) -> dict[str, float]:
        out = {}
        for label, emb in (("tables rtn", emb_rtn), ("tables float", {})):
            ws = {k: x for k, x in weights.items() if k not in tables} | emb
            out[label] = round(
                metric(ort_outputs(float_onnx(graph, work / "q.onnx", ws), evalf)), 5
            )
        return out

    def inputs_of(weights: dict[str, np.ndarray], tensor: str) -> np.ndarray:
        model = onnx.load(str(fpath))
        for init in model.graph.initializer:
            if init.name in weights:
                init.CopyFrom(numpy_helper.from_array(weights[init.name], init.name))
        del model.graph.output[:]
        model.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        rows = []
        for f in calib:
            x = sess.run([tensor], f)[0]
            rows.append(x.reshape(-1, x.shape[-1])[f["attention_mask"].reshape(-1) != 0])
        return np.concatenate(rows).astype(np.float64)

    def reference(static: bool, act_order: bool, symmetric: bool) -> dict[str, np.ndarray]:
        current: dict[str, np.ndarray] = {}
        h, last = np.zeros(0), ""
        for node in matmuls:
            if node.inputs[0] != last:
                x = inputs_of(current, node.inputs[0])
                h, last = x.T @ x / len(x), node.inputs[0]
            deq = gptq(mat(node.inputs[1]), h, static, act_order, symmetric)
            current[node.inputs[1]] = v[node.inputs[1]].from_matrix(deq).astype(np.float32)
        return current

    def edgeq(symmetric: bool) -> dict[str, np.ndarray]:
        recipe = Recipe(base=LayerConfig(weight_bits=4, weight_symmetric=symmetric),
                        mixed_precision="off")  # fmt: skip
        plan = calibrate_model(model_path, calib, "ane", recipe, input_shapes=case.input_shapes,
                               samples=len(calib), report_samples=0).plan  # fmt: skip
        return {n: t.dequantized().astype(np.float32) for n, t in plan.tensors.items()
                if t.role == "weight" and t.is_quantized}  # fmt: skip

    runs: list[tuple[str, Any]] = [
        ("RTN min-max asymmetric", lambda: {n.inputs[1]: v[n.inputs[1]].from_matrix(
            rtn(mat(n.inputs[1]))).astype(np.float32) for n in matmuls}),
        ("reference GPTQ asymmetric, act-order + static groups", lambda: reference(True, True, False)),
        ("reference GPTQ symmetric, act-order + static groups", lambda: reference(True, True, True)),
        ("edgeq GPTQ (ane) symmetric", lambda: edgeq(True)),
        ("edgeq GPTQ (ane) asymmetric (default since 931830c)", lambda: edgeq(False)),
    ]  # fmt: skip
    if full:
        runs.insert(
            2, ("reference GPTQ asymmetric, no act-order", lambda: reference(False, False, False))
        )
    rows = []
    for label, fn in runs:
        t0 = time.perf_counter()
        row = {"method": label, **score(fn()), "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(row, flush=True)
    return {"calib": n_calib, "eval": n_eval, "group": G, "rows": rows, "machine": machine()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--eval", type=int, default=100)
    ap.add_argument("--full", action="store_true", help="also the reference without act-order")
    args = ap.parse_args()
    work = Path("/tmp/edgeq-gptq-reference")
    work.mkdir(parents=True, exist_ok=True)
    data = run_all(args.calib, args.eval, args.full, work)
    md = (f"# MiniLM 4-bit g{G} weight-only: edgeq GPTQ vs a reference GPTQ\n\n"
          f"{args.calib} calibration / {args.eval} held-out sentences, mean cosine of sentence "
          "embeddings to float (onnxruntime, dequantized weights in the float model).\n\n"
          + md_table(data["rows"], ["method", "tables rtn", "tables float", "seconds"]))  # fmt: skip
    write_results("gptq_reference", data, md)


if __name__ == "__main__":
    main()
