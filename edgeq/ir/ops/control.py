"""Control flow. `If` with a condition known before running takes one branch; a data-dependent
condition needs both branches to produce the same shapes and selects between them."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from edgeq.errors import DynamicShapeError
from edgeq.ir.ops.registry import OpContext, is_concrete, register

Array = Any


@register("If")
def if_(ctx: OpContext, cond: Array, *, then_branch: Any, else_branch: Any) -> tuple[Array, ...]:
    assert ctx.run_subgraph is not None
    if is_concrete(cond):
        branch = then_branch if bool(np.asarray(cond).reshape(-1)[0]) else else_branch
        return tuple(ctx.run_subgraph(branch, {}))
    then_out = ctx.run_subgraph(then_branch, {})
    else_out = ctx.run_subgraph(else_branch, {})
    for t, e in zip(then_out, else_out, strict=True):
        if jnp.shape(t) != jnp.shape(e):
            raise DynamicShapeError(
                f"If node '{ctx.node.name}' has a data-dependent condition and branches of "
                f"different shapes {jnp.shape(t)} vs {jnp.shape(e)}",
                "fix the input that decides it with --input-value (e.g. --input-value sr=16000)",
            )
    c = jnp.reshape(cond, ())
    return tuple(jnp.where(c, t, e) for t, e in zip(then_out, else_out, strict=True))
