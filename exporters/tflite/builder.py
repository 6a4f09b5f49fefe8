"""Writing .tflite flatbuffers with the object API of `ai_edge_litert.schema_py_generated`.

`FlatModel` collects tensors, constant buffers and operators of one subgraph and packs them
into a model: file identifier TFL3, buffer 0 the empty sentinel, every constant's data
16-byte aligned (XNNPACK and TFLite Micro read weights in place). Operator versions follow
tflite/tools/versioning/op_version.cc for the tensor types used (`op_version`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

ALIGN = 16

TENSOR_TYPES: dict[str, int] = {
    "float32": fb.TensorType.FLOAT32,
    "int8": fb.TensorType.INT8,
    "uint8": fb.TensorType.UINT8,
    "int16": fb.TensorType.INT16,
    "int32": fb.TensorType.INT32,
    "int64": fb.TensorType.INT64,
    "int4": fb.TensorType.INT4,
    "bool": fb.TensorType.BOOL,
}
TYPE_NAMES = {v: k for k, v in TENSOR_TYPES.items()}


@dataclass(frozen=True)
class QParams:
    """TFLite quantization of one tensor: real = (q - zero_point) * scale."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0

    @staticmethod
    def of(scale: Any, zero_point: Any, axis: int | None = None) -> QParams:
        s = np.asarray(scale, np.float32).reshape(-1)
        z = np.broadcast_to(np.asarray(zero_point, np.int64).reshape(-1), s.shape)
        return QParams(tuple(float(x) for x in s), tuple(int(x) for x in z), int(axis or 0))

    @property
    def per_tensor(self) -> bool:
        return len(self.scale) == 1

    def same(self, other: QParams | None) -> bool:
        if other is None or len(other.scale) != len(self.scale):
            return False
        return self.zero_point == other.zero_point and bool(
            np.allclose(self.scale, other.scale, rtol=1e-6, atol=0)
        )

    def to_fb(self) -> Any:
        q = fb.QuantizationParametersT()
        q.scale = list(self.scale)
        q.zeroPoint = list(self.zero_point)
        q.quantizedDimension = self.axis
        return q


class _AlignedBuffer(fb.BufferT):  # type: ignore[misc]
    """A buffer whose data vector starts on a 16-byte boundary of the file."""

    def Pack(self, builder: flatbuffers.Builder) -> int:
        data = None
        if self.data is not None:
            payload = bytes(self.data)
            builder.StartVector(1, len(payload), ALIGN)
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            data = builder.EndVector()
        fb.BufferStart(builder)
        if data is not None:
            fb.BufferAddData(builder, data)
        return int(fb.BufferEnd(builder))


@dataclass
class Tensor:
    index: int
    shape: tuple[int, ...]
    dtype: str
    quant: QParams | None


class FlatModel:
    """One subgraph being built: tensors, buffers, operators, then `pack()`."""

    def __init__(self, description: str = "edgeq") -> None:
        self.description = description
        self.tensors: list[Any] = []
        self.info: list[Tensor] = []
        self.buffers: list[Any] = [_AlignedBuffer()]  # buffer 0: the empty sentinel
        self.operators: list[Any] = []
        self.opcodes: dict[tuple[int, int], int] = {}
        self.opcode_list: list[Any] = []
        self.names: set[str] = set()
        self.metadata: dict[str, bytes] = {}

    # ---- tensors ---------------------------------------------------------------------------
    def _unique(self, name: str) -> str:
        base, i = name, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def tensor(self, name: str, shape: Sequence[int], dtype: str, quant: QParams | None = None,
               data: np.ndarray | bytes | None = None) -> Tensor:  # fmt: skip
        t = fb.TensorT()
        t.name = self._unique(name)
        t.shape = [int(d) for d in shape]
        t.type = TENSOR_TYPES[dtype]
        t.buffer = 0
        if quant is not None:
            t.quantization = quant.to_fb()
        if data is not None:
            buf = _AlignedBuffer()
            raw = data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()
            buf.data = raw
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        info = Tensor(len(self.tensors) - 1, tuple(int(d) for d in shape), dtype, quant)
        self.info.append(info)
        return info

    def const(self, name: str, array: np.ndarray, dtype: str,
              quant: QParams | None = None) -> Tensor:  # fmt: skip
        if dtype == "int4":
            arr = np.asarray(array)
            return self.tensor(name, arr.shape, "int4", quant, pack_int4(arr))
        storage = {"float32": np.float32, "int8": np.int8, "int32": np.int32,
                   "int64": np.int64, "int16": np.int16, "uint8": np.uint8,
                   "bool": np.bool_}[dtype]  # fmt: skip
        arr = np.asarray(array)
        if dtype != "float32" and np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"constant '{name}': float data for a {dtype} tensor")
        return self.tensor(name, arr.shape, dtype, quant, arr.astype(storage))

    # ---- operators -------------------------------------------------------------------------
    def op(self, code: int, inputs: Sequence[int], outputs: Sequence[int], version: int = 1,
           options_type: int = 0, options: Any = None) -> Any:  # fmt: skip
        key = (code, version)
        if key not in self.opcodes:
            oc = fb.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = version
            self.opcodes[key] = len(self.opcode_list)
            self.opcode_list.append(oc)
        o = fb.OperatorT()
        o.opcodeIndex = self.opcodes[key]
        o.inputs = [int(i) for i in inputs]
        o.outputs = [int(i) for i in outputs]
        o.builtinOptionsType = options_type
        o.builtinOptions = options
        self.operators.append(o)
        return o

    def pack(self, inputs: Sequence[int], outputs: Sequence[int], name: str = "main") -> bytes:
        sub = fb.SubGraphT()
        sub.tensors = self.tensors
        sub.inputs = [int(i) for i in inputs]
        sub.outputs = [int(i) for i in outputs]
        sub.operators = self.operators
        sub.name = name
        model = fb.ModelT()
        model.version = 3
        model.description = self.description
        model.subgraphs = [sub]
        model.operatorCodes = self.opcode_list
        model.buffers = list(self.buffers)
        model.metadata = []
        for key, payload in self.metadata.items():
            buf = _AlignedBuffer()
            buf.data = payload
            model.buffers.append(buf)
            meta = fb.MetadataT()
            meta.name = key
            meta.buffer = len(model.buffers) - 1
            model.metadata.append(meta)
        builder = flatbuffers.Builder(1 << 20)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def pack_int4(values: np.ndarray) -> bytes:
    """Row-major int4 values in [-8, 7] as TFLite stores INT4 tensors: two's-complement
    nibbles, element 2i in the low nibble of byte i, element 2i+1 in the high nibble (an odd
    count leaves the last high nibble zero)."""
    flat = np.asarray(values).reshape(-1).astype(np.int64)
    if flat.size and (flat.min() < -8 or flat.max() > 7):
        raise ValueError("int4 values must lie in [-8, 7]")
    nibbles = (flat & 0xF).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()


def unpack_int4(data: bytes, count: int) -> np.ndarray:
    """The inverse of `pack_int4`: `count` int8 values in [-8, 7]."""
    raw = np.frombuffer(data, np.uint8)
    nibbles = np.stack([raw & 0xF, raw >> 4], axis=1).reshape(-1)[:count].astype(np.int8)
    return np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)


def read_model(data: bytes) -> Any:
    """The ModelT of a .tflite file (for tests, bundles and the runner's metadata)."""
    return fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(data, 0))


def read_metadata(model: Any, key: str) -> dict[str, Any] | None:
    for meta in model.metadata or []:
        name = meta.name.decode() if isinstance(meta.name, bytes) else meta.name
        if name == key:
            raw = model.buffers[meta.buffer].data
            return json.loads(bytes(np.asarray(raw, np.uint8)).decode())  # type: ignore[no-any-return]
    return None


def builtin_name(code: int) -> str:
    for name, value in vars(fb.BuiltinOperator).items():
        if value == code and not name.startswith("_"):
            return name
    return str(code)


# ---- operator versions (op_version.cc), by the op's input / weight types --------------------
_INT8_V2 = {
    "ADD", "SUB", "MUL", "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION", "LOGISTIC",
    "SOFTMAX", "TANH", "TRANSPOSE", "MEAN", "SUM", "REDUCE_MAX", "PAD", "PADV2", "STRIDED_SLICE",
    "SLICE", "GATHER", "RSQRT", "MAXIMUM", "MINIMUM", "RELU", "RELU6", "LEAKY_RELU",
    "DEQUANTIZE", "QUANTIZE", "BATCH_MATMUL", "GELU", "SQUARED_DIFFERENCE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "SPLIT", "SPLIT_V", "TRANSPOSE_CONV", "SQUARE", "SQRT", "EXP",
    "EQUAL", "LESS", "GREATER", "GREATER_EQUAL", "LESS_EQUAL",
}  # fmt: skip


# 16x8 mode (int16 activations, int8 weights): the version that introduced int16 per op
_INT16: dict[str, int] = {
    "CONV_2D": 4, "DEPTHWISE_CONV_2D": 5, "FULLY_CONNECTED": 7, "MUL": 4, "ADD": 3, "SUB": 5,
    "MAX_POOL_2D": 3, "AVERAGE_POOL_2D": 3, "TRANSPOSE": 5, "DEQUANTIZE": 3, "QUANTIZE": 3,
    "RELU": 3, "RELU6": 3, "RESIZE_BILINEAR": 4, "RESIZE_NEAREST_NEIGHBOR": 4, "MAXIMUM": 4,
    "MINIMUM": 4, "PAD": 3, "PADV2": 3, "LOGISTIC": 3, "TANH": 3, "LEAKY_RELU": 2,
    "BATCH_MATMUL": 3, "CONCATENATION": 3, "SOFTMAX": 3, "MEAN": 3, "REDUCE_MAX": 3,
    "REDUCE_MIN": 3, "GATHER": 4, "SLICE": 4, "BROADCAST_TO": 3, "TRANSPOSE_CONV": 3,
}  # fmt: skip


def op_version(name: str, act: str, weight: str | None = None, **flags: bool) -> int:
    """The operator version LiteRT expects for `name` with activations of type `act`."""
    if act == "int16" and name in _INT16:
        return _INT16[name]
    if name == "BROADCAST_TO" and act == "int8":
        return 3
    if name == "CONV_2D":
        if weight == "int4":
            return 7
        return 3 if act == "int8" else 1
    if name == "DEPTHWISE_CONV_2D":
        if weight == "int4":
            return 7
        return 3 if act == "int8" else (2 if flags.get("dilation") else 1)
    if name == "FULLY_CONNECTED":
        if weight == "int4":
            return 10
        if flags.get("keep_num_dims"):
            return 5
        return 4 if act == "int8" else 1
    if name == "TRANSPOSE_CONV":
        return 3 if flags.get("bias") else (2 if act == "int8" else 1)
    if name in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR") and flags.get("half_pixel"):
        return 3
    if name == "QUANTIZE" and act == "int8" and flags.get("requantize"):
        return 2
    if name == "QUANTIZE":
        return 1
    if name == "BROADCAST_TO":
        return 2  # version 1 was reserved for the Flex op; the builtin starts at 2
    if name == "HARD_SWISH":
        return 1  # int8 included (v2 does not exist in LiteRT 2.3)
    if name in _INT8_V2 and act == "int8":
        return 2
    return 1
