"""TFLite exporter: tiny hand-built graphs calibrated for `rpi`, exported, run in LiteRT with
XNNPACK and with the reference kernels, compared with the simulator (the definition of
correct); weights in the file equal the plan's integers; unsupported ops name the node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from ai_edge_litert import schema_py_generated as fb
from onnx import helper

from edgeq.errors import EdgeqError
from edgeq.exporters import ExportOptions, get_exporter
from edgeq.exporters.tflite.builder import TYPE_NAMES, builtin_name, read_model
from edgeq.ir.graph import Graph
from edgeq.ir.interpreter import Interpreter
from edgeq.ir.onnx_io import model_to_graph
from edgeq.pipeline import prepare_for_quantization
from edgeq.quant.calibrate import collect_statistics, stack_batches
from edgeq.quant.plan import QuantPlan
from edgeq.quant.planner import finalize_plan, make_spec
from edgeq.quant.recipe import LayerConfig, Recipe
from edgeq.quant.simulate import Simulator
from edgeq.targets import load_target
from edgeq.verify import output_step, within_step
from tests.conftest import F32, make_model

RNG = np.random.default_rng(0)


def _graph(model: onnx.ModelProto) -> Graph:
    return prepare_for_quantization(model_to_graph(model))


def _feeds(graph: Graph, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{v.name: rng.normal(0, 1, v.shape).astype(np.float32) for v in graph.inputs}
            for _ in range(n)]  # fmt: skip


def _plan(graph: Graph, target: str = "rpi") -> QuantPlan:
    spec = make_spec(graph, Recipe(base=LayerConfig(act_observer="minmax")), load_target(target))
    observers = spec.observers()
    stats = collect_statistics(graph, {n: (n, o) for n, o in observers.items()},
                               stack_batches(_feeds(graph, 16, 1), 8))  # fmt: skip
    return finalize_plan(graph, spec, stats.states)


def _export(graph: Graph, plan: QuantPlan | None, path: Path, target: str = "rpi") -> Path:
    exporter = get_exporter("tflite")
    exporter.export(graph, plan, load_target(target), path, ExportOptions())
    return path


def _parity(graph: Graph, plan: QuantPlan, path: Path,
            feeds: list[dict[str, np.ndarray]] | None = None) -> dict[str, float]:  # fmt: skip
    """Fraction of output elements within one step of the simulator, per kernel set."""
    exporter = get_exporter("tflite")
    sim = Simulator(graph, plan)
    feeds = feeds if feeds is not None else _feeds(graph, 4, 7)
    ref = [sim(f) for f in feeds]
    result = {}
    for xnn in (True, False):
        run = exporter.open(path, use_xnnpack=xnn)
        outs = [run(f) for f in feeds]
        worst = 1.0
        for name in graph.output_names:
            sims = [np.asarray(r[name]) for r in ref]
            step, _ = output_step(plan, name, sims)
            got = np.concatenate([o[name].ravel() for o in outs])
            want = np.concatenate([s.ravel() for s in sims])
            worst = min(worst, within_step(got, want, step))
        result["xnnpack" if xnn else "reference"] = worst
    return result


def _conv_relu() -> onnx.ModelProto:
    w = RNG.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    b = RNG.normal(0, 0.1, 8).astype(np.float32)
    w2 = RNG.normal(0, 0.3, (8, 1, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["d"], pads=[1, 1, 1, 1], group=8, name="dw"),
        helper.make_node("HardSwish", ["d"], ["y"], name="hswish"),
    ]  # fmt: skip
    return make_model(nodes, [("x", F32, [1, 3, 16, 16])], [("y", F32, [1, 8, 8, 8])],
                      initializers={"w": w, "b": b, "w2": w2})  # fmt: skip


def _se_block() -> onnx.ModelProto:
    """Pooling, squeeze-excite (HardSigmoid x Mul), Concat, Resize, Sigmoid."""
    w = RNG.normal(0, 0.3, (4, 4, 1, 1)).astype(np.float32)
    scales = np.asarray([1, 1, 2, 2], np.float32)
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="maxpool"),
        helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
        helper.make_node("Conv", ["g", "w"], ["gc"], name="se_conv"),
        helper.make_node("HardSigmoid", ["gc"], ["h"], alpha=0.2, beta=0.5, name="hsig"),
        helper.make_node("Mul", ["p", "h"], ["m"], name="scale"),
        helper.make_node("AveragePool", ["m"], ["a"], kernel_shape=[2, 2], strides=[2, 2], name="avgpool"),
        helper.make_node("Resize", ["a", "", "scales"], ["u"], mode="nearest", name="up"),
        helper.make_node("Concat", ["u", "m"], ["cat"], axis=1, name="cat"),
        helper.make_node("Sigmoid", ["cat"], ["y"], name="sigmoid"),
    ]  # fmt: skip
    return make_model(nodes, [("x", F32, [1, 4, 8, 12])], [("y", F32, [1, 8, 4, 6])],
                      initializers={"w": w, "scales": scales})  # fmt: skip


def _matmul_softmax() -> onnx.ModelProto:
    """Linear (MatMul + Add → one FULLY_CONNECTED), attention-like batch matmul, Softmax."""
    w = RNG.normal(0, 0.3, (16, 16)).astype(np.float32)
    b = RNG.normal(0, 0.1, 16).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="proj"),
        helper.make_node("Add", ["mm", "b"], ["lin"], name="proj_bias"),
        helper.make_node("Transpose", ["lin"], ["t"], perm=[0, 2, 1], name="kt"),
        helper.make_node("MatMul", ["x", "t"], ["s"], name="scores"),
        helper.make_node("Softmax", ["s"], ["y"], axis=-1, name="softmax"),
    ]  # fmt: skip
    return make_model(nodes, [("x", F32, [1, 6, 16])], [("y", F32, [1, 6, 6])],
                      initializers={"w": w, "b": b})  # fmt: skip


@pytest.mark.parametrize("build", [_conv_relu, _se_block, _matmul_softmax])
def test_tiny_graphs_match_the_simulator(build, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    graph = _graph(build())
    plan = _plan(graph)
    path = _export(graph, plan, tmp_path / "m.tflite")
    parity = _parity(graph, plan, path)
    assert parity["xnnpack"] >= 0.99, parity
    assert parity["reference"] >= 0.99, parity


@pytest.mark.parametrize("build", [_conv_relu, _se_block, _matmul_softmax])
def test_float_baseline_matches_float(build, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    graph = _graph(build())
    path = _export(graph, None, tmp_path / "f.tflite")
    run = get_exporter("tflite").open(path)
    ref = Interpreter(graph)
    for feed in _feeds(graph, 2, 3):
        got, want = run(feed), ref(feed)
        for name in graph.output_names:
            np.testing.assert_allclose(got[name], np.asarray(want[name]), rtol=1e-4, atol=1e-4)


def _tensor_data(model, tensor):  # type: ignore[no-untyped-def]
    raw = model.buffers[tensor.buffer].data
    dtype = {"int8": np.int8, "int32": np.int32, "float32": np.float32}[TYPE_NAMES[tensor.type]]
    return np.frombuffer(bytes(np.asarray(raw, np.uint8)), dtype).reshape(tensor.shape)


def test_weights_in_the_file_are_the_plans_integers(tmp_path: Path) -> None:
    graph = _graph(_conv_relu())
    plan = _plan(graph)
    path = _export(graph, plan, tmp_path / "m.tflite")
    data = path.read_bytes()
    assert data[4:8] == b"TFL3"
    model = read_model(data)
    assert model.buffers[0].data is None  # the empty sentinel
    sub = model.subgraphs[0]
    seen = {}
    for op in sub.operators:
        name = builtin_name(model.operatorCodes[op.opcodeIndex].builtinCode)
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w, b = sub.tensors[op.inputs[1]], sub.tensors[op.inputs[2]]
            seen[name] = (w, b)
    # Conv OIHW -> OHWI (channel axis 0); depthwise [O,1,kh,kw] -> [1,kh,kw,O] (axis 3)
    for kind, wname, layout, axis in (("CONV_2D", "w", (0, 2, 3, 1), 0),
                                      ("DEPTHWISE_CONV_2D", "w2", (1, 2, 3, 0), 3)):  # fmt: skip
        w, b = seen[kind]
        t = plan.tensors[wname]
        assert TYPE_NAMES[w.type] == "int8" and TYPE_NAMES[b.type] == "int32"
        np.testing.assert_array_equal(_tensor_data(model, w), t.values.transpose(layout))
        assert w.quantization.quantizedDimension == axis
        np.testing.assert_array_equal(np.asarray(w.quantization.scale, np.float32), t.scale)
        assert not np.any(np.asarray(w.quantization.zeroPoint))
    bias = plan.tensors["b"]
    np.testing.assert_array_equal(_tensor_data(model, seen["CONV_2D"][1]), bias.values)
    # every buffer with data starts on a 16-byte boundary of the file
    raw_model = fb.Model.GetRootAsModel(data, 0)
    starts = []
    for i in range(raw_model.BuffersLength()):
        buf = raw_model.Buffers(i)
        if buf.DataLength():
            starts.append(buf._tab.Vector(buf._tab.Offset(4)))
    assert len(starts) >= 4 and all(s % 16 == 0 for s in starts), starts


def test_fully_connected_weights_and_bias(tmp_path: Path) -> None:
    graph = _graph(_matmul_softmax())
    plan = _plan(graph)
    model = read_model(_export(graph, plan, tmp_path / "m.tflite").read_bytes())
    sub = model.subgraphs[0]
    fc = next(op for op in sub.operators
              if builtin_name(model.operatorCodes[op.opcodeIndex].builtinCode) == "FULLY_CONNECTED")  # fmt: skip
    assert model.operatorCodes[fc.opcodeIndex].version >= 4
    w, b = sub.tensors[fc.inputs[1]], sub.tensors[fc.inputs[2]]
    np.testing.assert_array_equal(_tensor_data(model, w), plan.tensors["w"].values.T)
    assert w.quantization.quantizedDimension == 0
    np.testing.assert_array_equal(_tensor_data(model, b), plan.tensors["b"].values)
    s_in = float(plan.tensors["x"].scale)
    np.testing.assert_allclose(b.quantization.scale, s_in * plan.tensors["w"].scale, rtol=1e-6)


def test_unsupported_op_names_the_node(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Erf", ["r"], ["y"], name="my_erf")]  # fmt: skip
    graph = _graph(make_model(nodes, [("x", F32, [1, 8])], [("y", F32, [1, 8])]))
    out = tmp_path / "m.tflite"
    with pytest.raises(EdgeqError, match=r"my_erf.*Erf"):
        _export(graph, None, out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_plan_that_breaks_a_tflite_rule_is_refused(tmp_path: Path) -> None:
    graph = _graph(_se_block())
    plan = _plan(graph)
    t = plan.tensors["y"]  # LOGISTIC output must be (1/256, -128)
    plan.tensors["y"] = type(t)(**{**t.__dict__, "scale": np.asarray(0.01, np.float32)})
    with pytest.raises(EdgeqError, match=r"sigmoid.*LOGISTIC.*fixed output"):
        _export(graph, plan, tmp_path / "m.tflite")


def test_tflm_refuses_ops_outside_its_list(tmp_path: Path) -> None:
    # ReduceMin lowers to REDUCE_MIN, a LiteRT builtin TFLite Micro has no kernel for
    # (targets/tflm.toml micro_kernels): the rpi export works, the tflm export refuses it
    nodes = [helper.make_node("ReduceMin", ["x"], ["y"], axes=[2, 3], keepdims=1, name="rmin")]
    model = make_model(nodes, [("x", F32, [1, 4, 8, 8])], [("y", F32, [1, 4, 1, 1])],
                       opset=17)  # fmt: skip
    graph = _graph(model)
    plan = _plan(graph, "rpi")
    # REDUCE_MIN needs one scale in and out (shared_scale_ops): the rpi artifact matches the sim
    assert plan.tensors["x"].scale == plan.tensors["y"].scale
    path = _export(graph, plan, tmp_path / "rpi.tflite")
    assert min(_parity(graph, plan, path).values()) >= 0.99
    with pytest.raises(EdgeqError, match=r"REDUCE_MIN.*TFLite Micro has no kernel"):
        _export(graph, _plan(graph, "tflm"), tmp_path / "m.tflite", target="tflm")
    graph = _graph(_conv_relu())
    path = _export(graph, _plan(graph, "tflm"), tmp_path / "ok.tflite", target="tflm")
    assert path.is_file()


def test_ppocr_cls_end_to_end(tmp_path: Path) -> None:
    from edgeq.export import export_model
    from examples.models import CASES

    case = CASES["ppocr-cls"]
    feeds = case.make_feeds(20, "calib")
    result = export_model(case.model_path(), "rpi", tmp_path / "out", calib=feeds,
                          input_shapes=case.input_shapes, samples=16, eval_samples=4, runs=3)  # fmt: skip
    report = result.report
    assert result.artifact.is_file() and report["artifact"]["size_ratio"] < 0.5
    for row in report["outputs"].values():
        assert row["vs_simulator"]["within_one_step"] >= 0.99, row
    runner = get_exporter("tflite").open(result.artifact, use_xnnpack=False)
    graph_in = case.make_feeds(1, "eval")[0]
    assert all(np.isfinite(v).all() for v in runner(graph_in).values())


def test_batchnorm_and_conv_transpose(tmp_path: Path) -> None:
    c = 4
    w = RNG.normal(0, 0.3, (c, c, 2, 2)).astype(np.float32)
    bn = [
        RNG.uniform(0.5, 1.5, c),
        RNG.normal(0, 0.2, c),
        RNG.normal(0, 0.2, c),
        RNG.uniform(0.5, 2, c),
    ]
    inits = {
        "w": w,
        **{k: v.astype(np.float32) for k, v in zip(("g", "be", "mu", "var"), bn, strict=True)},
    }
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["u"], strides=[2, 2], name="up"),
        helper.make_node("BatchNormalization", ["u", "g", "be", "mu", "var"], ["y"], name="bn"),
    ]  # fmt: skip
    graph = _graph(make_model(nodes, [("x", F32, [1, c, 5, 6])], [("y", F32, [1, c, 10, 12])],
                              initializers=inits))  # fmt: skip
    plan = _plan(graph)
    parity = _parity(graph, plan, _export(graph, plan, tmp_path / "m.tflite"))
    assert parity["xnnpack"] >= 0.99 and parity["reference"] >= 0.99, parity
