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
        """Rows [-1, channels]; NaN (padding the calibration engine masked) counts as 0."""
        x = jnp.moveaxis(jnp.asarray(x, jnp.float32), self.axis, -1)
        rows = jnp.reshape(x, (-1, self.channels))
        return jnp.where(jnp.isnan(rows), 0.0, rows)

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
        rows = jnp.where(jnp.isnan(rows), 0.0, rows)  # masked padding
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


@dataclass(frozen=True)
class ConvInputHessian:
    """The input Hessian of a 2-D convolution over its im2col patches: per group of the conv,
    H_g = Σ pᵀp over every output position's patch p (columns ordered kh, kw, input channel —
    the column order of the weight as a matrix [out, kh·kw·in/group]), and the row count.
    Zero padding is part of the patches, as in the convolution itself."""

    channels: int
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # ONNX order: top, left, bottom, right
    dilations: tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def columns(self) -> int:
        return self.channels // self.groups * self.kernel[0] * self.kernel[1]

    def init(self) -> State:
        k = self.columns
        return {"H": np.zeros((self.groups, k, k), np.float32), "rows": np.float32(0)}

    def patches(self, x: Any) -> Any:
        """[groups, rows, columns] patches of input x [..., C, H, W]: kh·kw strided slices of
        the padded input (data movement only; `lax.conv_general_dilated_patches`, a convolution
        with an identity kernel, cost as much as the Hessian's own product on the CPU)."""
        x = jnp.asarray(x, jnp.float32)
        x = jnp.reshape(x, (-1, *x.shape[-3:]))
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        top, left, bottom, right = self.pads
        x = jnp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        ho = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
        wo = (w + left + right - dw * (kw - 1) - 1) // sw + 1
        taps = [x[:, :, i * dh : i * dh + (ho - 1) * sh + 1 : sh, j * dw : j * dw + (wo - 1) * sw + 1 : sw]
                for i in range(kh) for j in range(kw)]  # fmt: skip
        p = jnp.stack(taps, axis=-1)  # [n, c, ho, wo, kh·kw]
        cg = c // self.groups
        p = jnp.reshape(p, (n, self.groups, cg, ho, wo, kh * kw))
        p = jnp.transpose(p, (1, 0, 3, 4, 5, 2))  # columns: kh, kw, then input channel
        return jnp.reshape(p, (self.groups, n * ho * wo, kh * kw * cg))

    def update(self, state: State, x: Any) -> State:
        p = self.patches(x)
        h = jnp.einsum("grk,grl->gkl", p, p, precision=lax.Precision.HIGHEST)
        return {"H": state["H"] + h, "rows": state["rows"] + p.shape[1]}

    def merge(self, a: State, b: State) -> State:
        return {"H": a["H"] + b["H"], "rows": a["rows"] + b["rows"]}

    def finalize(self, state: State) -> np.ndarray:
        """Mean Hessian per group [groups, K, K]."""
        return np.asarray(state["H"], np.float64) / max(float(state["rows"]), 1.0)
