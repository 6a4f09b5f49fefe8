"""ONNX Resize index math shared by the lowerings that compute it themselves (MLX runtime,
the numpy MIL evaluator): the input coordinate of every output index per
`coordinate_transformation_mode`, nearest rounding modes, and linear taps."""

from __future__ import annotations

import numpy as np


def source_coordinates(out_size: int, in_size: int, scale: float, mode: str) -> np.ndarray:
    """Input coordinate of every output index (ONNX Resize, one axis)."""
    i = np.arange(out_size, dtype=np.float64)
    if mode == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if out_size > 1 else np.zeros(out_size)
    if mode == "align_corners":
        return i * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros(out_size)
    if mode == "asymmetric":
        return i / scale
    if mode == "half_pixel_symmetric":
        adj = out_size / (scale * in_size)
        return in_size / 2 * (1 - adj) + ((i + 0.5) / scale - 0.5)
    raise ValueError(f"coordinate_transformation_mode {mode}")


def nearest_indices(coord: np.ndarray, mode: str, in_size: int) -> np.ndarray:
    if mode == "floor":
        idx = np.floor(coord)
    elif mode == "ceil":
        idx = np.ceil(coord)
    elif mode == "round_prefer_ceil":
        idx = np.floor(coord + 0.5)
    else:  # round_prefer_floor (the ONNX default)
        idx = np.ceil(coord - 0.5)
    return np.clip(idx, 0, in_size - 1).astype(np.int64)


def linear_taps(coord: np.ndarray, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, weight of the upper one) of linear interpolation."""
    c = np.clip(coord, 0, in_size - 1)
    lo = np.floor(c).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, (c - lo).astype(np.float32)


def resize_axis(x: np.ndarray, axis: int, out_size: int, scale: float, mode: str,
                ctm: str, nearest: str = "round_prefer_floor") -> np.ndarray:  # fmt: skip
    """numpy reference of one axis of ONNX Resize (nearest or linear)."""
    size = x.shape[axis]
    coord = source_coordinates(out_size, size, scale, ctm)
    if mode == "nearest":
        return np.take(x, nearest_indices(coord, nearest, size), axis=axis)
    lo, hi, w = linear_taps(coord, size)
    shape = [1] * x.ndim
    shape[axis] = out_size
    a, b = np.take(x, lo, axis=axis), np.take(x, hi, axis=axis)
    return a + (b - a) * w.reshape(shape)


__all__ = ["linear_taps", "nearest_indices", "resize_axis", "source_coordinates"]
