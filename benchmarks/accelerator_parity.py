"""Diagnosis helper for issue #18: the first tensors (in graph order) whose float or simulated
values differ between JAX's CPU backend and the accelerator, same plan, same samples.

    python -m benchmarks.accelerator_parity MODEL PLAN_DIR DATA_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

from benchmarks.accelerator import CASE_MODELS
from edgeq.ir.interpreter import Interpreter
from edgeq.pipeline import graph_for_plan
from edgeq.quant.plan import QuantPlan
from edgeq.quant.simulate import Simulator
from examples.models import CASES


def main() -> None:
    model, plan_dir, data = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    plan = QuantPlan.load(plan_dir)
    graph = graph_for_plan(CASES[CASE_MODELS[model]].model_path(), plan)
    order = [o for n in graph.nodes for o in n.outputs if o]
    floats = [
        o
        for o in order
        if graph.info(o) is not None and np.issubdtype(graph.info(o).dtype, np.floating)
    ]
    feeds = [{"x": np.load(f)[None]} for f in sorted(data.glob("*.npy"))[-4:]]
    steps = {
        t.name: float(np.min(t.scale))
        for t in plan.tensors.values()
        if t.role == "activation" and t.is_quantized
    }
    accel = jax.default_backend()
    for kind in ("float", "simulated"):
        res = {}
        for where in ("cpu", accel):
            with jax.default_device(jax.devices(where)[0]):
                run = (
                    Interpreter(graph, taps=floats)
                    if kind == "float"
                    else Simulator(graph, plan, taps=floats)
                )
                res[where] = [run(f) for f in feeds]
        rows = []
        for name in floats:
            a = np.concatenate([r[name].ravel() for r in res["cpu"]]).astype(np.float64)
            b = np.concatenate([r[name].ravel() for r in res[accel]]).astype(np.float64)
            rel = float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))
            step = steps.get(name)
            flips = float(np.mean(np.abs(a - b) > 0.5 * step)) if step else None
            node = graph.producers().get(name)
            rows.append(
                {"tensor": name, "op": node.op_type if node else "", "rel": rel, "flips": flips}
            )
        bad = [r for r in rows if r["rel"] > 1e-4 or (r["flips"] or 0) > 1e-3]
        print(kind, "tensors", len(rows), "differing", len(bad))
        for r in bad[:12]:
            print(json.dumps(r))


if __name__ == "__main__":
    main()
