"""Canonicalization of exporter patterns (edgeq.ir.exported) on hand-built graphs written the
way torch.onnx.export writes them: the rewrite happens, and the numbers stay onnxruntime's."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgeq.ir.exported import split_to_slices
from edgeq.ir.interpreter import Interpreter
from edgeq.ir.onnx_io import model_to_graph
from edgeq.ir.passes import prepare, verify
from tests.conftest import F32, I64, make_model

S, H = 6, 2  # tokens, heads
RNG = np.random.default_rng(0)
SCORES = RNG.standard_normal((1, H, S, S)).astype(np.float32) * 3


def _ort(model, feeds):  # type: ignore[no-untyped-def]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _prepared_vs_ort(model, feeds, atol=0.0):  # type: ignore[no-untyped-def]
    graph = prepare(model_to_graph(model))
    ours = Interpreter(graph)(feeds)
    for name, ref in zip(graph.output_names, _ort(model, feeds), strict=True):
        np.testing.assert_allclose(np.asarray(ours[name]), ref, rtol=1e-6, atol=atol)
    return graph


def _torchscript_mask_attention(fill: float) -> list:  # type: ignore[type-arg]
    """HF BertModel's SDPA mask as TorchScript exports it (transformers 5, torch 2.13):
    Cast(mask→bool) → Flatten → Gather(in-order indices) → Reshape → Cast(bool→bool) →
    And(all-True) → Expand → Where(m, 0, fill) → Add(scores) → Softmax → IsNaN guard."""
    c = helper.make_node
    t = helper.make_tensor
    return [
        c("Cast", ["mask"], ["mb"], to=TensorProto.BOOL),
        c("Flatten", ["mb"], ["mf"], axis=2),
        c("Constant", [], ["idx"], value=t("idx", I64, [1, 1, 1, S], list(range(S)))),
        c("Gather", ["mf", "idx"], ["mg"], axis=0),
        c("Constant", [], ["shape"], value=t("shape", I64, [4], [1, 1, 1, S])),
        c("Reshape", ["mg", "shape"], ["mr"]),
        c("Cast", ["mr"], ["mr2"], to=TensorProto.BOOL),
        c("Constant", [], ["ones"], value=t("ones", TensorProto.BOOL, [1, 1, S, 1], [True] * S)),
        c("And", ["ones", "mr2"], ["ma"]),
        c("Constant", [], ["eshape"], value=t("eshape", I64, [4], [1, 1, S, S])),
        c("Expand", ["ma", "eshape"], ["me"]),
        c("Constant", [], ["zero"], value=t("zero", F32, [1], [0.0])),
        c("Constant", [], ["fill"], value=t("fill", F32, [1], [fill])),
        c("Where", ["me", "zero", "fill"], ["madd"]),
        c("Add", ["scores", "madd"], ["masked"]),
        c("Softmax", ["masked"], ["p"], axis=-1),
        c("IsNaN", ["p"], ["nan"]),
        c("Where", ["nan", "zero", "p"], ["y"]),
    ]


def _mask_model(fill: float):  # type: ignore[no-untyped-def]
    return make_model(_torchscript_mask_attention(fill),
                      [("scores", F32, [1, H, S, S]), ("mask", I64, [1, S])],
                      [("y", F32, [1, H, S, S])])  # fmt: skip


@pytest.mark.parametrize("fill", [-np.inf, float(np.finfo(np.float32).min)])
def test_attention_mask_and_nan_guard_become_arithmetic(fill: float) -> None:
    mask = np.array([[1, 1, 1, 1, 0, 0]], np.int64)
    graph = _prepared_vs_ort(_mask_model(fill), {"scores": SCORES, "mask": mask})
    ops = set(graph.op_histogram())
    assert not ops & {"IsNaN", "Where", "And", "Gather", "Flatten"}, ops
    # no bool tensor is left: every target runs the mask path as float arithmetic
    assert all(v.dtype != np.bool_ for v in graph.value_info.values())
    # non-0/1 integers still mean "attend" (x != 0), as Cast(x, bool) does
    other = np.array([[2, -1, 1, 0, 0, 3]], np.int64)
    ours = Interpreter(graph)({"scores": SCORES, "mask": other})["y"]
    np.testing.assert_allclose(ours, _ort(_mask_model(fill), {"scores": SCORES, "mask": other})[0],
                               rtol=1e-6)  # fmt: skip


def test_fully_padded_row_differs_only_with_inf_fill() -> None:
    """The one documented difference: no real token at all. With a float-min fill (dynamo's
    export) the canonical graph is still exact; with -inf torch's guard returns zeros."""
    zeros = {"scores": SCORES, "mask": np.zeros((1, S), np.int64)}
    _prepared_vs_ort(_mask_model(float(np.finfo(np.float32).min)), zeros)
    graph = prepare(model_to_graph(_mask_model(-np.inf)))
    assert np.allclose(Interpreter(graph)(zeros)["y"], 1.0 / S)


def test_inf_fill_not_reaching_softmax_is_kept() -> None:
    c = helper.make_node
    nodes = [
        c("Cast", ["mask"], ["mb"], to=TensorProto.BOOL),
        c("Constant", [], ["zero"], value=helper.make_tensor("zero", F32, [], [0.0])),
        c("Constant", [], ["fill"], value=helper.make_tensor("fill", F32, [], [-np.inf])),
        c("Where", ["mb", "zero", "fill"], ["y"]),
    ]
    model = make_model(nodes, [("mask", I64, [1, S])], [("y", F32, [1, S])])
    graph = _prepared_vs_ort(model, {"mask": np.array([[1, 0, 1, 1, 0, 1]], np.int64)})
    assert "Where" in graph.op_histogram()


def test_where_of_two_constants_is_exact_arithmetic() -> None:
    c = helper.make_node
    nodes = [
        c("Constant", [], ["k"], value=helper.make_tensor("k", I64, [], [0])),
        c("Equal", ["ids", "k"], ["is_pad"]),
        c("Not", ["is_pad"], ["n1"]),
        c("Not", ["n1"], ["n2"]),
        c("Constant", [], ["a"], value=helper.make_tensor("a", F32, [], [1.5])),
        c("Constant", [], ["b"], value=helper.make_tensor("b", F32, [], [-2.25])),
        c("Where", ["n2", "a", "b"], ["w"]),
        c("Add", ["x", "w"], ["y"]),
    ]
    model = make_model(nodes, [("x", F32, [1, S]), ("ids", I64, [1, S])], [("y", F32, [1, S])])
    feeds = {"x": RNG.standard_normal((1, S)).astype(np.float32),
             "ids": np.array([[3, 0, 7, 0, 1, 2]], np.int64)}  # fmt: skip
    graph = _prepared_vs_ort(model, feeds)
    assert "Where" not in graph.op_histogram() and "Not" not in graph.op_histogram()


def test_gather_nd_over_arange_is_a_reshape() -> None:
    idx = np.stack([np.zeros(S, np.int64), np.arange(S)], -1).reshape(1, 1, 1, S, 2)
    nodes = [helper.make_node("GatherND", ["x", "idx"], ["g"]),
             helper.make_node("Relu", ["g"], ["y"])]  # fmt: skip
    model = make_model(nodes, [("x", F32, [1, S])], [("y", F32, [1, 1, 1, S])], {"idx": idx})
    graph = _prepared_vs_ort(model, {"x": RNG.standard_normal((1, S)).astype(np.float32)})
    assert graph.op_histogram() == {"Relu": 1, "Reshape": 1}


def test_out_of_order_gather_is_kept() -> None:
    idx = np.array([2, 0, 1], np.int64)
    nodes = [helper.make_node("Gather", ["x", "idx"], ["y"], axis=1)]
    model = make_model(nodes, [("x", F32, [2, 3])], [("y", F32, [2, 3])], {"idx": idx})
    graph = _prepared_vs_ort(model, {"x": RNG.standard_normal((2, 3)).astype(np.float32)})
    assert graph.op_histogram() == {"Gather": 1}


@pytest.mark.parametrize("order", ["torch", "keras"])
def test_gelu_tanh_written_out(order: str) -> None:
    c = helper.make_node
    k = float(np.sqrt(2 / np.pi))
    consts = {"c3": np.array(3.0, np.float32), "k1": np.array(0.044715, np.float32),
              "k2": np.array(k, np.float32), "one": np.array(1.0, np.float32),
              "half": np.array(0.5, np.float32)}  # fmt: skip
    nodes = [c("Pow", ["x", "c3"], ["x3"]) if order == "torch" else c("Mul", ["x", "x"], ["xx"])]
    if order == "keras":
        nodes.append(c("Mul", ["x", "xx"], ["x3"]))
    nodes += [c("Mul", ["x3", "k1"], ["t"]), c("Add", ["x", "t"], ["inner"]),
              c("Mul", ["inner", "k2"], ["scaled"]), c("Tanh", ["scaled"], ["th"]),
              c("Add", ["th", "one"], ["p1"])]  # fmt: skip
    if order == "torch":
        nodes += [c("Mul", ["x", "half"], ["hx"]), c("Mul", ["hx", "p1"], ["y"])]
    else:
        nodes += [c("Mul", ["x", "p1"], ["xp"]), c("Mul", ["xp", "half"], ["y"])]
    model = make_model(nodes, [("x", F32, [2, 8])], [("y", F32, [2, 8])], consts)
    x = (RNG.standard_normal((2, 8)) * 3).astype(np.float32)
    graph = _prepared_vs_ort(model, {"x": x}, atol=1e-6)
    assert graph.op_histogram() == {"Gelu": 1}


def test_gelu_erf_dynamo_association() -> None:
    """dynamo writes x * (0.5 * (1 + erf(x / sqrt 2)))."""
    c = helper.make_node
    consts = {"s2": np.array(np.sqrt(2), np.float32), "one": np.array(1.0, np.float32),
              "half": np.array(0.5, np.float32)}  # fmt: skip
    nodes = [c("Div", ["x", "s2"], ["d"]), c("Erf", ["d"], ["e"]), c("Add", ["e", "one"], ["p"]),
             c("Mul", ["half", "p"], ["h"]), c("Mul", ["x", "h"], ["y"])]  # fmt: skip
    model = make_model(nodes, [("x", F32, [2, 8])], [("y", F32, [2, 8])], consts)
    graph = _prepared_vs_ort(model, {"x": RNG.standard_normal((2, 8)).astype(np.float32)},
                             atol=1e-6)  # fmt: skip
    assert graph.op_histogram() == {"Gelu": 1}


def test_split_to_slices_matches_onnxruntime() -> None:
    nodes = [helper.make_node("Split", ["x", "sizes"], ["a", "b", "c"], axis=1)]
    outs = [("a", F32, [1, 2, 4]), ("b", F32, [1, 3, 4]), ("c", F32, [1, 1, 4])]
    model = make_model(nodes, [("x", F32, [1, 6, 4])], outs,
                       {"sizes": np.array([2, 3, 1], np.int64)}, opset=18)  # fmt: skip
    x = RNG.standard_normal((1, 6, 4)).astype(np.float32)
    graph = split_to_slices(prepare(model_to_graph(model)))
    verify(graph)
    assert graph.op_histogram() == {"Slice": 3}
    ours = Interpreter(graph)({"x": x})
    for name, ref in zip(graph.output_names, _ort(model, {"x": x}), strict=True):
        np.testing.assert_array_equal(np.asarray(ours[name]), ref)


def test_repeated_mask_arithmetic_is_merged() -> None:
    """Each torch layer repeats Where(mask, 0, -inf) with its own constants: one copy stays."""
    c = helper.make_node
    nodes = [c("Cast", ["mask"], ["mb"], to=TensorProto.BOOL)]
    for i in range(2):
        nodes += [
            c("Constant", [], [f"z{i}"], value=helper.make_tensor(f"z{i}", F32, [], [0.0])),
            c("Constant", [], [f"f{i}"], value=helper.make_tensor(f"f{i}", F32, [], [-np.inf])),
            c("Where", ["mb", f"z{i}", f"f{i}"], [f"w{i}"]),
            c("Add", ["scores" if i == 0 else "p0", f"w{i}"], [f"a{i}"]),
            c("Softmax", [f"a{i}"], [f"p{i}"], axis=-1),
        ]
    model = make_model(nodes, [("scores", F32, [1, S]), ("mask", I64, [1, S])],
                       [("p1", F32, [1, S])])  # fmt: skip
    feeds = {"scores": SCORES[0, 0, :1], "mask": np.array([[1, 1, 0, 1, 0, 0]], np.int64)}
    graph = _prepared_vs_ort(model, feeds)
    assert graph.op_histogram().get("Sub") == 1
