"""Palettized weights: each weight becomes an index into a small look-up table (2^bits float16
values), the tables chosen by sensitivity-weighted k-means (the SqueezeLLM / coremltools SKM
idea: an element's squared rounding error counts with the weight of its input channel's
Hessian diagonal, i.e. by how much it moves the layer output).

One table per tensor, or one per group of output channels. 1-D k-means per group: centroids
start at weighted quantiles, Lloyd iterations assign each weight to the nearest centroid (a
search among sorted midpoints) and move each centroid to its members' weighted mean. Tables are
rounded to float16 (what Core ML stores) before the final assignment, so the plan's indices and
table are exactly what the artifact holds. Pure: arrays in, indices and tables out.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from edgeq.algorithms.registry import register_algorithm
from edgeq.quant.plan import TensorQuant

ITERATIONS = 24


def _assign(values: Any, centroids: Any) -> Any:
    """Index of the nearest sorted centroid for every value (per group)."""
    mids = (centroids[:, 1:] + centroids[:, :-1]) / 2
    return jax.vmap(jnp.searchsorted)(mids, values)


@partial(jax.jit, static_argnames=("levels", "iterations"))
def weighted_kmeans(
    values: Any, importance: Any, levels: int, iterations: int = ITERATIONS
) -> tuple[Any, Any]:
    """Tables [G, levels] (float16 values, sorted) and indices [G, n] for `values` [G, n]
    weighted by `importance` [G, n] (> 0)."""
    order = jnp.argsort(values, axis=1)
    v_sorted = jnp.take_along_axis(values, order, axis=1)
    w_sorted = jnp.take_along_axis(importance, order, axis=1)
    cum = jnp.cumsum(w_sorted, axis=1)
    q = (jnp.arange(levels) + 0.5) / levels * cum[:, -1:]
    start = jax.vmap(jnp.searchsorted)(cum, q)
    centroids = jnp.take_along_axis(v_sorted, jnp.clip(start, 0, values.shape[1] - 1), axis=1)

    def step(_: Any, c: Any) -> Any:
        c = jnp.sort(c, axis=1)
        idx = _assign(values, c)
        onehot = jax.nn.one_hot(idx, levels, dtype=values.dtype)
        mass = jnp.einsum("gn,gnk->gk", importance, onehot)
        total = jnp.einsum("gn,gnk->gk", importance * values, onehot)
        return jnp.where(mass > 0, total / jnp.where(mass > 0, mass, 1.0), c)

    centroids = jax.lax.fori_loop(0, iterations, step, centroids)
    table = jnp.sort(centroids.astype(jnp.float16).astype(values.dtype), axis=1)
    return table, _assign(values, table)


def palettize(w: np.ndarray, bits: int, axis: int | None, group: int | None,
              importance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(indices shaped like w, table [*groups per dim, 2^bits]) for weight `w`; `importance`
    broadcastable to w (e.g. the input channel's Hessian diagonal)."""
    w = np.asarray(w, np.float32)
    imp = (
        np.ones_like(w)
        if importance is None
        else np.broadcast_to(importance, w.shape).astype(np.float32)
    )
    imp = np.maximum(imp, 1e-12 * max(float(imp.max()), 1e-30))
    lut_shape = [1] * w.ndim
    if axis is not None and group:
        lut_shape[axis] = w.shape[axis] // group
        moved = np.moveaxis(w, axis, 0).reshape(lut_shape[axis], -1)
        moved_imp = np.moveaxis(imp, axis, 0).reshape(lut_shape[axis], -1)
    else:
        moved, moved_imp = w.reshape(1, -1), imp.reshape(1, -1)
    with jax.enable_x64(False):
        table, idx = weighted_kmeans(jnp.asarray(moved), jnp.asarray(moved_imp), 1 << bits)
    table, idx = np.asarray(table, np.float32), np.asarray(idx)
    if axis is not None and group:
        shape = [w.shape[axis]] + [d for i, d in enumerate(w.shape) if i != axis]
        indices = np.moveaxis(idx.reshape(shape), 0, axis)
    else:
        indices = idx.reshape(w.shape)
    return indices.astype(np.uint8), table.reshape(*lut_shape, 1 << bits)


@register_algorithm("lut", "weights", "palettized weights: sensitivity-weighted k-means look-up "
                    "tables (Core ML constexpr_lut_to_dense)")  # fmt: skip
def lut_weight(t: TensorQuant, w: np.ndarray, importance: np.ndarray | None = None) -> TensorQuant:
    """`t` (a planned palettized weight) with k-means tables; `importance` (shaped like w)
    weights each element's error, e.g. by its input channel's Hessian diagonal."""
    indices, table = palettize(w, t.qdtype.bits, t.axis, t.block, importance)
    how = "lut+kmeans" + ("+hessian" if importance is not None else "")
    return replace(t, values=indices, lut=table, provenance=f"weight:{how}")


__all__ = ["lut_weight", "palettize", "weighted_kmeans"]
