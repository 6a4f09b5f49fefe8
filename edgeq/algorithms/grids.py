"""Weight grids: how a group of weights maps onto integers (data-free, or weighted by data).

A grid is an integer range, symmetric or not, a scale search and the precision the target
stores scales in. `fit` chooses a scale and zero point per group:

- `minmax`: the group's range (0 always inside, so zero is exact);
- `mse`: the range shrunk by the factor in [min_factor, 1] that minimizes the (importance-
  weighted) squared rounding error of the group — the usual clipping search, which matters
  most at 4 bits. With `importance` = the diagonal of the layer's input Hessian, the error is
  what the layer's output sees (the activation-aware grid), without it every weight counts
  the same (data-free).

Scales are rounded to what the target stores (`scale_bits` significant bits: 11 for float16
scales; 7 when a float16 affine bias −scale·zero_point must be exact too, as MLX stores it), so
the artifact holds exactly the plan's numbers.

`MatrixView` lays a weight out as the [rows, columns] matrix the layer multiplies (rows =
output channels, columns = the contraction, the blocked axis last) with the group of every
column, for GPTQ and for the grids. Pure functions of arrays (jax.numpy inside jit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from edgeq.algorithms.registry import register_algorithm
from edgeq.quant.plan import TensorQuant
from edgeq.quant.weights import MIN_WEIGHT_SCALE

FP16_BITS = 11  # significant bits of a float16 (with the implicit one)
FP16_MIN_NORMAL = 2.0**-14


@dataclass(frozen=True)
class Grid:
    """An integer grid for weights: [qmin, qmax], symmetric (zero point at the midpoint) or
    affine, the scale search, and the stored precision of scales."""

    qmin: int
    qmax: int
    symmetric: bool
    search: str = "mse"  # minmax | mse
    steps: int = 48
    min_factor: float = 0.3
    scale_bits: int | None = None  # significant bits of stored scales (None: float32)

    @property
    def midpoint(self) -> int:
        """Zero point of a symmetric grid: 0 for signed types, 2^(b-1) for unsigned ones."""
        return 0 if self.qmin < 0 else (self.qmax + self.qmin + 1) // 2

    @property
    def bits(self) -> int:
        return math.ceil(math.log2(self.qmax - self.qmin + 1))


def grid_for(t: TensorQuant, search: str = "mse", param_dtype: str = "float32",
             affine_bias: bool = False) -> Grid:  # fmt: skip
    """The grid of a planned weight (its dtype, narrow range and symmetry) with scales stored
    as `param_dtype`; `affine_bias`: the target stores −scale·zero_point in that dtype too."""
    q = t.qdtype
    scale_bits = None
    if param_dtype == "float16":
        scale_bits = FP16_BITS
        if affine_bias and not t.symmetric:
            scale_bits = FP16_BITS - math.ceil(math.log2(max(abs(q.qmin), q.qmax) + 1))
    return Grid(q.qmin, q.qmax, bool(t.symmetric), search, scale_bits=scale_bits)


def round_scale(s: Any, bits: int | None) -> Any:
    """`s` rounded to `bits` significant bits (and kept a normal float16 where bits ≤ 11).
    Never below MIN_WEIGHT_SCALE: dead channels (|w| ~ 1e-40) would get denormal scales that
    flush to zero; at the floor their weights quantize to 0, as they effectively are."""
    s = jnp.maximum(s, MIN_WEIGHT_SCALE)
    if bits is None:
        return s
    m, e = jnp.frexp(s)
    s = jnp.ldexp(jnp.round(m * 2.0**bits) / 2.0**bits, e)
    return jnp.maximum(s, FP16_MIN_NORMAL) if bits <= FP16_BITS else s


def qparams(lo: Any, hi: Any, grid: Grid) -> tuple[Any, Any]:
    """Scale and zero point covering [lo, hi] (with 0), as `edgeq.quant.qtypes.choose_qparams`,
    with the scale rounded to the stored precision."""
    lo, hi = jnp.minimum(lo, 0.0), jnp.maximum(hi, 0.0)
    if grid.symmetric:
        amax = jnp.maximum(-lo, hi)
        half = grid.qmax if grid.qmin < 0 else (grid.qmax - grid.qmin) / 2.0
        scale = round_scale(jnp.where(amax > 0, amax / half, 1.0), grid.scale_bits)
        return scale, jnp.full_like(scale, grid.midpoint)
    scale = round_scale(jnp.where(hi > lo, (hi - lo) / (grid.qmax - grid.qmin), 1.0),
                        grid.scale_bits)  # fmt: skip
    zp = jnp.clip(jnp.round(grid.qmin - lo / scale), grid.qmin, grid.qmax)
    return scale, zp


def quantize(v: Any, scale: Any, zp: Any, grid: Grid) -> Any:
    """Integer values (as floats) of `v` on the grid (round half to even)."""
    return jnp.clip(jnp.round(v / scale) + zp, grid.qmin, grid.qmax)


def fake_quant(v: Any, scale: Any, zp: Any, grid: Grid) -> Any:
    return (quantize(v, scale, zp, grid) - zp) * scale


def fit(values: Any, importance: Any, grid: Grid) -> tuple[Any, Any]:
    """Scale and zero point per group: `values` [..., n] (a group per leading index; padding
    entries are 0), `importance` broadcastable to it (0 on padding). Returns [...] arrays."""
    lo, hi = jnp.min(values, axis=-1), jnp.max(values, axis=-1)
    scale, zp = qparams(lo, hi, grid)
    if grid.search == "minmax":
        return scale, zp

    def error(s: Any, z: Any) -> Any:
        d = fake_quant(values, s[..., None], z[..., None], grid) - values
        return jnp.sum(importance * d * d, axis=-1)

    factors = jnp.linspace(1.0, grid.min_factor, grid.steps)

    def step(i: Any, best: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
        s, z = qparams(lo * factors[i], hi * factors[i], grid)
        e = error(s, z)
        better = e < best[2]
        return jnp.where(better, s, best[0]), jnp.where(better, z, best[1]), jnp.minimum(e, best[2])

    scale, zp, _ = jax.lax.fori_loop(1, grid.steps, step, (scale, zp, error(scale, zp)))
    return scale, zp


# ---------------------------------------------------------------------------------------------
# weights as matrices
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MatrixView:
    """A weight as the [rows, cols] matrix its layer multiplies: rows = output channels (axis
    `channel`), columns = every other dim with the blocked (contraction) axis `contract` last.
    Groups: per-block (blocks along `contract`, one set per position of the middle dims),
    per-channel (one group per row) or per-tensor (one group for the whole matrix)."""

    shape: tuple[int, ...]
    channel: int
    contract: int
    granularity: str  # per_block | per_channel | per_tensor
    block: int | None = None

    @property
    def perm(self) -> tuple[int, ...]:
        middle = [d for d in range(len(self.shape)) if d not in (self.channel, self.contract)]
        return (self.channel, *middle, self.contract)

    @property
    def rows(self) -> int:
        return self.shape[self.channel]

    @property
    def k(self) -> int:
        return self.shape[self.contract]

    @property
    def middle(self) -> int:
        return math.prod(self.shape[d] for d in self.perm[1:-1])

    @property
    def cols(self) -> int:
        return self.middle * self.k

    @property
    def n_blocks(self) -> int:
        return -(-self.k // self.block) if self.granularity == "per_block" and self.block else 1

    @property
    def groups(self) -> int:
        """Groups per row (per-tensor: 1 shared by all rows)."""
        return self.middle * self.n_blocks if self.granularity == "per_block" else 1

    def group_of_column(self) -> np.ndarray:
        if self.granularity != "per_block":
            return np.zeros(self.cols, np.int32)
        cols = np.arange(self.cols)
        mid, kk = cols // self.k, cols % self.k
        return (mid * self.n_blocks + kk // int(self.block or 1)).astype(np.int32)

    def to_matrix(self, w: Any) -> Any:
        xp = jnp if isinstance(w, jax.Array) else np
        return xp.reshape(xp.transpose(w, self.perm), (self.rows, self.cols))

    def from_matrix(self, m: Any) -> np.ndarray:
        full = np.reshape(np.asarray(m), [self.shape[d] for d in self.perm])
        return np.transpose(full, np.argsort(self.perm))

    def grouped(self, m: Any) -> Any:
        """[rows, cols] → [rows, groups, group size] with zeros padding partial last blocks
        (per-tensor: [1, 1, rows·cols])."""
        xp = jnp if isinstance(m, jax.Array) else np
        if self.granularity == "per_tensor":
            return xp.reshape(m, (1, 1, -1))
        if self.granularity == "per_channel":
            return xp.reshape(m, (self.rows, 1, self.cols))
        b = int(self.block or 1)
        m = xp.reshape(m, (self.rows, self.middle, self.k))
        pad = self.n_blocks * b - self.k
        if pad:
            m = xp.pad(m, ((0, 0), (0, 0), (0, pad)))
        return xp.reshape(m, (self.rows, self.groups, b))

    def params_from_matrix(self, p: Any) -> np.ndarray:
        """Per-group params [rows, groups] (per-tensor: [1, 1]) → the plan's param layout."""
        p = np.asarray(p)
        if self.granularity == "per_tensor":
            return p.reshape(())
        if self.granularity == "per_channel":
            return p.reshape(self.rows)
        mid_shape = [self.shape[d] for d in self.perm[1:-1]]
        full = p.reshape(self.rows, *mid_shape, self.n_blocks)
        return np.transpose(full, np.argsort(self.perm))

    def params_to_matrix(self, p: Any) -> np.ndarray:
        """The plan's param layout → [rows, groups] (per-tensor → [1, 1])."""
        p = np.asarray(p)
        if self.granularity == "per_tensor":
            return p.reshape(1, 1)
        if self.granularity == "per_channel":
            return p.reshape(self.rows, 1)
        return np.transpose(p, self.perm).reshape(self.rows, self.groups)

    def expand(self, p: Any) -> Any:
        """[rows, groups] params → per element [rows, cols]."""
        if self.granularity == "per_tensor":
            return jnp.broadcast_to(jnp.reshape(p, (1, 1)), (self.rows, self.cols))
        if self.granularity == "per_channel":
            return jnp.broadcast_to(p, (self.rows, self.cols))
        return p[:, jnp.asarray(self.group_of_column())]


def view_of(t: TensorQuant, shape: Sequence[int], channel: int, contract: int) -> MatrixView:
    """The matrix view of planned weight `t` (channel/contraction axes from the layer)."""
    shape = tuple(int(d) for d in shape)
    if t.block:
        return MatrixView(shape, channel % len(shape), contract % len(shape), "per_block", t.block)
    if t.axis is None:
        return MatrixView(shape, channel % len(shape), contract % len(shape), "per_tensor")
    if t.axis % len(shape) != channel % len(shape):
        # per-channel along another axis (e.g. rows of an embedding table): that axis is the row
        channel, contract = t.axis % len(shape), (contract if contract != t.axis else channel)
    return MatrixView(shape, channel % len(shape), contract % len(shape), "per_channel")


@partial(jax.jit, static_argnames=("grid",))
def _fit_grouped(groups: Any, importance: Any, grid: Grid) -> tuple[Any, Any, Any]:
    scale, zp = fit(groups, importance, grid)
    q = quantize(groups, scale[..., None], zp[..., None], grid)
    return scale, zp, q


def round_to_grid(
    w: np.ndarray, view: MatrixView, grid: Grid, importance: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round-to-nearest on the grid: (integer values, scale, zero point) in the plan's layout.
    `importance` [cols] weights each column's error in the scale search (e.g. diag of H)."""
    m = view.to_matrix(np.asarray(w, np.float32))
    if grid.search == "minmax":  # no search: numpy, nothing to compile
        g = view.grouped(m)
        scale, zp = qparams_np(g.min(axis=-1), g.max(axis=-1), grid)
        q = np.clip(np.round(g / scale[..., None]) + zp[..., None], grid.qmin, grid.qmax)
        return _from_grouped(view, q, scale, zp)
    imp = (
        np.ones(view.cols, np.float32) if importance is None else np.asarray(importance, np.float32)
    )
    groups = view.grouped(jnp.asarray(m))
    imp_g = view.grouped(jnp.broadcast_to(jnp.asarray(imp)[None, :], (view.rows, view.cols)))
    with jax.enable_x64(False):
        scale, zp, q = _fit_grouped(groups, imp_g, grid)
    return _from_grouped(view, np.asarray(q), np.asarray(scale), np.asarray(zp))


def qparams_np(lo: np.ndarray, hi: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """`qparams` in numpy (float32, the same rounding of scales)."""
    lo = np.minimum(np.asarray(lo, np.float32), 0.0)
    hi = np.maximum(np.asarray(hi, np.float32), 0.0)
    if grid.symmetric:
        half = grid.qmax if grid.qmin < 0 else (grid.qmax - grid.qmin) / 2.0
        amax = np.maximum(-lo, hi)
        scale = np.where(amax > 0, amax / np.float32(half), 1.0).astype(np.float32)
    else:
        scale = np.where(hi > lo, (hi - lo) / np.float32(grid.qmax - grid.qmin), 1.0).astype(
            np.float32
        )
    scale = np.maximum(scale, np.float32(MIN_WEIGHT_SCALE))
    if grid.scale_bits is not None:
        m, e = np.frexp(scale)
        scale = np.ldexp(np.round(m * 2.0**grid.scale_bits) / 2.0**grid.scale_bits, e).astype(
            np.float32
        )
        if grid.scale_bits <= FP16_BITS:
            scale = np.maximum(scale, np.float32(FP16_MIN_NORMAL))
    if grid.symmetric:
        return scale, np.full(scale.shape, float(grid.midpoint), np.float32)
    return scale, np.clip(np.round(grid.qmin - lo / scale), grid.qmin, grid.qmax).astype(np.float32)


def _from_grouped(view: MatrixView, q: np.ndarray, scale: np.ndarray,
                  zp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    if view.granularity == "per_tensor":
        values = q.reshape(view.rows, view.cols)
    else:
        values = q.reshape(view.rows, view.middle, -1)[..., : view.k].reshape(view.rows, view.cols)
    return (
        view.from_matrix(values.astype(np.int64)),
        view.params_from_matrix(np.asarray(scale, np.float32)),
        view.params_from_matrix(np.asarray(zp).astype(np.int64)),
    )


@register_algorithm("rtn", "weights", "round to nearest on a searched grid (data-free, or "
                    "weighted by the input Hessian's diagonal)")  # fmt: skip
def rtn_weight(
    t: TensorQuant, w: np.ndarray, view: MatrixView, grid: Grid, hessian: np.ndarray | None = None
) -> TensorQuant:
    """`t` re-rounded on `grid` (provenance `weight:rtn+<search>`)."""
    importance = None
    if hessian is not None:
        h = np.asarray(hessian)
        importance = np.diagonal(h, axis1=-2, axis2=-1).reshape(-1, view.cols).mean(0)
    values, scale, zp = round_to_grid(w, view, grid, importance)
    values = values.astype(t.qdtype.storage)
    how = f"rtn+{grid.search}" + ("+hessian" if hessian is not None else "")
    return replace(t, values=values, scale=scale, zero_point=zp, provenance=f"weight:{how}")


__all__ = [
    "Grid",
    "MatrixView",
    "fake_quant",
    "fit",
    "grid_for",
    "qparams",
    "quantize",
    "round_scale",
    "round_to_grid",
    "rtn_weight",
    "view_of",
]
