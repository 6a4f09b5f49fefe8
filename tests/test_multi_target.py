"""One calibration, many targets: statistics shared between targets give exactly the plans of
separate runs, also where a target rewrites the graph before planning (onnx: a quantized copy
of a LayerNorm output; qnn: MatMul as 1x1 Conv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from edgeq.ir.onnx_io import load_model
from edgeq.multi_target import SharedStatistics
from edgeq.pipeline import calibrate_model, prepare_for_quantization
from edgeq.quant.planner import make_spec
from edgeq.quant.recipe import Recipe
from edgeq.targets import load_target
from tests.conftest import F32, make_model

RNG = np.random.default_rng(5)


def transformer_block(path: Path, d: int = 16) -> Path:
    """LayerNorm → MatMul/Relu/MatMul → residual Add → LayerNorm (the LN output feeds both a
    MatMul and the residual, so the onnx target adds a copy; the MatMuls become Convs on qnn)."""
    w1, w2 = (RNG.normal(0, 0.3, (d, d)).astype(np.float32) for _ in range(2))
    b1 = RNG.normal(0, 0.1, d).astype(np.float32)
    g, be = np.ones(d, np.float32), np.zeros(d, np.float32)
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "be"], ["h"], axis=-1, name="ln0"),
        helper.make_node("MatMul", ["h", "w1"], ["m1"], name="fc1"),
        helper.make_node("Add", ["m1", "b1"], ["a1"], name="fc1_bias"),
        helper.make_node("Relu", ["a1"], ["r1"], name="act"),
        helper.make_node("MatMul", ["r1", "w2"], ["m2"], name="fc2"),
        helper.make_node("Add", ["m2", "h"], ["res"], name="residual"),
        helper.make_node("LayerNormalization", ["res", "g", "be"], ["y"], axis=-1, name="ln1"),
    ]
    model = make_model(nodes, [("x", F32, [1, 8, d])], [("y", F32, [1, 8, d])],
                       initializers={"w1": w1, "w2": w2, "b1": b1, "g": g, "be": be})  # fmt: skip
    onnx.save(model, path)
    return path


def same_plan(a, b) -> bool:  # type: ignore[no-untyped-def]
    if set(a.tensors) != set(b.tensors):
        return False
    for name, ta in a.tensors.items():
        tb = b.tensors[name]
        if (ta.dtype, ta.axis, ta.block) != (tb.dtype, tb.axis, tb.block):
            return False
        for key in ("scale", "zero_point", "values"):
            va, vb = getattr(ta, key), getattr(tb, key)
            if (va is None) != (vb is None) or (va is not None and not np.array_equal(va, vb)):
                return False
    return True


def test_shared_statistics_give_the_separate_runs_plans(tmp_path: Path) -> None:
    model = transformer_block(tmp_path / "block.onnx")
    feeds = [{"x": RNG.normal(0, 1, (1, 8, 16)).astype(np.float32)} for _ in range(12)]
    targets = ["onnx", "qnn", "rpi", "ane"]
    base, recipe = load_model(model), Recipe()
    shared = SharedStatistics()
    graphs = {}
    for t in targets:
        graphs[t] = prepare_for_quantization(base.copy(), target=t)
        shared.want(graphs[t], make_spec(graphs[t], recipe, load_target(t)).observers(), t)
    # three different prepared graphs: onnx (LayerNorm copy), qnn (1x1 Convs), rpi = ane
    assert any(n.op_type == "Identity" for n in graphs["onnx"].nodes)
    assert any(n.op_type == "Conv" for n in graphs["qnn"].nodes)
    assert shared.groups() == [["onnx"], ["qnn"], ["rpi", "ane"]]
    for t in targets:
        together = calibrate_model(model, feeds, t, graph=graphs[t], shared=shared, eval_samples=0)
        alone = calibrate_model(model, feeds, t, eval_samples=0)
        assert same_plan(together.plan, alone.plan), t
        assert together.plan.calibration["samples"] == alone.plan.calibration["samples"] == 12
    # one pass per graph, not one per target; rpi's float-island scales (its LayerNorm runs in
    # float: smoothing, branch scales) rewrite its graph from data, so it leaves ane's pass
    assert shared.passes_run == 4
