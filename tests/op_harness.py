"""Single-op ONNX models and a comparison of edgeq's interpreter against onnxruntime.

`make_single_op_model` builds a one-node model: runtime inputs become graph inputs with their
full static shapes (edgeq's interpreter needs them), `const_inputs` become initializers (shape
operands such as Reshape's shape, Slice's starts/ends, Pad's pads must be static for edgeq).
Graph outputs carry no type, which onnxruntime accepts (it infers them) and edgeq ignores.
`compare` runs both and checks shapes, dtype kinds and values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from edgeq.ir.interpreter import Interpreter
from edgeq.ir.onnx_io import model_to_graph

# onnxruntime 1.31 refuses IR 14 (onnx 1.23's default); IR 8 covers every opset used here.
IR_VERSION = 8


def _untyped_output(name: str) -> onnx.ValueInfoProto:
    return helper.make_value_info(name, onnx.TypeProto())


def output_names(n_outputs: int) -> list[str]:
    return ["y"] if n_outputs == 1 else [f"y{i}" for i in range(n_outputs)]


def make_graph(
    op_type: str,
    inputs: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    *,
    const_inputs: Mapping[str, np.ndarray] | None = None,
    node_inputs: Sequence[str] | None = None,
    outputs: Sequence[str] = ("y",),
    name: str = "g",
) -> onnx.GraphProto:
    """A graph of one node; see `make_single_op_model`."""
    consts = dict(const_inputs or {})
    order = list(node_inputs) if node_inputs is not None else [*inputs, *consts]
    unknown = [n for n in order if n and n not in inputs and n not in consts]
    if unknown:
        raise ValueError(f"node input(s) {unknown} are neither inputs nor const_inputs")
    node = helper.make_node(op_type, order, list(outputs), name=f"{op_type}_0", **dict(attrs))
    graph_inputs = [
        helper.make_tensor_value_info(
            n, helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype), list(np.shape(a))
        )
        for n, a in inputs.items()
    ]
    initializers = [numpy_helper.from_array(np.asarray(a), n) for n, a in consts.items()]
    return helper.make_graph(
        [node],
        name,
        graph_inputs,
        [_untyped_output(o) for o in outputs if o],
        initializer=initializers,
    )


def make_single_op_model(
    op_type: str,
    inputs: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any] | None = None,
    *,
    const_inputs: Mapping[str, np.ndarray] | None = None,
    n_outputs: int = 1,
    opset: int = 17,
    node_inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
) -> onnx.ModelProto:
    """A model of one `op_type` node.

    inputs: runtime inputs (name -> example array, which fixes dtype and shape).
    const_inputs: inputs stored as initializers.
    node_inputs: the node's input names in ONNX positional order, "" for an omitted optional
        input; by default all `inputs` then all `const_inputs`, in dict order.
    outputs: the node's output names ("" to omit one); by default `n_outputs` names.
    """
    outs = list(outputs) if outputs is not None else output_names(n_outputs)
    graph = make_graph(
        op_type,
        inputs,
        attrs or {},
        const_inputs=const_inputs,
        node_inputs=node_inputs,
        outputs=outs,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION
    return model


def run_onnxruntime(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4  # failures raise; keep its error log off the test output
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    arrays = {k: np.asarray(v) for k, v in feeds.items()}
    return dict(zip(names, session.run(names, arrays), strict=True))


def run_edgeq(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return Interpreter(model_to_graph(model))(feeds)


def assert_close(
    name: str, ref: np.ndarray, got: np.ndarray, rtol_rel: float, exact: bool | None = None
) -> None:
    ref, got = np.asarray(ref), np.asarray(got)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != onnxruntime {ref.shape}"
    assert got.dtype == ref.dtype, f"{name}: dtype {got.dtype} != onnxruntime {ref.dtype}"
    if exact is None:
        exact = ref.dtype.kind in "biu"
    if exact:
        mismatch = np.flatnonzero(got != ref)
        assert mismatch.size == 0, (
            f"{name}: {mismatch.size} of {ref.size} elements differ (first at flat index "
            f"{mismatch[0]}: {got.reshape(-1)[mismatch[0]]} vs {ref.reshape(-1)[mismatch[0]]})"
        )
        return
    r, g = ref.astype(np.float64), got.astype(np.float64)
    nan_r, nan_g = np.isnan(r), np.isnan(g)
    assert np.array_equal(nan_r, nan_g), f"{name}: NaN positions differ"
    same = (r == g) | nan_r  # equal infinities too
    if same.all():
        return
    err = np.abs(r - g)[~same]
    finite = r[np.isfinite(r)]
    scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    assert np.isfinite(err).all(), f"{name}: infinities differ"
    worst = float(err.max())
    assert worst <= rtol_rel * scale, (
        f"{name}: max|edgeq - onnxruntime| = {worst:.3g} > {rtol_rel:g} * {scale:.3g}"
    )


def compare(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    rtol_rel: float = 1e-5,
    *,
    exact: bool | None = None,
) -> dict[str, np.ndarray]:
    """Run `model` in onnxruntime (no graph optimizations) and in edgeq; assert they agree.

    Outputs must have the same names, shapes and dtypes (not only the same kind: a float64 leak
    would be a bug); values must satisfy max|a - b| <= rtol_rel * max(1, max|ref|), NaN and
    infinities in the same places; integer and bool outputs must be equal (or pass exact=True).
    Returns onnxruntime's outputs.
    """
    ref = run_onnxruntime(model, feeds)
    got = run_edgeq(model, feeds)
    assert set(got) == set(ref), f"outputs {sorted(got)} != onnxruntime {sorted(ref)}"
    for name, value in ref.items():
        assert_close(name, value, got[name], rtol_rel, exact)
    return ref
