"""Token padding: which input is a token model's attention mask, and which positions of a value
are padding (meaningless: the model's users ignore them, e.g. mean pooling uses the mask).

Calibration ignores padded positions when it sets ranges (`edgeq.quant.calibrate`), the
layerwise Hessians leave them out, and the accuracy metrics (`edgeq.metrics`) and mixed
precision's output error (`edgeq.algorithms.mixed_precision`) exclude them. All of them find
the positions with `token_keep`.

Pure: shapes and arrays in, arrays out; works on numpy and on JAX arrays alike (no imports of
either beyond numpy's dtypes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeq.ir.graph import Graph


def find_token_mask(graph: Graph) -> str | None:
    """An integer [1, S] input named like an attention mask (S > 1), if the model has one."""
    for v in graph.inputs:
        shape = v.shape or ()
        if ("mask" in v.name.lower() and np.issubdtype(v.dtype, np.integer)
                and len(shape) == 2 and shape[0] == 1 and isinstance(shape[1], int) and shape[1] > 1):  # fmt: skip
            return v.name
    return None


def token_keep(shape: Sequence[int], real: Any, seq: int) -> Any | None:
    """Where a value of `shape` (batch axis first) holds real tokens: `real` ([S] booleans,
    True = real token, numpy or JAX) laid along every axis after the batch axis whose length is
    `seq`, AND-ed over those axes, broadcastable to `shape`; None when no axis has length `seq`
    (a pooled embedding, a class score: nothing of it is padding)."""
    keep = None
    for axis in range(1, len(shape)):
        if shape[axis] == seq:
            view = [1] * len(shape)
            view[axis] = seq
            m = real.reshape(view)
            keep = m if keep is None else keep & m
    return keep


def zero_padding(value: Any, mask: Any, shape: Sequence[Any] | None = None) -> np.ndarray:
    """One sample's output `value` (numpy, float64) with its padded token positions set to 0;
    `mask`: that sample's attention-mask input ([1, S], nonzero = real token). `shape`: the
    output's layout in the graph, used when a runtime returned the same values in another
    shape (a dropped batch axis). Zero in both float's and the quantized outputs, a padded
    position adds nothing to a dot product, a norm, a noise or a signal energy: cosines and
    SQNRs of the results are those of the real tokens alone."""
    v = np.asarray(value, np.float64)
    if (
        shape is not None
        and all(isinstance(d, int) for d in shape)
        and int(np.prod(shape)) == v.size
    ):
        v = v.reshape(tuple(shape))
    real = np.asarray(mask).reshape(-1) != 0
    keep = token_keep(v.shape, real, real.size)
    return v if keep is None else np.where(keep, v, 0.0)


__all__ = ["find_token_mask", "token_keep", "zero_padding"]
