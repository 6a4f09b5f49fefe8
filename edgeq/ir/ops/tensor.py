"""Shape, layout, indexing and type ops. Shape-like operands must be static (constants)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from edgeq.errors import UnsupportedOpError
from edgeq.ir.ops.registry import OpContext, register, static_ints

Array = Any


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _onnx_to_np(elem_type: int) -> np.dtype:
    from edgeq.ir.onnx_io import np_dtype

    return np_dtype(elem_type)


@register("Identity")
def identity(x: Array) -> Array:
    return x


@register("Dropout", ignore=("seed",))
def dropout(x: Array, ratio: Array = None, training_mode: Array = None) -> Array:
    return x  # inference: identity (the optional mask output is not supported)


@register("Shape")
def shape(x: Array, *, start: int = 0, end: int | None = None) -> np.ndarray:
    dims = np.asarray(jnp.shape(x), dtype=np.int64)
    return dims[start:end] if end is not None else dims[start:]


@register("Size")
def size(x: Array) -> np.ndarray:
    return np.asarray(int(np.prod(jnp.shape(x))), dtype=np.int64)


@register("Cast", ignore=("saturate",))
def cast(x: Array, *, to: int) -> Array:
    return jnp.asarray(x).astype(_onnx_to_np(to))


@register("CastLike", ignore=("saturate",))
def cast_like(x: Array, like: Array) -> Array:
    return jnp.asarray(x).astype(jnp.asarray(like).dtype)


@register("Reshape")
def reshape(x: Array, shape_: Array, *, allowzero: int = 0) -> Array:
    target = static_ints(shape_, "target shape", "Reshape")
    in_shape = jnp.shape(x)
    if not allowzero:
        target = [in_shape[i] if d == 0 else d for i, d in enumerate(target)]
    return jnp.reshape(x, target)


@register("Flatten")
def flatten(x: Array, *, axis: int = 1) -> Array:
    shp = jnp.shape(x)
    axis = _norm_axis(axis, len(shp))
    outer = int(np.prod(shp[:axis])) if axis else 1
    return jnp.reshape(x, (outer, -1))


@register("Transpose")
def transpose(x: Array, *, perm: list[int] | None = None) -> Array:
    return jnp.transpose(x, perm)


@register("Squeeze")
def squeeze(x: Array, axes_: Array = None, *, axes: list[int] | None = None) -> Array:
    ax = static_ints(axes_, "axes", "Squeeze") if axes_ is not None else axes
    if not ax:
        return jnp.squeeze(x)
    rank = jnp.ndim(x)
    return jnp.squeeze(x, axis=tuple(_norm_axis(a, rank) for a in ax))


@register("Unsqueeze")
def unsqueeze(x: Array, axes_: Array = None, *, axes: list[int] | None = None) -> Array:
    ax = static_ints(axes_, "axes", "Unsqueeze") if axes_ is not None else list(axes or [])
    rank = jnp.ndim(x) + len(ax)
    out_shape = list(jnp.shape(x))
    for a in sorted(_norm_axis(a, rank) for a in ax):
        out_shape.insert(a, 1)
    return jnp.reshape(x, out_shape)


@register("Concat")
def concat(*xs: Array, axis: int) -> Array:
    xs = tuple(x for x in xs if x is not None)
    if all(isinstance(x, np.ndarray) for x in xs):
        return np.concatenate(xs, axis=axis)
    return jnp.concatenate(xs, axis=axis)


@register("Split")
def split(
    ctx: OpContext,
    x: Array,
    split_: Array = None,
    *,
    axis: int = 0,
    split: list[int] | None = None,
    num_outputs: int | None = None,
) -> tuple[Array, ...]:
    sizes = static_ints(split_, "split", "Split") if split_ is not None else split
    dim = jnp.shape(x)[axis]
    n_out = len(ctx.node.outputs)
    if not sizes:
        n = num_outputs or n_out
        chunk = -(-dim // n)
        sizes = [min(chunk, dim - i * chunk) for i in range(n)]
    offsets = np.cumsum([0, *sizes])
    return tuple(
        _slice_axis(x, axis, int(offsets[i]), int(offsets[i + 1])) for i in range(len(sizes))
    )


def _slice_axis(x: Array, axis: int, start: int, stop: int) -> Array:
    index = [slice(None)] * jnp.ndim(x)
    index[axis] = slice(start, stop)
    return x[tuple(index)]


@register("Slice", since=10)
def slice_(x: Array, starts: Array, ends: Array, axes_: Array = None, steps: Array = None) -> Array:
    s = static_ints(starts, "starts", "Slice")
    e = static_ints(ends, "ends", "Slice")
    rank = jnp.ndim(x)
    ax = static_ints(axes_, "axes", "Slice") if axes_ is not None else list(range(len(s)))
    st = static_ints(steps, "steps", "Slice") if steps is not None else [1] * len(s)
    index = [slice(None)] * rank
    for a, b, c, d in zip(ax, s, e, st, strict=True):
        a = _norm_axis(a, rank)
        index[a] = _onnx_slice(b, c, d, jnp.shape(x)[a])
    return x[tuple(index)]


def _onnx_slice(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX's clamping; Python's differs for a negative step and start < -dim (ONNX: 0)."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return slice(start, None if end < 0 else end, step)


@register("Slice", since=1)
def slice_v1(
    x: Array, *, starts: list[int], ends: list[int], axes: list[int] | None = None
) -> Array:
    return slice_(
        x, np.asarray(starts), np.asarray(ends), None if axes is None else np.asarray(axes)
    )


@register("Gather")
def gather(x: Array, indices: Array, *, axis: int = 0) -> Array:
    rank = jnp.ndim(x)
    axis = _norm_axis(axis, rank)
    dim = jnp.shape(x)[axis]
    if isinstance(x, np.ndarray) and isinstance(indices, np.ndarray):
        return np.take(x, np.where(indices < 0, indices + dim, indices), axis=axis)
    idx = jnp.asarray(indices)
    idx = jnp.where(idx < 0, idx + dim, idx)
    return jnp.take(x, idx, axis=axis, mode="clip")


@register("GatherElements")
def gather_elements(x: Array, indices: Array, *, axis: int = 0) -> Array:
    rank = jnp.ndim(x)
    axis = _norm_axis(axis, rank)
    dim = jnp.shape(x)[axis]
    # indices may be smaller than x off the axis (the output takes their shape)
    x = x[tuple(slice(None) if i == axis else slice(n) for i, n in enumerate(jnp.shape(indices)))]
    idx = jnp.where(indices < 0, indices + dim, indices)
    return jnp.take_along_axis(x, idx, axis=axis)


@register("GatherND")
def gather_nd(x: Array, indices: Array, *, batch_dims: int = 0) -> Array:
    """Gather slices of x at index tuples in the last dim of `indices` (ONNX GatherND)."""
    if batch_dims:
        raise UnsupportedOpError(
            "GatherND with batch_dims > 0 is not supported", "use batch_dims 0"
        )
    lib: Any = np if isinstance(x, np.ndarray) and isinstance(indices, np.ndarray) else jnp
    k = lib.shape(indices)[-1]
    idx = lib.asarray(indices)
    idx = lib.where(idx < 0, idx + lib.asarray(lib.shape(x)[:k]), idx).reshape(-1, k)
    picked = lib.asarray(x)[tuple(idx[:, i] for i in range(k))]
    return picked.reshape(tuple(lib.shape(indices)[:-1]) + tuple(lib.shape(x)[k:]))


@register("Expand")
def expand(x: Array, shape_: Array) -> Array:
    target = static_ints(shape_, "shape", "Expand")
    out = np.broadcast_shapes(tuple(jnp.shape(x)), tuple(target))
    return jnp.broadcast_to(x, out)


@register("Tile")
def tile(x: Array, repeats: Array) -> Array:
    return jnp.tile(x, static_ints(repeats, "repeats", "Tile"))


@register("ConstantOfShape")
def constant_of_shape(shape_: Array, *, value: np.ndarray | None = None) -> np.ndarray:
    dims = static_ints(shape_, "shape", "ConstantOfShape")
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    return np.full(dims, fill[0], dtype=fill.dtype)


@register("Range")
def range_(start: Array, limit: Array, delta: Array) -> np.ndarray:
    s, l, d = (np.asarray(v) for v in (start, limit, delta))
    return np.arange(s, l, d, dtype=s.dtype)


@register("Pad")
def pad(
    x: Array,
    pads_: Array = None,
    constant_value: Array = None,
    axes_: Array = None,
    *,
    mode: str = "constant",
    pads: list[int] | None = None,
    value: float = 0.0,
) -> Array:
    p = static_ints(pads_, "pads", "Pad") if pads_ is not None else list(pads or [])
    rank = jnp.ndim(x)
    axes = static_ints(axes_, "axes", "Pad") if axes_ is not None else list(range(rank))
    axes = [_norm_axis(a, rank) for a in axes]
    n = len(axes)
    widths = [(0, 0)] * rank
    for i, a in enumerate(axes):
        widths[a] = (p[i], p[i + n])
    if any(b < 0 or e < 0 for b, e in widths):
        # negative pads crop
        index = tuple(slice(-b if b < 0 else 0, e if e < 0 else None) for b, e in widths)
        x = x[index]
        widths = [(max(b, 0), max(e, 0)) for b, e in widths]
    if mode == "constant":
        fill = value if constant_value is None else constant_value
        return jnp.pad(x, widths, mode="constant", constant_values=jnp.asarray(fill).reshape(()))
    if mode == "reflect":
        return jnp.pad(x, widths, mode="reflect")
    if mode == "edge":
        return jnp.pad(x, widths, mode="edge")
    if mode == "wrap":
        return jnp.pad(x, widths, mode="wrap")
    raise UnsupportedOpError(f"Pad mode '{mode}' not supported", "use constant/reflect/edge/wrap")


@register("DepthToSpace")
def depth_to_space(x: Array, *, blocksize: int, mode: str = "DCR") -> Array:
    b, c, h, w = jnp.shape(x)
    bs = blocksize
    if mode == "DCR":
        y = jnp.reshape(x, (b, bs, bs, c // (bs * bs), h, w)).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = jnp.reshape(x, (b, c // (bs * bs), bs, bs, h, w)).transpose(0, 1, 4, 2, 5, 3)
    return jnp.reshape(y, (b, c // (bs * bs), h * bs, w * bs))


@register("SpaceToDepth")
def space_to_depth(x: Array, *, blocksize: int) -> Array:
    b, c, h, w = jnp.shape(x)
    bs = blocksize
    y = jnp.reshape(x, (b, c, h // bs, bs, w // bs, bs)).transpose(0, 3, 5, 1, 2, 4)
    return jnp.reshape(y, (b, c * bs * bs, h // bs, w // bs))


@register("ArgMax")
def argmax(x: Array, *, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> Array:
    if select_last_index:
        n = jnp.shape(x)[axis]
        out = n - 1 - jnp.argmax(jnp.flip(x, axis), axis=axis, keepdims=bool(keepdims))
    else:
        out = jnp.argmax(x, axis=axis, keepdims=bool(keepdims))
    return out.astype(np.int64)


@register("ArgMin")
def argmin(x: Array, *, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> Array:
    if select_last_index:
        n = jnp.shape(x)[axis]
        out = n - 1 - jnp.argmin(jnp.flip(x, axis), axis=axis, keepdims=bool(keepdims))
    else:
        out = jnp.argmin(x, axis=axis, keepdims=bool(keepdims))
    return out.astype(np.int64)


@register("Trilu")
def trilu(x: Array, k: Array = None, *, upper: int = 1) -> Array:
    kk = static_ints(k, "k", "Trilu")[0] if k is not None else 0
    return jnp.triu(x, kk) if upper else jnp.tril(x, kk)
