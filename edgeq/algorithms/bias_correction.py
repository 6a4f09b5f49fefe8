"""Bias correction (Nagel et al. 2019, DFQ; the empirical form AIMET uses).

Rounding weights shifts each output channel's mean by (W_q − W)·E[x]: for a layer whose input
has a nonzero mean (after ReLU, after BatchNorm folding) that is a systematic error the next
layers amplify. Subtracting it from the bias removes the mean shift exactly for the input
mean it was computed with. Pure: arrays in, the corrected bias out.
"""

from __future__ import annotations

import numpy as np

from edgeq.algorithms.registry import register_algorithm


def output_shift(
    w: np.ndarray, wq: np.ndarray, x_mean: np.ndarray, kind: str = "conv"
) -> np.ndarray:
    """E[y_q − y] per output channel for input mean `x_mean` (per input channel).

    kind "conv": w [O, I, *k] (groups 1), the mean taken as spatially uniform (away from the
    padded border); "gemm": w [O, I] as Gemm with transB; "matmul": w [I, O]."""
    d = np.asarray(wq, np.float64) - np.asarray(w, np.float64)
    m = np.asarray(x_mean, np.float64)
    if kind == "matmul":
        return m @ d
    if kind == "gemm":
        return d @ m
    return d.reshape(d.shape[0], d.shape[1], -1).sum(axis=2) @ m


@register_algorithm(
    "bias_correction", "weights", "remove the mean output shift that weight rounding causes"
)
def correct_bias(b: np.ndarray | None, w: np.ndarray, wq: np.ndarray, x_mean: np.ndarray,
                 kind: str = "conv") -> np.ndarray:  # fmt: skip
    """The bias that cancels the expected shift: b − (W_q − W)·E[x] (b = 0 when absent)."""
    shift = output_shift(w, wq, x_mean, kind)
    base = np.zeros_like(shift) if b is None else np.asarray(b, np.float64)
    return (base - shift).astype(np.float32)


__all__ = ["correct_bias", "output_shift"]
