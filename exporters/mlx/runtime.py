"""Run an edgeq MLX artifact with MLX on the CPU.

The artifact folder holds `config.json` (mlx-lm style `quantization` block), `graph.json` (the
node list) and `model.safetensors` (float constants, and `<path>.weight/.scales/.biases` for
each quantized weight in MLX's affine group format). `MlxProgram(folder)` loads it and rebuilds
the graph with MLX ops:

- MatMul / Gemm with a quantized weight, and 1x1 Conv: `mx.quantized_matmul` on the packed
  weights (the input is zero-padded when the weight's input dim was padded to the group).
- Other Conv: `mx.conv2d` in NHWC on weights dequantized once at load (`mx.dequantize`); MLX
  has no quantized convolution kernel.
- Gather of a quantized embedding table: the packed rows are gathered, then dequantized.

4-D tensors produced by convolutions stay NHWC while the ops that read them are layout-agnostic
(elementwise, pooling, Concat); they are transposed back to NCHW before any other op and at the
graph outputs, so feeds and outputs are shaped like the ONNX graph's.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from edgeq.errors import EdgeqError, InputError
from edgeq.exporters.resize import linear_taps, nearest_indices, source_coordinates

GRAPH_FORMAT = "edgeq-mlx-graph"
GRAPH_VERSION = 1
CONFIG_FILE, GRAPH_FILE, WEIGHTS_FILE = "config.json", "graph.json", "model.safetensors"
GROUP_SIZES = (128, 64, 32)  # what mx.quantize / quantized_matmul accept (affine mode)

_ONNX_DTYPES = {1: mx.float32, 2: mx.uint8, 3: mx.int8, 5: mx.int16, 6: mx.int32, 7: mx.int64,
                9: mx.bool_, 10: mx.float16, 11: mx.float32, 12: mx.uint32, 16: mx.bfloat16}  # fmt: skip
_NP_DTYPES = {"float32": mx.float32, "float16": mx.float16, "float64": mx.float32,
              "int64": mx.int64, "int32": mx.int32, "int8": mx.int8, "uint8": mx.uint8,
              "bool": mx.bool_}  # fmt: skip
_TO_NHWC, _TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)
_NHWC_AXIS = {0: 0, 1: 3, 2: 1, 3: 2}  # NCHW axis -> position in NHWC


# ---- JSON encoding of node attributes ----------------------------------------------------------
def encode_attr(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        arr = np.asarray(value)
        return {"ndarray": arr.tolist(), "dtype": str(arr.dtype), "shape": list(arr.shape)}
    if isinstance(value, list | tuple):
        return [encode_attr(v) for v in value]
    if isinstance(value, bytes):
        return value.decode()
    return value


def decode_attr(value: Any) -> Any:
    if isinstance(value, dict) and "ndarray" in value:
        return np.asarray(value["ndarray"], dtype=value["dtype"]).reshape(value["shape"])
    if isinstance(value, list):
        return [decode_attr(v) for v in value]
    return value


# ---- values with a layout tag ------------------------------------------------------------------
@dataclass
class _Value:
    array: mx.array
    nhwc: bool = False  # a 4-D tensor held as NHWC (ONNX shape is NCHW)


def _plain(v: _Value) -> mx.array:
    return mx.transpose(v.array, _TO_NCHW) if v.nhwc else v.array


def _to_nhwc(a: mx.array) -> mx.array:
    """A plain (NCHW-broadcasting) array reshaped/transposed to broadcast against NHWC."""
    if a.ndim > 4:
        raise ValueError("rank > 4 operand of an NHWC elementwise op")
    if a.ndim < 4:
        a = mx.reshape(a, (1,) * (4 - a.ndim) + tuple(a.shape))
    return mx.transpose(a, _TO_NHWC)


# ---- the program ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuantizedWeight:
    """A weight stored packed: `perm` takes the ONNX weight to MLX order (`mlx_shape`), whose
    trailing dims from `split` on are the grouped input dim K, padded to `k_padded`."""

    name: str
    path: str
    bits: int
    group_size: int
    shape: tuple[int, ...]
    perm: tuple[int, ...]
    split: int
    k: int
    k_padded: int

    @property
    def mlx_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[p] for p in self.perm)

    @staticmethod
    def from_json(name: str, d: Mapping[str, Any]) -> QuantizedWeight:
        return QuantizedWeight(name, d["path"], int(d["bits"]), int(d["group_size"]),
                               tuple(d["shape"]), tuple(d["perm"]), int(d["split"]), int(d["k"]),
                               int(d["k_padded"]))  # fmt: skip


def _fail(message: str, fix: str = "") -> EdgeqError:
    return EdgeqError(message, fix or "re-export the model with `edgeq export --target mlx`")


def read_artifact(folder: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, mx.array]]:
    """(config, graph, tensors) of an artifact folder; one-line errors for anything malformed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"'{folder}' is not an MLX artifact folder",
                         "pass the folder written by `edgeq export --target mlx`")  # fmt: skip
    docs = []
    for name in (CONFIG_FILE, GRAPH_FILE):
        path = folder / name
        if not path.is_file():
            raise _fail(f"MLX artifact '{folder}' has no {name}")
        try:
            docs.append(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _fail(f"'{path}' is not valid JSON ({exc})") from None
    config, graph = docs
    if not isinstance(graph, dict) or graph.get("format") != GRAPH_FORMAT:
        raise _fail(f"'{folder / GRAPH_FILE}' is not an edgeq MLX graph")
    if graph.get("version") != GRAPH_VERSION:
        raise _fail(f"'{folder / GRAPH_FILE}' has graph version {graph.get('version')}, "
                    f"this edgeq reads version {GRAPH_VERSION}")  # fmt: skip
    weights = (
        folder / str(config.get("weights", WEIGHTS_FILE)) if isinstance(config, dict) else None
    )
    if weights is None or not weights.is_file():
        raise _fail(f"MLX artifact '{folder}' has no {WEIGHTS_FILE}")
    try:
        tensors = mx.load(str(weights), format="safetensors")
    except Exception as exc:  # mlx raises RuntimeError/ValueError for damaged files
        raise _fail(f"'{weights}' is not a readable safetensors file ({exc})") from None
    assert isinstance(tensors, dict)
    return config, graph, tensors


class MlxProgram:
    """`MlxProgram(folder)(feeds)` → {output: float32 ndarray}; feeds NCHW like the ONNX graph."""

    def __init__(self, folder: Path | str, *, compile: bool = True,
                 kernels: str = "quantized") -> None:  # fmt: skip
        """`kernels="quantized"` runs mx.quantized_matmul on the packed weights;
        `"dequantized"` dequantizes every weight once at load and runs float kernels (the same
        numbers; MLX's CPU quantized kernels are slower than its float ones)."""
        if kernels not in ("quantized", "dequantized"):
            raise InputError(f"kernels must be 'quantized' or 'dequantized', not '{kernels}'")
        self.quantized_kernels = kernels == "quantized"
        mx.set_default_device(mx.cpu)
        self.folder = Path(folder)
        self.config, graph, self.tensors = read_artifact(self.folder)
        try:
            self.inputs = [(v["name"], tuple(v["shape"]), v["dtype"]) for v in graph["inputs"]]
            self.outputs = [v["name"] for v in graph["outputs"]]
            self.opset = int(graph.get("opset", 17))
            self.nodes = [
                (n["op"], n.get("name", ""), list(n["inputs"]), list(n["outputs"]),
                 {k: decode_attr(v) for k, v in n.get("attrs", {}).items()})
                for n in graph["nodes"]
            ]  # fmt: skip
            self.const_names = set(graph["constants"])
            self.acts = {
                k: (float(v["scale"]), int(v["zero_point"]), int(v["qmin"]), int(v["qmax"]))
                for k, v in graph.get("activations", {}).items()
            }
            self.qweights = {
                k: QuantizedWeight.from_json(k, v) for k, v in graph.get("quantized", {}).items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise _fail(f"'{self.folder / GRAPH_FILE}' is malformed ({exc!r})") from None
        missing = [c for c in self.const_names if c not in self.tensors]
        for q in self.qweights.values():
            missing += [f"{q.path}.{s}" for s in ("weight", "scales", "biases")
                        if f"{q.path}.{s}" not in self.tensors]  # fmt: skip
        if missing:
            raise _fail(f"'{self.folder / WEIGHTS_FILE}' lacks tensor(s) {sorted(missing)[:3]}")
        for op, name, *_ in self.nodes:
            if op not in OPS:
                raise unsupported(op, name)
        # scales/biases may be stored as float16; compute in float32 with those exact values
        self._qparams = {
            q.name: (
                self.tensors[f"{q.path}.weight"],
                self.tensors[f"{q.path}.scales"].astype(mx.float32),
                self.tensors[f"{q.path}.biases"].astype(mx.float32),
            )
            for q in self.qweights.values()
        }
        self._dense: dict[tuple[str, str], mx.array] = {}
        self._np_consts: dict[str, np.ndarray] = {}
        self._fn: Callable[..., list[mx.array]] = self._forward
        if compile:  # one eager run fills the caches of dequantized / transposed weights
            zeros = [
                mx.zeros(shape, _NP_DTYPES.get(dtype, mx.float32))
                for _, shape, dtype in self.inputs
            ]
            mx.eval(self._forward(*zeros))
            self._fn = mx.compile(self._forward)

    # ---- constants --------------------------------------------------------------------------
    def const_np(self, name: str) -> np.ndarray:
        """A (small, shape-like) constant as numpy, for attributes given as inputs."""
        if name not in self._np_consts:
            self._np_consts[name] = np.array(self.tensors[name])
        return self._np_consts[name]

    def dequantized(self, name: str, order: str = "onnx") -> mx.array:
        """A quantized weight as float32, in ONNX order or in its stored MLX order; cached."""
        key = (name, order)
        if key not in self._dense:
            q = self.qweights[name]
            wq, s, b = self._qparams[name]
            w = mx.dequantize(wq, s, b, group_size=q.group_size, bits=q.bits)[:, : q.k]
            w = mx.reshape(w, q.mlx_shape)
            if order == "onnx":
                w = mx.contiguous(mx.transpose(w, tuple(int(i) for i in np.argsort(q.perm))))
            mx.eval(w)
            self._dense[key] = w
        return self._dense[key]

    def float_const(self, name: str, order: str = "onnx") -> mx.array:
        if name in self.qweights:
            return self.dequantized(name, order)
        return self.tensors[name]

    # ---- running ----------------------------------------------------------------------------
    def _forward(self, *args: mx.array) -> list[mx.array]:
        env: dict[str, _Value] = {
            n: self._fake_quant(n, _Value(a))
            for (n, _, _), a in zip(self.inputs, args, strict=True)
        }
        for op, name, ins, outs, attrs in self.nodes:
            results = OPS[op](self, NodeCall(op, name, ins, outs, attrs, env))
            for o, v in zip(outs, results, strict=False):
                if o:
                    env[o] = self._fake_quant(o, v)
        return [_plain(env[o]) for o in self.outputs]

    def _fake_quant(self, name: str, v: _Value) -> _Value:
        """Quantized activations of a W8A8 plan: quantize → clamp → dequantize, in float, with
        round-half-to-even (mx.round), as the simulator does."""
        p = self.acts.get(name)
        if p is None or not mx.issubdtype(v.array.dtype, mx.floating):
            return v
        scale, zp, qmin, qmax = p
        q = mx.clip(mx.round(v.array / scale) + zp, qmin, qmax)
        return _Value(((q - zp) * scale).astype(v.array.dtype), v.nhwc)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = []
        for name, shape, dtype in self.inputs:
            if name not in feeds:
                raise InputError(
                    f"missing feed '{name}'", f"feeds needed: {[i[0] for i in self.inputs]}"
                )
            arr = np.asarray(feeds[name])
            if tuple(arr.shape) != shape:
                raise InputError(f"feed '{name}' has shape {arr.shape}, the artifact takes {shape}")
            args.append(mx.array(arr.astype(np.dtype(dtype), copy=False)))
        outs = self._fn(*args)
        mx.eval(outs)
        return {
            n: np.array(o.astype(mx.float32) if o.dtype != mx.float32 else o)
            for n, o in zip(self.outputs, outs, strict=True)
        }


def unsupported(op: str, node: str) -> EdgeqError:
    return EdgeqError(
        f"{op} node '{node}' cannot run on the MLX target (no MLX lowering for {op})",
        "use another --target, or keep that part of the model outside the exported graph",
    )


@dataclass
class NodeCall:
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    env: dict[str, _Value]

    def has(self, i: int) -> bool:
        return len(self.inputs) > i and bool(self.inputs[i])

    def fail(self, why: str) -> EdgeqError:
        return EdgeqError(f"{self.op} node '{self.name}': {why} is not supported on the MLX target",
                          "use another --target for this model")  # fmt: skip


# ---- op lowerings --------------------------------------------------------------------------------
Lowering = Callable[[MlxProgram, NodeCall], Sequence[_Value]]
OPS: dict[str, Lowering] = {}


def _op(*names: str) -> Callable[[Lowering], Lowering]:
    def deco(fn: Lowering) -> Lowering:
        for n in names:
            OPS[n] = fn
        return fn

    return deco


def _value(p: MlxProgram, c: NodeCall, i: int) -> _Value:
    name = c.inputs[i]
    if name in c.env:
        return c.env[name]
    return _Value(p.float_const(name))


def _arr(p: MlxProgram, c: NodeCall, i: int) -> mx.array:
    return _plain(_value(p, c, i))


def _ints(p: MlxProgram, c: NodeCall, i: int, attr: str) -> list[int] | None:
    """An int list given as input i (newer opsets) or as attribute `attr` (older ones)."""
    if c.has(i):
        if c.inputs[i] not in p.const_names:
            raise c.fail(f"a computed '{attr}' input")
        return [int(v) for v in p.const_np(c.inputs[i]).reshape(-1)]
    value = c.attrs.get(attr)
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


_UNARY: dict[str, Callable[..., mx.array]] = {
    "Relu": lambda x: mx.maximum(x, 0), "Sigmoid": mx.sigmoid, "Tanh": mx.tanh, "Exp": mx.exp,
    "Log": mx.log, "Sqrt": mx.sqrt, "Neg": mx.negative, "Abs": mx.abs, "Erf": mx.erf,
    "Reciprocal": mx.reciprocal, "Identity": lambda x: x, "Floor": mx.floor, "Ceil": mx.ceil,
    "Sin": mx.sin, "Cos": mx.cos,
}  # fmt: skip


@_op(*_UNARY, "HardSwish", "HardSigmoid", "Gelu", "LeakyRelu", "Clip", "Cast")
def _unary(p: MlxProgram, c: NodeCall) -> list[_Value]:
    v = _value(p, c, 0)
    x, a = v.array, c.attrs
    if c.op == "HardSwish":
        y = x * mx.clip(x * (1.0 / 6.0) + 0.5, 0.0, 1.0)
    elif c.op == "HardSigmoid":
        y = mx.clip(x * float(a.get("alpha", 0.2)) + float(a.get("beta", 0.5)), 0.0, 1.0)
    elif c.op == "Gelu":
        if a.get("approximate", "none") == "tanh":
            y = 0.5 * x * (1 + mx.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)))
        else:
            y = 0.5 * x * (1.0 + mx.erf(x * (1.0 / math.sqrt(2.0))))
    elif c.op == "LeakyRelu":
        y = mx.where(x >= 0, x, x * float(a.get("alpha", 0.01)))
    elif c.op == "Clip":
        lo = hi = None
        if p.opset >= 11:
            lo = _arr(p, c, 1) if c.has(1) else None
            hi = _arr(p, c, 2) if c.has(2) else None
        else:
            lo, hi = a.get("min"), a.get("max")
        y = x
        if lo is not None:
            y = mx.maximum(y, lo)
        if hi is not None:
            y = mx.minimum(y, hi)
    elif c.op == "Cast":
        to = int(a["to"])
        if to not in _ONNX_DTYPES:
            raise c.fail(f"Cast to ONNX type {to}")
        y = x.astype(_ONNX_DTYPES[to])
    else:
        y = _UNARY[c.op](x)
    return [_Value(y, v.nhwc)]


_BINARY: dict[str, Callable[[mx.array, mx.array], mx.array]] = {
    "Add": mx.add, "Sub": mx.subtract, "Mul": mx.multiply, "Pow": mx.power,
    "Max": mx.maximum, "Min": mx.minimum, "Equal": mx.equal, "Less": mx.less,
    "Greater": mx.greater, "Where": mx.where,  # Where is ternary; handled below
}  # fmt: skip


@_op("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Less", "Greater", "Where")
def _elementwise(p: MlxProgram, c: NodeCall) -> list[_Value]:
    vals = [_value(p, c, i) for i in range(len(c.inputs))]
    nhwc = any(v.nhwc for v in vals) and all(v.nhwc or v.array.ndim <= 4 for v in vals)
    if nhwc:
        arrs = [v.array if v.nhwc else _to_nhwc(v.array) for v in vals]
    else:
        arrs = [_plain(v) for v in vals]
    if c.op == "Div":
        a, b = arrs
        if mx.issubdtype(a.dtype, mx.integer) and mx.issubdtype(b.dtype, mx.integer):
            q = mx.abs(a) // mx.abs(b)  # ONNX integer Div truncates toward zero
            y = mx.where((a < 0) != (b < 0), -q, q)
        else:
            y = a / b
    elif c.op == "Where":
        y = mx.where(*arrs)
    elif c.op == "Max" or c.op == "Min":
        y = arrs[0]
        for other in arrs[1:]:
            y = _BINARY[c.op](y, other)
    else:
        y = _BINARY[c.op](arrs[0], arrs[1])
    return [_Value(y, nhwc)]


# ---- linear layers -------------------------------------------------------------------------------
def _qmatmul(p: MlxProgram, x: mx.array, name: str) -> mx.array:
    """x[..., K] @ W where the stored weight is [N, K(padded)] (transpose=True)."""
    q = p.qweights[name]
    wq, s, b = p._qparams[name]
    if q.k_padded != q.k:
        x = mx.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, q.k_padded - q.k)])
    return mx.quantized_matmul(x, wq, s, b, transpose=True, group_size=q.group_size, bits=q.bits)


def _is_nk(p: MlxProgram, name: str) -> bool:
    """The stored quantized weight is a plain [N, K] matrix (quantized_matmul can use it)."""
    q = p.qweights.get(name)
    return (
        q is not None
        and p.quantized_kernels
        and math.prod(q.mlx_shape[: q.split]) == q.mlx_shape[0]
    )


@_op("MatMul")
def _matmul(p: MlxProgram, c: NodeCall) -> list[_Value]:
    x = _arr(p, c, 0)
    w = c.inputs[1]
    if w in p.qweights and _is_nk(p, w) and p.qweights[w].perm == (1, 0) and x.ndim >= 1:
        return [_Value(_qmatmul(p, x, w))]
    return [_Value(mx.matmul(x, _arr(p, c, 1)))]


@_op("Gemm")
def _gemm(p: MlxProgram, c: NodeCall) -> list[_Value]:
    a = _arr(p, c, 0)
    if int(c.attrs.get("transA", 0)):
        a = mx.transpose(a)
    alpha, beta = float(c.attrs.get("alpha", 1.0)), float(c.attrs.get("beta", 1.0))
    trans_b = int(c.attrs.get("transB", 0))
    w = c.inputs[1]
    if w in p.qweights and _is_nk(p, w) and p.qweights[w].perm == ((0, 1) if trans_b else (1, 0)):
        y = _qmatmul(p, a, w)
    else:
        bmat = _arr(p, c, 1)
        y = mx.matmul(a, mx.transpose(bmat) if trans_b else bmat)
    if alpha != 1.0:
        y = y * alpha
    if c.has(2):
        bias = _arr(p, c, 2)
        y = y + (bias * beta if beta != 1.0 else bias)
    return [_Value(y)]


def _spatial_pads(c: NodeCall, spatial: Sequence[int], kernel: Sequence[int],
                  strides: Sequence[int], dilations: Sequence[int]) -> list[tuple[int, int]]:  # fmt: skip
    auto = c.attrs.get("auto_pad", "NOTSET")
    n = len(spatial)
    if auto in ("NOTSET", ""):
        pads = [int(v) for v in c.attrs.get("pads", [0] * 2 * n)]
        return [(pads[i], pads[i + n]) for i in range(n)]
    if auto == "VALID":
        return [(0, 0)] * n
    out = []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
    return out


@_op("Conv")
def _conv(p: MlxProgram, c: NodeCall) -> list[_Value]:
    v = _value(p, c, 0)
    w_name = c.inputs[1]
    if v.array.ndim != 4 or w_name not in p.const_names | set(p.qweights):
        raise c.fail("a Conv that is not 2-D with a constant weight")
    x = v.array if v.nhwc else mx.transpose(v.array, _TO_NHWC)
    if w_name in p.qweights:
        q = p.qweights[w_name]
        _, _, kh, kw = q.shape
        if q.perm != (0, 2, 3, 1):
            raise c.fail("a Conv weight stored in an unexpected order")
    else:
        _, _, kh, kw = p.tensors[w_name].shape
    strides = [int(s) for s in c.attrs.get("strides", [1, 1])]
    dil = [int(d) for d in c.attrs.get("dilations", [1, 1])]
    group = int(c.attrs.get("group", 1))
    pads = _spatial_pads(c, x.shape[1:3], (kh, kw), strides, dil)
    pointwise = (kh, kw) == (1, 1) and group == 1 and strides == [1, 1]
    if pointwise and w_name in p.qweights and _is_nk(p, w_name) and not any(sum(pads, ())):
        y = _qmatmul(p, x, w_name)
    else:
        if w_name in p.qweights:
            w = p.dequantized(w_name, "mlx")
        else:
            key = (w_name, "nhwc")
            if key not in p._dense:
                p._dense[key] = mx.contiguous(mx.transpose(p.tensors[w_name], _TO_NHWC))
                mx.eval(p._dense[key])
            w = p._dense[key]
        if pads[0][0] != pads[0][1] or pads[1][0] != pads[1][1]:
            x = mx.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])
            padding: tuple[int, int] = (0, 0)
        else:
            padding = (pads[0][0], pads[1][0])
        y = mx.conv2d(x, w, stride=tuple(strides), padding=padding, dilation=tuple(dil),
                      groups=group)  # type: ignore[arg-type]  # fmt: skip
    if c.has(2):
        y = y + _arr(p, c, 2)
    return [_Value(y, True)]


# ---- pooling -------------------------------------------------------------------------------------
def _nhwc(v: _Value) -> mx.array:
    return v.array if v.nhwc else mx.transpose(v.array, _TO_NHWC)


@_op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(p: MlxProgram, c: NodeCall) -> list[_Value]:
    v = _value(p, c, 0)
    if v.array.ndim != 4:
        raise c.fail("a non-2-D global pool")
    x = _nhwc(v)
    y = mx.mean(x, axis=(1, 2), keepdims=True) if c.op == "GlobalAveragePool" else mx.max(
        x, axis=(1, 2), keepdims=True)  # fmt: skip
    return [_Value(y, True)]


def _window_reduce(x: mx.array, kernel: Sequence[int], strides: Sequence[int], op: str) -> mx.array:
    """Max or sum over the sliding windows of NHWC x, as kh*kw strided slices (no as_strided,
    which would read a lazy or non-contiguous input's buffer with the wrong strides)."""
    _, h, w, _ = x.shape
    (kh, kw), (sh, sw) = kernel, strides
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            part = x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]
            out = part if out is None else (mx.maximum(out, part) if op == "max" else out + part)
    assert out is not None
    return out


@_op("MaxPool", "AveragePool")
def _pool(p: MlxProgram, c: NodeCall) -> list[_Value]:
    v = _value(p, c, 0)
    if v.array.ndim != 4:
        raise c.fail("a non-2-D pool")
    if int(c.attrs.get("ceil_mode", 0)):
        raise c.fail("ceil_mode=1")
    if any(int(d) != 1 for d in c.attrs.get("dilations", [1, 1])):
        raise c.fail("dilated pooling")
    if c.op == "MaxPool" and len(c.outputs) > 1 and c.outputs[1]:
        raise c.fail("MaxPool indices output")
    kernel = [int(k) for k in c.attrs["kernel_shape"]]
    strides = [int(s) for s in c.attrs.get("strides", [1, 1])]
    x = _nhwc(v)
    pads = _spatial_pads(c, x.shape[1:3], kernel, strides, [1, 1])
    padded = any(sum(pads, ()))
    if c.op == "MaxPool":
        if padded:
            x = mx.pad(x, [(0, 0), pads[0], pads[1], (0, 0)], constant_values=-float("inf"))
        y = _window_reduce(x, kernel, strides, "max")
    else:
        xp = mx.pad(x, [(0, 0), pads[0], pads[1], (0, 0)]) if padded else x
        total = _window_reduce(xp, kernel, strides, "sum")
        if padded and not int(c.attrs.get("count_include_pad", 0)):
            ones = mx.pad(
                mx.ones((1, *x.shape[1:3], 1), x.dtype), [(0, 0), pads[0], pads[1], (0, 0)]
            )
            y = total / _window_reduce(ones, kernel, strides, "sum")
        else:
            y = total / float(kernel[0] * kernel[1])
    return [_Value(y, True)]


# ---- normalization and softmax -------------------------------------------------------------------
@_op("LayerNormalization")
def _layer_norm(p: MlxProgram, c: NodeCall) -> list[_Value]:
    x = _arr(p, c, 0)
    axis = int(c.attrs.get("axis", -1)) % x.ndim
    eps = float(c.attrs.get("epsilon", 1e-5))
    scale = _arr(p, c, 1)
    bias = _arr(p, c, 2) if c.has(2) else None
    if axis == x.ndim - 1 and scale.ndim <= 1 and (bias is None or bias.ndim <= 1):
        return [_Value(mx.fast.layer_norm(x, scale, bias, eps))]
    axes = tuple(range(axis, x.ndim))
    mu = mx.mean(x, axis=axes, keepdims=True)
    d = x - mu
    y = d * mx.rsqrt(mx.mean(d * d, axis=axes, keepdims=True) + eps) * scale
    return [_Value(y + bias if bias is not None else y)]


@_op("Softmax", "LogSoftmax")
def _softmax(p: MlxProgram, c: NodeCall) -> list[_Value]:
    x = _arr(p, c, 0)
    fn = (
        mx.softmax
        if c.op == "Softmax"
        else (lambda a, axis: a - mx.logsumexp(a, axis=axis, keepdims=True))
    )
    if p.opset >= 13:
        return [_Value(fn(x, axis=int(c.attrs.get("axis", -1)) % x.ndim))]
    axis = int(c.attrs.get("axis", 1)) % x.ndim
    if axis == x.ndim - 1:
        return [_Value(fn(x, axis=-1))]
    flat = mx.reshape(x, (math.prod(x.shape[:axis]), -1))
    return [_Value(mx.reshape(fn(flat, axis=-1), x.shape))]


# ---- reductions ----------------------------------------------------------------------------------
@_op("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceSumSquare")
def _reduce(p: MlxProgram, c: NodeCall) -> list[_Value]:
    x = _arr(p, c, 0)
    from_input = (c.op == "ReduceSum" and p.opset >= 13) or p.opset >= 18
    axes = _ints(p, c, 1, "axes") if from_input else _ints(p, c, 99, "axes")
    keep = bool(int(c.attrs.get("keepdims", 1)))
    if not axes:
        if int(c.attrs.get("noop_with_empty_axes", 0)):
            return [_Value(x)]
        axes = list(range(x.ndim))
    ax = tuple(a % x.ndim for a in axes)
    if c.op == "ReduceSum":
        y = mx.sum(x, axis=ax, keepdims=keep)
    elif c.op == "ReduceMean":
        y = mx.mean(x, axis=ax, keepdims=keep)
    elif c.op == "ReduceMax":
        y = mx.max(x, axis=ax, keepdims=keep)
    elif c.op == "ReduceMin":
        y = mx.min(x, axis=ax, keepdims=keep)
    elif c.op == "ReduceSumSquare":
        y = mx.sum(x * x, axis=ax, keepdims=keep)
    else:
        y = mx.sqrt(mx.sum(x * x, axis=ax, keepdims=keep))
    return [_Value(y)]


# ---- shape and data movement ---------------------------------------------------------------------
@_op("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Expand")
def _shape_ops(p: MlxProgram, c: NodeCall) -> list[_Value]:
    x = _arr(p, c, 0)
    shape = list(x.shape)
    if c.op == "Reshape":
        target = _ints(p, c, 1, "shape") or []
        allowzero = int(c.attrs.get("allowzero", 0))
        new = [shape[i] if d == 0 and not allowzero else d for i, d in enumerate(target)]
        return [_Value(mx.reshape(x, new))]
    if c.op == "Flatten":
        axis = int(c.attrs.get("axis", 1)) % (x.ndim + 1) if x.ndim else 0
        return [_Value(mx.reshape(x, (math.prod(shape[:axis]), math.prod(shape[axis:]))))]
    if c.op == "Squeeze":
        axes = _ints(p, c, 1, "axes") if p.opset >= 13 else _ints(p, c, 99, "axes")
        if axes is None:
            axes = [i for i, d in enumerate(shape) if d == 1]
        return [_Value(mx.squeeze(x, axis=tuple(a % x.ndim for a in axes)) if axes else x)]
    if c.op == "Unsqueeze":
        axes = (_ints(p, c, 1, "axes") if p.opset >= 13 else _ints(p, c, 99, "axes")) or []
        rank = x.ndim + len(axes)
        for a in sorted(a % rank for a in axes):
            x = mx.expand_dims(x, a)
        return [_Value(x)]
    if c.op == "Transpose":
        perm = c.attrs.get("perm")
        perm = [int(i) for i in perm] if perm is not None else list(range(x.ndim))[::-1]
        return [_Value(mx.transpose(x, perm))]
    target = _ints(p, c, 1, "shape") or []
    out = np.broadcast_shapes(tuple(shape), tuple(target))
    return [_Value(mx.broadcast_to(x, out))]


@_op("Concat")
def _concat(p: MlxProgram, c: NodeCall) -> list[_Value]:
    vals = [_value(p, c, i) for i in range(len(c.inputs)) if c.inputs[i]]
    axis = int(c.attrs["axis"])
    if all(v.nhwc for v in vals):
        return [_Value(mx.concatenate([v.array for v in vals], axis=_NHWC_AXIS[axis % 4]), True)]
    arrs = [_plain(v) for v in vals]
    return [_Value(mx.concatenate(arrs, axis=axis % arrs[0].ndim))]


@_op("Slice")
def _slice(p: MlxProgram, c: NodeCall) -> list[_Value]:
    x = _arr(p, c, 0)
    if p.opset >= 10:
        starts, ends = _ints(p, c, 1, "starts") or [], _ints(p, c, 2, "ends") or []
        axes = _ints(p, c, 3, "axes") if c.has(3) else None
        steps = _ints(p, c, 4, "steps") if c.has(4) else None
    else:
        starts, ends = _ints(p, c, 99, "starts") or [], _ints(p, c, 99, "ends") or []
        axes, steps = _ints(p, c, 99, "axes"), None
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps or [1] * len(starts)
    index: list[slice] = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        dim = x.shape[a % x.ndim]
        index[a % x.ndim] = slice(*slice(s, e, st).indices(dim))
    return [_Value(x[tuple(index)])]


@_op("Gather")
def _gather(p: MlxProgram, c: NodeCall) -> list[_Value]:
    axis = int(c.attrs.get("axis", 0))
    idx = _arr(p, c, 1)
    table = c.inputs[0]
    if table in p.qweights and axis == 0 and _is_nk(p, table):
        q = p.qweights[table]
        n = q.shape[0]
        flat = mx.reshape(idx, (-1,)).astype(mx.int32)
        flat = mx.where(flat < 0, flat + n, flat)
        wq, s, b = p._qparams[table]
        rows = mx.dequantize(mx.take(wq, flat, axis=0), mx.take(s, flat, axis=0),
                             mx.take(b, flat, axis=0), group_size=q.group_size, bits=q.bits)  # fmt: skip
        rows = rows[:, : q.k]
        return [_Value(mx.reshape(rows, (*idx.shape, *q.shape[1:])))]
    data = _arr(p, c, 0)
    axis %= data.ndim
    idx = idx.astype(mx.int32)
    idx = mx.where(idx < 0, idx + data.shape[axis], idx)
    return [_Value(mx.take(data, idx, axis=axis))]


@_op("Shape")
def _shape(p: MlxProgram, c: NodeCall) -> list[_Value]:
    x = _arr(p, c, 0)
    return [_Value(mx.array(np.asarray(x.shape, np.int64)))]


# ---- split, resize, transposed convolution, recurrent (issue #14) --------------------------------
@_op("Split")
def _split(p: MlxProgram, c: NodeCall) -> list[_Value]:
    x = _arr(p, c, 0)
    axis = int(c.attrs.get("axis", 0)) % x.ndim
    sizes = _ints(p, c, 1, "split") if p.opset >= 13 else _ints(p, c, 99, "split")
    n = len(c.outputs)
    if not sizes:
        dim = x.shape[axis]
        each = -(-dim // n)
        sizes = [min(each, dim - i * each) for i in range(n)]
    bounds = np.cumsum([0, *sizes]).tolist()
    index: list[slice] = [slice(None)] * x.ndim
    out = []
    for lo, hi in itertools.pairwise(bounds):
        index[axis] = slice(int(lo), int(hi))
        out.append(_Value(x[tuple(index)]))
    return out


def _text(value: Any, default: str) -> str:
    value = default if value is None else value
    return value.decode() if isinstance(value, bytes) else str(value)


@_op("Resize")
def _resize(p: MlxProgram, c: NodeCall) -> list[_Value]:
    """nearest and (bi)linear over H, W of an NCHW tensor, with ONNX's coordinate modes, as
    gathers along H and W (exact index math, computed once from the static shapes)."""
    v = _value(p, c, 0)
    x = _nhwc(v)
    _n, h, w, _ch = x.shape
    mode = _text(c.attrs.get("mode"), "nearest")
    ctm = _text(c.attrs.get("coordinate_transformation_mode"), "half_pixel")
    if mode not in ("nearest", "linear") or int(c.attrs.get("antialias", 0)):
        raise c.fail(f"Resize mode {mode}")
    sizes = [int(d) for d in p.const_np(c.inputs[3]).reshape(-1)] if c.has(3) else None
    scales = [float(d) for d in p.const_np(c.inputs[2]).reshape(-1)] if c.has(2) else None
    if sizes is not None:
        out_hw = sizes[2:4]
        sc = [out_hw[0] / h, out_hw[1] / w]
    elif scales:
        if scales[:2] != [1.0, 1.0]:
            raise c.fail("a Resize of the batch or channel axis")
        sc = scales[2:4]
        out_hw = [math.floor(h * sc[0]), math.floor(w * sc[1])]
    else:
        raise c.fail("a Resize without constant scales or sizes")
    y = x
    for axis, (size, out, s) in enumerate(zip((h, w), out_hw, sc, strict=True), start=1):
        coord = source_coordinates(out, size, s, ctm)
        if mode == "nearest":
            idx = nearest_indices(
                coord, _text(c.attrs.get("nearest_mode"), "round_prefer_floor"), size
            )
            y = mx.take(y, mx.array(idx.astype(np.int32)), axis=axis)
            continue
        lo, hi, frac = linear_taps(coord, size)
        lo, hi = lo.astype(np.int32), hi.astype(np.int32)
        shape = [1, 1, 1, 1]
        shape[axis] = out
        f = mx.array(frac.reshape(shape))
        a, b = mx.take(y, mx.array(lo), axis=axis), mx.take(y, mx.array(hi), axis=axis)
        y = a + (b - a) * f
    return [_Value(y, True)]


@_op("ConvTranspose")
def _conv_transpose(p: MlxProgram, c: NodeCall) -> list[_Value]:
    v = _value(p, c, 0)
    w_name = c.inputs[1]
    if v.array.ndim != 4 or int(c.attrs.get("group", 1)) != 1:
        raise c.fail("a ConvTranspose that is not 2-D with group 1")
    w = p.dequantized(w_name) if w_name in p.qweights else p.float_const(w_name)  # [I, O, kh, kw]
    kh, kw = w.shape[2], w.shape[3]
    strides = [int(s) for s in c.attrs.get("strides", [1, 1])]
    dil = [int(d) for d in c.attrs.get("dilations", [1, 1])]
    pads = [int(d) for d in c.attrs.get("pads", [0, 0, 0, 0])]
    out_pad = [int(d) for d in c.attrs.get("output_padding", [0, 0])]
    if _text(c.attrs.get("auto_pad"), "NOTSET") not in ("NOTSET", "") or "output_shape" in c.attrs:
        raise c.fail("ConvTranspose with auto_pad or output_shape")
    x = _nhwc(v)
    wt = mx.transpose(w, (1, 2, 3, 0))  # [O, kh, kw, I]
    y = mx.conv_transpose2d(x, wt, stride=tuple(strides), dilation=tuple(dil))  # type: ignore[arg-type]
    full_h, full_w = y.shape[1], y.shape[2]
    extra = [max(0, out_pad[0] - pads[2]), max(0, out_pad[1] - pads[3])]
    if any(extra):
        y = mx.pad(y, [(0, 0), (0, extra[0]), (0, extra[1]), (0, 0)])
    y = y[:, pads[0] : full_h - pads[2] + out_pad[0], pads[1] : full_w - pads[3] + out_pad[1], :]
    del kh, kw
    if c.has(2):
        y = y + _arr(p, c, 2)
    return [_Value(y, True)]


def _recurrent_inputs(p: MlxProgram, c: NodeCall, gates: int) -> tuple[Any, ...]:
    if int(c.attrs.get("layout", 0)):
        raise c.fail(f"{c.op} layout=1")
    acts = [_text(a, "").lower() for a in c.attrs.get("activations") or []]
    if acts and acts[: gates - 1] != ["sigmoid", "tanh", "tanh"][: gates - 1]:
        raise c.fail(f"{c.op} activations {acts}")
    if c.has(4) or c.attrs.get("clip") is not None:
        raise c.fail(f"{c.op} with sequence_lens or clip")
    x = _arr(p, c, 0)
    w, r = _arr(p, c, 1), _arr(p, c, 2)
    b = _arr(p, c, 3) if c.has(3) else None
    return x, w, r, b


@_op("LSTM", "GRU")
def _recurrent(p: MlxProgram, c: NodeCall) -> list[_Value]:
    """ONNX LSTM (gates i, o, f, c) and GRU (gates z, r, h) unrolled over time."""
    lstm = c.op == "LSTM"
    x, w, r, b = _recurrent_inputs(p, c, 4 if lstm else 3)
    if lstm and c.has(7):
        raise c.fail("LSTM peepholes")
    direction = _text(c.attrs.get("direction"), "forward")
    nd, hidden = r.shape[0], r.shape[-1]
    seq, batch = x.shape[0], x.shape[1]
    h0 = _arr(p, c, 5) if c.has(5) else mx.zeros((nd, batch, hidden), x.dtype)
    c0 = _arr(p, c, 6) if lstm and c.has(6) else mx.zeros((nd, batch, hidden), x.dtype)
    ys, hs, cs = [], [], []
    lbr = int(c.attrs.get("linear_before_reset", 0))
    for d in range(nd):
        g = 4 if lstm else 3
        wb = b[d, : g * hidden] if b is not None else 0.0
        rb = b[d, g * hidden :] if b is not None else mx.zeros((g * hidden,), x.dtype)
        xp = mx.matmul(x, mx.transpose(w[d])) + wb  # [T, B, g*H]
        rt = mx.transpose(r[d])
        h, cell = h0[d], c0[d]
        steps = range(seq - 1, -1, -1) if direction == "reverse" or d == 1 else range(seq)
        out: list[mx.array] = [None] * seq  # type: ignore[list-item]
        for t in steps:
            if lstm:
                gates = xp[t] + mx.matmul(h, rt) + rb
                i, o, f, cc = mx.split(gates, 4, axis=-1)
                cell = mx.sigmoid(f) * cell + mx.sigmoid(i) * mx.tanh(cc)
                h = mx.sigmoid(o) * mx.tanh(cell)
            else:
                xz, xr, xh = mx.split(xp[t], 3, axis=-1)
                hr = mx.matmul(h, rt)
                rz, rr, rh = mx.split(hr, 3, axis=-1)
                bz, br, bh = mx.split(rb, 3)
                z = mx.sigmoid(xz + rz + bz)
                rg = mx.sigmoid(xr + rr + br)
                if lbr:
                    hh = xh + rg * (rh + bh)
                else:
                    hh = xh + mx.matmul(rg * h, mx.transpose(r[d][2 * hidden :])) + bh
                h = (1 - z) * mx.tanh(hh) + z * h
            out[t] = h
        ys.append(mx.stack(out))
        hs.append(h)
        cs.append(cell)
    y = mx.stack(ys, axis=1)  # [T, D, B, H]
    result = [_Value(y), _Value(mx.stack(hs))]
    if lstm:
        result.append(_Value(mx.stack(cs)))
    return result


@_op("BatchNormalization")
def _batch_norm(p: MlxProgram, c: NodeCall) -> list[_Value]:
    v = _value(p, c, 0)
    gamma, beta, mean, var = (p.const_np(c.inputs[i]).astype(np.float32) for i in range(1, 5))
    k = gamma / np.sqrt(var + float(c.attrs.get("epsilon", 1e-5)))
    shift = beta - mean * k
    if v.nhwc:  # channels last
        return [_Value(v.array * mx.array(k) + mx.array(shift), True)]
    x = v.array
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return [_Value(x * mx.array(k.reshape(shape)) + mx.array(shift.reshape(shape)))]


@_op("Pad")
def _pad(p: MlxProgram, c: NodeCall) -> list[_Value]:
    x = _arr(p, c, 0)
    mode = _text(c.attrs.get("mode"), "constant")
    pads = _ints(p, c, 1, "pads") or []
    axes = _ints(p, c, 3, "axes") if c.has(3) else list(range(x.ndim))
    axes = [a % x.ndim for a in axes or []]
    widths = [(0, 0)] * x.ndim
    for i, a in enumerate(axes):
        widths[a] = (pads[i], pads[i + len(axes)])
    if mode not in ("constant", "edge", "reflect") or any(b < 0 or e < 0 for b, e in widths):
        raise c.fail(f"Pad mode {mode} or negative pads")
    value = float(p.const_np(c.inputs[2]).reshape(-1)[0]) if c.has(2) else 0.0
    if mode == "reflect":  # mirror without the edge: gathers with the reflected indices
        for axis, (b, e) in enumerate(widths):
            if b or e:
                n = x.shape[axis]
                idx = np.concatenate([np.arange(b, 0, -1), np.arange(n), n - 2 - np.arange(e)])
                x = mx.take(x, mx.array(idx.astype(np.int32)), axis=axis)
        return [_Value(x)]
    if mode == "edge":
        return [_Value(mx.pad(x, widths, mode="edge"))]
    return [_Value(mx.pad(x, widths, constant_values=value))]


@_op("Not", "And", "Or", "GreaterOrEqual", "LessOrEqual", "IsNaN")
def _logic(p: MlxProgram, c: NodeCall) -> list[_Value]:
    arrs = [_arr(p, c, i) for i in range(len(c.inputs))]
    fns: dict[str, Callable[..., mx.array]] = {
        "Not": mx.logical_not, "And": mx.logical_and, "Or": mx.logical_or,
        "GreaterOrEqual": mx.greater_equal, "LessOrEqual": mx.less_equal, "IsNaN": mx.isnan,
    }  # fmt: skip
    return [_Value(fns[c.op](*arrs))]


SUPPORTED_OPS = frozenset(OPS)

__all__ = [
    "GROUP_SIZES",
    "SUPPORTED_OPS",
    "MlxProgram",
    "QuantizedWeight",
    "op_support",
    "read_artifact",
    "unsupported",
]

_DECOMPOSED = {"LSTM": "unrolled over time", "GRU": "unrolled over time",
               "Resize": "gathers along H and W", "HardSwish": "clip · mul",
               "HardSigmoid": "clip", "Gelu": "erf/tanh formula"}  # fmt: skip


def op_support() -> dict[str, dict[str, Any]]:
    """ONNX op → {"kind": native | decomposed} for every op the MLX runtime lowers."""
    return {op: {"kind": "decomposed" if op in _DECOMPOSED else "native"} for op in sorted(OPS)}
