"""Run a Graph with JAX: a jitted function of the inputs, with optional taps on any tensor.

Values known before running (constants, shapes of fixed-shape tensors and whatever is computed
only from those) are evaluated eagerly while tracing, so Shape→Gather→Concat→Reshape chains
never reach XLA. Integer tensors keep ONNX's int64 (the interpreter runs with x64 enabled for
its own calls only; no global flag is set).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

import edgeq.ir.ops  # noqa: F401  (registers the op set)
from edgeq.errors import DynamicShapeError, EdgeqError, InputError
from edgeq.ir.graph import Graph, Node
from edgeq.ir.jit import jit
from edgeq.ir.ops.registry import OpContext, call, is_concrete, lookup

log = logging.getLogger(__name__)

Array = Any
ValueHook = Callable[[Node, str, Array], None]
ValueTransform = Callable[[str, Array], Array]

# ops evaluated lazily (their sub-graphs decide per node)
_NO_EAGER = frozenset({"If", "Loop", "Scan"})


def _as_numpy(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return type(value)(_as_numpy(v) for v in value)
    return np.asarray(value)


@functools.cache
def _host_device() -> Any:
    """JAX's CPU device when the default backend is an accelerator (None otherwise, or when
    JAX was started without its CPU backend)."""
    if jax.default_backend() == "cpu":
        return None
    try:
        return jax.devices("cpu")[0]
    except RuntimeError:
        return None


def _on_host() -> Any:
    """Values known before running (constant folding, shape arithmetic) are computed op by op;
    on an accelerator each op would be compiled and launched alone, so they run on the CPU."""
    device = _host_device()
    return jax.default_device(device) if device is not None else contextlib.nullcontext()


def run_node(node: Node, env: dict[str, Array], opset: int) -> list[Array]:
    """Evaluate one node against `env`; store and return its outputs."""
    opdef = lookup(node.op_type, opset, node, node.domain)
    inputs = [env[name] if name else None for name in node.inputs]
    ctx = OpContext(opset, node, lambda g, extra: run_subgraph(g, env, opset, extra))
    eager = node.op_type not in _NO_EAGER and all(x is None or is_concrete(x) for x in inputs)
    try:
        if eager:
            with jax.ensure_compile_time_eval(), _on_host():
                result = _as_numpy(call(opdef, ctx, inputs, node.attrs))
        else:
            result = call(opdef, ctx, inputs, node.attrs)
    except EdgeqError:
        raise
    except Exception as exc:  # a bug or an unsupported corner: name the node
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EdgeqError(
            f"{node} failed: {type(exc).__name__}: {msg}",
            "report this with `edgeq inspect` output; the op may need a fix in edgeq.ir.ops",
        ) from exc
    outputs = list(result) if isinstance(result, tuple | list) else [result]
    for name, value in zip(node.outputs, outputs, strict=False):
        if name:
            env[name] = value
    return outputs


def run_subgraph(
    graph: Graph, outer: Mapping[str, Array], opset: int, extra: Mapping[str, Array]
) -> list[Array]:
    env = dict(outer)
    env.update(graph.constants)
    env.update(extra)
    for node in graph.nodes:
        run_node(node, env, opset)
    return [env[v.name] for v in graph.outputs]


def evaluate(
    graph: Graph,
    feeds: Mapping[str, Array],
    hook: ValueHook | None = None,
    transform: ValueTransform | None = None,
) -> dict[str, Array]:
    """Run every node; return the environment of all values. `hook(node, name, value)` sees
    every produced value (the calibration engine accumulates statistics there);
    `transform(name, value)` may replace a graph input or a produced value before anything
    consumes it (the simulator's fake-quantization)."""
    env: dict[str, Array] = dict(graph.constants)
    env.update(feeds)
    if transform is not None:
        for name in feeds:
            env[name] = transform(name, env[name])
    for node in graph.nodes:
        outs = run_node(node, env, graph.opset)
        for name, value in zip(node.outputs, outs, strict=False):
            if not name:
                continue
            if transform is not None:
                value = env[name] = transform(name, value)
            if hook is not None:
                hook(node, name, value)
    return env


def input_specs(graph: Graph) -> dict[str, jax.ShapeDtypeStruct]:
    """Static specs of the graph inputs; raises DynamicShapeError naming any unfixed dim."""
    specs = {}
    for v in graph.inputs:
        if not v.is_static:
            raise DynamicShapeError(
                f"input '{v.name}' has unfixed dims {_shape_str(v.shape)}",
                f"fix it with --input-shape {v.name}="
                + ",".join(str(d) if isinstance(d, int) else "N" for d in (v.shape or ())),
            )
        specs[v.name] = jax.ShapeDtypeStruct(tuple(int(d) for d in v.shape or ()), v.dtype)
    return specs


def _shape_str(shape: tuple[Any, ...] | None) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]" if shape is not None else "unknown"


@dataclass
class TraceResult:
    """Shapes/dtypes of every value, and the values computable before running."""

    shapes: dict[str, tuple[tuple[int, ...], np.dtype]]
    concrete: dict[str, np.ndarray]


def trace(graph: Graph) -> TraceResult:
    """Abstract evaluation (jax.eval_shape) over the same op code used to run the graph."""
    specs = input_specs(graph)
    concrete: dict[str, np.ndarray] = {}

    def hook(node: Node, name: str, value: Array) -> None:
        if is_concrete(value):
            concrete[name] = np.asarray(value)

    def fn(feeds: Mapping[str, Array]) -> dict[str, Array]:
        env = evaluate(graph, feeds, hook)
        return {k: v for k, v in env.items() if k not in graph.constants}

    with jax.enable_x64(True):
        out = jax.eval_shape(fn, specs)
    shapes = {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in out.items()}
    shapes.update({k: (tuple(v.shape), v.dtype) for k, v in graph.constants.items()})
    return TraceResult(shapes, concrete)


class Interpreter:
    """A jitted forward pass over a fixed-shape Graph.

    `Interpreter(graph)(feeds)` returns the graph outputs as numpy arrays; with `taps=[...]`
    the named intermediate tensors are returned too (under the same dict).
    """

    def __init__(self, graph: Graph, taps: Collection[str] = ()) -> None:
        self.graph = graph
        self.specs = input_specs(graph)
        known = {n for node in graph.nodes for n in node.outputs} | set(graph.constants)
        known |= set(self.specs)
        missing = [t for t in taps if t not in known]
        if missing:
            raise InputError(f"tap(s) {missing} name no tensor in the graph", "see edgeq inspect")
        self.taps = tuple(taps)
        self._jitted = jit(self.forward)

    def forward(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        """The pure function (traceable): feeds -> outputs and taps."""
        env = evaluate(self.graph, feeds)
        names = [*self.graph.output_names, *self.taps]
        return {n: env[n] for n in names}

    def prepare_feeds(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        out = {}
        for name, spec in self.specs.items():
            if name not in feeds:
                raise InputError(f"missing input '{name}'", f"feed all of {list(self.specs)}")
            arr = np.asarray(feeds[name])
            if arr.shape != spec.shape:
                raise InputError(
                    f"input '{name}' has shape {arr.shape}, the graph was fixed to {spec.shape}",
                    "pass data of the fixed shape or re-run with another --input-shape",
                )
            out[name] = arr.astype(spec.dtype, copy=False)
        extra = set(feeds) - set(self.specs)
        if extra:
            raise InputError(f"unknown input(s) {sorted(extra)}", f"inputs are {list(self.specs)}")
        return out

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        prepared = self.prepare_feeds(feeds)
        with jax.enable_x64(True):
            result = self._jitted(prepared)
            return {k: np.asarray(v) for k, v in result.items()}

    def compile(self) -> None:
        """Compile ahead of the first call (for timing compile separately)."""
        with jax.enable_x64(True):
            self._jitted.lower(self.specs).compile()
