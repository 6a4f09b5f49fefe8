"""MLX exporter: tiny hand-built graphs planned for `mlx`, exported, run with MLX on the CPU and
compared with the simulator (the definition of correct); packed weights unpack to the plan's
integers; damaged artifacts and unsupported ops give one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import onnx
import pytest
from onnx import helper

from edgeq.errors import EdgeqError
from edgeq.exporters import ExportOptions, exporter_for_artifact, get_exporter
from edgeq.exporters.mlx.exporter import pack, unpack
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
from tests.conftest import F32, I64, make_model

RNG = np.random.default_rng(0)
W4 = LayerConfig(weight_bits=4, act_bits=0, granularity="per_block", block_size=32)
W8 = LayerConfig(weight_bits=8, act_bits=0)


def _w(*shape: int) -> np.ndarray:
    return RNG.normal(0, 0.3, shape).astype(np.float32)


def _graph(model: onnx.ModelProto) -> Graph:
    return prepare_for_quantization(model_to_graph(model))


def _feeds(graph: Graph, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        feed = {}
        for v in graph.inputs:
            if v.name == "mask":  # attention mask: real tokens, then padding
                feed[v.name] = (np.arange(v.shape[-1]) < rng.integers(2, v.shape[-1])).astype(
                    v.dtype
                )[None]
            elif np.issubdtype(v.dtype, np.integer):
                feed[v.name] = rng.integers(0, 50, v.shape).astype(v.dtype)
            else:
                feed[v.name] = rng.normal(0, 1, v.shape).astype(np.float32)
        out.append(feed)
    return out


def _plan(graph: Graph, config: LayerConfig) -> QuantPlan:
    spec = make_spec(graph, Recipe(base=config), load_target("mlx"))
    observers = spec.observers()
    stats = collect_statistics(graph, {n: (n, o) for n, o in observers.items()},
                               stack_batches(_feeds(graph, 8, 1), 4)) if observers else None  # fmt: skip
    return finalize_plan(graph, spec, stats.states if stats else {})


def _export(graph: Graph, plan: QuantPlan | None, path: Path, **extra: str) -> Path:
    get_exporter("mlx").export(graph, plan, load_target("mlx"), path, ExportOptions(extra=extra))
    return path


def _parity(graph: Graph, plan: QuantPlan | None, path: Path, **kw: str) -> float:
    """Worst output's fraction of elements within one step of the simulator (float if no plan)."""
    runner = get_exporter("mlx").open(path, **kw)
    ref = Simulator(graph, plan) if plan is not None else Interpreter(graph)
    feeds = _feeds(graph, 3, 7)
    got, want = [runner(f) for f in feeds], [ref(f) for f in feeds]
    worst = 1.0
    for name in graph.output_names:
        step, _ = output_step(plan, name, [w[name] for w in want])
        for g, w in zip(got, want, strict=True):
            assert g[name].shape == np.shape(w[name]) and g[name].dtype == np.float32
            worst = min(worst, within_step(g[name], np.asarray(w[name]), step))
    return worst


# ---- tiny graphs ---------------------------------------------------------------------------------
def _matmul_add() -> onnx.ModelProto:  # linear + bias (fused accumulator), K = 64
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["y"]),
    ]
    return make_model(nodes, [("x", F32, [1, 5, 64])], [("y", F32, None)],
                      {"w": _w(64, 48), "b": _w(48)})  # fmt: skip


def _matmul_odd_k() -> onnx.ModelProto:  # K = 40: per-channel, rows padded to 64
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    return make_model(nodes, [("x", F32, [2, 40])], [("y", F32, None)], {"w": _w(40, 24)})


def _gemm() -> onnx.ModelProto:
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, alpha=0.5)]
    return make_model(
        nodes, [("x", F32, [3, 96])], [("y", F32, None)], {"w": _w(16, 96), "b": _w(16)}
    )


def _convs() -> onnx.ModelProto:  # 3x3 strided, 1x1 (quantized_matmul), depthwise, SE block, pools
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("HardSwish", ["c1"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c2"], ["a2"]),
        helper.make_node("Conv", ["a2", "wd"], ["c3"], kernel_shape=[3, 3], pads=[1, 0, 1, 2],
                         group=32),
        helper.make_node("GlobalAveragePool", ["c3"], ["g"]),
        helper.make_node("HardSigmoid", ["g"], ["hs"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["c3", "hs"], ["se"]),
        helper.make_node("MaxPool", ["se"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["mp"], ["ap"], kernel_shape=[3, 2], strides=[1, 1],
                         pads=[1, 0, 1, 0]),
        helper.make_node("Concat", ["ap", "ap"], ["cat"], axis=1),
        helper.make_node("Reshape", ["cat", "shape"], ["y"]),
    ]  # fmt: skip
    inits = {"w1": _w(64, 32, 3, 3), "b1": _w(64), "w2": _w(32, 64, 1, 1), "b2": _w(32),
             "wd": _w(32, 1, 3, 3), "shape": np.array([1, -1], np.int64)}  # fmt: skip
    return make_model(nodes, [("x", F32, [1, 32, 12, 16])], [("y", F32, None)], inits)


def _encoder() -> onnx.ModelProto:  # embedding, LayerNorm, attention, Gelu, Softmax, mask path
    d, s = 64, 8
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"]),
        helper.make_node("LayerNormalization", ["e", "ln_s", "ln_b"], ["n"], epsilon=1e-5),
        helper.make_node("MatMul", ["n", "wq"], ["q"]),
        helper.make_node("MatMul", ["n", "wk"], ["k"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["sc"]),
        helper.make_node("Div", ["sc", "sqrt_d"], ["scs"]),
        helper.make_node("Unsqueeze", ["mask", "ax1"], ["m1"]),
        helper.make_node("Cast", ["m1"], ["mf"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "mf"], ["inv"]),
        helper.make_node("Mul", ["inv", "neg"], ["madd"]),
        helper.make_node("Add", ["scs", "madd"], ["msc"]),
        helper.make_node("Softmax", ["msc"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "n"], ["ctx"]),
        helper.make_node("MatMul", ["ctx", "w1"], ["f"]),
        helper.make_node("Gelu", ["f"], ["gl"], domain=""),
        helper.make_node("Slice", ["gl", "st", "en", "ax2"], ["sl"]),
        helper.make_node("ReduceSum", ["sl", "ax1"], ["rs"], keepdims=0),
        helper.make_node("ReduceL2", ["rs"], ["l2"], axes=[1], keepdims=1),
        helper.make_node("Div", ["rs", "l2"], ["y"]),
    ]  # fmt: skip
    inits = {
        "emb": _w(50, d), "ln_s": 1 + _w(d), "ln_b": _w(d), "wq": _w(d, d), "wk": _w(d, d),
        "sqrt_d": np.array(8.0, np.float32), "ax1": np.array([1], np.int64),
        "one": np.array(1.0, np.float32), "neg": np.array(-3.4e38, np.float32), "w1": _w(d, 128),
        "st": np.array([0], np.int64), "en": np.array([96], np.int64), "ax2": np.array([2], np.int64),
    }  # fmt: skip
    model = make_model(nodes, [("ids", I64, [1, s]), ("mask", I64, [1, s])], [("y", F32, None)],
                       inits, opset=20)  # fmt: skip
    return model


BUILDERS = {"matmul_add": _matmul_add, "matmul_odd_k": _matmul_odd_k, "gemm": _gemm,
            "convs": _convs, "encoder": _encoder}  # fmt: skip


@pytest.mark.parametrize("config", [W4, W8], ids=["w4_block32", "w8_default"])
@pytest.mark.parametrize("build", list(BUILDERS))
def test_tiny_graphs_match_the_simulator(build: str, config: LayerConfig, tmp_path: Path) -> None:
    graph = _graph(BUILDERS[build]())
    plan = _plan(graph, config)
    assert plan.quantized("weight"), "the plan quantizes the weights"
    path = _export(graph, plan, tmp_path / "m")
    assert json.loads((path / "config.json").read_text())["quantization"]["mode"] == "affine"
    assert _parity(graph, plan, path) >= 0.99
    assert _parity(graph, plan, path, kernels="dequantized") >= 0.99


@pytest.mark.parametrize("build", ["convs", "encoder"])
def test_float_baseline_matches_float(build: str, tmp_path: Path) -> None:
    graph = _graph(BUILDERS[build]())
    path = _export(graph, None, tmp_path / "f")
    assert "quantization" not in json.loads((path / "config.json").read_text())
    assert _parity(graph, None, path) >= 0.99


def test_w8a8_plan_fake_quantizes_activations(tmp_path: Path) -> None:
    graph = _graph(_convs())
    plan = _plan(graph, LayerConfig(weight_bits=8, act_bits=8))
    assert plan.quantized("activation")
    assert _parity(graph, plan, _export(graph, plan, tmp_path / "m")) >= 0.99


@pytest.mark.parametrize("build", ["matmul_odd_k", "convs", "encoder"])
def test_packed_weights_are_the_plans_integers(build: str, tmp_path: Path) -> None:
    graph = _graph(BUILDERS[build]())
    plan = _plan(graph, W4)
    path = _export(graph, plan, tmp_path / "m", scale_dtype="float32")
    doc = json.loads((path / "graph.json").read_text())
    tensors = mx.load(str(path / "model.safetensors"))
    assert set(doc["quantized"]) == {t.name for t in plan.quantized("weight")}
    for name, rec in doc["quantized"].items():
        t = plan.tensors[name]
        words, g, bits = tensors[f"{rec['path']}.weight"], rec["group_size"], rec["bits"]
        assert words.dtype == mx.uint32 and bits == 4
        # codes two independent ways: our unpacking, and MLX's with scale 1 / bias 0
        ones = mx.ones(tensors[f"{rec['path']}.scales"].shape)
        by_mlx = np.array(mx.dequantize(words, ones, 0 * ones, group_size=g, bits=bits))
        codes = unpack(np.array(words), bits)
        np.testing.assert_array_equal(codes, by_mlx.astype(np.int64))
        k = rec["k"]
        plan_codes = np.transpose(t.values, rec["perm"]).reshape(-1, k).astype(np.int64)
        np.testing.assert_array_equal(codes[:, :k], plan_codes)  # uint4: no offset
        # affine form: w = scale * q + bias reproduces the plan's dequantized weights
        s = np.repeat(np.array(tensors[f"{rec['path']}.scales"]), g, axis=1)
        b = np.repeat(np.array(tensors[f"{rec['path']}.biases"]), g, axis=1)
        plan_w = np.transpose(t.dequantized(), rec["perm"]).reshape(-1, k)
        np.testing.assert_allclose((codes * s + b)[:, :k], plan_w, rtol=0, atol=1e-6)
        # padding codes are the zero point: they dequantize to exactly zero
        np.testing.assert_allclose((codes * s + b)[:, k:], 0, atol=1e-6)


def test_pack_matches_mx_quantize() -> None:
    w = mx.array(_w(8, 128))
    for bits in (4, 8):
        wq, s, b = mx.quantize(w, group_size=64, bits=bits)
        codes = unpack(np.array(wq), bits)
        np.testing.assert_array_equal(pack(codes, bits), np.array(wq))
        deq = np.repeat(np.array(s), 64, 1) * codes + np.repeat(np.array(b), 64, 1)
        np.testing.assert_allclose(deq, np.array(mx.dequantize(wq, s, b, 64, bits)), atol=1e-6)


# ---- bad inputs ----------------------------------------------------------------------------------
def _one_line(exc: pytest.ExceptionInfo[EdgeqError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.parametrize("damage", ["no_config", "bad_config", "no_weights", "bad_weights",
                                    "missing_tensor", "bad_graph"])  # fmt: skip
def test_damaged_artifact_is_a_one_line_error(damage: str, tmp_path: Path) -> None:
    graph = _graph(_matmul_add())
    path = _export(graph, _plan(graph, W4), tmp_path / "m")
    weights = path / "model.safetensors"
    if damage == "no_config":
        (path / "config.json").unlink()
    elif damage == "bad_config":
        (path / "config.json").write_text("{not json")
    elif damage == "no_weights":
        weights.unlink()
    elif damage == "bad_weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "missing_tensor":
        tensors = mx.load(str(weights))
        mx.save_safetensors(
            str(weights), {k: v for k, v in tensors.items() if not k.endswith(".scales")}
        )
    else:
        (path / "graph.json").write_text(json.dumps({"format": "edgeq-mlx-graph", "version": 1}))
    with pytest.raises(EdgeqError) as exc:
        get_exporter("mlx").open(path)
    assert _one_line(exc)


def test_unsupported_op_names_the_node_and_writes_nothing(tmp_path: Path) -> None:
    nodes = [helper.make_node("Mod", ["x", "x"], ["y"], name="the_mod", fmod=1)]
    graph = model_to_graph(make_model(nodes, [("x", F32, [2, 3])], [("y", F32, [2, 3])]))
    with pytest.raises(EdgeqError) as exc:
        _export(graph, None, tmp_path / "m")
    assert "the_mod" in _one_line(exc) and "Mod" in str(exc.value)
    assert not (tmp_path / "m").exists() and not list(tmp_path.iterdir())


def test_artifact_folder_is_recognised(tmp_path: Path) -> None:
    graph = _graph(_gemm())
    path = _export(graph, None, tmp_path / "m")
    assert exporter_for_artifact(path).format == "mlx"
    with pytest.raises(EdgeqError):
        get_exporter("mlx").open(path)({"wrong": np.zeros((3, 96), np.float32)})


# ---- a real model --------------------------------------------------------------------------------
def test_ppocr_cls_end_to_end(tmp_path: Path) -> None:
    from edgeq.export import export_model
    from examples.models import CASES

    case = CASES["ppocr-cls"]
    result = export_model(case.model_path(), "mlx", tmp_path / "out", calib=case.make_feeds(8, "calib"),
                          recipe=Recipe(base=W4), input_shapes=case.input_shapes, samples=8,
                          eval_samples=4, runs=3)  # fmt: skip
    report = result.report
    assert report["artifact"]["format"] == "mlx" and report["artifact"]["size_ratio"] < 0.35
    for row in report["outputs"].values():
        assert row["vs_simulator"]["within_one_step"] >= 0.99
    assert (result.artifact / "model.safetensors").is_file()
    assert report["latency"]["quantized"]["p50_ms"] > 0
