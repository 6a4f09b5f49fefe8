"""Whose activation ranges cost the metric? edgeq's plan with a peer's ranges transplanted (#15).

Calibrates edgeq's default plan for a fixture, quantizes the same fixture with onnxruntime
`quantize_static` (its `quant_pre_process` first, Percentile by default, the same calibration
samples), reads the scale and zero point of every QuantizeLinear in onnxruntime's artifact, and
writes them into edgeq's plan for chosen subsets of the tensors both quantize. Each plan is
exported by edgeq's exporter, run on its runtime and scored with the fixture's task metric.
Weights stay edgeq's in every row: rows differ only in activation ranges, so a row that
recovers the metric names the ranges (and where in the graph) that cost it.

Variants, comma-separated, each `PART:SELECTOR`: PART is `full` (the peer's whole range),
`top` (the peer's upper bound, edgeq's lower) or `low` (the peer's lower bound, edgeq's upper);
SELECTOR is `all`, `op:<OpType>` (tensors that op produces) or `first:<N>` (the first N shared
tensors in graph order). `jitter:<A>:<SEED>` is a control with no peer in it: every one of
edgeq's activation scales times exp(U(-A, A)) (zero points kept), to see how far the metric
moves when the ranges move a little.

    .venv/bin/python -m benchmarks.peer_ranges --case layout-cdla --eval 48 \
        --variants full:all,full:op:HardSwish,full:op:Conv,full:first:50,top:all,low:all

Results: benchmarks/results/peer_ranges_<case>.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, md_table, write_results
from edgeq.exporters import ExportOptions, get_exporter
from edgeq.ir.graph import Graph
from edgeq.ir.interpreter import Interpreter
from edgeq.pipeline import calibrate_model
from edgeq.quant.plan import QuantPlan
from edgeq.quant.qtypes import choose_qparams
from edgeq.quant.recipe import Recipe
from edgeq.targets import load_target
from examples.models import CASES
from examples.tasks import TASKS

Range = tuple[float, float]


def peer_ranges(artifact: Path) -> dict[str, Range]:
    """[lo, hi] of every tensor a QDQ artifact quantizes (QuantizeLinear with constant
    scale and zero point), by the name of the float tensor it quantizes."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(artifact))
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    out: dict[str, Range] = {}
    for n in m.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[1] not in init:
            continue
        scale = float(init[n.input[1]])
        zp_arr = init.get(n.input[2]) if len(n.input) > 2 else None
        zp = int(zp_arr) if zp_arr is not None else 0
        info = np.iinfo(zp_arr.dtype if zp_arr is not None else np.uint8)
        out[n.input[0]] = ((info.min - zp) * scale, (info.max - zp) * scale)
    return out


def plan_range(plan: QuantPlan, name: str) -> Range:
    t = plan.tensors[name]
    s, z = float(np.asarray(t.scale)), float(np.asarray(t.zero_point))
    return (t.qdtype.qmin - z) * s, (t.qdtype.qmax - z) * s


def shared_tensors(graph: Graph, plan: QuantPlan, peer: dict[str, Range]) -> list[str]:
    """Activations both quantize per tensor, in graph order."""
    ours = {k for k, t in plan.tensors.items()
            if t.role == "activation" and t.is_quantized and np.ndim(t.scale) == 0}  # fmt: skip
    order = [*graph.input_names, *(o for n in graph.nodes for o in n.outputs)]
    return [k for k in order if k in ours and k in peer]


def select(graph: Graph, shared: list[str], selector: str) -> list[str]:
    producers = graph.producers()
    if selector == "all":
        return list(shared)
    kind, _, arg = selector.partition(":")
    if kind == "op":
        return [k for k in shared if k in producers and producers[k].op_type == arg]
    if kind == "first":
        return shared[: int(arg)]
    raise SystemExit(f"error: unknown selector '{selector}' — use all, op:<OpType> or first:<N>")


def transplant(plan: QuantPlan, peer: dict[str, Range], names: list[str], part: str) -> QuantPlan:
    """`plan` with the peer's range (or its top or bottom) on `names`."""
    tensors = dict(plan.tensors)
    for name in names:
        t = tensors[name]
        (lo, hi), (plo, phi) = plan_range(plan, name), peer[name]
        lo, hi = {"full": (plo, phi), "top": (lo, phi), "low": (plo, hi)}[part]
        scale, zp = choose_qparams(lo, hi, t.qdtype, symmetric=False)
        tensors[name] = replace(t, scale=np.float32(scale),
                                zero_point=np.asarray(zp).astype(np.asarray(t.zero_point).dtype))  # fmt: skip
    return replace(plan, tensors=tensors)


def jittered(plan: QuantPlan, amount: float, seed: int) -> QuantPlan:
    """Every per-tensor activation scale of `plan` times exp(U(-amount, amount))."""
    rng = np.random.default_rng(seed)
    tensors = dict(plan.tensors)
    for name, t in plan.tensors.items():
        if t.role == "activation" and t.is_quantized and np.ndim(t.scale) == 0:
            factor = float(np.exp(rng.uniform(-amount, amount)))
            tensors[name] = replace(t, scale=np.float32(float(np.asarray(t.scale)) * factor))
    return replace(plan, tensors=tensors)


def main() -> None:
    from benchmarks.ort_baseline import ort_quantize_static

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="layout-cdla")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--eval", type=int, default=48)
    ap.add_argument("--method", default="Percentile", help="onnxruntime calibration method")
    ap.add_argument("--variants", default="full:all,full:op:HardSwish,full:op:Conv,full:first:50,"
                    "full:first:100,top:all,low:all,top:first:50,jitter:0.05:0,jitter:0.05:1,"
                    "jitter:0.05:2")  # fmt: skip
    args = ap.parse_args()
    case, task = CASES[args.case], TASKS[args.case]
    work = Path(tempfile.mkdtemp(prefix="edgeq-peer-ranges-"))
    calib = case.make_feeds(args.calib, "calib")
    feeds, labels = task.data(args.eval)
    run = calibrate_model(case.model_path(work), calib, "onnx", Recipe(),
                          input_shapes=case.input_shapes, input_values=case.input_values,
                          report_samples=0)  # fmt: skip
    graph, plan = run.graph, run.plan
    peer_path = ort_quantize_static(case.model_path(work), case.input_shapes, calib,
                                    work / "peer.onnx", args.method, stride=8, pre_process=True)  # fmt: skip
    peer = peer_ranges(peer_path)
    shared = shared_tensors(graph, plan, peer)
    ref = Interpreter(graph)
    float_out = [ref(f) for f in feeds]
    base = task.score(float_out, labels, float_out)
    profile = load_target("onnx")
    exporter = get_exporter(profile.exporter)

    def score(p: QuantPlan, outputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        if outputs is None:
            art = exporter.export(graph, p, profile, work / "m.onnx", ExportOptions())
            runner = exporter.open(art.path)
            outputs = [runner(f) for f in feeds]
        s = task.score(outputs, labels, float_out)
        return {"metric": round(s["metric"], 2), "float": round(base["metric"], 2),
                "cosine": round(s["cosine"], 4),
                **{k: round(v, 3) for k, v in s.items()
                   if k not in ("metric", "cosine") and isinstance(v, float)}}  # fmt: skip

    import onnxruntime as ort

    sess = ort.InferenceSession(str(peer_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    inputs = {i.name for i in sess.get_inputs()}
    peer_out = [dict(zip(names, sess.run(None, {k: v for k, v in f.items() if k in inputs}),
                         strict=True)) for f in feeds]  # fmt: skip
    rows = [{"plan": "edgeq default", "tensors": 0, **score(plan)},
            {"plan": f"onnxruntime {args.method} artifact (its own weights too)", "tensors": 0,
             **score(plan, peer_out)}]  # fmt: skip
    for v in args.variants.split(","):
        part, _, selector = v.partition(":")
        if part == "jitter":
            amount, _, seed = selector.partition(":")
            rows.append({"plan": f"edgeq, scales x exp(U(-{amount}, {amount})), seed {seed}",
                         "tensors": 0, **score(jittered(plan, float(amount), int(seed or 0)))})  # fmt: skip
            print(rows[-1], flush=True)
            continue
        chosen = select(graph, shared, selector)
        rows.append({"plan": f"edgeq + peer {part} on {selector}", "tensors": len(chosen),
                     **score(transplant(plan, peer, chosen, part))})  # fmt: skip
        print(rows[-1], flush=True)
    data = {"machine": machine(), "args": vars(args), "shared_tensors": len(shared),
            "rows": rows}  # fmt: skip
    cols = ["plan", "tensors", "metric", "float", "cosine",
            *[k for k in rows[0] if k not in ("plan", "tensors", "metric", "float", "cosine")]]  # fmt: skip
    md = (f"# edgeq's plan with onnxruntime {args.method} activation ranges: {args.case} "
          "(issue #15)\n\n"
          f"`python -m benchmarks.peer_ranges {' '.join(sys.argv[1:])}`; {data['machine']}; "
          f"{args.calib} calibration samples, {args.eval} held-out; {len(shared)} activations "
          "both quantize per tensor. Weights are edgeq's in every edgeq row; `metric` is the "
          f"fixture's task metric ({task.metric}).\n\n" + md_table(rows, cols) + "\n")  # fmt: skip
    write_results(f"peer_ranges_{args.case}", data, md)
    print(md)


if __name__ == "__main__":
    main()
