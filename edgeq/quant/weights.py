"""Weight quantization math (pure numpy): per-tensor, per-channel and per-block scales with
min-max or MSE-optimal clipping, and the int32 bias rule."""

from __future__ import annotations

import numpy as np

from edgeq.quant.qtypes import QDType, choose_qparams, dequantize, quantize

INT32_MAX = 2**31 - 1
MIN_WEIGHT_SCALE = 1e-10


def _grouped(
    w: np.ndarray, axis: int | None, block: int | None
) -> tuple[np.ndarray, tuple[int, ...]]:
    """w rearranged to [groups, elements] and the shape the params take.

    per-tensor: one group; per-channel (axis, no block): one group per index of `axis`;
    per-block: blocks of `block` consecutive elements along `axis` (param shape = w.shape with
    that dim divided by block, rounded up: a partial last block is padded with zeros, which
    change neither its range, since zero is always representable, nor its rounding error)."""
    if axis is None:
        return w.reshape(1, -1), ()
    axis %= w.ndim
    if block is None:
        moved = np.moveaxis(w, axis, 0)
        return moved.reshape(moved.shape[0], -1), (w.shape[axis],)
    moved = np.moveaxis(w, axis, -1)  # [..., K]
    n_blocks = -(-w.shape[axis] // block)
    pad = n_blocks * block - w.shape[axis]
    if pad:
        moved = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, pad)])
    lead = moved.shape[:-1]
    blocks = moved.reshape(*lead, n_blocks, block)
    param_shape = list(w.shape)
    param_shape[axis] = n_blocks
    return blocks.reshape(-1, block), tuple(param_shape)


def _ungroup(p: np.ndarray, w_shape: tuple[int, ...], axis: int | None, block: int | None,
             param_shape: tuple[int, ...]) -> np.ndarray:  # fmt: skip
    if axis is None:
        return p.reshape(())
    if block is None:
        return p.reshape(param_shape)
    axis %= len(w_shape)
    moved_shape = [d for i, d in enumerate(param_shape) if i != axis] + [param_shape[axis]]
    return np.moveaxis(p.reshape(moved_shape), -1, axis)


def weight_qparams(
    w: np.ndarray,
    q: QDType,
    *,
    axis: int | None,
    block: int | None,
    symmetric: bool,
    method: str = "minmax",
    grid: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point for a weight. `method="mse"` shrinks each group's range over a grid
    of factors in [0.35, 1] and keeps the one with the lowest squared error (the usual
    clipping search; it matters most at 4 bits)."""
    groups, param_shape = _grouped(np.asarray(w, np.float64), axis, block)
    lo, hi = groups.min(axis=1), groups.max(axis=1)
    scale, zp = choose_qparams(lo, hi, q, symmetric)
    if method == "mse":
        best_err = _group_error(groups, scale, zp, q)
        for factor in np.linspace(1.0, 0.35, grid)[1:]:
            s, z = choose_qparams(lo * factor, hi * factor, q, symmetric)
            err = _group_error(groups, s, z, q)
            better = err < best_err
            scale, zp = np.where(better, s, scale), np.where(better, z, zp)
            best_err = np.minimum(err, best_err)
    # dead channels (|w| ~ 1e-40) would get denormal scales, and s_in * s_w bias scales that
    # float32 cannot hold; at this floor their weights quantize to 0, as they effectively are
    scale = np.maximum(scale, MIN_WEIGHT_SCALE)
    return (
        _ungroup(scale.astype(np.float32), w.shape, axis, block, param_shape),
        _ungroup(zp.astype(np.int64), w.shape, axis, block, param_shape),
    )


def _group_error(groups: np.ndarray, scale: np.ndarray, zp: np.ndarray, q: QDType) -> np.ndarray:
    s, z = scale[:, None].astype(np.float64), zp[:, None]
    v = np.clip(np.round(groups / s) + z, q.qmin, q.qmax)
    return np.sum(((v - z) * s - groups) ** 2, axis=1)


def quantize_weight(
    w: np.ndarray, scale: np.ndarray, zp: np.ndarray, q: QDType, axis: int | None,
    block: int | None,
) -> np.ndarray:  # fmt: skip
    return quantize(np.asarray(w, np.float32), scale, zp, q, axis, block)


def dequantize_weight(
    values: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int | None, block: int | None
) -> np.ndarray:
    return dequantize(np.asarray(values), scale, zp, axis, block)


def bias_scale(input_scale: float, weight_scale: np.ndarray) -> np.ndarray:
    return (np.float64(input_scale) * np.asarray(weight_scale, np.float64)).astype(np.float32)


def quantize_bias(bias: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int32 bias = round(b / (s_in * s_w)); callers must ensure no overflow (see
    `bias_safe_weight_scale`)."""
    v = np.round(np.asarray(bias, np.float64) / np.asarray(scale, np.float64))
    return np.clip(v, -INT32_MAX, INT32_MAX).astype(np.int32)


def bias_safe_weight_scale(
    bias: np.ndarray, input_scale: float, weight_scale: np.ndarray
) -> np.ndarray:
    """Raise per-channel weight scales where the int32 bias would overflow (rather than clip)."""
    # aim 1% below the int32 limit so float rounding of the scale cannot push it over
    needed = np.abs(np.asarray(bias, np.float64)) / (float(input_scale) * INT32_MAX * 0.99)
    ws = np.asarray(weight_scale, np.float64)
    if ws.ndim == 0:
        return np.float32(max(float(ws), float(needed.max(initial=0.0))))
    return np.maximum(ws, needed.reshape(ws.shape)).astype(np.float32)
