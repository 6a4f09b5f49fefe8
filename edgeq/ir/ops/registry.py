"""The op registry: one small pure function per ONNX op, registered by decorator.

An op function takes its inputs positionally (None for an absent optional input) and its
attributes as keyword-only arguments with the ONNX defaults; a first parameter named `ctx`
receives the `OpContext` (opset, node, subgraph evaluation). Attributes the function does not
declare are refused, so an attribute that would change the math never passes silently.
Versioned semantics: register the same op name again with `since=` the opset where it changed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.errors import DynamicShapeError, UnsupportedOpError


@dataclass(frozen=True)
class OpDef:
    name: str
    fn: Callable[..., Any]
    since: int
    attrs: frozenset[str]
    wants_ctx: bool


@dataclass
class OpContext:
    """What an op may know beyond its inputs."""

    opset: int
    node: Any  # edgeq.ir.graph.Node
    run_subgraph: Callable[[Any, Mapping[str, Any]], list[Any]] | None = None


_REGISTRY: dict[str, list[OpDef]] = {}


def register(
    name: str, *, since: int = 1, ignore: tuple[str, ...] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn` as the implementation of ONNX op `name` from opset `since` on."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = inspect.signature(fn).parameters
        attrs = {p.name for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        wants_ctx = next(iter(params), None) == "ctx"
        entry = OpDef(name, fn, since, frozenset(attrs | set(ignore)), wants_ctx)
        versions = [d for d in _REGISTRY.get(name, []) if d.since != since]
        _REGISTRY[name] = sorted([*versions, entry], key=lambda d: d.since)
        return fn

    return wrap


def supported_ops() -> list[str]:
    return sorted(_REGISTRY)


def is_supported(op_type: str, domain: str = "") -> bool:
    return domain in ("", "ai.onnx") and op_type in _REGISTRY


def lookup(op_type: str, opset: int, node: Any = None, domain: str = "") -> OpDef:
    where = f" (node '{node.name}')" if node is not None and getattr(node, "name", "") else ""
    if domain not in ("", "ai.onnx") or op_type not in _REGISTRY:
        dom = f"{domain}::" if domain not in ("", "ai.onnx") else ""
        raise UnsupportedOpError(
            f"unsupported op {dom}{op_type}{where}",
            "supported ops: " + ", ".join(supported_ops()),
        )
    candidates = [d for d in _REGISTRY[op_type] if d.since <= opset] or _REGISTRY[op_type][:1]
    return candidates[-1]


def call(opdef: OpDef, ctx: OpContext, inputs: list[Any], attrs: Mapping[str, Any]) -> Any:
    unknown = set(attrs) - opdef.attrs
    if unknown:
        raise UnsupportedOpError(
            f"{opdef.name} attribute(s) {sorted(unknown)} not supported (node '{ctx.node.name}')",
            f"supported {opdef.name} attributes: {sorted(opdef.attrs) or 'none'}",
        )
    kwargs = {k: v for k, v in attrs.items() if k in opdef.attrs and k not in _ignored(opdef)}
    while inputs and inputs[-1] is None:
        inputs = inputs[:-1]
    if opdef.wants_ctx:
        return opdef.fn(ctx, *inputs, **kwargs)
    return opdef.fn(*inputs, **kwargs)


def _ignored(opdef: OpDef) -> set[str]:
    params = inspect.signature(opdef.fn).parameters
    return {a for a in opdef.attrs if a not in params}


# ---- helpers for ops -------------------------------------------------------------------------
def is_concrete(x: Any) -> bool:
    return isinstance(x, np.ndarray | np.generic | int | float)


def static_ints(x: Any, what: str, op: str = "") -> list[int]:
    """The integer values of a tensor that must be known before running (shape, axes, pads)."""
    if x is None:
        return []
    if not is_concrete(x):
        raise DynamicShapeError(
            f"{op + ' ' if op else ''}{what} depends on run-time data",
            "fix input shapes with --input-shape so edgeq can fold it to a constant",
        )
    return [int(v) for v in np.asarray(x).reshape(-1)]
