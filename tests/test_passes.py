"""Passes on tiny hand-built graphs: the rewrite happens, and the math stays onnxruntime's."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from edgeq.errors import GraphError, InputError
from edgeq.ir.graph import Graph, Node, ValueInfo
from edgeq.ir.interpreter import Interpreter
from edgeq.ir.onnx_io import model_to_graph
from edgeq.ir.passes import (
    constant_fold,
    fix_input_shapes,
    inputs_to_constants,
    matmul_as_conv,
    prepare,
    remove_identity,
    verify,
)
from tests.conftest import F32, I64, make_model


def c(
    name: str, value: float | list[float] | list[int], dtype: type = np.float32
) -> onnx.NodeProto:
    arr = np.asarray(value, dtype=dtype)
    return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(arr, name))


def check_against_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray], **kw) -> Graph:  # type: ignore[no-untyped-def]
    graph = prepare(model_to_graph(model), **kw)
    ours = Interpreter(graph)(feeds)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)
    for name, r in zip(graph.output_names, ref, strict=True):
        np.testing.assert_allclose(ours[name], r, rtol=1e-5, atol=1e-6)
    return graph


RNG = np.random.default_rng(0)
X = (RNG.standard_normal((2, 8, 5)) * 4).astype(np.float32)


def test_hardswish_div_pattern() -> None:
    # x * clip(x + 3, 0, 6) / 6, as paddle2onnx writes HardSwish
    nodes = [
        c("three", 3.0), c("zero", 0.0), c("six", 6.0),
        helper.make_node("Add", ["x", "three"], ["a"]),
        helper.make_node("Clip", ["a", "zero", "six"], ["cl"]),
        helper.make_node("Mul", ["x", "cl"], ["m"]),
        helper.make_node("Div", ["m", "six"], ["y"]),
    ]  # fmt: skip
    model = make_model(nodes, [("x", F32, list(X.shape))], [("y", F32, list(X.shape))])
    graph = check_against_ort(model, {"x": X})
    assert graph.op_histogram() == {"HardSwish": 1}


def test_hardswish_from_hardsigmoid() -> None:
    nodes = [
        helper.make_node("HardSigmoid", ["x"], ["h"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["h", "x"], ["y"]),
    ]
    model = make_model(nodes, [("x", F32, list(X.shape))], [("y", F32, list(X.shape))])
    assert check_against_ort(model, {"x": X}).op_histogram() == {"HardSwish": 1}


def test_hardsigmoid_gate_on_other_tensor_is_not_hardswish() -> None:
    # SE gating: x * hardsigmoid(z) with z != x must stay as it is
    nodes = [
        helper.make_node("Neg", ["x"], ["z"]),
        helper.make_node("HardSigmoid", ["z"], ["h"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["x", "h"], ["y"]),
    ]
    model = make_model(nodes, [("x", F32, list(X.shape))], [("y", F32, list(X.shape))])
    hist = check_against_ort(model, {"x": X}).op_histogram()
    assert "HardSwish" not in hist and hist["HardSigmoid"] == 1


def test_hardsigmoid_pattern() -> None:
    nodes = [
        c("three", 3.0), c("zero", 0.0), c("six", 6.0),
        helper.make_node("Add", ["x", "three"], ["a"]),
        helper.make_node("Clip", ["a", "zero", "six"], ["cl"]),
        helper.make_node("Div", ["cl", "six"], ["y"]),
    ]  # fmt: skip
    model = make_model(nodes, [("x", F32, list(X.shape))], [("y", F32, list(X.shape))])
    assert check_against_ort(model, {"x": X}).op_histogram() == {"HardSigmoid": 1}


def test_pattern_with_shared_intermediate_is_kept() -> None:
    # the Clip output is also a graph output: fusing would lose it
    nodes = [
        c("three", 3.0), c("zero", 0.0), c("six", 6.0),
        helper.make_node("Add", ["x", "three"], ["a"]),
        helper.make_node("Clip", ["a", "zero", "six"], ["cl"]),
        helper.make_node("Div", ["cl", "six"], ["y"]),
    ]  # fmt: skip
    shape = list(X.shape)
    model = make_model(nodes, [("x", F32, shape)], [("y", F32, shape), ("cl", F32, shape)])
    hist = check_against_ort(model, {"x": X}).op_histogram()
    assert "HardSigmoid" not in hist


@pytest.mark.parametrize("order", ["x_first", "half_first"])
def test_gelu_pattern(order: str) -> None:
    nodes = [
        c("sqrt2", 1.4142135381698608), c("one", 1.0), c("half", 0.5),
        helper.make_node("Div", ["x", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]),
    ]  # fmt: skip
    if order == "x_first":
        nodes += [
            helper.make_node("Mul", ["x", "a"], ["m"]),
            helper.make_node("Mul", ["m", "half"], ["y"]),
        ]
    else:
        nodes += [
            helper.make_node("Mul", ["x", "half"], ["h"]),
            helper.make_node("Mul", ["h", "a"], ["y"]),
        ]
    model = make_model(nodes, [("x", F32, list(X.shape))], [("y", F32, list(X.shape))])
    assert check_against_ort(model, {"x": X}).op_histogram() == {"Gelu": 1}


@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_pattern(affine: bool) -> None:
    gamma = RNG.standard_normal(5).astype(np.float32)
    beta = RNG.standard_normal(5).astype(np.float32)
    nodes = [
        c("two", 2.0), c("eps", 1e-5),
        helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]),
        helper.make_node("Sub", ["x", "mu"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["p"]),
        helper.make_node("ReduceMean", ["p"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["s"]),
        helper.make_node("Div", ["d", "s"], ["n" if affine else "y"]),
    ]  # fmt: skip
    inits = {}
    if affine:
        nodes += [helper.make_node("Mul", ["n", "gamma"], ["g"]),
                  helper.make_node("Add", ["g", "beta"], ["y"])]  # fmt: skip
        inits = {"gamma": gamma, "beta": beta}
    model = make_model(nodes, [("x", F32, list(X.shape))], [("y", F32, list(X.shape))],
                       initializers=inits, opset=13)  # fmt: skip
    graph = check_against_ort(model, {"x": X})
    assert graph.op_histogram() == {"LayerNormalization": 1}
    ln = graph.nodes[0]
    assert ln.attrs["epsilon"] == pytest.approx(1e-5)


def test_batchnorm_folds_into_conv() -> None:
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(4).astype(np.float32)
    scale, bias = RNG.random(4).astype(np.float32) + 0.5, RNG.standard_normal(4).astype(np.float32)
    mean, var = RNG.standard_normal(4).astype(np.float32), RNG.random(4).astype(np.float32) + 0.1
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["y"], epsilon=1e-3),
    ]
    model = make_model(
        nodes, [("x", F32, [1, 3, 6, 6])], [("y", F32, [1, 4, 6, 6])],
        initializers={"w": w, "b": b, "s": scale, "bb": bias, "m": mean, "v": var},
    )  # fmt: skip
    x = RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)
    graph = check_against_ort(model, {"x": x})
    assert graph.op_histogram() == {"Conv": 1}


def test_batchnorm_not_folded_when_conv_output_is_shared() -> None:
    w = RNG.standard_normal((2, 1, 1, 1)).astype(np.float32)
    p = [np.ones(2, np.float32), np.zeros(2, np.float32), np.zeros(2, np.float32),
         np.ones(2, np.float32)]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["y"]),
        helper.make_node("Relu", ["c"], ["r"]),
    ]
    model = make_model(
        nodes, [("x", F32, [1, 1, 2, 2])], [("y", F32, [1, 2, 2, 2]), ("r", F32, [1, 2, 2, 2])],
        initializers={"w": w, "s": p[0], "bb": p[1], "m": p[2], "v": p[3]},
    )  # fmt: skip
    graph = check_against_ort(model, {"x": RNG.standard_normal((1, 1, 2, 2)).astype(np.float32)})
    assert graph.op_histogram()["BatchNormalization"] == 1


def test_shape_chain_folds_to_constant_reshape() -> None:
    # Reshape(x, Concat(Gather(Shape(x), 0), [-1])) as exporters write flatten
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        c("zero", [0], np.int64),
        helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
        c("minus1", [-1], np.int64),
        helper.make_node("Concat", ["b", "minus1"], ["shape"], axis=0),
        helper.make_node("Cast", ["shape"], ["shape64"], to=onnx.TensorProto.INT64),
        helper.make_node("Reshape", ["x", "shape64"], ["y"]),
    ]
    model = make_model(nodes, [("x", F32, ["N", 8, 5])], [("y", F32, ["N", 40])])
    graph = check_against_ort(model, {"x": X}, input_shapes={"x": X.shape})
    assert graph.op_histogram() == {"Reshape": 1}
    reshape = graph.nodes[0]
    np.testing.assert_array_equal(graph.constants[reshape.inputs[1]], [2, -1])


def _if_model(nested: bool) -> onnx.ModelProto:
    then_inner = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["t_in"])], "then_inner", [],
        [helper.make_tensor_value_info("t_in", F32, None)],
    )  # fmt: skip
    else_inner = helper.make_graph(
        [helper.make_node("Abs", ["x"], ["e_in"])], "else_inner", [],
        [helper.make_tensor_value_info("e_in", F32, None)],
    )  # fmt: skip
    if nested:
        then_nodes = [
            c("two_i", 2, np.int64), c("two_j", 2, np.int64),
            helper.make_node("Equal", ["two_i", "two_j"], ["inner_cond"]),
            helper.make_node("If", ["inner_cond"], ["t_out"], then_branch=then_inner,
                             else_branch=else_inner),
        ]  # fmt: skip
    else:
        then_nodes = [helper.make_node("Neg", ["x"], ["t_out"])]
    then_g = helper.make_graph(then_nodes, "then", [],
                               [helper.make_tensor_value_info("t_out", F32, None)])  # fmt: skip
    else_g = helper.make_graph([helper.make_node("Relu", ["x"], ["e_out"])], "else", [],
                               [helper.make_tensor_value_info("e_out", F32, None)])  # fmt: skip
    nodes = [
        c("k", 16000, np.int64),
        helper.make_node("Equal", ["sr", "k"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
    ]
    return make_model(nodes, [("x", F32, [2, 8, 5]), ("sr", I64, [])], [("y", F32, [2, 8, 5])])


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("sr", [16000, 8000])
def test_if_with_constant_condition_is_inlined(nested: bool, sr: int) -> None:
    model = _if_model(nested)
    graph = prepare(model_to_graph(model), input_values={"sr": sr})
    assert "If" not in graph.op_histogram()
    expected_op = "Neg" if sr == 16000 else "Relu"  # nested: the inner If folds to Neg too
    assert graph.op_histogram() == {expected_op: 1}
    ours = Interpreter(graph)({"x": X})["y"]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": X, "sr": np.array(sr, np.int64)})[0]
    np.testing.assert_array_equal(ours, ref)


def test_if_with_runtime_condition_runs_both_branches() -> None:
    model = _if_model(False)
    graph = prepare(model_to_graph(model))
    assert graph.op_histogram()["If"] == 1
    interp = Interpreter(graph)
    for sr in (16000, 8000):
        out = interp({"x": X, "sr": np.array(sr, np.int64)})["y"]
        np.testing.assert_array_equal(out, -X if sr == 16000 else np.maximum(X, 0))


def test_identity_removed_even_before_graph_output() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Identity", ["r"], ["i"]),
        helper.make_node("Dropout", ["i"], ["d"]),
        helper.make_node("Identity", ["d"], ["y"]),
    ]
    model = make_model(nodes, [("x", F32, list(X.shape))], [("y", F32, list(X.shape))])
    graph = check_against_ort(model, {"x": X})
    assert graph.op_histogram() == {"Relu": 1}
    assert graph.nodes[0].outputs == ["y"]


def test_identity_of_input_to_output_is_kept() -> None:
    model = make_model([helper.make_node("Identity", ["x"], ["y"])], [("x", F32, [3])],
                       [("y", F32, [3])])  # fmt: skip
    graph = remove_identity(model_to_graph(model))
    verify(graph)
    assert graph.op_histogram() == {"Identity": 1}


def test_dead_nodes_removed_and_fold_keeps_outputs() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["y"]),
        helper.make_node("Neg", ["x"], ["unused"]),
    ]
    model = make_model(nodes, [("x", F32, [3])], [("y", F32, [3])])
    graph = prepare(model_to_graph(model))
    assert graph.op_histogram() == {"Relu": 1}


def test_fold_is_idempotent_on_real_model(cls_model) -> None:  # type: ignore[no-untyped-def]
    from edgeq.ir.onnx_io import load_model

    graph = prepare(load_model(cls_model), input_shapes={"x": (1, 3, 48, 192)})
    again = constant_fold(graph)
    assert len(again.nodes) == len(graph.nodes)


def test_fix_input_shapes_errors() -> None:
    graph = model_to_graph(make_model([helper.make_node("Relu", ["x"], ["y"])],
                                      [("x", F32, ["N", 4])], [("y", F32, ["N", 4])]))  # fmt: skip
    with pytest.raises(InputError, match="not a model input"):
        fix_input_shapes(graph, {"z": (1, 4)})
    with pytest.raises(InputError, match="rank"):
        fix_input_shapes(graph, {"x": (1, 4, 1)})
    with pytest.raises(InputError, match="fixed to 4"):
        fix_input_shapes(graph, {"x": (1, 5)})
    fixed = fix_input_shapes(graph, {"x": (3, 4)})
    assert fixed.inputs[0].shape == (3, 4) and graph.inputs[0].shape == ("N", 4)  # no mutation


def test_inputs_to_constants_unknown_name() -> None:
    graph = model_to_graph(_if_model(False))
    with pytest.raises(InputError, match="not a model input"):
        inputs_to_constants(graph, {"rate": 16000})


def test_verify_catches_double_assignment() -> None:
    graph = Graph(
        nodes=[Node("Relu", ["x"], ["y"], "a"), Node("Neg", ["x"], ["y"], "b")],
        inputs=[ValueInfo("x", np.dtype(np.float32), (2,))],
        outputs=[ValueInfo("y", np.dtype(np.float32), (2,))],
    )
    with pytest.raises(GraphError, match="assigned twice"):
        verify(graph)


def test_matmul_as_conv_takes_the_bias_add_into_the_conv() -> None:
    # y = x W + b (b read along the last axis) → one Conv with a bias; the same numbers. A
    # MatMul output that something else reads too keeps its own Add.
    rng = np.random.default_rng(7)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    for shared in (False, True):
        nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
                 helper.make_node("Add", ["b", "m"], ["y"], name="bias")]  # fmt: skip
        outs = [("y", F32, [1, 4, 5])] + ([("m", F32, [1, 4, 5])] if shared else [])
        model = make_model(nodes, [("x", F32, [1, 4, 6])], outs, initializers={"w": w, "b": b})
        g = prepare(model_to_graph(model))
        g2 = matmul_as_conv(g)
        conv = next(n for n in g2.nodes if n.op_type == "Conv")
        assert (len(conv.inputs) == 3) != shared
        assert any(n.op_type == "Add" for n in g2.nodes) == shared
        x = {"x": rng.standard_normal((1, 4, 6)).astype(np.float32)}
        ref, got = Interpreter(g)(x), Interpreter(g2)(x)
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-5)
