"""Bad input: each case is a one-line CLI error with a non-zero exit, and a typed library error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from typer.testing import CliRunner

from edgeq.cli import app
from edgeq.errors import DynamicShapeError, GraphError, ModelLoadError, UnsupportedOpError
from edgeq.ir.interpreter import Interpreter
from edgeq.ir.onnx_io import load_model
from edgeq.ir.passes import prepare
from tests.conftest import F32, make_model

runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


def test_missing_file(tmp_path: Path) -> None:
    code, out = cli("inspect", str(tmp_path / "nope.onnx"))
    assert code == 2
    assert "does not exist" in error_line(out)


def test_truncated_model(tmp_path: Path, cls_model: Path) -> None:
    data = cls_model.read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated"):
        load_model(bad)
    code, out = cli("inspect", str(bad))
    assert code == 2
    assert "truncated" in error_line(out)


@pytest.mark.parametrize("cut", [1, 17, 1000])
def test_truncated_tiny_model(tmp_path: Path, cut: int) -> None:
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"])], [("x", F32, [1, 4])], [("y", F32, [1, 4])],
        initializers={"unused": np.ones((64, 64), np.float32)},
    )  # fmt: skip
    data = model.SerializeToString()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[:-cut])
    with pytest.raises(ModelLoadError):
        load_model(bad)


def test_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is a text file, not a model\n" * 10)
    code, out = cli("inspect", str(bad))
    assert code == 2
    assert "not" in error_line(out) and "ONNX" in error_line(out)


def test_empty_file(tmp_path: Path) -> None:
    bad = tmp_path / "empty.onnx"
    bad.write_bytes(b"")
    code, out = cli("inspect", str(bad))
    assert code == 2 and "empty" in error_line(out)


def test_unsupported_op(tmp_path: Path) -> None:
    model = make_model(
        [
            helper.make_node("Relu", ["x"], ["h"], name="relu0"),
            helper.make_node("NonMaxSuppression", ["h", "h"], ["y"], name="nms0"),
        ],
        [("x", F32, [1, 4, 4])],
        [("y", onnx.TensorProto.INT64, [1, 3])],
    )
    path = tmp_path / "nms.onnx"
    onnx.save(model, path)
    with pytest.raises(UnsupportedOpError) as info:
        prepare(load_model(path))
    msg = str(info.value)
    assert "NonMaxSuppression" in msg and "nms0" in msg and "Conv" in msg  # lists supported ops
    code, out = cli("run", str(path))
    line = error_line(out)
    assert code == 2 and "NonMaxSuppression" in line and "nms0" in line and "supported ops" in line


def test_custom_domain_op(tmp_path: Path) -> None:
    node = helper.make_node("FusedThing", ["x"], ["y"], name="fused", domain="com.example")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", F32, [2])],
        [helper.make_tensor_value_info("y", F32, [2])],
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    model.ir_version = 8
    path = tmp_path / "custom.onnx"
    onnx.save(model, path)
    code, out = cli("run", str(path))
    assert code == 2 and "com.example::FusedThing" in error_line(out)


def test_unfixed_dynamic_dim(rec_model: Path) -> None:
    graph = load_model(rec_model)
    with pytest.raises(DynamicShapeError, match="--input-shape x="):
        prepare(graph)
    code, out = cli("run", str(rec_model))
    line = error_line(out)
    assert code == 2 and "input 'x'" in line and "--input-shape x=" in line


def test_bad_input_shape_spec(rec_model: Path) -> None:
    code, out = cli("run", str(rec_model), "--input-shape", "x=1,3,48")
    assert code == 2 and "rank" in error_line(out)
    code, out = cli("run", str(rec_model), "--input-shape", "y=1,3,48,320")
    assert code == 2 and "not a model input" in error_line(out)
    code, out = cli("run", str(rec_model), "--input-shape", "x=1,4,48,320")
    assert code == 2 and "fixed to 3" in error_line(out)
    code, out = cli("run", str(rec_model), "--input-shape", "x=1,a,48,320")
    assert code == 2 and "integers" in error_line(out)


def _external_model(tmp_path: Path, location: str) -> Path:
    model = make_model(
        [helper.make_node("Add", ["x", "w"], ["y"])], [("x", F32, [4])], [("y", F32, [4])],
        initializers={"w": np.arange(4, dtype=np.float32)},
    )  # fmt: skip
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        tensor.external_data.append(onnx.StringStringEntryProto(key=key, value=value))
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_inside_folder_loads(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "weights.bin")
    (path.parent / "weights.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    graph = prepare(load_model(path))
    out = Interpreter(graph)({"x": np.ones(4, np.float32)})["y"]
    np.testing.assert_array_equal(out, [1, 2, 3, 4])


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_escaping_folder_refused(tmp_path: Path, location: str) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    path = _external_model(tmp_path, location)
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        load_model(path)
    code, out = cli("inspect", str(path))
    assert code == 2 and "refused" in error_line(out)


def test_external_data_symlink_escape_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    path = _external_model(tmp_path, "link.bin")
    (path.parent / "link.bin").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(ModelLoadError, match="outside"):
        load_model(path)


def test_external_data_missing(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "weights.bin")
    with pytest.raises(ModelLoadError, match="missing"):
        load_model(path)


def test_cyclic_graph(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"], name="add_a"),
        helper.make_node("Relu", ["a"], ["b"], name="relu_b"),
    ]
    model = make_model(nodes, [("x", F32, [2])], [("b", F32, [2])])
    path = tmp_path / "cycle.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(GraphError, match="cycle"):
        load_model(path)
    code, out = cli("inspect", str(path))
    assert code == 2 and "cycle" in error_line(out)


def test_unsorted_graph_is_sorted(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Relu", ["a"], ["y"], name="second"),
        helper.make_node("Neg", ["x"], ["a"], name="first"),
    ]
    model = make_model(nodes, [("x", F32, [3])], [("y", F32, [3])])
    path = tmp_path / "unsorted.onnx"
    path.write_bytes(model.SerializeToString())
    graph = load_model(path)
    assert [n.name for n in graph.nodes] == ["first", "second"]
    out = Interpreter(prepare(graph))({"x": np.array([-1.0, 2.0, -3.0], np.float32)})["y"]
    np.testing.assert_array_equal(out, [1.0, 0.0, 3.0])


def test_opset_too_new(tmp_path: Path) -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", F32, [2])],
                       [("y", F32, [2])], opset=22)  # fmt: skip
    path = tmp_path / "new.onnx"
    path.write_bytes(model.SerializeToString())
    code, out = cli("inspect", str(path))
    assert code == 2 and "opset 22" in error_line(out)


def test_unknown_attribute_refused(tmp_path: Path) -> None:
    node = helper.make_node("Relu", ["x"], ["y"], name="r", flavour=3)
    model = make_model([node], [("x", F32, [2])], [("y", F32, [2])])
    graph = load_model_bytes(model)
    with pytest.raises(UnsupportedOpError, match="flavour"):
        prepare(graph)


def load_model_bytes(model: onnx.ModelProto):  # type: ignore[no-untyped-def]
    from edgeq.ir.onnx_io import model_to_graph

    return model_to_graph(model)


def test_feed_errors() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", F32, [2, 3])],
                       [("y", F32, [2, 3])])  # fmt: skip
    interp = Interpreter(prepare(load_model_bytes(model)))
    from edgeq.errors import InputError

    with pytest.raises(InputError, match="shape"):
        interp({"x": np.zeros((3, 2), np.float32)})
    with pytest.raises(InputError, match="missing input 'x'"):
        interp({})
