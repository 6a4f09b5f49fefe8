"""ONNX QDQ exporter (targets onnx and qnn): parity with the simulator on onnxruntime, stored
integers equal to the plan's, file format rules, the opset-21 rewrite and the QNN HTP check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from typer.testing import CliRunner

from edgeq.cli import app
from edgeq.errors import EdgeqError
from edgeq.exporters import ExportOptions, get_exporter
from edgeq.exporters.onnx.qdq import OrtRunner, build_model
from edgeq.exporters.onnx.qnn_check import blocking, check_qnn
from edgeq.ir.interpreter import Interpreter
from edgeq.ir.onnx_io import model_to_graph
from edgeq.ir.opset import upgrade_opset
from edgeq.ir.passes import prepare
from edgeq.quant.calibrate import collect_statistics, stack_batches
from edgeq.quant.planner import finalize_plan, make_spec
from edgeq.quant.recipe import LayerConfig, Recipe
from edgeq.quant.simulate import Simulator
from edgeq.targets import load_target
from edgeq.verify import within_step
from tests.conftest import F32, decode_folded_blocks, make_model

runner = CliRunner()
RNG = np.random.default_rng(0)


def _plan(graph, feeds, target="onnx", recipe=None):  # type: ignore[no-untyped-def]
    spec = make_spec(graph, recipe or Recipe(), load_target(target))
    stats = collect_statistics(graph, {n: (n, o) for n, o in spec.observers().items()},
                               stack_batches(feeds, 4))  # fmt: skip
    return finalize_plan(graph, spec, stats.states)


def _convnet(opset: int = 17):  # type: ignore[no-untyped-def]
    """conv → relu → depthwise conv + bias → hardswish → avgpool → flatten → matmul + add → softmax,
    with a residual add and a concat."""
    w1 = RNG.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    b1 = RNG.normal(0, 0.1, 8).astype(np.float32)
    wd = RNG.normal(0, 0.3, (8, 1, 3, 3)).astype(np.float32)
    bd = RNG.normal(0, 0.1, 8).astype(np.float32)
    wf = RNG.normal(0, 0.2, (16 * 4, 10)).astype(np.float32)
    bf = RNG.normal(0, 0.1, 10).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "wd", "bd"], ["c2"], pads=[1, 1, 1, 1], group=8, name="dw"),
        helper.make_node("HardSwish", ["c2"], ["h2"], name="hswish"),
        helper.make_node("Add", ["h2", "r1"], ["res"], name="residual"),
        helper.make_node("Concat", ["res", "r1"], ["cat"], axis=1, name="concat"),
        helper.make_node("AveragePool", ["cat"], ["p"], kernel_shape=[4, 4], strides=[4, 4], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "wf"], ["m"], name="fc"),
        helper.make_node("Add", ["m", "bf"], ["logits"], name="fc_bias"),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1 if opset >= 13 else 1, name="softmax"),
    ]  # fmt: skip
    model = make_model(nodes, [("x", F32, [1, 3, 8, 8])], [("y", F32, [1, 10])],
                       initializers={"w1": w1, "b1": b1, "wd": wd, "bd": bd, "wf": wf, "bf": bf},
                       opset=opset)  # fmt: skip
    return prepare(model_to_graph(model))


def _feeds(n: int, shape=(1, 3, 8, 8)) -> list[dict[str, np.ndarray]]:  # type: ignore[no-untyped-def]
    return [{"x": RNG.normal(0, 1, shape).astype(np.float32)} for _ in range(n)]


def _export(graph, plan, target, tmp_path: Path, name: str = "m.onnx", **kw):  # type: ignore[no-untyped-def]
    exporter = get_exporter(load_target(target).exporter)
    return exporter.export(graph, plan, load_target(target), tmp_path / name, ExportOptions(**kw))


@pytest.mark.parametrize("target", ["onnx", "qnn"])
@pytest.mark.parametrize("optimize", [True, False])
def test_convnet_matches_simulator_on_onnxruntime(
    target: str, optimize: bool, tmp_path: Path
) -> None:
    graph = _convnet()
    plan = _plan(graph, _feeds(16), target)
    art = _export(graph, plan, target, tmp_path)
    run = OrtRunner(art.path, optimize=optimize)
    sim = Simulator(graph, plan)
    out = graph.output_names[0]
    step = float(plan.get(out).scale)  # type: ignore[union-attr, arg-type]
    for feed in _feeds(8):
        assert within_step(run(feed)[out], np.asarray(sim(feed)[out]), step) >= 0.99
    # and the float baseline artifact equals the float graph
    base = _export(graph, None, target, tmp_path, "float.onnx")
    feed = _feeds(1)[0]
    np.testing.assert_allclose(OrtRunner(base.path)(feed)[out], Interpreter(graph)(feed)[out],
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def _stored_integers(model: onnx.ModelProto) -> dict[str, str]:
    """DequantizeLinear input → the initializer that stores it: itself, or the int4 initializer
    a Cast widens to int8 (a Cast between integer types keeps every value)."""
    init = {t.name for t in model.graph.initializer}
    out = {i: i for i in init}
    for n in model.graph.node:
        if n.op_type == "Cast" and n.input[0] in init:
            out[n.output[0]] = n.input[0]
    return out


def _dequantized_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every DequantizeLinear on an initializer (or a Cast of one), evaluated independently in
    numpy."""
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    stored = _stored_integers(model)
    out = {}
    for n in model.graph.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in stored:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        v = init[stored[n.input[0]]].astype(np.int64)
        s = init[n.input[1]].astype(np.float32)
        z = init[n.input[2]].astype(np.int64) if len(n.input) > 2 else np.zeros_like(s, np.int64)
        if s.ndim:
            axis = attrs.get("axis", 1) % v.ndim
            if attrs.get("block_size"):
                s = np.repeat(s, attrs["block_size"], axis=axis)
                z = np.repeat(z, attrs["block_size"], axis=axis)
            else:
                shape = [1] * v.ndim
                shape[axis] = -1
                s, z = s.reshape(shape), z.reshape(shape)
        out[n.output[0]] = ((v - z).astype(np.float32) * s).astype(np.float32)
    out.update(decode_folded_blocks(model))
    return out


@pytest.mark.parametrize(
    "bits,act_bits,granularity",
    [
        (8, 8, None),
        (4, 0, "per_block"),
        (8, 16, None),
        (4, 8, "per_channel"),
        (8, 0, None),
        (4, 0, "per_channel"),
    ],
)
def test_stored_weights_dequantize_exactly_to_the_plan(
    bits: int, act_bits: int, granularity: str | None, tmp_path: Path
) -> None:
    graph = _convnet()
    recipe = Recipe(base=LayerConfig(weight_bits=bits, act_bits=act_bits, granularity=granularity,  # type: ignore[arg-type]
                                     block_size=16 if granularity == "per_block" else None))  # fmt: skip
    plan = _plan(graph, _feeds(8), "onnx", recipe)
    art = _export(graph, plan, "onnx", tmp_path)
    model = onnx.load(art.path)
    assert model.ir_version == 10
    # blocked 4-bit MatMul weights: MatMulNBits only with `matmul_nbits` (test_weight_algorithms.py)
    from edgeq.exporters.onnx.qdq import matmul_nbits_weights

    nbits = matmul_nbits_weights(graph, plan) if load_target("onnx").raw.get("matmul_nbits") else {}
    assert not nbits  # blocked MatMul weights are folded at load by default (targets/onnx.toml)
    domains = [("", 21), *([("com.microsoft", 1)] if nbits else [])]
    assert sorted((o.domain, o.version) for o in model.opset_import) == domains
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["edgeq.plan_hash"] == plan.plan_hash() and meta["edgeq.target"] == "onnx"
    stored = _dequantized_weights(model)
    expected = {
        t.name: t for t in plan.tensors.values()
        if t.role in ("weight", "bias") and t.is_quantized and t.name not in nbits
    }  # fmt: skip
    assert expected and set(expected) == set(stored)
    init_types = {t.name: t.data_type for t in model.graph.initializer}
    # every stored initializer is read by a node: no float weight left beside its 4-bit codes
    read = {i for n in model.graph.node for i in n.input}
    assert set(init_types) <= read, sorted(set(init_types) - read)
    for name, t in expected.items():
        np.testing.assert_array_equal(
            stored[name], t.dequantized().astype(np.float32), err_msg=name
        )
        dq = next(n for n in model.graph.node if n.output[0] == name)
        want = {"int8": onnx.TensorProto.INT8, "int4": onnx.TensorProto.INT4,
                "uint4": onnx.TensorProto.UINT4, "int32": onnx.TensorProto.INT32}[t.dtype]  # fmt: skip
        codes = dq.input[0]  # a folded block decode: Mul(Sub(Cast(codes), …), …)
        while codes not in _stored_integers(model):
            codes = next(n for n in model.graph.node if n.output[0] == codes).input[0]
        assert init_types[_stored_integers(model)[codes]] == want
    if bits == 4:  # int4 packed two per byte: the file is smaller than an int8 one would be
        w = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT4)
        assert len(w.raw_data) == (int(np.prod(w.dims)) + 1) // 2
    # onnxruntime runs it, optimized (blocked weights folded at load) or not
    feed = _feeds(1)[0]
    for optimize in (False, True):
        y = OrtRunner(art.path, optimize=optimize)(feed)["y"]
        ref = np.asarray(Simulator(graph, plan)(feed)["y"])
        assert np.max(np.abs(y - ref)) < (0.02 if optimize else 2e-3)
    if act_bits == 0:  # weight-only: every weight is decoded by ops onnxruntime folds at load
        ops = _optimized_ops(art.path, tmp_path)  # (a DequantizeLinear would run every call)
        assert not {"DequantizeLinear", "Cast", "Sub", "Expand"} & set(ops), ops


def _optimized_ops(path: Path, tmp_path: Path) -> list[str]:
    """The op types of the graph onnxruntime runs after its optimizations (its own dump)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node]


def test_blocked_4bit_conv_weights_are_decoded_by_ops_onnxruntime_folds(tmp_path: Path) -> None:
    """Blocked 4-bit Conv weights (a full-block 3x3 conv, a 1x1 conv whose 40 input channels
    end in a partial block of 8): stored as int4 codes, a float scale and an int4 zero point
    per block (the scale stored as float16), decoded by Cast/Unsqueeze/Expand/Reshape/Slice/
    Sub/Mul — the same values as
    the plan (onnx's reference evaluator on the stored initializers alone) — which
    onnxruntime folds at load (no decode op left in the graph it runs, so no per-call
    decoding) and runs as float convs with exactly those weights (not re-quantized to int8);
    the output matches the simulator and the stored bits are the plan's."""
    from edgeq.algorithms.data_aware import weight_sizes
    from edgeq.algorithms.mixed_precision import Storage, bits_per_weight
    from edgeq.exporters.onnx.qdq import weight_storage

    rng = np.random.default_rng(5)  # its own draws: the module's RNG feeds the other tests
    w1 = rng.normal(0, 0.2, (40, 32, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.2, (24, 40, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2"),
    ]
    from edgeq.pipeline import calibrate_model

    onnx.save(make_model(nodes, [("x", F32, [1, 32, 6, 6])], [("y", F32, [1, 24, 6, 6])],
                         initializers={"w1": w1, "w2": w2}), tmp_path / "two_convs.onnx")  # fmt: skip
    feeds = [{"x": rng.normal(0, 1, (1, 32, 6, 6)).astype(np.float32)} for _ in range(8)]
    recipe = Recipe(base=LayerConfig(weight_bits=4, act_bits=8, granularity="per_block",
                                     method="rtn"), mixed_precision="off")  # fmt: skip
    run = calibrate_model(tmp_path / "two_convs.onnx", feeds, "onnx", recipe, samples=8,
                          report_samples=0)  # fmt: skip
    graph, plan = run.graph, run.plan
    weights = {t.name: t for t in plan.quantized("weight")}
    assert {n: t.block for n, t in weights.items()} == {"w1": 32, "w2": 32}
    art = _export(graph, plan, "onnx", tmp_path)
    model = onnx.load(art.path)
    ops = [n.op_type for n in model.graph.node]
    blocked_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                  and any(a.name == "block_size" for a in n.attribute)]  # fmt: skip
    assert not blocked_dq and ops.count("Expand") == 4 and ops.count("Slice") == 2, ops
    stored = _dequantized_weights(model)
    for name, t in weights.items():
        np.testing.assert_array_equal(stored[name], t.dequantized().astype(np.float32))
    optimized = _optimized_ops(art.path, tmp_path)
    assert not {"Expand", "Unsqueeze", "Slice", "Sub", "Mul", "Cast"} & set(optimized), optimized
    # the layers run float with the plan's weights: onnxruntime did not re-quantize them to
    # per-tensor int8 (its WeightBiasQuantization, which a per-channel input DQ turns off)
    assert optimized.count("Conv") == 2 and "QLinearConv" not in optimized, optimized
    runner, sim = OrtRunner(art.path), Simulator(graph, plan)
    for feed in feeds[:3]:
        ref = np.asarray(sim(feed)["y"])
        step = float(plan.tensors["y"].scale)
        assert within_step(runner(feed)["y"], ref, step) >= 0.99
    found = weight_storage(art.path)
    assert {n: r["elements"] for n, r in found.items()} == {"w1": w1.size, "w2": w2.size}
    rules = load_target("onnx").quant
    storage = Storage.of(rules)  # float16 block scales, partial blocks unpadded
    bpw = sum(r["bits"] for r in found.values()) / (w1.size + w2.size)
    assert bpw == pytest.approx(bits_per_weight(plan, weight_sizes(graph), storage), rel=1e-6)


def test_4bit_per_channel_weights_run_on_integer_kernels(tmp_path: Path) -> None:
    """W4A8 with per-channel int4 weights on the onnx target: stored as int4 (half a byte per
    weight), widened to int8 by a Cast that onnxruntime folds at load, so its QDQ fusion runs
    both convs as QLinearConv and the MatMul on an integer kernel — no float Conv/MatMul (an
    int4 DequantizeLinear before them fuses into nothing and they run in float, slower than
    the float model). Still one step from the simulator, optimized or not."""
    from edgeq.exporters.onnx.qdq import weight_storage

    graph = _convnet()
    recipe = Recipe(base=LayerConfig(weight_bits=4, act_bits=8, granularity="per_channel",
                                     method="rtn"), mixed_precision="off")  # fmt: skip
    plan = _plan(graph, _feeds(16), "onnx", recipe)
    weights = {t.name: t for t in plan.quantized("weight")}
    assert len(weights) == 3 and all(t.dtype == "int4" and not t.block for t in weights.values())
    art = _export(graph, plan, "onnx", tmp_path)
    ops = _optimized_ops(art.path, tmp_path)
    assert ops.count("QLinearConv") == 2 and "Conv" not in ops, ops
    assert {"QLinearMatMul", "QGemm", "MatMulIntegerToFloat"} & set(ops), ops
    assert not {"MatMul", "Gemm", "MatMulNBits", "Cast"} & set(ops), ops
    # bits per weight from the file: 4 per weight plus, per output channel, a float32 scale
    # and an int8 zero point (0, kept: without it a MatMul + bias is not fused into QGemm)
    stored = weight_storage(art.path)
    assert set(stored) == set(weights)
    for name, t in weights.items():
        assert t.values is not None
        want = {"elements": t.values.size, "bits": 4 * t.values.size + 40 * np.size(t.scale)}
        assert stored[name] == want, name
    sim, out = Simulator(graph, plan), graph.output_names[0]
    step = float(plan.get(out).scale)  # type: ignore[union-attr, arg-type]
    for optimize in (True, False):
        run = OrtRunner(art.path, optimize=optimize)
        for feed in _feeds(8):
            assert within_step(run(feed)[out], np.asarray(sim(feed)[out]), step) >= 0.99


def test_upgrade_opset_keeps_the_meaning(tmp_path: Path) -> None:
    """Opset-11 forms (Softmax over a middle axis, attribute axes) rewritten for opset 21."""
    nodes = [
        helper.make_node("Softmax", ["x"], ["s"], axis=1, name="softmax"),  # 2-D coercion
        helper.make_node("ReduceMean", ["s"], ["m"], axes=[2], keepdims=1, name="mean"),
        helper.make_node("Squeeze", ["m"], ["q"], axes=[2], name="squeeze"),
        helper.make_node("Split", ["q"], ["a", "b"], axis=1, split=[1, 2], name="split"),
        helper.make_node("Unsqueeze", ["b"], ["y"], axes=[0], name="unsqueeze"),
    ]
    model = make_model(nodes, [("x", F32, [2, 3, 4])], [("a", F32, None), ("y", F32, None)],
                       opset=11)  # fmt: skip
    graph = model_to_graph(model)
    new = upgrade_opset(prepare(graph))
    feed = {"x": RNG.normal(0, 2, (2, 3, 4)).astype(np.float32)}
    art = _export(new, None, "onnx", tmp_path)
    import onnxruntime as ort

    old = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = dict(zip(["a", "y"], old.run(["a", "y"], feed), strict=True))
    got = OrtRunner(art.path)(feed)
    for k in ("a", "y"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)


# ---- the QNN HTP check ------------------------------------------------------------------------
def test_qnn_check_flags_per_channel_matmul_dynamic_input_and_if(tmp_path: Path) -> None:
    graph = _convnet()
    plan = _plan(graph, _feeds(8), "onnx")  # the onnx profile puts per-channel scales on MatMul
    model = build_model(graph, plan, load_target("onnx"))
    found = check_qnn(model)
    assert any(v.op == "MatMul" and "per-channel" in v.reason for v in found)
    assert not any("dynamic" in v.reason for v in found)
    # a dynamic input and an If node
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", F32, None)])  # fmt: skip
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", F32, None)])  # fmt: skip
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["r"], keepdims=0, name="sum"),
        helper.make_node("Greater", ["r", "zero"], ["c"], name="gt"),
        helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="branch"),
    ]
    dyn = make_model(nodes, [("x", F32, ["batch", 4])], [("y", F32, None)],
                     initializers={"zero": np.array(0, np.float32)})  # fmt: skip
    found = check_qnn(dyn)
    assert any(v.op == "If" and v.node == "branch" and "control flow" in v.reason for v in found)
    assert any(v.node == "x" and "dynamic shape" in v.reason for v in found)
    assert any(v.op == "ReduceSum" and "not quantized" in v.reason for v in found)


def test_qnn_export_is_htp_clean_and_refuses_fallback_unless_allowed(tmp_path: Path) -> None:
    graph = _convnet()
    plan = _plan(graph, _feeds(8), "qnn")
    art = _export(graph, plan, "qnn", tmp_path)
    assert art.checks["qnn"]["htp_ready"], art.checks
    # an op the QNN EP has no builder for (Softplus) must not be written silently
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Softplus", ["c"], ["y"], name="softplus")]  # fmt: skip
    model = make_model(nodes, [("x", F32, [1, 3, 8, 8])], [("y", F32, [1, 4, 8, 8])],
                       initializers={"w": RNG.normal(0, 1, (4, 3, 1, 1)).astype(np.float32)})  # fmt: skip
    g2 = prepare(model_to_graph(model))
    p2 = _plan(g2, _feeds(4), "qnn")
    with pytest.raises(EdgeqError, match=r"would leave the QNN HTP.*Softplus"):
        _export(g2, p2, "qnn", tmp_path, "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()
    ok = _export(g2, p2, "qnn", tmp_path, "fallback.onnx", allow_fallback=True)
    assert any("Softplus" in n for n in ok.notes)


# ---- end to end on a real model, through the CLI ----------------------------------------------
@pytest.mark.slow
def test_cli_export_cls_for_qnn_and_check(cls_calib: Path, cls_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", str(cls_model), "--target", "qnn", "--calib", str(cls_calib),
                                 "--input-shape", "x=1,3,48,192", "--calib-samples", "16",
                                 "--eval-samples", "4", "--runs", "3", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    import json

    rep = json.loads((out / "export_report.json").read_text())
    row = next(iter(rep["outputs"].values()))
    assert row["vs_simulator"]["within_one_step"] >= 0.99
    assert rep["evaluation"]["held_out"] and rep["evaluation"]["samples"] == 4
    assert rep["artifact"]["checks"]["qnn"]["htp_ready"]
    assert rep["artifact"]["size_ratio"] < 0.6  # int8 weights (the classifier is tiny)
    assert {p.name for p in out.iterdir()} == {"model.onnx", "plan", "export_report.json",
                                               "export_report.md", "export_report.html",
                                               "export.log", ".edgeq-output.json"}  # fmt: skip
    assert rep["verdict"]["status"] == "PASS" and rep["task"]["name"] == "classify"
    check = runner.invoke(app, ["check", str(out / "model.onnx"), "--target", "qnn"])
    assert check.exit_code == 0 and "every node can run on the QNN HTP" in check.output
    float_check = runner.invoke(app, ["check", str(cls_model), "--target", "qnn"])
    assert float_check.exit_code == 1 and "not quantized" in float_check.output
    # a plan for another target is refused, nothing written
    again = runner.invoke(app, ["export", str(cls_model), "--target", "onnx", "--plan",
                                str(out / "plan"), "-o", str(tmp_path / "o2")])  # fmt: skip
    assert again.exit_code == 2 and "made for target 'qnn'" in again.output
    assert not (tmp_path / "o2").exists()


def test_export_without_data_or_plan_is_refused(cls_model: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(cls_model), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--calib" in result.output
    assert not (tmp_path / "o").exists()


def test_blocking_ignores_warnings() -> None:
    from edgeq.exporters.onnx.qnn_check import Violation

    vs = [Violation("a", "Q", "int8", "warning"), Violation("b", "If", "control flow")]
    assert [v.node for v in blocking(vs)] == ["b"]


@pytest.mark.parametrize("bits", [8, 4])
def test_transformer_block_runs_integer_matmuls_on_onnxruntime(bits: int, tmp_path: Path) -> None:
    """onnx target: the residual stream stays float, the MatMuls read an 8-bit copy of the
    LayerNorm output and take an int32 bias, so onnxruntime runs every MatMul as an integer
    kernel (QGemm / QLinearMatMul) — and still matches the simulator. Per-channel 4-bit
    weights (int4 widened by a Cast, no zero point stored) take the same kernels."""
    import onnxruntime as ort

    from edgeq.pipeline import prepare_for_quantization

    d = 32
    w1 = RNG.normal(0, 0.2, (d, d)).astype(np.float32)
    w2 = RNG.normal(0, 0.2, (d, d)).astype(np.float32)
    b1, b2 = (RNG.normal(0, 0.1, d).astype(np.float32) for _ in range(2))
    g1, be1 = np.ones(d, np.float32), np.zeros(d, np.float32)
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g1", "be1"], ["h"], axis=-1, name="ln0"),
        helper.make_node("MatMul", ["h", "w1"], ["m1"], name="fc1"),
        helper.make_node("Add", ["m1", "b1"], ["a1"], name="fc1_bias"),
        helper.make_node("Relu", ["a1"], ["r1"], name="act"),
        helper.make_node("MatMul", ["r1", "w2"], ["m2"], name="fc2"),
        helper.make_node("Add", ["m2", "b2"], ["a2"], name="fc2_bias"),
        helper.make_node("Add", ["a2", "h"], ["res"], name="residual"),
        helper.make_node("LayerNormalization", ["res", "g1", "be1"], ["y"], axis=-1, name="ln1"),
    ]
    model = make_model(nodes, [("x", F32, [1, 16, d])], [("y", F32, [1, 16, d])],
                       initializers={"w1": w1, "w2": w2, "b1": b1, "b2": b2, "g1": g1, "be1": be1})  # fmt: skip
    graph = prepare_for_quantization(model_to_graph(model), target="onnx")
    assert any(n.op_type == "Identity" and n.inputs == ["h"] for n in graph.nodes)
    feeds = _feeds(12, (1, 16, d))
    recipe = Recipe(base=LayerConfig(weight_bits=bits, act_bits=8, granularity="per_channel",
                                     method="rtn"), mixed_precision="off")  # fmt: skip
    plan = _plan(graph, feeds, "onnx", recipe)
    assert {t.dtype for t in plan.quantized("weight")} == {f"int{bits}"}
    assert plan.get("h").role == "float" and plan.get("res").role == "float"  # type: ignore[union-attr]
    copy = next(n.outputs[0] for n in graph.nodes if n.op_type == "Identity")
    assert plan.get(copy).dtype == "uint8"  # type: ignore[union-attr]
    assert plan.get("b1").dtype == "int32" and plan.get("b2").dtype == "int32"  # type: ignore[union-attr]
    art = _export(graph, plan, "onnx", tmp_path)
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(art.path), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node]
    assert ops.count("QGemm") + ops.count("QLinearMatMul") == 2, ops
    assert not {"MatMul", "Gemm", "MatMulNBits", "Cast"} & set(ops), ops
    sim, run = Simulator(graph, plan), OrtRunner(art.path)
    for feed in feeds[:4]:
        np.testing.assert_allclose(run(feed)["y"], np.asarray(sim(feed)["y"]), atol=2e-3)


def test_qnn_rewrites_matmul_as_1x1_conv_for_per_channel_weights(tmp_path: Path) -> None:
    """The HTP takes per-channel weights only on Conv: on the qnn target a constant-weight
    MatMul becomes a 1x1 Conv (same float math), so its weight gets one scale per channel."""
    from edgeq.pipeline import prepare_for_quantization

    d, n = 16, 24
    w = RNG.normal(0, 0.2, (d, n)).astype(np.float32) * np.linspace(0.05, 3, n, dtype=np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="fc"),
             helper.make_node("Relu", ["m"], ["y"], name="act")]  # fmt: skip
    for shape in ([1, 8, d], [1, d]):
        model = make_model(nodes, [("x", F32, shape)], [("y", F32, [*shape[:-1], n])],
                           initializers={"w": w})  # fmt: skip
        plain = prepare(model_to_graph(model))
        graph = prepare_for_quantization(model_to_graph(model), target="qnn")
        assert "MatMul" not in [x.op_type for x in graph.nodes]
        feed = _feeds(1, tuple(shape))[0]
        np.testing.assert_allclose(Interpreter(graph)(feed)["y"], Interpreter(plain)(feed)["y"],
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
        plan = _plan(graph, _feeds(8, tuple(shape)), "qnn")
        weights = [
            t for t in plan.quantized("weight") if t.values is not None and t.values.ndim == 4
        ]
        assert len(weights) == 1 and weights[0].axis == 0 and np.size(weights[0].scale) == n
        art = _export(graph, plan, "qnn", tmp_path, f"m{len(shape)}.onnx")
        assert art.checks["qnn"]["htp_ready"], art.checks
        sim, run = Simulator(graph, plan), OrtRunner(art.path)
        step = float(plan.get("y").scale)  # type: ignore[union-attr, arg-type]
        for f in _feeds(4, tuple(shape)):
            assert within_step(run(f)["y"], np.asarray(sim(f)["y"]), step) >= 0.99


@pytest.mark.parametrize(
    "bits,act_bits,granularity,rewritten",
    [(None, None, None, True), (4, 8, None, True), (4, 16, None, False), (8, 16, "per_block", False),
     (4, 16, "per_channel", True)],
)  # fmt: skip
def test_qnn_keeps_matmul_where_blocks_are_asked_for(
    bits, act_bits, granularity, rewritten
) -> None:  # type: ignore[no-untyped-def]
    """Blocks (W4A16) are allowed on MatMul, not on Conv: the 1x1-Conv rewrite is skipped then."""
    from edgeq.pipeline import prepare_for_quantization

    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")]
    model = make_model(nodes, [("x", F32, [1, 8, 32])], [("y", F32, [1, 8, 16])],
                       initializers={"w": RNG.normal(size=(32, 16)).astype(np.float32)})  # fmt: skip
    recipe = Recipe(base=LayerConfig(weight_bits=bits, act_bits=act_bits, granularity=granularity))
    graph = prepare_for_quantization(model_to_graph(model), target="qnn", recipe=recipe)
    assert ("Conv" in [n.op_type for n in graph.nodes]) == rewritten


def test_qnn_lstm_whose_sequence_output_nothing_reads_stays_on_the_htp(tmp_path: Path) -> None:
    """Silero VAD's streaming decoder reads only an LSTM's last state (Y_h). Its `Y` was left
    named, leading nowhere: float there (the HTP check refused the export as a float output
    leaving the HTP), a Q/DQ pair that nothing reads here. The exporter omits such optional
    outputs."""
    hidden, feat, seq = 8, 6, 5
    w = RNG.normal(0, 0.4, (1, 4 * hidden, feat)).astype(np.float32)
    r = RNG.normal(0, 0.4, (1, 4 * hidden, hidden)).astype(np.float32)
    b = RNG.normal(0, 0.1, (1, 8 * hidden)).astype(np.float32)
    nodes = [
        helper.make_node(
            "LSTM", ["x", "w", "r", "b"], ["y", "y_h"], hidden_size=hidden, name="rnn"
        ),
        helper.make_node("Relu", ["y_h"], ["out"], name="relu"),
    ]
    model = make_model(nodes, [("x", F32, [seq, 1, feat])], [("out", F32, [1, 1, hidden])],
                       initializers={"w": w, "r": r, "b": b})  # fmt: skip
    graph = prepare(model_to_graph(model))
    feeds = [{"x": RNG.normal(0, 1, (seq, 1, feat)).astype(np.float32)} for _ in range(8)]
    plan = _plan(graph, feeds, "qnn")
    art = _export(graph, plan, "qnn", tmp_path)  # raised "would leave the QNN HTP" before
    written = onnx.load(art.path)
    lstm = next(n for n in written.graph.node if n.op_type == "LSTM")
    assert lstm.output[0] == "" and lstm.output[1]
    assert not blocking(check_qnn(written))
    y = OrtRunner(art.path)(feeds[0])["out"]
    ref = np.asarray(Simulator(graph, plan)(feeds[0])["out"])
    assert within_step(y, ref, float(plan.get("out").scale)) >= 0.99
