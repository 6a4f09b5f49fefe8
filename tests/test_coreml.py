"""Core ML exporter (`--target ane`): tiny hand-built graphs exported with --bits 8 / --bits 4 /
W8A8, the saved .mlpackage read back (weights exact vs the plan, op sequence vs the graph) and
its program run by the numpy MIL evaluator against the simulator; one real model end to end.

Core ML's predict needs macOS: here the saved program itself is what runs (see exporters/coreml/evaluate.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgeq.errors import EdgeqError
from edgeq.exporters import ExportOptions, get_exporter
from edgeq.exporters.coreml.build import requant_is_identity
from edgeq.ir.graph import Graph
from edgeq.ir.interpreter import Interpreter
from edgeq.ir.onnx_io import model_to_graph
from edgeq.ir.passes import prepare
from edgeq.quant.calibrate import collect_statistics, stack_batches
from edgeq.quant.plan import QuantPlan
from edgeq.quant.planner import finalize_plan, make_spec
from edgeq.quant.recipe import LayerConfig, Recipe
from edgeq.quant.simulate import Simulator
from edgeq.targets import load_target
from tests.conftest import F32, I64, make_model

ct = pytest.importorskip("coremltools")
EXPORTER = get_exporter("coreml")
PROFILE = load_target("ane")
RNG = np.random.default_rng(0)


def _w(*shape: int, s: float = 0.3) -> np.ndarray:
    return (RNG.normal(size=shape) * s).astype(np.float32)


def _plan(graph: Graph, feeds: list[dict[str, np.ndarray]], bits: int,
          act_bits: int | None = None) -> QuantPlan:  # fmt: skip
    recipe = Recipe(base=LayerConfig(weight_bits=bits, act_bits=act_bits, act_observer="minmax"))
    spec = make_spec(graph, recipe, PROFILE)
    stats = collect_statistics(graph, {n: (n, o) for n, o in spec.observers().items()},
                               stack_batches(feeds, 4))  # fmt: skip
    return finalize_plan(graph, spec, stats.states)


def _export(graph: Graph, plan: QuantPlan | None, out: Path) -> tuple[Path, dict]:  # type: ignore[type-arg]
    art = EXPORTER.export(graph, plan, PROFILE, out, ExportOptions())
    assert art.path == out and out.is_dir() and art.format == "mlpackage"
    return out, art.checks


def _close_to(out: np.ndarray, ref: np.ndarray, rel: float) -> None:
    """fp16 intermediates: errors scale with the output's magnitude."""
    scale = float(np.max(np.abs(ref))) or 1.0
    assert float(np.max(np.abs(out - ref))) <= rel * scale, float(np.max(np.abs(out - ref)))


# ---- tiny graphs -------------------------------------------------------------------------------
def _cnn() -> Graph:
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("HardSwish", ["c"], ["h"], name="hs"),
        helper.make_node(
            "Conv",
            ["h", "W2"],
            ["c2"],
            group=16,
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[2, 2],
            name="dw",
        ),
        helper.make_node("Relu", ["c2"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["gap"], name="gap"),
        helper.make_node("HardSigmoid", ["gap"], ["se"], alpha=0.2, beta=0.5, name="hsig"),
        helper.make_node("Mul", ["r", "se"], ["m"], name="mul"),
        helper.make_node(
            "AveragePool", ["m"], ["ap"], kernel_shape=[2, 1], strides=[2, 1], name="ap"
        ),
        helper.make_node("MaxPool", ["m"], ["mp"], kernel_shape=[2, 1], strides=[2, 1], name="mp"),
        helper.make_node("Concat", ["ap", "mp"], ["cat"], axis=1, name="cat"),
        helper.make_node("Sigmoid", ["cat"], ["sg"], name="sig"),
        helper.make_node("Reshape", ["sg", "shp"], ["flat"], name="flat"),
        helper.make_node("MatMul", ["flat", "M"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "b"], ["logits"], name="fc_bias"),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1, name="softmax"),
    ]
    inits = {"W": _w(16, 3, 3, 3), "B": _w(16, s=0.1), "W2": _w(16, 1, 3, 3),
             "shp": np.array([1, 32 * 2 * 4], np.int64), "M": _w(256, 10, s=0.1), "b": _w(10)}  # fmt: skip
    model = make_model(nodes, [("x", F32, [1, 3, 8, 8])], [("y", F32, [1, 10])], initializers=inits)
    return prepare(model_to_graph(model))


def _transformer() -> Graph:
    """LayerNorm → linear (+bias) → Gelu → linear, attention-like matmul/softmax/slice."""
    d = 64
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "be"], ["ln"], axis=-1, epsilon=1e-5, name="ln"),
        helper.make_node("MatMul", ["ln", "Wq"], ["q0"], name="q"),
        helper.make_node("Add", ["q0", "bq"], ["q"], name="q_bias"),
        helper.make_node("Gelu", ["q"], ["act"], name="gelu"),
        helper.make_node("MatMul", ["act", "Wo"], ["o"], name="o"),
        helper.make_node("Transpose", ["o"], ["oT"], perm=[0, 2, 1], name="tr"),
        helper.make_node("MatMul", ["o", "oT"], ["att"], name="scores"),
        helper.make_node("Div", ["att", "sqrt_d"], ["att_s"], name="scale"),
        helper.make_node("Softmax", ["att_s"], ["p"], axis=-1, name="sm"),
        helper.make_node("MatMul", ["p", "o"], ["ctx"], name="ctx"),
        helper.make_node("Add", ["ctx", "x"], ["res"], name="residual"),
        helper.make_node("Slice", ["res", "st", "en", "ax"], ["sl"], name="slice"),
        helper.make_node("Squeeze", ["sl", "ax"], ["y"], name="squeeze"),
    ]  # fmt: skip
    inits = {"g": 1 + _w(d, s=0.1), "be": _w(d, s=0.1), "Wq": _w(d, 2 * d, s=0.2),
             "bq": _w(2 * d, s=0.1), "Wo": _w(2 * d, d, s=0.1), "sqrt_d": np.array(8.0, np.float32),
             "st": np.array([1], np.int64), "en": np.array([2], np.int64),
             "ax": np.array([1], np.int64)}  # fmt: skip
    model = make_model(nodes, [("x", F32, [1, 12, d])], [("y", F32, [1, d])], initializers=inits)
    return prepare(model_to_graph(model))


def _embedding() -> Graph:
    """Token embedding (Gather) + mask path (Unsqueeze/Cast/Expand) + mean pooling + L2 norm."""
    v, d, s = 96, 64, 8
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["emb"], name="embed"),
        helper.make_node("Unsqueeze", ["mask", "axm"], ["m3"], name="unsq"),
        helper.make_node("Cast", ["m3"], ["mf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Expand", ["mf", "eshape"], ["me"], name="expand"),
        helper.make_node("Mul", ["emb", "me"], ["masked"], name="mask_mul"),
        helper.make_node("ReduceSum", ["masked", "ax1"], ["summed"], keepdims=0, name="sum"),
        helper.make_node("ReduceSum", ["me", "ax1"], ["count"], keepdims=0, name="count"),
        helper.make_node("Clip", ["count", "tiny"], ["countc"], name="clip"),
        helper.make_node("Div", ["summed", "countc"], ["mean"], name="mean"),
        helper.make_node("ReduceL2", ["mean"], ["norm"], axes=[1], keepdims=1, name="l2"),
        helper.make_node("Div", ["mean", "norm"], ["y"], name="normalize"),
    ]  # fmt: skip
    inits = {"E": _w(v, d), "axm": np.array([2], np.int64), "eshape": np.array([1, s, d], np.int64),
             "ax1": np.array([1], np.int64), "tiny": np.array(1e-4, np.float32)}  # fmt: skip
    model = make_model(nodes, [("ids", I64, [1, s]), ("mask", I64, [1, s])], [("y", F32, [1, d])],
                       initializers=inits, opset=13)  # fmt: skip
    return prepare(model_to_graph(model))


def _feeds(graph: Graph, n: int = 4) -> list[dict[str, np.ndarray]]:
    out = []
    for _ in range(n):
        f: dict[str, np.ndarray] = {}
        for v in graph.inputs:
            shape = tuple(int(d) for d in v.shape)  # type: ignore[union-attr]
            if np.issubdtype(v.dtype, np.floating):
                f[v.name] = RNG.normal(size=shape).astype(np.float32)
            elif v.name == "mask":
                f[v.name] = (np.arange(shape[1]) < RNG.integers(2, shape[1])).astype(np.int64)[None]
            else:
                f[v.name] = RNG.integers(0, 96, size=shape).astype(np.int64)
        out.append(f)
    return out


GRAPHS = {"cnn": _cnn, "transformer": _transformer, "embedding": _embedding}


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_weight_only_program_matches_simulator(name: str, bits: int, tmp_path: Path) -> None:
    graph = GRAPHS[name]()
    feeds = _feeds(graph)
    plan = _plan(graph, feeds, bits)
    path, checks = _export(graph, plan, tmp_path / "m.mlpackage")
    # the exporter's own read-back checks: every weight exact, every node lowered in order
    assert (
        checks["weights"]["ok"]
        and checks["weights"]["weights_checked"] == len(plan.quantized("weight")) > 0
    )
    assert checks["ops"]["ok"] and checks["ops"]["matched"] == len(graph.nodes)
    want_op = "constexpr_affine_dequantize" if bits == 8 else "constexpr_blockwise_shift_scale"
    assert set(checks["weights"]["constexpr_ops"]) == {want_op}
    assert checks["ops"]["opset"] == ("CoreML8" if bits == 4 else "CoreML6")  # iOS18 / iOS16
    run = EXPORTER.open(path)
    sim = Simulator(graph, plan)
    for f in feeds[:2]:
        out, ref = run(f)["y"], np.asarray(sim(f)["y"])
        assert out.dtype == np.float32 and out.shape == ref.shape
        _close_to(out, ref, 2e-2)


def test_int4_per_block_layout_and_storage(tmp_path: Path) -> None:
    graph = _transformer()
    plan = _plan(graph, _feeds(graph), 4)
    wq = plan.tensors["Wq"]  # MatMul W[K=64, N=128]: blocks of 32 along K (axis 0)
    assert wq.granularity == "per_block" and wq.block == 32 and wq.scale.shape == (2, 128)
    path, _ = _export(graph, plan, tmp_path / "m.mlpackage")
    from edgeq.exporters.coreml.evaluate import SavedProgram

    prog = SavedProgram(path)
    op = prog.producers()["Wq_T"]  # stored as linear's [N, K]: scale [128, 2] = blocks of 32
    data = op.inputs["data"].arguments[0].value
    scale = op.inputs["scale"].arguments[0].value
    assert data.type.tensorType.dataType == ct.proto.MIL_pb2.DataType.Value("INT4")
    assert [d.constant.size for d in scale.type.tensorType.dimensions] == [128, 2]
    np.testing.assert_array_equal(prog.value(data), wq.values.T)
    np.testing.assert_array_equal(prog.value(scale), wq.scale.T.astype(np.float16))
    # 4 bits per weight: the 64x128 int4 blob is 4096 bytes
    assert (
        int(np.frombuffer(prog.blob, np.uint64, 1, data.blobFileValue.offset + 8)[0])
        == 64 * 128 // 2
    )


def test_inline_sub_byte_constants_decode() -> None:
    """Small int4 constants (the per-block offsets of an 8-channel conv: 8 values) are stored
    inline as packed bytes, not in weight.bin; they decode as the blob's do (they read as all
    zeros when the packed record's data offset pointed into its own header)."""
    from coremltools.proto import MIL_pb2

    from edgeq.exporters.coreml.evaluate import _immediate

    v = MIL_pb2.Value()
    v.type.tensorType.dataType = MIL_pb2.DataType.Value("INT4")
    v.type.tensorType.rank = 1
    v.type.tensorType.dimensions.add().constant.size = 8
    v.immediateValue.tensor.bytes.values = bytes([0x01, 0xF0, 0x0F, 0x0F])
    np.testing.assert_array_equal(_immediate(v), [1, 0, 0, -1, -1, 0, -1, 0])


def test_blob_parser_agrees_with_coremltools_reader(tmp_path: Path) -> None:
    from coremltools.libmilstoragepython import _BlobStorageReader

    from edgeq.exporters.coreml.evaluate import SavedProgram

    graph = _transformer()
    plan = _plan(graph, _feeds(graph), 4)
    path, _ = _export(graph, plan, tmp_path / "m.mlpackage")
    prog = SavedProgram(path)
    reader = _BlobStorageReader(str(path / "Data/com.apple.CoreML/weights/weight.bin"))
    read = {25: reader.read_int4_data, 10: reader.read_fp16_data, 21: reader.read_int8_data}
    seen = set()
    for op in prog.ops:
        values = [
            a.value
            for arg in op.inputs.values()
            for a in arg.arguments
            if a.WhichOneof("binding") == "value"
        ]
        values += list(op.attributes.values())
        for v in values:
            if v.WhichOneof("value") != "blobFileValue":
                continue
            dtype = v.type.tensorType.dataType
            ours = prog.value(v).reshape(-1)
            theirs = np.asarray(read[dtype](v.blobFileValue.offset))
            if dtype != 25:  # int4 comes back unpacked as int8; fp16 as raw uint16
                theirs = theirs.view(ours.dtype)
            np.testing.assert_array_equal(ours, theirs[: ours.size])
            seen.add(dtype)
    assert {25, 10} <= seen


def test_checks_catch_a_tampered_weight(tmp_path: Path) -> None:
    from edgeq.exporters.coreml.check import check_weights
    from edgeq.exporters.coreml.evaluate import SavedProgram

    graph = _cnn()
    plan = _plan(graph, _feeds(graph), 8)
    path, _ = _export(graph, plan, tmp_path / "m.mlpackage")
    prog = SavedProgram(path)
    op = prog.producers()["M_T"]
    offset = op.attributes["quantized_data"].blobFileValue.offset
    data_at = int(np.frombuffer(prog.blob, np.uint64, 1, offset + 16)[0])
    blob = bytearray(prog.blob)
    blob[data_at] ^= 0x01  # one integer off by one bit
    (path / "Data/com.apple.CoreML/weights/weight.bin").write_bytes(bytes(blob))
    result = check_weights(path, graph, plan)
    assert not result["ok"] and any(f.startswith("M:") for f in result["failures"])


def test_w8a8_inserts_quantize_dequantize(tmp_path: Path) -> None:
    graph = _cnn()
    feeds = _feeds(graph)
    plan = _plan(graph, feeds, 8, act_bits=8)
    path, checks = _export(graph, plan, tmp_path / "m.mlpackage")
    acts = [t.name for t in plan.quantized("activation")]
    # reshape / max-pool outputs share their input's scale: re-quantizing them is the identity
    kept = [a for a in acts if not requant_is_identity(graph, plan, a)]
    assert "flat" in acts and "flat" not in kept and "mp" not in kept and "c" in kept
    assert checks["ops"]["ok"] and checks["ops"]["opset"] == "CoreML7"  # iOS17
    assert (
        checks["ops"]["mil_ops"]["quantize"] == checks["ops"]["mil_ops"]["dequantize"] == len(kept)
    )
    run, sim = EXPORTER.open(path), Simulator(graph, plan)
    step = float(plan.tensors["y"].scale)
    diffs = np.concatenate([np.abs(run(f)["y"] - np.asarray(sim(f)["y"])).ravel() for f in feeds])
    # fp16 intermediates can move a value across a rounding boundary: mostly within one step
    assert np.mean(diffs <= step * 1.0001) >= 0.9 and diffs.max() <= 8 * step


def test_float_baseline_is_fp16_program(tmp_path: Path) -> None:
    graph = _transformer()
    path, checks = _export(graph, None, tmp_path / "f.mlpackage")
    assert "weights" not in checks and checks["ops"]["ok"]
    assert not any(k.startswith("constexpr") for k in checks["ops"]["mil_ops"])
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    ops = spec.mlProgram.functions["main"].block_specializations["CoreML6"].operations
    linear = [op for op in ops if op.type == "linear"]
    assert linear and all(op.outputs[0].type.tensorType.dataType == 10 for op in linear)  # fp16
    f = _feeds(graph, 1)[0]
    _close_to(EXPORTER.open(path)(f)["y"], np.asarray(Interpreter(graph)(f)["y"]), 2e-2)


def test_unsupported_op_fails_cleanly(tmp_path: Path) -> None:
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="lp")]  # fmt: skip
    model = make_model(nodes, [("x", F32, [1, 3, 4, 4])], [("y", F32, [1, 4, 4, 4])],
                       initializers={"W": _w(4, 3, 1, 1)})  # fmt: skip
    graph = prepare(model_to_graph(model))
    graph.nodes[-1].op_type = "LpNormalization"  # edgeq runs it nowhere: only the exporter sees it
    out = tmp_path / "m.mlpackage"
    with pytest.raises(EdgeqError, match=r"lp.*LpNormalization"):
        EXPORTER.export(graph, None, PROFILE, out, ExportOptions())
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_deployment_target_too_low_is_refused(tmp_path: Path) -> None:
    graph = _cnn()
    plan = _plan(graph, _feeds(graph), 4)
    with pytest.raises(EdgeqError, match="iOS18"):
        EXPORTER.export(graph, plan, PROFILE, tmp_path / "m.mlpackage",
                        ExportOptions(deployment_target="iOS16"))  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_open_rejects_wrong_feeds(tmp_path: Path) -> None:
    graph = _cnn()
    path, _ = _export(graph, None, tmp_path / "f.mlpackage")
    run = EXPORTER.open(path)
    with pytest.raises(EdgeqError, match="shape"):
        run({"x": np.zeros((1, 3, 4, 4), np.float32)})


# ---- end to end on a real model --------------------------------------------------------------
def test_ppocr_cls_bits4_end_to_end(tmp_path: Path) -> None:
    from edgeq.export import export_model
    from examples.models import CASES

    case = CASES["ppocr-cls"]
    feeds = case.make_feeds(10, "calib")
    result = export_model(case.model_path(), "ane", tmp_path / "out", calib=feeds,
                          recipe=Recipe(base=LayerConfig(weight_bits=4)),
                          input_shapes=case.input_shapes, samples=8, eval_samples=2, runs=1)  # fmt: skip
    report = result.report
    art = report["artifact"]
    assert result.artifact.is_dir() and art["format"] == "mlpackage"
    assert art["checks"]["weights"]["ok"] and art["checks"]["ops"]["ok"]
    assert art["checks"]["weights"]["constexpr_ops"].get("constexpr_blockwise_shift_scale", 0) > 0
    assert art["bytes"] < art["float_bytes"]
    ct.models.MLModel(str(result.artifact), skip_model_load=True)  # coremltools opens it
    for row in report["outputs"].values():
        assert row["vs_simulator"]["within_one_step"] >= 0.99
