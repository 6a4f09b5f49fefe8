"""Reading a saved .mlpackage back without Core ML, and running its ML program in numpy.

Core ML's `predict` exists only on macOS. On Linux this module is the check that the program
we wrote computes what the simulator computes:

- `read_weight_blob` parses `Data/com.apple.CoreML/weights/weight.bin` by itself (MIL blob
  storage v2: a 64-byte file header {count u32, version u32, reserved}, then per blob a
  64-byte metadata record {sentinel 0xDEADBEEF u32, dtype u32, size u64, data offset u64,
  padding bits u64, reserved}; sub-byte types pack element 0 in the low bits).
- `MILProgramEvaluator` interprets the saved protobuf's ops in order: each op is computed in
  float32 and rounded to the dtype the program declares for its output (fp16 here), which is
  how an fp16 Core ML program stores every intermediate tensor.
- `check_weights` / `check_ops` compare the saved program with the plan and the graph.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.errors import EdgeqError

BLOB_SENTINEL = 0xDEADBEEF
WEIGHTS = Path("Data/com.apple.CoreML/weights/weight.bin")
MODEL = Path("Data/com.apple.CoreML/model.mlmodel")

# MIL proto DataType enum values (coremltools/proto/MIL.proto)
_DTYPES: dict[int, tuple[str, Any, int]] = {  # enum -> (name, numpy dtype, bits)
    1: ("bool", np.bool_, 8),
    10: ("fp16", np.float16, 16),
    11: ("fp32", np.float32, 32),
    12: ("fp64", np.float64, 64),
    21: ("int8", np.int8, 8),
    22: ("int16", np.int16, 16),
    23: ("int32", np.int32, 32),
    24: ("int64", np.int64, 64),
    25: ("int4", np.int8, 4),
    31: ("uint8", np.uint8, 8),
    32: ("uint16", np.uint16, 16),
    33: ("uint32", np.uint32, 32),
    34: ("uint64", np.uint64, 64),
    35: ("uint4", np.uint8, 4),
    36: ("uint2", np.uint8, 2),
    37: ("uint1", np.uint8, 1),
    38: ("uint6", np.uint8, 6),
    39: ("uint3", np.uint8, 3),
}
_CAST = {"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "int8": np.int8,
         "uint8": np.uint8, "bool": np.bool_, "int16": np.int16}  # fmt: skip


# ---- reading the package ---------------------------------------------------------------------
def load_spec(path: Path) -> Any:
    """The Model protobuf of a .mlpackage (no Core ML framework needed)."""
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    model_file = Path(path) / MODEL
    if not model_file.is_file():
        raise EdgeqError(f"'{path}' is not an .mlpackage (no {MODEL})",
                         "pass the folder written by `edgeq export --target ane`")  # fmt: skip
    spec.ParseFromString(model_file.read_bytes())
    return spec


def _tensor_type(vtype: Any) -> tuple[int, tuple[int, ...]]:
    tt = vtype.tensorType
    return tt.dataType, tuple(int(d.constant.size) for d in tt.dimensions)


_RECORD = struct.calcsize("<IIQQQ")  # the record fields read here (32 bytes)


def read_weight_blob(blob: bytes, offset: int, dtype: int, shape: tuple[int, ...]) -> np.ndarray:
    """One tensor from MIL blob storage bytes, at the metadata record at `offset`."""
    name, np_dt, bits = _DTYPES[dtype]
    sentinel, _, size, data_offset, _pad = struct.unpack_from("<IIQQQ", blob, offset)
    if sentinel != BLOB_SENTINEL:
        raise EdgeqError(f"weight.bin: no blob record at offset {offset} (sentinel {sentinel:#x})")
    count = int(np.prod(shape)) if shape else 1
    expected = (count * bits + 7) // 8
    if size != expected:
        raise EdgeqError(f"weight.bin: blob at {offset} holds {size} bytes, {name}{shape} needs "
                         f"{expected}")  # fmt: skip
    raw = np.frombuffer(blob, np.uint8, size, data_offset)
    if bits < 8:  # sub-byte: one bit stream, each element's bits least significant first
        stream = np.unpackbits(raw, bitorder="little")[: count * bits].reshape(count, bits)
        nib = (
            (stream.astype(np.uint8) << np.arange(bits, dtype=np.uint8))
            .sum(axis=1)
            .astype(np.uint8)
        )
        if name == "int4":
            return (nib.astype(np.int8) - ((nib & 0x8) << 1).astype(np.int8)).reshape(shape)
        return nib.reshape(shape)
    return raw.view(np_dt).reshape(shape).copy()


def _immediate(value: Any) -> np.ndarray | str | list[str]:
    dtype, shape = _tensor_type(value.type)
    tensor = value.immediateValue.tensor
    kind = tensor.WhichOneof("value")
    if kind == "strings":
        vals = list(tensor.strings.values)
        return vals[0] if not shape else vals
    _name, np_dt, bits = _DTYPES[dtype]
    if kind == "bytes":
        raw = tensor.bytes.values
        if bits < 8:
            return read_weight_blob(
                struct.pack("<IIQQQ", BLOB_SENTINEL, 0, len(raw), _RECORD, 0) + raw, 0, dtype, shape
            )
        arr = np.frombuffer(raw, np_dt)
    else:
        arr = np.asarray(list(getattr(tensor, kind).values)).astype(np_dt)
    return arr.reshape(shape)


class SavedProgram:
    """The main function of a saved ML program: ops, I/O and constant values."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.spec = load_spec(self.path)
        if not self.spec.HasField("mlProgram"):
            raise EdgeqError(f"'{path}' holds no ML program", "export it with --target ane")
        fn = self.spec.mlProgram.functions["main"]
        self.opset = fn.opset
        self.ops = list(fn.block_specializations[fn.opset].operations)
        self.outputs = list(fn.block_specializations[fn.opset].outputs)
        self.inputs = [(i.name, _tensor_type(i.type)) for i in fn.inputs]
        blob_file = self.path / WEIGHTS
        self.blob = blob_file.read_bytes() if blob_file.is_file() else b""
        self.metadata = dict(self.spec.description.metadata.userDefined)

    def value(self, value: Any) -> Any:
        kind = value.WhichOneof("value")
        if kind == "immediateValue":
            return _immediate(value)
        if kind == "blobFileValue":
            dtype, shape = _tensor_type(value.type)
            return read_weight_blob(self.blob, int(value.blobFileValue.offset), dtype, shape)
        raise EdgeqError(f"unsupported MIL value kind {kind}")

    def op_types(self) -> list[str]:
        return [op.type for op in self.ops]

    def producers(self) -> dict[str, Any]:
        return {o.name: op for op in self.ops for o in op.outputs}


# ---- evaluation ------------------------------------------------------------------------------
class MILProgramEvaluator:
    """`MILProgramEvaluator(path)(feeds by MIL input name) -> outputs by MIL output name`."""

    def __init__(self, path: str | Path) -> None:
        self.prog = SavedProgram(path)
        self._consts: dict[str, Any] = {}
        for op in self.prog.ops:
            if op.type == "const":
                self._consts[op.outputs[0].name] = self.prog.value(op.attributes["val"])
            elif op.type.startswith("constexpr_"):
                env: dict[str, Any] = dict(self._consts)
                args = self._args(op, env)
                self._consts[op.outputs[0].name] = _cast_out(op, _CONSTEXPR[op.type](args))

    def _args(self, op: Any, env: Mapping[str, Any]) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for k, v in op.attributes.items():
            if k != "name":
                args[k] = self.prog.value(v)
        for k, arg in op.inputs.items():
            vals = []
            for b in arg.arguments:
                vals.append(
                    env[b.name] if b.WhichOneof("binding") == "name" else self.prog.value(b.value)
                )
            args[k] = vals if len(vals) != 1 or k == "values" else vals[0]
        return args

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, Any] = dict(self._consts)
        for name, (dtype, shape) in self.prog.inputs:
            if name not in feeds:
                raise EdgeqError(f"missing input '{name}'")
            arr = np.asarray(feeds[name]).astype(_DTYPES[dtype][1])
            if arr.shape != shape:
                raise EdgeqError(f"input '{name}' has shape {arr.shape}, the program takes {shape}")
            env[name] = arr
        for op in self.prog.ops:
            if op.type == "const" or op.type.startswith("constexpr_"):
                continue
            fn = _OPS.get(op.type)
            if fn is None:
                raise EdgeqError(f"the numpy MIL evaluator has no op '{op.type}'")
            result = fn(self._args(op, env))
            env[op.outputs[0].name] = _cast_out(op, result)
        return {name: np.asarray(env[name]) for name in self.prog.outputs}


def _cast_out(op: Any, value: Any) -> np.ndarray:
    dtype, _ = _tensor_type(op.outputs[0].type)
    return np.asarray(value).astype(_DTYPES[dtype][1])


def _f32(x: Any) -> np.ndarray:
    return np.asarray(x, np.float32)


def _affine(a: Mapping[str, Any]) -> np.ndarray:
    q = a["quantized_data"].astype(np.float32)
    axis = int(a["axis"]) % q.ndim
    shape = [1] * q.ndim
    shape[axis] = -1
    zp = np.asarray(a["zero_point"], np.float32)
    scale = _f32(a["scale"])
    zp = zp.reshape(shape) if zp.ndim else zp
    scale = scale.reshape(shape) if scale.ndim else scale
    return (q - zp) * scale


def _blockwise(a: Mapping[str, Any]) -> np.ndarray:
    data = a["data"].astype(np.float32)
    scale = _f32(a["scale"])
    offset = np.asarray(a.get("offset", np.zeros(scale.shape)), np.float32)
    for axis in range(data.ndim):
        rep = data.shape[axis] // scale.shape[axis]
        scale = np.repeat(scale, rep, axis=axis)
        offset = np.repeat(offset, rep, axis=axis)
    return (data - offset) * scale


def _lut(a: Mapping[str, Any]) -> np.ndarray:
    """iOS18 constexpr_lut_to_dense, scalar palettization (vector size 1)."""
    idx = np.asarray(a["indices"], np.int64)
    table = np.asarray(a["lut"])
    if table.shape[-1] != 1:
        raise EdgeqError("constexpr_lut_to_dense: vector palettization is not evaluated here")
    table = table[..., 0]
    for axis in range(idx.ndim):
        table = np.repeat(table, idx.shape[axis] // table.shape[axis], axis=axis)
    return np.take_along_axis(table, idx[..., None], axis=-1)[..., 0]


_CONSTEXPR: dict[str, Callable[[Mapping[str, Any]], np.ndarray]] = {
    "constexpr_affine_dequantize": _affine,
    "constexpr_blockwise_shift_scale": _blockwise,
    "constexpr_lut_to_dense": _lut,
}


def _windows(x: np.ndarray, kernel: list[int], strides: list[int], dilations: list[int],
             pad: list[int], pad_value: float, ceil_mode: bool = False) -> np.ndarray:  # fmt: skip
    """x [N, C, *S] → [N, C, *out, *kernel] sliding windows after padding."""
    n = len(kernel)
    widths = [(0, 0), (0, 0)] + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    if ceil_mode:  # extra end padding so the last partial window is kept
        for i in range(n):
            size = x.shape[2 + i] + pad[2 * i] + pad[2 * i + 1]
            eff = (kernel[i] - 1) * dilations[i] + 1
            out = -(-(size - eff) // strides[i]) + 1
            extra = (out - 1) * strides[i] + eff - size
            widths[2 + i] = (widths[2 + i][0], widths[2 + i][1] + max(extra, 0))
    xp = np.pad(x, widths, constant_values=pad_value)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    win = np.lib.stride_tricks.sliding_window_view(xp, eff, axis=tuple(range(2, 2 + n)))
    sl = [slice(None), slice(None)] + [slice(None, None, s) for s in strides]
    sl += [slice(None, None, d) for d in dilations]
    return win[tuple(sl)]


def _same_pad(shape: tuple[int, ...], kernel: list[int], strides: list[int],
              dilations: list[int]) -> list[int]:  # fmt: skip
    pad = []
    for size, k, s, d in zip(shape, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        pad += [total // 2, total - total // 2]
    return pad


def _resolve_pad(a: Mapping[str, Any], spatial: tuple[int, ...], kernel: list[int],
                 strides: list[int], dilations: list[int]) -> list[int]:  # fmt: skip
    kind = a.get("pad_type", "valid")
    if kind == "custom":
        return [int(p) for p in np.asarray(a["pad"]).reshape(-1)]
    if kind == "same":
        return _same_pad(spatial, kernel, strides, dilations)
    return [0] * (2 * len(kernel))


def _conv(a: Mapping[str, Any]) -> np.ndarray:
    x, w = _f32(a["x"]), _f32(a["weight"])
    n = w.ndim - 2
    kernel = list(w.shape[2:])
    strides = [int(s) for s in np.asarray(a.get("strides", [1] * n)).reshape(-1)]
    dil = [int(s) for s in np.asarray(a.get("dilations", [1] * n)).reshape(-1)]
    groups = int(a.get("groups", 1))
    pad = _resolve_pad(a, x.shape[2:], kernel, strides, dil)
    win = _windows(x, kernel, strides, dil, pad, 0.0)  # [N, C, *out, *k]
    nb, c = x.shape[:2]
    out_sp = win.shape[2 : 2 + n]
    win = win.reshape(nb, groups, c // groups, *out_sp, *kernel)
    wg = w.reshape(groups, w.shape[0] // groups, w.shape[1], *kernel)
    sp = "xyz"[:n]
    ks = "ijk"[:n]
    y = np.einsum(f"ngc{sp}{ks},goc{ks}->ngo{sp}", win, wg, optimize=True)
    y = y.reshape(nb, w.shape[0], *out_sp)
    if a.get("bias") is not None:
        y = y + _f32(a["bias"]).reshape((1, -1) + (1,) * n)
    return y


def _pool(a: Mapping[str, Any], kind: str) -> np.ndarray:
    x = _f32(a["x"])
    kernel = [int(k) for k in np.asarray(a["kernel_sizes"]).reshape(-1)]
    n = len(kernel)
    strides = [int(s) for s in np.asarray(a.get("strides", [1] * n)).reshape(-1)]
    pad = _resolve_pad(a, x.shape[2:], kernel, strides, [1] * n)
    ceil = bool(a.get("ceil_mode", False))
    axes = tuple(range(-n, 0))
    if kind == "max":
        return _windows(x, kernel, strides, [1] * n, pad, -np.inf, ceil).max(axis=axes)
    sums = _windows(x, kernel, strides, [1] * n, pad, 0.0, ceil).sum(axis=axes)
    if bool(a.get("exclude_padding_from_average", False)):
        counts = _windows(np.ones_like(x[:1, :1]), kernel, strides, [1] * n, pad, 0.0, ceil)
        return sums / counts.sum(axis=axes)
    return sums / float(np.prod(kernel))


def _reduce(fn: Callable[..., np.ndarray]) -> Callable[[Mapping[str, Any]], np.ndarray]:
    def run(a: Mapping[str, Any]) -> np.ndarray:
        axes = a.get("axes")
        axes_t = None if axes is None else tuple(int(x) for x in np.asarray(axes).reshape(-1))
        return fn(_f32(a["x"]), axis=axes_t, keepdims=bool(a.get("keep_dims", False)))

    return run


def _layer_norm(a: Mapping[str, Any]) -> np.ndarray:
    x = _f32(a["x"])
    axes = tuple(int(i) for i in np.asarray(a["axes"]).reshape(-1))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + float(a.get("epsilon", 1e-5)))
    if a.get("gamma") is not None:
        y = y * _f32(a["gamma"])
    if a.get("beta") is not None:
        y = y + _f32(a["beta"])
    return y


def _softmax(a: Mapping[str, Any]) -> np.ndarray:
    x = _f32(a["x"])
    axis = int(a.get("axis", -1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _gelu(a: Mapping[str, Any]) -> np.ndarray:
    from scipy.special import erf

    x = _f32(a["x"])
    if a.get("mode", "EXACT") == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    if a.get("mode") == "SIGMOID_APPROXIMATION":
        return x / (1 + np.exp(-1.702 * x))
    return 0.5 * x * (1 + erf(x / np.sqrt(2.0)))


def _slice(a: Mapping[str, Any]) -> np.ndarray:
    x = np.asarray(a["x"])
    begin = np.asarray(a["begin"]).reshape(-1)
    end = np.asarray(a["end"]).reshape(-1)
    stride = np.asarray(a.get("stride", np.ones(x.ndim, np.int32))).reshape(-1)
    bmask = np.asarray(a.get("begin_mask", np.zeros(x.ndim, bool))).reshape(-1)
    emask = np.asarray(a.get("end_mask", np.zeros(x.ndim, bool))).reshape(-1)
    sl = tuple(
        slice(
            None if bmask[i] else int(begin[i]), None if emask[i] else int(end[i]), int(stride[i])
        )
        for i in range(x.ndim)
    )
    y = x[sl]
    squeeze = a.get("squeeze_mask")
    if squeeze is not None and np.any(squeeze):
        y = y.squeeze(axis=tuple(int(i) for i in np.flatnonzero(squeeze)))
    return y


def _quantize(a: Mapping[str, Any]) -> np.ndarray:
    dt = _CAST[str(a["output_dtype"])]
    info = np.iinfo(dt)
    zp = np.asarray(a.get("zero_point", 0), np.float32)
    q = np.round(_f32(a["input"]) / _f32(a["scale"])) + zp  # round half to even
    return np.clip(q, info.min, info.max).astype(dt)


def _dequantize(a: Mapping[str, Any]) -> np.ndarray:
    zp = np.asarray(a.get("zero_point", 0), np.float32)
    return (a["input"].astype(np.float32) - zp) * _f32(a["scale"])


def _binary(fn: Callable[[Any, Any], Any]) -> Callable[[Mapping[str, Any]], np.ndarray]:
    def run(a: Mapping[str, Any]) -> np.ndarray:
        x, y = np.asarray(a["x"]), np.asarray(a["y"])
        if np.issubdtype(x.dtype, np.floating) or np.issubdtype(y.dtype, np.floating):
            x, y = _f32(x), _f32(y)
        return np.asarray(fn(x, y))

    return run


def _conv_transpose(a: Mapping[str, Any]) -> np.ndarray:
    """y[o, i*s + k*d - pad] += x[c, i] * w[c, o, k] (2-D, groups 1)."""
    x, w = _f32(a["x"]), _f32(a["weight"])
    if int(a.get("groups", 1)) != 1 or w.ndim != 4:
        raise EdgeqError("the numpy MIL evaluator runs 2-D conv_transpose with groups 1 only")
    kh, kw = w.shape[2:]
    sh, sw = [int(v) for v in np.asarray(a.get("strides", [1, 1])).reshape(-1)]
    dh, dw = [int(v) for v in np.asarray(a.get("dilations", [1, 1])).reshape(-1)]
    n, _, h, wd = x.shape
    full = np.zeros((n, w.shape[1], (h - 1) * sh + (kh - 1) * dh + 1, (wd - 1) * sw + (kw - 1) * dw + 1),
                    np.float32)  # fmt: skip
    for i in range(kh):
        for j in range(kw):
            part = np.einsum("nchw,co->nohw", x, w[:, :, i, j])
            full[
                :,
                :,
                i * dh : i * dh + (h - 1) * sh + 1 : sh,
                j * dw : j * dw + (wd - 1) * sw + 1 : sw,
            ] += part
    pad = [int(v) for v in np.asarray(a.get("pad", [0, 0, 0, 0])).reshape(-1)]
    if a.get("pad_type", "valid") != "custom":
        pad = [0, 0, 0, 0]
    out = a.get("output_shape")
    oh, ow = (int(out[2]), int(out[3])) if out is not None else (
        full.shape[2] - pad[0] - pad[1], full.shape[3] - pad[2] - pad[3])  # fmt: skip
    full = np.pad(full, [(0, 0), (0, 0), (0, max(0, pad[0] + oh - full.shape[2])),
                         (0, max(0, pad[2] + ow - full.shape[3]))])  # fmt: skip
    y = full[:, :, pad[0] : pad[0] + oh, pad[2] : pad[2] + ow]
    if a.get("bias") is not None:
        y = y + _f32(a["bias"]).reshape(1, -1, 1, 1)
    return y


def _batch_norm(a: Mapping[str, Any]) -> np.ndarray:
    x = _f32(a["x"])
    shape = (1, -1) + (1,) * (x.ndim - 2)
    k = _f32(a["gamma"]).reshape(shape) / np.sqrt(
        _f32(a["variance"]).reshape(shape) + float(a["epsilon"])
    )
    return (x - _f32(a["mean"]).reshape(shape)) * k + _f32(a["beta"]).reshape(shape)


def _pad(a: Mapping[str, Any]) -> np.ndarray:
    x = np.asarray(a["x"])
    p = [int(v) for v in np.asarray(a["pad"]).reshape(-1)]
    widths = [(0, 0)] * (x.ndim - len(p) // 2) + [
        (p[2 * i], p[2 * i + 1]) for i in range(len(p) // 2)
    ]
    mode = str(a.get("mode", "constant"))
    if mode == "constant":
        return np.pad(x, widths, constant_values=float(a.get("constant_val", 0.0)))
    return np.pad(x, widths, mode={"replicate": "edge"}.get(mode, mode))


_SAMPLING = {"UNALIGN_CORNERS": "half_pixel", "STRICT_ALIGN_CORNERS": "align_corners",
             "ALIGN_CORNERS": "align_corners", "DEFAULT": "asymmetric"}  # fmt: skip


def _resize_bilinear(a: Mapping[str, Any]) -> np.ndarray:
    from edgeq.exporters.resize import resize_axis

    x = _f32(a["x"])
    mode = _SAMPLING.get(str(a.get("sampling_mode", "DEFAULT")))
    if mode is None:
        raise EdgeqError(
            f"the numpy MIL evaluator has no resize_bilinear mode {a.get('sampling_mode')}"
        )
    out = (int(a["target_size_height"]), int(a["target_size_width"]))
    for axis, size in zip((2, 3), out, strict=True):
        x = resize_axis(x, axis, size, size / x.shape[axis], "linear", mode)
    return x


def _upsample_nearest(a: Mapping[str, Any]) -> np.ndarray:
    x = np.asarray(a["x"])
    fh, fw = int(a["scale_factor_height"]), int(a["scale_factor_width"])
    return np.repeat(np.repeat(x, fh, axis=2), fw, axis=3)


_OPS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "conv_transpose": _conv_transpose,
    "resize_bilinear": _resize_bilinear,
    "upsample_nearest_neighbor": _upsample_nearest,
    "abs": lambda a: np.abs(np.asarray(a["x"])),
    "leaky_relu": lambda a: np.where(
        _f32(a["x"]) >= 0, _f32(a["x"]), _f32(a["x"]) * float(a["alpha"])
    ),
    "batch_norm": _batch_norm,
    "pad": _pad,
    "log": lambda a: np.log(_f32(a["x"])),
    "silu": lambda a: _f32(a["x"]) / (1.0 + np.exp(-_f32(a["x"]))),
    "equal": _binary(np.equal),
    "not_equal": _binary(np.not_equal),
    "less": _binary(np.less),
    "greater": _binary(np.greater),
    "less_equal": _binary(np.less_equal),
    "greater_equal": _binary(np.greater_equal),
    "logical_and": _binary(np.logical_and),
    "logical_or": _binary(np.logical_or),
    "logical_not": lambda a: np.logical_not(np.asarray(a["x"])),
    "select": lambda a: np.where(np.asarray(a["cond"]), np.asarray(a["a"]), np.asarray(a["b"])),
    "squeeze": lambda a: np.squeeze(
        np.asarray(a["x"]), axis=tuple(int(i) for i in np.asarray(a["axes"]).reshape(-1))
    ),
    "expand_dims": lambda a: np.expand_dims(
        np.asarray(a["x"]), tuple(int(i) for i in np.asarray(a["axes"]).reshape(-1))
    ),
    "stack": lambda a: np.stack([np.asarray(v) for v in a["values"]], axis=int(a["axis"])),
    "cast": lambda a: np.asarray(a["x"]).astype(_CAST[str(a["dtype"])]),
    "identity": lambda a: np.asarray(a["x"]),
    "conv": _conv,
    "linear": lambda a: (
        _f32(a["x"]) @ _f32(a["weight"]).T + (_f32(a["bias"]) if a.get("bias") is not None else 0.0)
    ),
    "matmul": lambda a: np.matmul(
        np.swapaxes(_f32(a["x"]), -1, -2) if a.get("transpose_x", False) else _f32(a["x"]),
        np.swapaxes(_f32(a["y"]), -1, -2) if a.get("transpose_y", False) else _f32(a["y"]),
    ),
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "real_div": _binary(np.divide),
    "pow": _binary(np.power),
    "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum),
    "relu": lambda a: np.maximum(_f32(a["x"]), 0.0),
    "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-_f32(a["x"]))),
    "tanh": lambda a: np.tanh(_f32(a["x"])),
    "sqrt": lambda a: np.sqrt(_f32(a["x"])),
    "exp": lambda a: np.exp(_f32(a["x"])),
    "sigmoid_hard": lambda a: np.clip(
        float(a["alpha"]) * _f32(a["x"]) + float(a["beta"]), 0.0, 1.0
    ),
    "gelu": _gelu,
    "softmax": _softmax,
    "layer_norm": _layer_norm,
    "reduce_mean": _reduce(np.mean),
    "reduce_sum": _reduce(np.sum),
    "reduce_max": _reduce(np.max),
    "reduce_l2_norm": _reduce(
        lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims))
    ),
    "avg_pool": lambda a: _pool(a, "avg"),
    "max_pool": lambda a: _pool(a, "max"),
    "reshape": lambda a: np.asarray(a["x"]).reshape([int(s) for s in np.asarray(a["shape"])]),
    "transpose": lambda a: np.transpose(
        np.asarray(a["x"]), [int(p) for p in np.asarray(a["perm"])]
    ),
    "concat": lambda a: np.concatenate([np.asarray(v) for v in a["values"]], axis=int(a["axis"])),
    "slice_by_index": _slice,
    "gather": lambda a: np.take(
        np.asarray(a["x"]), np.asarray(a["indices"]).astype(np.int64), axis=int(a.get("axis", 0))
    ),
    "tile": lambda a: np.tile(np.asarray(a["x"]), [int(r) for r in np.asarray(a["reps"])]),
    "clip": lambda a: np.clip(_f32(a["x"]), float(a["alpha"]), float(a["beta"])),
    "quantize": _quantize,
    "dequantize": _dequantize,
}


def supported_mil_ops() -> list[str]:
    return sorted(_OPS) + sorted(_CONSTEXPR) + ["const"]


__all__ = [
    "MILProgramEvaluator",
    "SavedProgram",
    "load_spec",
    "read_weight_blob",
    "supported_mil_ops",
]
