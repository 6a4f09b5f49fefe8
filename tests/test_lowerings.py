"""Lowerings of the common edge op set on hand-built graphs, run on each target's runtime:
LiteRT (rpi, tflm), the numpy MIL evaluator (ane), MLX (mlx). Float artifacts must match
edgeq's interpreter (which matches onnxruntime); int8 TFLite artifacts must match the simulator
within one step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgeq.exporters import ExportOptions, get_exporter
from edgeq.ir.interpreter import Interpreter
from edgeq.ir.onnx_io import load_model
from edgeq.pipeline import calibrate_model, prepare_for_quantization
from edgeq.quant.simulate import Simulator
from edgeq.support import op_support, refusals
from edgeq.targets import load_target
from edgeq.verify import output_step, within_step
from tests.conftest import F32, I64, make_model

RNG = np.random.default_rng(0)
N = helper.make_node


def _split() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    nodes = [N("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             N("Split", ["c", "sizes"], ["a", "b"], axis=1),
             N("Sigmoid", ["a"], ["sa"]), N("Mul", ["b", "sa"], ["y"])]  # fmt: skip
    inits = {"w": RNG.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3,
             "sizes": np.array([4, 4], np.int64)}  # fmt: skip
    return make_model(nodes, [("x", F32, [1, 3, 8, 8])], [("y", F32, [1, 4, 8, 8])], inits, 18), {}


def _resize(mode: str, ctm: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    nodes = [N("Conv", ["x", "w"], ["c"]),
             N("Resize", ["c", "", "scales"], ["y"], mode=mode, coordinate_transformation_mode=ctm,
               nearest_mode="floor" if ctm == "asymmetric" else "round_prefer_floor")]  # fmt: skip
    inits = {"w": RNG.standard_normal((4, 3, 1, 1)).astype(np.float32),
             "scales": np.array([1, 1, 2, 2], np.float32)}  # fmt: skip
    return make_model(nodes, [("x", F32, [1, 3, 5, 6])], [("y", F32, [1, 4, 10, 12])], inits), {}


def _conv_transpose() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    nodes = [N("ConvTranspose", ["x", "w", "b"], ["t"], strides=[2, 2]), N("Relu", ["t"], ["y"])]
    inits = {"w": RNG.standard_normal((3, 4, 2, 2)).astype(np.float32) * 0.5,
             "b": RNG.standard_normal(4).astype(np.float32) * 0.1}  # fmt: skip
    return make_model(nodes, [("x", F32, [1, 3, 5, 5])], [("y", F32, [1, 4, 10, 10])], inits), {}


def _pad() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    nodes = [N("Pad", ["x", "pads", "v"], ["p"]), N("Conv", ["p", "w"], ["y"])]
    inits = {"pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "v": np.array(0.0, np.float32),
             "w": RNG.standard_normal((2, 3, 3, 3)).astype(np.float32)}  # fmt: skip
    return make_model(nodes, [("x", F32, [1, 3, 6, 6])], [("y", F32, [1, 2, 7, 7])], inits), {}


def _pad_reflect() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """silero VAD's STFT front end: reflect padding of the waveform, then a strided Conv."""
    nodes = [
        N("Pad", ["x", "pads"], ["p"], mode="reflect"),
        N("Conv", ["p", "w"], ["y"], strides=[1, 2]),
    ]
    inits = {"pads": np.array([0, 0, 0, 3, 0, 0, 0, 3], np.int64),
             "w": RNG.standard_normal((4, 1, 1, 4)).astype(np.float32)}  # fmt: skip
    return make_model(nodes, [("x", F32, [1, 1, 1, 16])], [("y", F32, [1, 4, 1, 10])], inits), {}


def _pow() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    nodes = [N("Conv", ["x", "w"], ["c"]), N("Pow", ["c", "two"], ["p"]), N("Relu", ["p"], ["y"])]
    inits = {
        "w": RNG.standard_normal((3, 3, 1, 1)).astype(np.float32),
        "two": np.array(2.0, np.float32),
    }
    return make_model(nodes, [("x", F32, [1, 3, 4, 4])], [("y", F32, [1, 3, 4, 4])], inits), {}


def _recurrent(op: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    g, hidden, n_in, seq = (4 if op == "LSTM" else 3), 5, 4, 6
    inits = {"W": RNG.standard_normal((1, g * hidden, n_in)).astype(np.float32) * 0.5,
             "R": RNG.standard_normal((1, g * hidden, hidden)).astype(np.float32) * 0.5,
             "B": RNG.standard_normal((1, 2 * g * hidden)).astype(np.float32) * 0.1}  # fmt: skip
    attrs = {"hidden_size": hidden}
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    nodes = [N(op, ["x", "W", "R", "B"], ["ys", "yh"], **attrs),
             N("Squeeze", ["ys", "ax"], ["y"])]  # fmt: skip
    inits["ax"] = np.array([1], np.int64)
    model = make_model(nodes, [("x", F32, [seq, 1, n_in])], [("y", F32, [seq, 1, hidden])], inits)
    return model, {}


def _where_logic() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Bool logic that no canonicalization removes (a data-dependent condition)."""
    nodes = [N("Equal", ["ids", "k"], ["e"]), N("Not", ["e"], ["ne"]), N("And", ["ne", "t"], ["a"]),
             N("Where", ["a", "x", "z"], ["y"])]  # fmt: skip
    inits = {"k": np.array(0, np.int64), "t": np.array([True, True, False, True, True, True]),
             "z": np.array(0.0, np.float32)}  # fmt: skip
    model = make_model(
        nodes, [("x", F32, [1, 6]), ("ids", I64, [1, 6])], [("y", F32, [1, 6])], inits
    )
    return model, {"ids": np.array([[3, 0, 2, 5, 0, 1]], np.int64)}


def _gelu() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    nodes = [N("MatMul", ["x", "w"], ["m"]), N("Gelu", ["m"], ["y"])]
    inits = {"w": RNG.standard_normal((8, 16)).astype(np.float32)}
    return make_model(nodes, [("x", F32, [1, 4, 8])], [("y", F32, [1, 4, 16])], inits, 20), {}


CASES = {
    "gelu": _gelu,
    "split": _split,
    "resize_nearest": lambda: _resize("nearest", "asymmetric"),
    "resize_bilinear": lambda: _resize("linear", "half_pixel"),
    "conv_transpose": _conv_transpose,
    "pad": _pad,
    "pad_reflect": _pad_reflect,
    "pow": _pow,
    "lstm": lambda: _recurrent("LSTM"),
    "gru": lambda: _recurrent("GRU"),
    "where_logic": _where_logic,
}


def _feeds(model: onnx.ModelProto, fixed: dict[str, np.ndarray], n: int, seed: int) -> list[dict]:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        feed = dict(fixed)
        for v in model.graph.input:
            if v.name not in feed:
                shape = [d.dim_value for d in v.type.tensor_type.shape.dim]
                feed[v.name] = rng.standard_normal(shape).astype(np.float32)
        out.append(feed)
    return out


def _save(tmp_path: Path, model: onnx.ModelProto) -> Path:
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("target", ["rpi", "ane", "mlx"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_float_lowering_matches_onnxruntime(tmp_path: Path, case: str, target: str) -> None:
    model, fixed = CASES[case]()
    graph = prepare_for_quantization(load_model(_save(tmp_path, model)), target=target)
    assert not refusals(graph, target), refusals(graph, target)
    profile = load_target(target)
    exporter = get_exporter(profile.exporter)
    art = exporter.export(graph, None, profile, tmp_path / ("a" + exporter.suffix), ExportOptions())
    runner = exporter.open(art.path)
    feed = _feeds(model, fixed, 1, 1)[0]
    ref = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    got = np.asarray(runner(feed)[graph.output_names[0]])
    tol = 2e-2 if target == "ane" else 1e-4  # ane computes in fp16
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize(("case", "target"), [
    ("split", "rpi"), ("resize_bilinear", "rpi"), ("conv_transpose", "rpi"), ("gelu", "rpi"),
    ("gelu", "tflm"), ("gru", "tflm"), ("pad_reflect", "rpi"), ("pow", "tflm"),
])  # fmt: skip
def test_int8_tflite_matches_simulator(tmp_path: Path, case: str, target: str) -> None:
    model, fixed = CASES[case]()
    path = _save(tmp_path, model)
    run = calibrate_model(path, _feeds(model, fixed, 6, 2), target, samples=6, report_samples=0)
    profile = load_target(target)
    exporter = get_exporter(profile.exporter)
    art = exporter.export(run.graph, run.plan, profile, tmp_path / "q.tflite", ExportOptions())
    runner = exporter.open(art.path)
    sim = Simulator(run.graph, run.plan)
    name = run.graph.output_names[0]
    feeds = _feeds(model, fixed, 3, 3)
    got = np.concatenate([np.asarray(runner(f)[name]).ravel() for f in feeds])
    ref = [np.asarray(sim(f)[name]) for f in feeds]
    step, _ = output_step(run.plan, name, ref)
    assert within_step(got, np.concatenate([r.ravel() for r in ref]), step) >= 0.99


def test_op_support_kinds_follow_the_runtime() -> None:
    assert op_support("rpi")["Gelu"]["kind"] == "native"  # LiteRT's int8 GELU
    assert op_support("tflm")["Gelu"]["kind"] == "float island"  # no GELU micro kernel
    assert "Erf" not in op_support("rpi") and "GRU" not in op_support("qnn")


def test_export_refuses_before_calibrating(tmp_path: Path) -> None:
    """An op the target cannot run fails before any calibration sample is read."""
    from edgeq.errors import UnsupportedOpError

    model = make_model([N("Erf", ["x"], ["y"])], [("x", F32, [1, 8])], [("y", F32, [1, 8])])

    def never() -> list:  # type: ignore[type-arg]
        raise AssertionError("calibration data was read")

    class Lazy:
        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(never())

    with pytest.raises(UnsupportedOpError, match="no ERF builtin"):
        calibrate_model(_save(tmp_path, model), Lazy(), "rpi")


def test_every_lowering_kind_is_known() -> None:
    for target in ("onnx", "qnn", "rpi", "tflm", "ane", "mlx"):
        kinds = {row["kind"] for row in op_support(target).values()}
        assert kinds <= {"native", "decomposed", "float island"}, (target, kinds)


def test_interpreter_is_the_reference_here(tmp_path: Path) -> None:
    """The float reference above is onnxruntime; edgeq's interpreter agrees on these graphs."""
    for case in ("lstm", "gru", "resize_bilinear"):
        model, fixed = CASES[case]()
        graph = prepare_for_quantization(load_model(_save(tmp_path, model)))
        feed = _feeds(model, fixed, 1, 4)[0]
        ours = Interpreter(graph)(feed)[graph.output_names[0]]
        ref = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
        np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-5, atol=1e-5)


del TensorProto


def test_coreml_ops_check_accepts_mil_fusions(tmp_path: Path) -> None:
    """SiLU written as Sigmoid·Mul (YOLO, PP-OCR) is fused by MIL into `silu` when the program is
    saved; the ops check accepts it and says so, and the evaluator runs `silu`."""
    nodes = [N("Conv", ["x", "w"], ["c"]), N("Sigmoid", ["c"], ["s"]), N("Mul", ["c", "s"], ["y"])]
    inits = {"w": RNG.standard_normal((4, 3, 1, 1)).astype(np.float32)}
    model = make_model(nodes, [("x", F32, [1, 3, 4, 4])], [("y", F32, [1, 4, 4, 4])], inits)
    graph = prepare_for_quantization(load_model(_save(tmp_path, model)), target="ane")
    profile = load_target("ane")
    exporter = get_exporter("coreml")
    art = exporter.export(graph, None, profile, tmp_path / "s.mlpackage", ExportOptions())
    ops = art.checks["ops"]
    assert ops["ok"] and ops["fused_by_mil"] >= 1 and "silu" in ops["mil_ops"], ops
    feed = _feeds(model, {}, 1, 5)[0]
    ref = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    np.testing.assert_allclose(exporter.open(art.path)(feed)["y"], ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("op", ["Sqrt", "Neg", "Exp", "Sigmoid", "Tanh"])
def test_int8_unary_lands_on_the_simulators_step(tmp_path: Path, op: str) -> None:
    """Within one step is not enough for an elementwise op: its output must be the simulator's
    integer, or the flips compound downstream. LiteRT's int8 SQRT hit the exact step on 43% of
    these outputs and its NEG on none (it negates the stored integers, ignoring the zero
    points); both now run in float32 between DEQUANTIZE and QUANTIZE."""
    pre = [N("Abs", ["c"], ["a"])] if op == "Sqrt" else [N("Identity", ["c"], ["a"])]
    nodes = [N("Conv", ["x", "w"], ["c"]), *pre, N(op, ["a"], ["y"])]
    w = RNG.standard_normal((8, 8, 1, 1)).astype(np.float32)
    model = make_model(nodes, [("x", F32, [1, 8, 8, 8])], [("y", F32, [1, 8, 8, 8])], {"w": w})
    path = _save(tmp_path, model)
    run = calibrate_model(path, _feeds(model, {}, 6, 2), "rpi", samples=6, report_samples=0)
    profile = load_target("rpi")
    exporter = get_exporter(profile.exporter)
    art = exporter.export(run.graph, run.plan, profile, tmp_path / "q.tflite", ExportOptions())
    sim = Simulator(run.graph, run.plan)
    step = float(run.plan.get("y").scale)
    feeds = _feeds(model, {}, 3, 3)
    want = np.concatenate([np.asarray(sim(f)["y"]).ravel() for f in feeds])
    for xnnpack in (True, False):
        runner = exporter.open(art.path, use_xnnpack=xnnpack)
        got = np.concatenate([np.asarray(runner(f)["y"]).ravel() for f in feeds])
        exact = float(np.mean(np.abs(got - want) < 0.5 * step))
        assert exact >= 0.99, (op, xnnpack, exact)


def test_relu_after_a_reshape_clips_the_whole_shared_scale_group(tmp_path: Path) -> None:
    """Conv1d as torch exports it reaches TFLite as Conv2d between Reshapes, then Relu: the
    Conv output and the Reshape share one scale, so the Relu's active region [0, inf) clips
    the group as a whole (exact: the Relu zeroes what the clip removes). Before, only a tensor
    outside any group was clipped, and the Conv output kept its negative half (zero point 66
    on silero VAD's first encoder conv) at a quarter of the Relu's resolution."""
    w = RNG.standard_normal((8, 4, 1, 3)).astype(np.float32)
    shape = np.array([1, 8, 6], np.int64)
    nodes = [N("Conv", ["x", "w"], ["c"]), N("Reshape", ["c", "shape"], ["r"]),
             N("Relu", ["r"], ["y"])]  # fmt: skip
    model = make_model(nodes, [("x", F32, [1, 4, 1, 8])], [("y", F32, [1, 8, 6])],
                       {"w": w, "shape": shape})  # fmt: skip
    path = _save(tmp_path, model)
    run = calibrate_model(path, _feeds(model, {}, 6, 2), "rpi", samples=6, report_samples=0)
    c, r = run.plan.get("c"), run.plan.get("r")
    assert float(c.scale) == float(r.scale) and int(c.zero_point) == int(r.zero_point)
    assert int(c.zero_point) == -128, (c.scale, c.zero_point)  # range starts at 0
    assert "active input region" in (c.reason or "")
    profile = load_target("rpi")
    exporter = get_exporter(profile.exporter)
    art = exporter.export(run.graph, run.plan, profile, tmp_path / "q.tflite", ExportOptions())
    runner = exporter.open(art.path)
    sim = Simulator(run.graph, run.plan)
    feeds = _feeds(model, {}, 3, 3)
    got = np.concatenate([np.asarray(runner(f)["y"]).ravel() for f in feeds])
    want = np.concatenate([np.asarray(sim(f)["y"]).ravel() for f in feeds])
    assert within_step(got, want, float(run.plan.get("y").scale)) >= 0.99
