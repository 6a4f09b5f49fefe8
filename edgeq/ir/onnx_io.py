"""ONNX <-> Graph: loading with clear errors (truncated, not ONNX, unsafe external data) and
writing back (used by exporters and to check passes against onnxruntime)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from edgeq.errors import EdgeqError, ModelLoadError
from edgeq.files import check_size, nbytes_of
from edgeq.ir.graph import Dim, Graph, Node, ValueInfo, topological_order

log = logging.getLogger(__name__)

MIN_OPSET, MAX_OPSET = 11, 21
# onnxruntime 1.31 refuses IR 14 (what onnx 1.23 writes by default); 10 pairs with opset 21.
DEFAULT_IR_VERSION = 10


def np_dtype(elem_type: int) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        raise ModelLoadError(f"unknown ONNX element type {elem_type}",
                             "re-export the model (a corrupt or too new file?)") from None  # fmt: skip


def onnx_dtype(dtype: np.dtype | type) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def load_model(path: str | os.PathLike[str]) -> Graph:
    """Load an ONNX file into a Graph. Raises ModelLoadError with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model file '{path}' does not exist", "check the path")
    if path.is_dir():
        raise ModelLoadError(f"'{path}' is a folder, not an .onnx file", "pass the .onnx file")
    data = path.read_bytes()
    if not data:
        raise ModelLoadError(f"'{path}' is empty", "re-export or re-download the model")
    model = parse_model_bytes(data, str(path), check=False)
    load_external_data(model, path.parent)
    check_model(model, str(path))
    return model_to_graph(model, source=str(path))


def parse_model_bytes(data: bytes, source: str = "<bytes>", check: bool = True) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"'{source}' is not a readable ONNX model (protobuf parse failed: {exc}); "
            "it is truncated or not an ONNX file",
            "re-export the model or check the download",
        ) from None
    if not model.HasField("graph") or not model.opset_import or model.ir_version <= 0:
        raise ModelLoadError(
            f"'{source}' is not an ONNX model (no graph/opset/IR version)",
            "pass an .onnx file exported by torch.onnx, tf2onnx or paddle2onnx",
        )
    check_names(model.graph, source)
    if check:
        check_model(model, source)
    return model


def check_names(graph: onnx.GraphProto, source: str) -> None:
    """Every name in the graph (and its subgraphs) is text: protobuf hands back bytes for a
    string field that is not valid UTF-8, which nothing downstream can use."""

    def bad(value: Any, what: str) -> None:
        if not isinstance(value, str):
            raise ModelLoadError(
                f"'{source}' has a {what} that is not UTF-8 text ({bytes(value)[:40]!r})",
                "re-export the model: ONNX names must be UTF-8",
            )

    bad(graph.name, "graph name")
    for vi in (*graph.input, *graph.output, *graph.value_info):
        bad(vi.name, "value name")
        if vi.type.HasField("tensor_type"):
            for d in vi.type.tensor_type.shape.dim:
                bad(d.dim_param, "dimension name")
    for t in graph.initializer:
        bad(t.name, "initializer name")
        for e in t.external_data:
            bad(e.key, "external data key")
            bad(e.value, "external data value")
    for node in graph.node:
        bad(node.name, "node name")
        bad(node.op_type, "op type")
        bad(node.domain, "op domain")
        for name in (*node.input, *node.output):
            bad(name, "tensor name")
        for attr in node.attribute:
            bad(attr.name, "attribute name")
            if attr.type == AttributeProto.GRAPH:
                check_names(attr.g, source)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    check_names(g, source)


def check_model(model: onnx.ModelProto, source: str) -> None:
    """onnx's structural checker, with a one-line error (an unsorted graph is accepted)."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        if "topologically sorted" in first:
            return  # unsorted is fine (we sort); a real cycle is reported by the loader
        raise ModelLoadError(
            f"'{source}' is an invalid or truncated ONNX model: {first}",
            "re-export the model; a truncated download also shows up this way",
        ) from None


def _external_tensors(model: onnx.ModelProto) -> list[TensorProto]:
    tensors: list[TensorProto] = []

    def visit(graph: onnx.GraphProto) -> None:
        tensors.extend(graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == AttributeProto.TENSOR:
                    tensors.append(attr.t)
                elif attr.type == AttributeProto.GRAPH:
                    visit(attr.g)
                elif attr.type == AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        visit(g)

    visit(model.graph)
    return [t for t in tensors if t.data_location == TensorProto.EXTERNAL]


def load_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    """Read external tensor data, refusing any location outside the model's folder, offsets
    and lengths that are not byte counts, and sizes over the limit (checked before reading)."""
    base = base_dir.resolve()
    for tensor in _external_tensors(model):
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        if "\0" in location:
            raise ModelLoadError(f"tensor '{tensor.name}' has an external data location with a "
                                 "NUL byte; refused", "re-export the model")  # fmt: skip
        target = (base / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(base):
            raise ModelLoadError(
                f"tensor '{tensor.name}' points to external data '{location}' outside the "
                f"model's folder '{base}'; refused",
                "keep external data files next to the .onnx file",
            )
        if not target.is_file():
            raise ModelLoadError(
                f"external data file '{location}' for tensor '{tensor.name}' is missing",
                f"put it next to the model in '{base}'",
            )
        nbytes = tensor_nbytes(tensor)
        offset = _byte_count(info.get("offset", "0"), "offset", tensor.name)
        length = _byte_count(info.get("length", str(nbytes)), "length", tensor.name)
        if length != nbytes:
            raise ModelLoadError(
                f"external data for tensor '{tensor.name}' has length {length}, its shape and "
                f"dtype need {nbytes} bytes", "re-export the model with its data file")  # fmt: skip
        available = target.stat().st_size - offset
        if length > available:
            raise ModelLoadError(
                f"external data '{location}' for tensor '{tensor.name}' is truncated "
                f"({max(available, 0)} of {length} bytes)",
                "re-export the model with its data file",
            )
        with open(target, "rb") as fh:
            fh.seek(offset)
            raw = fh.read(length)
        if len(raw) != length:
            raise ModelLoadError(
                f"external data '{location}' for tensor '{tensor.name}' is truncated "
                f"({len(raw)} of {length} bytes)",
                "re-export the model with its data file",
            )
        tensor.raw_data = raw
        tensor.data_location = TensorProto.DEFAULT
        del tensor.external_data[:]


def _byte_count(text: str, what: str, tensor: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ModelLoadError(f"external data {what} {text!r} of tensor '{tensor}' is not a byte "
                             "count", "re-export the model with its data file")  # fmt: skip
    return value


def tensor_nbytes(tensor: TensorProto) -> int:
    """Bytes a tensor's shape and dtype need, refused over the size limit (before reading)."""
    if any(d < 0 for d in tensor.dims):
        raise ModelLoadError(f"tensor '{tensor.name}' has a negative dimension {list(tensor.dims)}",
                             "re-export the model")  # fmt: skip
    try:
        dtype = np_dtype(tensor.data_type)
    except (KeyError, ValueError, TypeError):
        raise ModelLoadError(f"tensor '{tensor.name}' has an unknown data type {tensor.data_type}",
                             "re-export the model") from None  # fmt: skip
    itemsize = dtype.itemsize if dtype.kind not in "OUS" else 1
    nbytes = nbytes_of(tensor.dims, np.uint8) * itemsize
    try:
        check_size(nbytes, f"tensor '{tensor.name}' (shape {list(tensor.dims)}, {dtype})")
    except EdgeqError as exc:
        raise ModelLoadError(exc.problem, exc.fix) from None
    return nbytes


def tensor_array(tensor: TensorProto) -> np.ndarray:
    """A TensorProto's values, its size checked first; a malformed tensor is one line."""
    tensor_nbytes(tensor)
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError) as exc:
        raise ModelLoadError(
            f"tensor '{tensor.name}' is malformed ({' '.join(str(exc).split())[:160]})",
            "re-export the model",
        ) from None


def _dims(type_proto: onnx.TypeProto) -> tuple[Dim, ...] | None:
    tt = type_proto.tensor_type
    if not tt.HasField("shape"):
        return None
    dims: list[Dim] = []
    for i, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or f"?{i}")
    return tuple(dims)


def _value_info(vi: onnx.ValueInfoProto) -> ValueInfo | None:
    if not vi.type.HasField("tensor_type"):
        return None
    return ValueInfo(vi.name, np_dtype(vi.type.tensor_type.elem_type), _dims(vi.type))


def _attr_value(attr: AttributeProto, opset: int) -> Any:
    if attr.type == AttributeProto.TENSOR:
        return tensor_array(attr.t)
    if attr.type == AttributeProto.GRAPH:
        return graph_from_proto(attr.g, opset)
    if attr.type == AttributeProto.GRAPHS:
        return [graph_from_proto(g, opset) for g in attr.graphs]
    value = helper.get_attribute_value(attr)
    try:
        if isinstance(value, bytes):
            return value.decode()
        if attr.type == AttributeProto.STRINGS:
            return [v.decode() for v in value]
    except UnicodeDecodeError:
        raise ModelLoadError(f"attribute '{attr.name}' holds a string that is not UTF-8 text",
                             "re-export the model") from None  # fmt: skip
    if attr.type in (AttributeProto.INTS, AttributeProto.FLOATS):
        return list(value)
    return value


def constant_node_value(node: onnx.NodeProto) -> np.ndarray:
    attr = node.attribute[0]
    kind = attr.name
    if kind == "value":
        return tensor_array(attr.t)
    if kind == "value_float":
        return np.array(attr.f, dtype=np.float32)
    if kind == "value_floats":
        return np.array(list(attr.floats), dtype=np.float32)
    if kind == "value_int":
        return np.array(attr.i, dtype=np.int64)
    if kind == "value_ints":
        return np.array(list(attr.ints), dtype=np.int64)
    raise ModelLoadError(f"Constant node '{node.name}' uses unsupported attribute '{kind}'")


def graph_from_proto(gp: onnx.GraphProto, opset: int) -> Graph:
    constants = {t.name: tensor_array(t) for t in gp.initializer}
    nodes: list[Node] = []
    for i, n in enumerate(gp.node):
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(n.attribute) == 1:
            constants[n.output[0]] = constant_node_value(n)
            continue
        attrs = {a.name: _attr_value(a, opset) for a in n.attribute}
        nodes.append(
            Node(
                op_type=n.op_type,
                inputs=list(n.input),
                outputs=list(n.output),
                name=n.name or f"{n.op_type}_{i}",
                attrs=attrs,
                domain=n.domain if n.domain != "ai.onnx" else "",
            )
        )
    # IR < 4 lists initializers among inputs; they are constants, not user inputs.
    inputs = [v for v in (_value_info(x) for x in gp.input) if v and v.name not in constants]
    outputs = [
        v or ValueInfo(o.name, np.dtype(np.float32), None)
        for v, o in ((_value_info(o), o) for o in gp.output)
    ]
    value_info = {v.name: v for v in (_value_info(x) for x in gp.value_info) if v}
    return Graph(
        nodes=nodes,
        inputs=inputs,
        outputs=outputs,
        constants=constants,
        value_info=value_info,
        name=gp.name or "graph",
        opset=opset,
    )


def model_opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    return 1


def model_to_graph(model: onnx.ModelProto, source: str = "<model>") -> Graph:
    opset = model_opset(model)
    if opset > MAX_OPSET:
        raise ModelLoadError(
            f"'{source}' uses ONNX opset {opset}; edgeq supports opsets {MIN_OPSET}–{MAX_OPSET}",
            f"re-export with opset ≤ {MAX_OPSET}",
        )
    if opset < MIN_OPSET:
        log.warning("%s uses opset %d (< %d); trying anyway", source, opset, MIN_OPSET)
    graph = graph_from_proto(model.graph, opset)
    graph.nodes = topological_order(graph)  # raises GraphError naming a node on a cycle
    graph.metadata = {
        p.key: p.value
        for p in model.metadata_props
        if isinstance(p.key, str) and isinstance(p.value, str)
    }
    return graph


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _dims_proto(shape: tuple[Dim, ...] | None) -> list[int | str] | None:
    if shape is None:
        return None
    return [d if isinstance(d, int) else str(d) for d in shape]


def _to_attr(name: str, value: Any) -> AttributeProto:
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, numpy_helper.from_array(value, name))
    if isinstance(value, Graph):
        return helper.make_attribute(name, graph_to_proto(value))
    if isinstance(value, list) and value and isinstance(value[0], Graph):
        return helper.make_attribute(name, [graph_to_proto(g) for g in value])
    return helper.make_attribute(name, value)


def graph_to_proto(graph: Graph) -> onnx.GraphProto:
    nodes = []
    for node in graph.nodes:
        proto = helper.make_node(
            node.op_type, node.inputs, node.outputs, name=node.name, domain=node.domain or None
        )
        proto.attribute.extend(_to_attr(k, v) for k, v in node.attrs.items())
        nodes.append(proto)

    def vi(v: ValueInfo) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(v.name, onnx_dtype(v.dtype), _dims_proto(v.shape))

    initializers = [numpy_helper.from_array(np.asarray(a), n) for n, a in graph.constants.items()]
    return helper.make_graph(
        nodes,
        graph.name,
        [vi(v) for v in graph.inputs],
        [vi(v) for v in graph.outputs],
        initializer=initializers,
        value_info=[vi(v) for v in graph.value_info.values() if v.shape is not None],
    )


def graph_to_model(
    graph: Graph,
    *,
    opset: int | None = None,
    ir_version: int = DEFAULT_IR_VERSION,
    extra_opsets: dict[str, int] | None = None,
) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", opset or graph.opset)]
    opsets += [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
    model = helper.make_model(graph_to_proto(graph), opset_imports=opsets, producer_name="edgeq")
    model.ir_version = ir_version
    for key, value in graph.metadata.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    return model


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Write atomically: a temp file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model.SerializeToString())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
