"""A straightforward numpy transcription of the GPTQ paper's algorithm (Frantar et al. 2022,
Algorithm 1 without lazy batches): the reference the jitted solver is tested against."""

from __future__ import annotations

import numpy as np


def minmax_params(
    values: np.ndarray, qmin: int, qmax: int, symmetric: bool
) -> tuple[np.ndarray, np.ndarray]:
    lo = np.minimum(values.min(axis=1), 0.0)
    hi = np.maximum(values.max(axis=1), 0.0)
    if symmetric:
        amax = np.maximum(-lo, hi)
        scale = np.where(amax > 0, amax / qmax, 1.0)
        return scale, np.zeros_like(scale)
    scale = np.where(hi > lo, (hi - lo) / (qmax - qmin), 1.0)
    return scale, np.clip(np.round(qmin - lo / scale), qmin, qmax)


def gptq_reference(
    W: np.ndarray,
    H: np.ndarray,
    group_of_column: np.ndarray,
    qmin: int,
    qmax: int,
    symmetric: bool,
    damp: float = 0.01,
    act_order: bool = True,
    static_groups: bool = False,
    dequantize: bool = False,
) -> np.ndarray:
    """Integer values of W [rows, cols] quantized column by column with error feedback through
    the upper Cholesky factor of H⁻¹; each group's params from its columns' current weights
    when its first column is reached (`static_groups`: from the original weights, before
    any update). `dequantize`: the float values (q - zero) * scale instead."""
    W = np.array(W, np.float64)
    H = np.array(H, np.float64)
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * np.mean(np.diag(H)) * np.eye(len(H))
    params: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if static_groups:
        params = {int(g): minmax_params(W[:, group_of_column == g], qmin, qmax, symmetric)
                  for g in set(group_of_column.tolist())}  # fmt: skip
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(len(H))
    W, H, groups = W[:, perm], H[perm][:, perm], group_of_column[perm]
    Hinv = np.linalg.cholesky(np.linalg.inv(H)).T
    Q = np.zeros_like(W)
    for i in range(W.shape[1]):
        g = int(groups[i])
        if g not in params:
            params[g] = minmax_params(W[:, groups == g], qmin, qmax, symmetric)
        scale, zero = params[g]
        q = np.clip(np.round(W[:, i] / scale) + zero, qmin, qmax)
        err = (W[:, i] - (q - zero) * scale) / Hinv[i, i]
        W[:, i + 1 :] -= np.outer(err, Hinv[i, i + 1 :])
        Q[:, i] = (q - zero) * scale if dequantize else q
    return Q[:, np.argsort(perm)]
