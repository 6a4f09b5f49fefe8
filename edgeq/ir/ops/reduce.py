"""Reductions. Axes come from an attribute (older opsets) or a constant input (newer)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from edgeq.ir.ops.registry import register, static_ints

Array = Any


def _make(name: str, fn: Any) -> None:
    def op(x: Array, axes_: Array = None, *, axes: list[int] | None = None, keepdims: int = 1,
           noop_with_empty_axes: int = 0) -> Array:  # fmt: skip
        ax = static_ints(axes_, "axes", name) if axes_ is not None else list(axes or [])
        if not ax:
            if noop_with_empty_axes:
                # reduce over no axes: the elementwise part still applies (ReduceL1 -> |x|)
                return fn(x, axis=(), keepdims=bool(keepdims))
            ax = list(range(jnp.ndim(x)))
        return fn(x, axis=tuple(ax), keepdims=bool(keepdims))

    op.__name__ = name
    register(name)(op)


_make("ReduceMean", jnp.mean)
_make("ReduceSum", jnp.sum)
_make("ReduceMax", jnp.max)
_make("ReduceMin", jnp.min)
_make("ReduceProd", jnp.prod)
_make("ReduceL1", lambda x, **kw: jnp.sum(jnp.abs(x), **kw))
_make("ReduceL2", lambda x, **kw: jnp.sqrt(jnp.sum(x * x, **kw)))
_make("ReduceSumSquare", lambda x, **kw: jnp.sum(x * x, **kw))
_make("ReduceLogSumExp", lambda x, **kw: jnp.log(jnp.sum(jnp.exp(x), **kw)))
