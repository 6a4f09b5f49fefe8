"""Integer types and the quantization math every part shares (pure functions).

real = (q - zero_point) * scale;  q = clamp(round(real / scale) + zero_point, qmin, qmax).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import jax.numpy as jnp
import numpy as np

from edgeq.errors import InputError

Rounding = Literal["half_even", "half_away"]


@dataclass(frozen=True)
class QDType:
    """An integer storage type; `narrow` drops the most negative value (weights: [-127, 127])."""

    name: str
    bits: int
    signed: bool
    narrow: bool = False

    @property
    def qmin(self) -> int:
        low = -(1 << (self.bits - 1)) if self.signed else 0
        return low + 1 if self.narrow and self.signed else low

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def levels(self) -> int:
        return self.qmax - self.qmin + 1

    @property
    def storage(self) -> np.dtype:
        """The numpy dtype that holds the values (int4 lives in int8 until packed)."""
        if self.bits <= 8:
            return np.dtype(np.int8 if self.signed else np.uint8)
        if self.bits <= 16:
            return np.dtype(np.int16 if self.signed else np.uint16)
        return np.dtype(np.int32 if self.signed else np.uint32)

    def with_narrow(self, narrow: bool = True) -> QDType:
        return QDType(self.name, self.bits, self.signed, narrow)


QDTYPES: dict[str, QDType] = {
    q.name: q
    for q in (
        QDType("uint2", 2, False),  # look-up-table indices (palettized weights)
        QDType("uint3", 3, False),
        QDType("uint6", 6, False),
        QDType("int4", 4, True),
        QDType("uint4", 4, False),
        QDType("int8", 8, True),
        QDType("uint8", 8, False),
        QDType("int16", 16, True),
        QDType("uint16", 16, False),
        QDType("int32", 32, True),
    )
}


def qdtype(name: str, narrow: bool = False) -> QDType:
    if name not in QDTYPES:
        raise InputError(f"unknown quantized dtype '{name}'", f"use one of {sorted(QDTYPES)}")
    return QDTYPES[name].with_narrow(narrow)


def choose_qparams(
    lo: np.ndarray | float, hi: np.ndarray | float, q: QDType, symmetric: bool,
    min_range: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Scale and zero point covering [lo, hi] (always including 0, so zero is exact).

    Symmetric: zero point is the type's midpoint (0 for signed, 2^(b-1) for unsigned) and the
    scale covers max(|lo|, |hi|). Asymmetric: the range maps onto [qmin, qmax] with an integer
    zero point (range nudged so 0 is representable, as TFLite and onnxruntime do).
    """
    lo = np.minimum(np.asarray(lo, np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, np.float64), 0.0)
    if min_range > 0:
        short = np.maximum(min_range - (hi - lo), 0.0)
        hi = hi + short  # widen upward: keeps 0 in range
    if symmetric:
        amax = np.maximum(np.abs(lo), np.abs(hi))
        if q.signed:
            half = float(q.qmax)  # [-127, 127] or [-128, 127]: symmetric uses qmax
            zp = np.zeros_like(amax)
        else:
            half = (q.qmax - q.qmin) / 2.0
            zp = np.full_like(amax, float((q.qmax + q.qmin + 1) // 2))
        scale = amax / half
    else:
        scale = (hi - lo) / float(q.qmax - q.qmin)
        safe = np.where(scale > 0, scale, 1.0)
        zp = np.clip(np.round(q.qmin - lo / safe), q.qmin, q.qmax)
    scale = np.where(scale > 0, scale, 1.0)  # an all-zero tensor: any positive scale works
    return scale.astype(np.float32), zp.astype(np.int64)


def round_half(x: Any, mode: Rounding = "half_even") -> Any:
    xp = jnp if not isinstance(x, np.ndarray | np.generic) else np
    if mode == "half_even":
        return xp.round(x)
    return xp.sign(x) * xp.floor(xp.abs(x) + 0.5)


def broadcast_param(p: Any, shape: tuple[int, ...], axis: int | None, block: int | None) -> Any:
    """Expand a per-tensor / per-axis / per-block parameter to broadcast against `shape`."""
    xp = jnp if not isinstance(p, np.ndarray | np.generic) else np
    p = xp.asarray(p)
    if axis is None or p.ndim == 0:
        return p
    rank = len(shape)
    if block is None:
        new = [1] * rank
        new[axis % rank] = -1
        return xp.reshape(p, new)
    # per-block: p has shape of `shape` with the block axis divided by `block`, rounded up
    # (a partial last block where the dim is not a multiple of the block)
    axis %= rank
    full = xp.repeat(p, block, axis=axis)
    if full.shape[axis] != shape[axis]:
        full = xp.take(full, xp.arange(shape[axis]), axis=axis)
    return full


def quantize(
    x: Any, scale: Any, zero_point: Any, q: QDType, axis: int | None = None,
    block: int | None = None, rounding: Rounding = "half_even",
) -> Any:  # fmt: skip
    """Float → integer values (as the storage dtype)."""
    xp = jnp if not isinstance(x, np.ndarray | np.generic) else np
    s = broadcast_param(scale, xp.shape(x), axis, block)
    z = broadcast_param(zero_point, xp.shape(x), axis, block)
    v = round_half(x / s, rounding) + z
    return xp.clip(v, q.qmin, q.qmax).astype(q.storage)


def dequantize(
    v: Any, scale: Any, zero_point: Any, axis: int | None = None, block: int | None = None
) -> Any:
    xp = jnp if not isinstance(v, np.ndarray | np.generic) else np
    s = broadcast_param(scale, xp.shape(v), axis, block)
    z = broadcast_param(zero_point, xp.shape(v), axis, block)
    return ((v.astype(np.int32) - z).astype(np.float32) * s).astype(np.float32)


def fake_quant(
    x: Any, scale: Any, zero_point: Any, q: QDType, axis: int | None = None,
    block: int | None = None, rounding: Rounding = "half_even",
) -> Any:  # fmt: skip
    """quantize then dequantize, in float (what the simulator inserts at every quantized tensor).

    Computed without the storage cast so it traces cleanly inside jit; identical values."""
    xp = jnp if not isinstance(x, np.ndarray | np.generic) else np
    s = broadcast_param(scale, xp.shape(x), axis, block)
    z = broadcast_param(zero_point, xp.shape(x), axis, block)
    v = xp.clip(round_half(x / s, rounding) + z, q.qmin, q.qmax)
    return ((v - z) * s).astype(xp.asarray(x).dtype)


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    ref = np.asarray(reference, np.float64)
    noise = float(np.sum((ref - np.asarray(test, np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        return float("inf")
    return 10.0 * np.log10(max(signal, 1e-30) / noise)
