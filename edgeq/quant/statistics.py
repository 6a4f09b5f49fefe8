"""Statistics for data-aware algorithms, accumulated through the same streaming path as the
observers (init / update / merge / finalize, fixed-size state): per-layer input Hessians
(XᵀX, for GPTQ) and per-input-channel activation magnitudes (for AWQ / SmoothQuant)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

State = dict[str, Any]


@dataclass(frozen=True)
class InputHessian:
    """H = Σ xᵀx over all rows of the layer input reshaped to [-1, channels] along `axis`
    (the last axis for MatMul/Gemm inputs, axis 1 for NCHW Conv inputs), and the row count."""

    channels: int
    axis: int = -1

    def init(self) -> State:
        return {"H": np.zeros((self.channels, self.channels), np.float32), "rows": np.float32(0)}

    def _rows(self, x: Any) -> Any:
        x = jnp.moveaxis(jnp.asarray(x, jnp.float32), self.axis, -1)
        return jnp.reshape(x, (-1, self.channels))

    def update(self, state: State, x: Any) -> State:
        rows = self._rows(x)
        h = jnp.matmul(rows.T, rows, precision=lax.Precision.HIGHEST)
        return {"H": state["H"] + h, "rows": state["rows"] + rows.shape[0]}

    def merge(self, a: State, b: State) -> State:
        return {"H": a["H"] + b["H"], "rows": a["rows"] + b["rows"]}

    def finalize(self, state: State) -> np.ndarray:
        """The mean Hessian (2/n · XᵀX up to the constant GPTQ uses)."""
        return np.asarray(state["H"], np.float64) / max(float(state["rows"]), 1.0)


@dataclass(frozen=True)
class ChannelMagnitude:
    """Per-input-channel mean |x| and max |x| (AWQ's activation salience, SmoothQuant's s_x)."""

    channels: int
    axis: int = -1

    def init(self) -> State:
        z = np.zeros(self.channels, np.float32)
        return {"sum": z, "max": z.copy(), "rows": np.float32(0)}

    def update(self, state: State, x: Any) -> State:
        x = jnp.moveaxis(jnp.abs(jnp.asarray(x, jnp.float32)), self.axis, -1)
        rows = jnp.reshape(x, (-1, self.channels))
        return {
            "sum": state["sum"] + jnp.sum(rows, axis=0),
            "max": jnp.maximum(state["max"], jnp.max(rows, axis=0)),
            "rows": state["rows"] + rows.shape[0],
        }

    def merge(self, a: State, b: State) -> State:
        return {"sum": a["sum"] + b["sum"], "max": np.maximum(a["max"], b["max"]),
                "rows": a["rows"] + b["rows"]}  # fmt: skip

    def finalize(self, state: State) -> dict[str, np.ndarray]:
        n = max(float(state["rows"]), 1.0)
        return {"mean_abs": np.asarray(state["sum"]) / n, "max_abs": np.asarray(state["max"])}
