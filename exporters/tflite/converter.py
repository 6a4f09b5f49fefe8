"""ONNX Graph (+ QuantPlan) → one TFLite subgraph, with layout tracking.

Every ONNX value may be realized as one or more TFLite tensors, each with a permutation
`perm` such that tflite_tensor = onnx_value.transpose(perm). Convolutions, pooling and resize
want NHWC (perm (0, 2, 3, 1)); elementwise ops, reductions, concat, slices and softmax work in
whatever layout their input already has (their axes and constants are permuted instead);
ONNX Transpose nodes become a relabeling (no op at all). A TRANSPOSE is emitted only where an
op needs a layout its input does not have yet (Reshape, MatMul, ...), once per value/layout.

Quantization comes from the plan, never invented: activations take the plan's scale/zero
point, weights and biases its integer values. Where a TFLite kernel needs something the plan
does not satisfy (shared scales, fixed encodings, bias = s_in*s_w), the export fails naming
the node and the rule. The op handlers live in `ops` and `float_islands`,
which register into `HANDLERS`; `exporter.convert` loads them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgeq.errors import EdgeqError, UnsupportedOpError
from edgeq.ir.graph import Graph, Node
from edgeq.quant.plan import QuantPlan, TensorQuant
from edgeq.quant.planner import RESIDUAL_READERS
from edgeq.targets import TargetProfile

from .builder import FlatModel, QParams, Tensor, op_version

NHWC = (0, 2, 3, 1)
Perm = tuple[int, ...]
Handler = Callable[["Converter", Node], None]
HANDLERS: dict[str, Handler] = {}


def handles(*op_types: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for op in op_types:
            HANDLERS[op] = fn
        return fn

    return register


def identity(rank: int) -> Perm:
    return tuple(range(rank))


def compose(q: Perm, p: Perm) -> Perm:
    """The permutation r with x.transpose(q).transpose(r) == x.transpose(p)."""
    inv = np.argsort(q)
    return tuple(int(inv[i]) for i in p)


class Converter:
    """State of one conversion. `run()` returns the FlatModel plus I/O layout metadata."""

    def __init__(self, graph: Graph, plan: QuantPlan | None, profile: TargetProfile) -> None:
        self.g = graph
        self.plan = plan
        self.profile = profile
        self.m = FlatModel(f"edgeq {profile.name}")
        self.real: dict[str, dict[Perm, Tensor]] = {}
        self.consumers = graph.consumers()
        self.producers = graph.producers()
        self.skip: set[str] = set()  # node names folded into another op
        self.maker: dict[int, Any] = {}  # tensor index -> OperatorT that writes it
        self.notes: list[str] = []

    # ---- facts about ONNX values --------------------------------------------------------
    @property
    def quantized(self) -> bool:
        return self.plan is not None

    def shape(self, name: str) -> tuple[int, ...]:
        info = self.g.info(name)
        if info is None or info.shape is None or not info.is_static:
            raise EdgeqError(f"tensor '{name}' has no static shape",
                             "export a prepared graph with fixed input shapes")  # fmt: skip
        return tuple(int(d) for d in info.shape)

    def is_const(self, name: str) -> bool:
        return name in self.g.constants

    def is_float(self, name: str) -> bool:
        info = self.g.info(name)
        return info is not None and np.issubdtype(info.dtype, np.floating)

    def tq(self, name: str) -> TensorQuant | None:
        return self.plan.get(name) if self.plan is not None else None

    def act_dtype(self, name: str) -> str:
        if not self.is_float(name):
            info = self.g.info(name)
            return "bool" if info is not None and np.dtype(info.dtype) == np.bool_ else "int32"
        if self.plan is None or self.planned_float(name):
            return "float32"
        return self._act_quant(name)[0]

    def qparams(self, name: str) -> QParams | None:
        if self.plan is None or not self.is_float(name) or self.planned_float(name):
            return None
        return self._act_quant(name)[1]

    def planned_float(self, name: str) -> bool:
        """A float activation the plan keeps float on purpose (a residual sum into a float
        LayerNorm: `float_residual`); only float-island lowerings read or write it."""
        t = self.tq(name)
        if t is None or t.role != "float" or not self.is_float(name):
            return False
        maker = self.producers.get(name)
        readers = self.consumers.get(name, [])
        # a residual sum (Add), the float rescale of a branch into one (Mul, branch_scales),
        # or a LayerNorm output read by residual sums and its smoothing Mul (smooth_copies)
        return (maker is not None and maker.op_type in ("Add", "Mul", "LayerNormalization")
                and all(n.op_type in (*RESIDUAL_READERS, "Mul") for n in readers))  # fmt: skip

    def _act_quant(self, name: str) -> tuple[str, QParams]:
        t = self.tq(name)
        if t is None or not t.is_quantized or t.role != "activation":
            why = t.reason if t is not None and t.reason else "not in the plan"
            raise EdgeqError(
                f"tensor '{name}' has no integer quantization in the plan ({why})",
                f"TFLite full-integer export needs every activation quantized; calibrate for "
                f"target '{self.profile.name}' without keep_float/weight-only settings",
            )
        if t.dtype not in ("int8", "int16"):
            raise EdgeqError(f"tensor '{name}' is {t.dtype} in the plan; TFLite runs int8 (or int16) activations",
                             f"calibrate for target '{self.profile.name}'")  # fmt: skip
        if t.dtype == "int16" and int(np.asarray(t.zero_point)) != 0:
            raise EdgeqError(f"int16 tensor '{name}' has zero point {int(np.asarray(t.zero_point))}",
                             "TFLite 16x8 mode needs symmetric int16 activations")  # fmt: skip
        return t.dtype, QParams.of(t.scale, t.zero_point)

    def fail(self, node: Node, problem: str, fix: str) -> EdgeqError:
        return EdgeqError(f"{node}: {problem}", fix)

    # ---- realizations ---------------------------------------------------------------------
    def new(self, name: str, perm: Perm | None = None, quant: QParams | None = None,
            dtype: str | None = None, shape: Sequence[int] | None = None) -> Tensor:  # fmt: skip
        """A fresh TFLite tensor realizing ONNX value `name` in layout `perm`."""
        onnx_shape = self.shape(name)
        perm = perm or identity(len(onnx_shape))
        tshape = shape if shape is not None else [onnx_shape[i] for i in perm]
        t = self.m.tensor(name, tshape, dtype or self.act_dtype(name),
                          quant if quant is not None else self.qparams(name))  # fmt: skip
        self.real.setdefault(name, {})[perm] = t
        return t

    def alias(self, name: str, t: Tensor, perm: Perm) -> None:
        self.real.setdefault(name, {})[perm] = t

    def layouts(self, name: str) -> dict[Perm, Tensor]:
        if name not in self.real:
            raise EdgeqError(f"tensor '{name}' is used before it is computed",
                             "the graph must be topologically sorted")  # fmt: skip
        return self.real[name]

    def any_layout(self, name: str) -> tuple[Perm, Tensor]:
        reals = self.layouts(name)
        rank = len(self.shape(name))
        if identity(rank) in reals:
            return identity(rank), reals[identity(rank)]
        perm = next(iter(reals))
        return perm, reals[perm]

    def get(self, name: str, perm: Perm | None = None) -> Tensor:
        """`name` in layout `perm` (identity when None), transposing once if needed."""
        rank = len(self.shape(name))
        perm = perm or identity(rank)
        reals = self.layouts(name)
        if perm in reals:
            return reals[perm]
        src_perm, src = next(iter(reals.items()))
        r = compose(src_perm, perm)
        out = self.m.tensor(f"{name}/{'' .join(map(str, perm))}",
                            [src.shape[i] for i in r], src.dtype, src.quant)  # fmt: skip
        perm_t = self.m.const(f"{name}/perm", np.asarray(r, np.int32), "int32")
        self.emit("TRANSPOSE", [src.index, perm_t.index], [out.index], src.dtype)
        reals[perm] = out
        return out

    # ---- operators ------------------------------------------------------------------------
    def emit(self, name: str, inputs: Sequence[int], outputs: Sequence[int], act: str,
             options: Any = None, weight: str | None = None, **flags: bool) -> Any:  # fmt: skip
        from ai_edge_litert import schema_py_generated as fb

        code = getattr(fb.BuiltinOperator, name)
        options_type = 0
        if options is not None:
            options_type = getattr(fb.BuiltinOptions, type(options).__name__.removesuffix("T"))
        op = self.m.op(code, inputs, outputs, op_version(name, act, weight, **flags),
                       options_type, options)  # fmt: skip
        for o in outputs:
            self.maker[int(o)] = op
        return op

    # ---- constants ------------------------------------------------------------------------
    def const_operand(self, name: str, rank: int, perm: Perm, act: str | None = None) -> Tensor:
        """A constant operand of an elementwise op, broadcast-ready in layout `perm`; with
        `act` "int16" (16x8 mode) the plan's int8 values are stored as int16 (same scale,
        zero point 0: the same reals), since int16 kernels take int16 operands only."""
        arr = self.g.constants[name]
        dtype = "int32" if not np.issubdtype(arr.dtype, np.floating) else "float32"
        quant = None
        if self.plan is not None and dtype == "float32":
            t = self.tq(name)
            if t is None or not t.is_quantized or t.values is None:
                raise EdgeqError(f"constant '{name}' is not quantized in the plan",
                                 f"calibrate for target '{self.profile.name}' (integer_only)")  # fmt: skip
            if np.ndim(t.scale) != 0:
                raise EdgeqError(f"constant operand '{name}' is quantized per channel",
                                 "elementwise constants must be per-tensor for TFLite")  # fmt: skip
            arr, dtype, quant = t.values, t.dtype, QParams.of(t.scale, t.zero_point)
            if act == "int16" and dtype == "int8" and not np.any(np.asarray(t.zero_point)):
                arr, dtype = np.asarray(arr).astype(np.int16), "int16"
        if arr.size == 1:
            arr = arr.reshape(())
        elif arr.ndim <= rank:
            arr = arr.reshape((1,) * (rank - arr.ndim) + arr.shape).transpose(perm)
        return self.m.const(name, arr, dtype, quant)

    def int_const(self, label: str, values: Sequence[int] | np.ndarray) -> Tensor:
        return self.m.const(label, np.asarray(values, np.int32), "int32")

    def scalar_const(self, label: str, value: float, like: str) -> Tensor:
        """A float scalar as a constant of the model's kind (int8 symmetric when quantized)."""
        if self.plan is None or self.act_dtype(like) == "float32":
            return self.m.const(label, np.asarray(value, np.float32), "float32")
        scale = abs(value) / 127.0 if value != 0 else 1.0
        q = 0 if value == 0 else int(np.sign(value)) * 127
        return self.m.const(label, np.asarray(q, np.int8), "int8", QParams.of(scale, 0))

    # ---- the run --------------------------------------------------------------------------
    def run(self) -> tuple[FlatModel, dict[str, Any]]:
        g = self.g
        inputs = []
        for v in g.inputs:
            rank = len(self.shape(v.name))
            perm = NHWC if rank == 4 and self.is_float(v.name) else identity(rank)
            inputs.append((v.name, perm, self.new(v.name, perm)))
        for node in g.nodes:
            if node.name in self.skip:
                continue
            if not self.profile.ops.runs(node.op_type):
                raise UnsupportedOpError(
                    f"{node}: op {node.op_type} is not supported by target '{self.profile.name}'",
                    f"ops it runs: {', '.join(self.profile.ops.supported)}; replace the op "
                    "or export for target rpi",
                )
            handler = HANDLERS.get(node.op_type)
            if handler is None:
                raise UnsupportedOpError(
                    f"{node}: op {node.op_type} has no TFLite lowering in edgeq",
                    f"supported ops: {', '.join(sorted(HANDLERS))}",
                )
            handler(self, node)
        outputs = []
        for v in g.outputs:
            perm, t = self.any_layout(v.name)
            outputs.append((v.name, perm, t))
        io = {
            "format": "edgeq-tflite-io",
            "target": self.profile.name,
            "rounding": self.plan.rounding if self.plan is not None else "half_away",
            "inputs": [self._io_row(n, p, t) for n, p, t in inputs],
            "outputs": [self._io_row(n, p, t) for n, p, t in outputs],
        }
        self.io_tensors = ([t.index for _, _, t in inputs], [t.index for _, _, t in outputs])
        return self.m, io

    def _io_row(self, name: str, perm: Perm, t: Tensor) -> dict[str, Any]:
        info = self.g.info(name)
        return {
            "name": name, "tensor": self.m.tensors[t.index].name, "perm": list(perm),
            "onnx_shape": list(self.shape(name)), "onnx_dtype": str(info.dtype if info else "float32"),
            "dtype": t.dtype,
            "scale": t.quant.scale[0] if t.quant else None,
            "zero_point": t.quant.zero_point[0] if t.quant else None,
        }  # fmt: skip
