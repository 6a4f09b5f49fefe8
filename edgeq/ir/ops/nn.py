"""Neural-network ops: convolution, pooling, normalization, matmul, softmax, resize."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from edgeq.errors import UnsupportedOpError
from edgeq.ir.ops.registry import register, static_ints

Array = Any
HIGHEST = lax.Precision.HIGHEST


def _spatial_pads(
    auto_pad: str,
    pads: list[int] | None,
    in_sizes: tuple[int, ...],
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
) -> list[tuple[int, int]]:
    n = len(kernel)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        result = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations, strict=True):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            result.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
        return result
    if auto_pad == "VALID":
        return [(0, 0)] * n
    p = list(pads or [0] * (2 * n))
    return [(p[i], p[i + n]) for i in range(n)]


@register("Conv")
def conv(
    x: Array,
    w: Array,
    b: Array = None,
    *,
    auto_pad: str = "NOTSET",
    dilations: list[int] | None = None,
    group: int = 1,
    kernel_shape: list[int] | None = None,
    pads: list[int] | None = None,
    strides: list[int] | None = None,
) -> Array:
    n = jnp.ndim(w) - 2
    kernel = list(jnp.shape(w)[2:])
    strides = list(strides or [1] * n)
    dilations = list(dilations or [1] * n)
    padding = _spatial_pads(auto_pad, pads, jnp.shape(x)[2:], kernel, strides, dilations)
    c_in = jnp.shape(x)[1]
    if group == c_in and group > 1 and jnp.shape(w)[1] == 1 and int(np.prod(kernel)) <= 49:
        y = depthwise_conv(x, w, strides, padding, dilations)
    else:
        y = _conv_nc(x, w, strides, padding, [1] * n, dilations, group)
    return _add_channel_bias(y, b)


def _conv_nc(x: Array, w: Array, strides: list[int], padding: list[tuple[int, int]],
             lhs_dilation: list[int], dilations: list[int], group: int) -> Array:  # fmt: skip
    """N-d channels-first convolution at full float32 precision."""
    n = jnp.ndim(w) - 2
    spec = ("NC" + "DHW"[-n:], "OI" + "DHW"[-n:], "NC" + "DHW"[-n:])
    return lax.conv_general_dilated(
        x,
        jnp.asarray(w, jnp.asarray(x).dtype),
        window_strides=strides,
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=dilations,
        dimension_numbers=spec,
        feature_group_count=group,
        precision=HIGHEST,
    )


def _add_channel_bias(y: Array, b: Array | None) -> Array:
    if b is None:
        return y
    return y + jnp.reshape(b, (1, -1) + (1,) * (jnp.ndim(y) - 2))


def depthwise_conv(
    x: Array, w: Array, strides: list[int], padding: list[tuple[int, int]], dilations: list[int]
) -> Array:
    """Depthwise conv as a sum of shifted, strided slices times per-channel taps. Same math as
    the grouped conv; XLA's CPU grouped convolution is ~20x slower for these shapes."""
    n = len(strides)
    multiplier = jnp.shape(w)[0] // jnp.shape(x)[1]
    if multiplier > 1:
        x = jnp.repeat(x, multiplier, axis=1)
    xp = jnp.pad(x, [(0, 0), (0, 0), *padding])
    kernel = jnp.shape(w)[2:]
    out_sizes = [
        (xp.shape[2 + i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(n)
    ]
    w = jnp.asarray(w, xp.dtype)
    y = None
    for tap in np.ndindex(*kernel):
        index = [slice(None), slice(None)]
        for i in range(n):
            start = tap[i] * dilations[i]
            index.append(slice(start, start + (out_sizes[i] - 1) * strides[i] + 1, strides[i]))
        term = xp[tuple(index)] * jnp.reshape(w[(slice(None), 0, *tap)], (1, -1) + (1,) * n)
        y = term if y is None else y + term
    return y


@register("ConvTranspose")
def conv_transpose(
    x: Array,
    w: Array,
    b: Array = None,
    *,
    auto_pad: str = "NOTSET",
    dilations: list[int] | None = None,
    group: int = 1,
    kernel_shape: list[int] | None = None,
    output_padding: list[int] | None = None,
    output_shape: list[int] | None = None,
    pads: list[int] | None = None,
    strides: list[int] | None = None,
) -> Array:
    n = jnp.ndim(w) - 2
    kernel = list(jnp.shape(w)[2:])
    strides = list(strides or [1] * n)
    dilations = list(dilations or [1] * n)
    out_pad = list(output_padding or [0] * n)
    in_sizes = jnp.shape(x)[2:]
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = (
            list(output_shape)[-n:]
            if output_shape
            else [s * st for s, st in zip(in_sizes, strides, strict=True)]
        )
        pb, pe = [], []
        for i in range(n):
            total = (
                strides[i] * (in_sizes[i] - 1)
                + out_pad[i]
                + (kernel[i] - 1) * dilations[i]
                + 1
                - target[i]
            )
            total = max(total, 0)
            if auto_pad == "SAME_UPPER":  # otherwise (NOTSET too) the odd pixel goes first
                pb.append(total // 2), pe.append(total - total // 2)
            else:
                pb.append(total - total // 2), pe.append(total // 2)
        padding_in = pb + pe
    else:
        padding_in = list(pads or [0] * (2 * n))
    c_in = jnp.shape(w)[0]
    c_out_g = jnp.shape(w)[1]
    # (C_in, C_out/g, k...) -> (C_out, C_in/g, k...) with flipped kernel
    wg = jnp.reshape(w, (group, c_in // group, c_out_g, *kernel))
    wg = jnp.swapaxes(wg, 1, 2)
    wg = jnp.reshape(wg, (group * c_out_g, c_in // group, *kernel))
    wg = jnp.flip(wg, axis=tuple(range(2, 2 + n)))
    padding = [
        (
            dilations[i] * (kernel[i] - 1) - padding_in[i],
            dilations[i] * (kernel[i] - 1) - padding_in[i + n] + out_pad[i],
        )
        for i in range(n)
    ]
    y = _conv_nc(x, wg, [1] * n, padding, strides, dilations, group)
    return _add_channel_bias(y, b)


@register("BatchNormalization", ignore=("momentum", "spatial", "training_mode"))
def batch_norm(
    x: Array, scale: Array, bias: Array, mean: Array, var: Array, *, epsilon: float = 1e-5
) -> Array:
    shape = (1, -1) + (1,) * (jnp.ndim(x) - 2)
    inv = jnp.reshape(scale / jnp.sqrt(var + epsilon), shape)
    return (x - jnp.reshape(mean, shape)) * inv + jnp.reshape(bias, shape)


@register("InstanceNormalization")
def instance_norm(x: Array, scale: Array, bias: Array, *, epsilon: float = 1e-5) -> Array:
    axes = tuple(range(2, jnp.ndim(x)))
    mu = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mu), axis=axes, keepdims=True)
    shape = (1, -1) + (1,) * (jnp.ndim(x) - 2)
    return (x - mu) / jnp.sqrt(var + epsilon) * jnp.reshape(scale, shape) + jnp.reshape(bias, shape)


@register("LayerNormalization")
def layer_norm(
    x: Array, scale: Array, bias: Array = None, *, axis: int = -1, epsilon: float = 1e-5,
    stash_type: int = 1,
) -> Array:  # fmt: skip
    rank = jnp.ndim(x)
    axis = axis + rank if axis < 0 else axis
    axes = tuple(range(axis, rank))
    mu = jnp.mean(x, axis=axes, keepdims=True)
    d = x - mu
    var = jnp.mean(d * d, axis=axes, keepdims=True)
    y = d / jnp.sqrt(var + epsilon) * scale
    return y + bias if bias is not None else y


def _pool_padding(x: Array, kernel: list[int], strides: list[int], dilations: list[int],
                  auto_pad: str, pads: list[int] | None, ceil_mode: int) -> list[tuple[int, int]]:  # fmt: skip
    sizes = jnp.shape(x)[2:]
    padding = _spatial_pads(auto_pad, pads, sizes, kernel, strides, dilations)
    if ceil_mode:
        out = []
        for (b, e), size, k, s, d in zip(padding, sizes, kernel, strides, dilations, strict=True):
            eff = (k - 1) * d + 1
            n_out = math.ceil((size + b + e - eff) / s) + 1
            # the last window must start inside the (left-padded) input
            if (n_out - 1) * s >= size + b:
                n_out -= 1
            need = (n_out - 1) * s + eff - (size + b + e)
            out.append((b, e + max(need, 0)))
        padding = out
    return padding


@register("MaxPool", ignore=("storage_order",))
def max_pool(
    x: Array,
    *,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    dilations: list[int] | None = None,
    kernel_shape: list[int],
    pads: list[int] | None = None,
    strides: list[int] | None = None,
) -> Array:
    n = len(kernel_shape)
    strides = list(strides or [1] * n)
    dilations = list(dilations or [1] * n)
    padding = _pool_padding(x, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode)
    dtype = jnp.asarray(x).dtype
    lowest = -jnp.inf if jnp.issubdtype(dtype, jnp.floating) else jnp.iinfo(dtype).min  # (u)int8
    init = np.array(lowest, dtype)
    return lax.reduce_window(
        x, init, lax.max, (1, 1, *kernel_shape), (1, 1, *strides),
        [(0, 0), (0, 0), *padding], window_dilation=(1, 1, *dilations),
    )  # fmt: skip


@register("AveragePool")
def average_pool(
    x: Array,
    *,
    auto_pad: str = "NOTSET",
    ceil_mode: int = 0,
    count_include_pad: int = 0,
    dilations: list[int] | None = None,
    kernel_shape: list[int],
    pads: list[int] | None = None,
    strides: list[int] | None = None,
) -> Array:
    n = len(kernel_shape)
    strides = list(strides or [1] * n)
    dilations = list(dilations or [1] * n)
    explicit = _spatial_pads(auto_pad, pads, jnp.shape(x)[2:], kernel_shape, strides, dilations)
    padding = _pool_padding(x, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode)
    window = (1, 1, *kernel_shape)
    wstrides = (1, 1, *strides)
    wdil = (1, 1, *dilations)
    full_pad = [(0, 0), (0, 0), *padding]
    zero = np.array(0, jnp.asarray(x).dtype)
    total = lax.reduce_window(x, zero, lax.add, window, wstrides, full_pad, window_dilation=wdil)
    ones = jnp.ones((1, 1, *jnp.shape(x)[2:]), jnp.asarray(x).dtype)
    if count_include_pad:
        # explicit pads count, the extra ceil-mode overhang does not
        ones = jnp.pad(ones, [(0, 0), (0, 0), *explicit], constant_values=1)
        extra = [(p[0] - e[0], p[1] - e[1]) for p, e in zip(padding, explicit, strict=True)]
        count = lax.reduce_window(
            ones, zero, lax.add, window, wstrides, [(0, 0), (0, 0), *extra], window_dilation=wdil
        )
    else:
        count = lax.reduce_window(
            ones, zero, lax.add, window, wstrides, full_pad, window_dilation=wdil
        )
    return total / count


@register("GlobalAveragePool")
def global_average_pool(x: Array) -> Array:
    return jnp.mean(x, axis=tuple(range(2, jnp.ndim(x))), keepdims=True)


@register("GlobalMaxPool")
def global_max_pool(x: Array) -> Array:
    return jnp.max(x, axis=tuple(range(2, jnp.ndim(x))), keepdims=True)


@register("MatMul")
def matmul(a: Array, b: Array) -> Array:
    return jnp.matmul(a, b, precision=HIGHEST)


@register("Gemm")
def gemm(
    a: Array, b: Array, c: Array = None, *, alpha: float = 1.0, beta: float = 1.0,
    transA: int = 0, transB: int = 0,
) -> Array:  # fmt: skip
    a = jnp.transpose(a) if transA else a
    b = jnp.transpose(b) if transB else b
    y = jnp.matmul(a, b, precision=HIGHEST)
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c * beta if beta != 1.0 else c)
    return y


def _coerced_2d(fn: Any, x: Array, axis: int) -> Array:
    shp = jnp.shape(x)
    axis = axis + len(shp) if axis < 0 else axis
    flat = jnp.reshape(x, (int(np.prod(shp[:axis])), -1))
    return jnp.reshape(fn(flat, axis=-1), shp)


@register("Softmax", since=1)
def softmax_v1(x: Array, *, axis: int = 1) -> Array:
    return _coerced_2d(jax.nn.softmax, x, axis)


@register("Softmax", since=13)
def softmax(x: Array, *, axis: int = -1) -> Array:
    return jax.nn.softmax(x, axis=axis)


@register("LogSoftmax", since=1)
def log_softmax_v1(x: Array, *, axis: int = 1) -> Array:
    return _coerced_2d(jax.nn.log_softmax, x, axis)


@register("LogSoftmax", since=13)
def log_softmax(x: Array, *, axis: int = -1) -> Array:
    return jax.nn.log_softmax(x, axis=axis)


# ---- Resize ----------------------------------------------------------------------------------
def _source_coords(mode: str, out_size: int, in_size: int, scale: float, roi: tuple[float, float]) -> np.ndarray:  # fmt: skip
    i = np.arange(out_size, dtype=np.float64)
    if mode == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if out_size > 1 else np.zeros_like(i)
    if mode == "align_corners":
        return i * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros_like(i)
    if mode == "asymmetric":
        return i / scale
    if mode == "tf_crop_and_resize":
        start, end = roi
        if out_size > 1:
            return start * (in_size - 1) + i * (end - start) * (in_size - 1) / (out_size - 1)
        return np.full_like(i, 0.5 * (start + end) * (in_size - 1))
    if mode == "half_pixel_symmetric":
        adj = out_size / (scale * in_size)
        center = in_size / 2
        offset = center * (1 - adj)
        return offset + (i + 0.5) / scale - 0.5
    raise UnsupportedOpError(f"Resize coordinate_transformation_mode '{mode}' not supported")


def _nearest(coords: np.ndarray, mode: str, in_size: int) -> np.ndarray:
    if mode == "round_prefer_floor":
        idx = np.where(coords - np.floor(coords) == 0.5, np.floor(coords), np.round(coords))
    elif mode == "round_prefer_ceil":
        idx = np.floor(coords + 0.5)
    elif mode == "floor":
        idx = np.floor(coords)
    elif mode == "ceil":
        idx = np.ceil(coords)
    else:
        raise UnsupportedOpError(f"Resize nearest_mode '{mode}' not supported")
    return np.clip(idx, 0, in_size - 1).astype(np.int64)


@register("Resize")
def resize(
    x: Array,
    roi: Array = None,
    scales: Array = None,
    sizes: Array = None,
    *,
    antialias: int = 0,
    axes: list[int] | None = None,
    coordinate_transformation_mode: str = "half_pixel",
    cubic_coeff_a: float = -0.75,
    exclude_outside: int = 0,
    extrapolation_value: float = 0.0,
    keep_aspect_ratio_policy: str = "stretch",
    mode: str = "nearest",
    nearest_mode: str = "round_prefer_floor",
) -> Array:
    if antialias and mode != "nearest":
        raise UnsupportedOpError("Resize antialias=1 not supported", "export with antialias=0")
    in_shape = jnp.shape(x)
    rank = len(in_shape)
    # scales/sizes/roi list the resized `axes` only (opset 18); default: every axis
    ax = [a + rank if a < 0 else a for a in axes] if axes is not None else list(range(rank))
    scale_v, out_shape = [1.0] * rank, list(in_shape)
    if sizes is not None and np.asarray(sizes).size:
        want = static_ints(sizes, "sizes", "Resize")
        ratios = [w / in_shape[a] for a, w in zip(ax, want, strict=True)]
        if keep_aspect_ratio_policy in ("not_larger", "not_smaller"):
            common = (min if keep_aspect_ratio_policy == "not_larger" else max)(ratios)
            ratios = [common] * len(ax)
            want = [math.floor(common * in_shape[a] + 0.5) for a in ax]
        for a, w, r in zip(ax, want, ratios, strict=True):
            out_shape[a], scale_v[a] = w, r
    else:
        for a, v in zip(ax, np.asarray(scales).reshape(-1), strict=True):
            scale_v[a] = float(v)
            out_shape[a] = math.floor(in_shape[a] * scale_v[a])
    roi_v = (
        np.asarray(roi, np.float64).reshape(-1)
        if roi is not None and np.asarray(roi).size
        else None
    )
    y = x
    for axis in range(rank):
        if out_shape[axis] == in_shape[axis] and scale_v[axis] == 1.0:
            continue
        i = ax.index(axis)
        r = (roi_v[i], roi_v[i + len(ax)]) if roi_v is not None else (0.0, 1.0)
        coords = _source_coords(
            coordinate_transformation_mode, out_shape[axis], in_shape[axis], scale_v[axis], r
        )
        if mode == "nearest":
            y = jnp.take(y, _nearest(coords, nearest_mode, in_shape[axis]), axis=axis)
        elif mode == "linear":
            c = np.clip(coords, 0, in_shape[axis] - 1)
            lo = np.floor(c).astype(np.int64)
            hi = np.minimum(lo + 1, in_shape[axis] - 1)
            frac = (c - lo).astype(np.float32)
            bshape = [1] * rank
            bshape[axis] = -1
            f = jnp.asarray(frac.reshape(bshape), jnp.asarray(y).dtype)
            y = jnp.take(y, lo, axis=axis) * (1 - f) + jnp.take(y, hi, axis=axis) * f
        else:
            raise UnsupportedOpError(f"Resize mode '{mode}' not supported", "use nearest or linear")
    return y


@register("Upsample")
def upsample(x: Array, scales: Array = None, *, mode: str = "nearest") -> Array:
    return resize(x, None, scales, coordinate_transformation_mode="asymmetric", mode=mode,
                  nearest_mode="floor")  # fmt: skip
