"""GPTQ (Frantar et al., 2022): quantize a layer's weight column by column, folding each
column's rounding error into the columns not yet quantized through the inverse Hessian of the
layer input, so the layer output W·X changes as little as possible.

The solver follows the reference implementation (IST-DASLab/gptq `gptq.py`) and its names:
H (= XᵀX over calibration rows), dampening (λ·mean diag H added to the diagonal), dead
columns (diag 0: weight set to 0), act-order (columns by decreasing diag H), lazy batch
updates (blocks of `block` columns: in-block updates per column, one matmul for the rest),
Hinv = upper Cholesky factor of H⁻¹, Err = (w − q) / Hinv[i, i]. Groups: a group's scale and
zero point are chosen when its first column is reached, from the weights as updated so far
(`static_groups=True`: from the original weights, as the reference's option), with the grid's
clipping search weighted by diag H. Partial last groups, act-order and groups work together
because params are indexed by each column's group, never by its position.

One jitted function of arrays (float32 at HIGHEST matmul precision; float64 under
`jax.enable_x64` with float64 inputs), no host loop per column: `lax.fori_loop` over blocks and
columns. It runs on an accelerator where JAX has one. Pure: no ONNX, no plan.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from edgeq.algorithms.grids import Grid, MatrixView, fit, quantize
from edgeq.algorithms.registry import register_algorithm
from edgeq.quant.plan import TensorQuant

log = logging.getLogger(__name__)
HIGHEST = lax.Precision.HIGHEST


@dataclass(frozen=True)
class GPTQConfig:
    damp: float = 0.01  # λ: fraction of mean(diag H) added to the diagonal
    block: int = 128  # lazy-batch block (columns)
    act_order: bool = True
    static_groups: bool = False


def _members(gidx: np.ndarray, n_groups: int, pad_index: int) -> np.ndarray:
    """[groups, max group size] column indices of each group, padded with `pad_index`."""
    size = max(int(np.max(np.bincount(gidx, minlength=n_groups))), 1)
    out = np.full((n_groups, size), pad_index, np.int32)
    fill = np.zeros(n_groups, np.int64)
    for col, g in enumerate(gidx):
        out[g, fill[g]] = col
        fill[g] += 1
    return out


def bucket(n: int, step: int = 128, least: int = 16) -> int:
    """Padded size for compiled shapes: powers of two (≥ `least`) up to `step`, then
    multiples of it (few distinct shapes, so few compiles, whatever the layer sizes)."""
    if n <= step:
        return max(least, 1 << (n - 1).bit_length())
    return -(-n // step) * step


@partial(jax.jit, static_argnames=("grid", "config"))
def gptq_solve(
    W: Any,
    H: Any,
    gidx: Any,
    members: Any,
    static_scale: Any,
    static_zp: Any,
    n_cols: Any,
    damp: Any,
    *,
    grid: Grid,
    config: GPTQConfig,
) -> tuple[Any, Any, Any]:
    """Integer values [R, C], scale [R, G] and zero point [R, G] of weight W [R, C] given the
    layer-input Hessian H [C, C]; only the first `n_cols` columns are real (the rest padding:
    zero weights, ignored Hessian entries; at least one such column, the target of padded
    `members`). `gidx` [C]: each column's group; `members` [G, S]: each group's columns
    (padded with `n_cols`); `static_scale/zp` [R or 1, G]: used when `config.static_groups`.
    `damp`: λ (dynamic, so a retry with more dampening does not recompile)."""
    dtype = H.dtype
    R, C = W.shape
    n_groups = members.shape[0]
    B = min(config.block, C)
    real = jnp.arange(C) < n_cols
    both = real[:, None] & real[None, :]
    H = jnp.where(both, H.astype(dtype), 0.0)
    diag = jnp.diagonal(H)
    dead = real & (diag == 0)
    H = H + jnp.diag(jnp.where(dead | ~real, 1.0, 0.0).astype(dtype))
    W = jnp.where((real & ~dead)[None, :], W.astype(dtype), 0.0)
    mean = jnp.sum(jnp.where(real, jnp.diagonal(H), 0.0)) / n_cols
    H = H + jnp.diag(jnp.where(real, damp * mean, 0.0).astype(dtype))
    key = jnp.where(real, -jnp.diagonal(H), jnp.inf)
    perm = jnp.argsort(key, stable=True) if config.act_order else jnp.arange(C)
    invperm = jnp.argsort(perm)
    W, H = W[:, perm], H[perm][:, perm]
    importance = jnp.where(real[perm], jnp.diagonal(H), 0.0)
    g_p = gidx[perm]
    pos = invperm[members]  # each group's columns, in processing order
    first = jnp.zeros(C, bool)
    if not config.static_groups:
        first = first.at[jnp.min(pos, axis=1)].set(True) & (jnp.arange(C) < n_cols)
    L = jnp.linalg.cholesky(H)
    Hinv = jax.scipy.linalg.cho_solve((L, True), jnp.eye(C, dtype=dtype))
    U = jnp.linalg.cholesky(Hinv).T  # upper: Hinv = Uᵀ U
    scale0 = jnp.broadcast_to(static_scale, (static_scale.shape[0], n_groups)).astype(dtype)
    zp0 = jnp.broadcast_to(static_zp, (static_zp.shape[0], n_groups)).astype(dtype)
    if not config.static_groups:
        scale0, zp0 = jnp.ones((R, n_groups), dtype), jnp.zeros((R, n_groups), dtype)
    cols = jnp.arange(C)
    block_cols = jnp.arange(B)

    def run_block(b: Any, carry: tuple[Any, Any, Any, Any]) -> tuple[Any, Any, Any, Any]:
        Wc, Q, scale, zp = carry
        b0 = b * B
        W1 = lax.dynamic_slice(Wc, (0, b0), (R, B))
        U1 = lax.dynamic_slice(U, (b0, b0), (B, B))
        U_rows = lax.dynamic_slice(U, (b0, 0), (B, C))

        def current(c: Any, W1: Any, Err1: Any) -> Any:
            """Weights of columns `c` (≥ the current one) as updated so far."""
            later = jnp.matmul(Err1, U_rows[:, c], precision=HIGHEST)
            in_block = (c >= b0) & (c < b0 + B)
            inside = W1[:, jnp.clip(c - b0, 0, B - 1)]
            return jnp.where(in_block[None, :], inside, Wc[:, c] - later)

        def column(i: Any, inner: tuple[Any, ...]) -> tuple[Any, ...]:
            W1, Q1, Err1, scale, zp = inner
            col = b0 + i
            g = g_p[col]

            def touch(sz: tuple[Any, Any]) -> tuple[Any, Any]:
                c = pos[g]
                s, z = fit(current(c, W1, Err1), importance[c][None, :], grid)
                return sz[0].at[:, g].set(s), sz[1].at[:, g].set(z)

            if not config.static_groups:
                scale, zp = lax.cond(first[col], touch, lambda sz: sz, (scale, zp))
            w = W1[:, i]
            s, z = scale[:, g], zp[:, g]
            q = quantize(w, s, z, grid)
            err = (w - (q - z) * s) / U1[i, i]
            W1 = W1 - err[:, None] * jnp.where(block_cols > i, U1[i, :], 0.0)[None, :]
            return W1, Q1.at[:, i].set(q), Err1.at[:, i].set(err), scale, zp

        zeros = jnp.zeros((R, B), dtype)
        W1, Q1, Err1, scale, zp = lax.fori_loop(0, B, column, (W1, zeros, zeros, scale, zp))
        later = jnp.matmul(Err1, U_rows, precision=HIGHEST)
        Wc = Wc - jnp.where(cols[None, :] >= b0 + B, later, 0.0)
        Q = lax.dynamic_update_slice(Q, Q1, (0, b0))
        return Wc, Q, scale, zp

    init = (W, jnp.zeros((R, C), dtype), scale0, zp0)
    _, Q, scale, zp = lax.fori_loop(0, C // B, run_block, init)
    return Q[:, invperm], scale, zp


def solve_padded(W: np.ndarray, H: np.ndarray, gidx: np.ndarray, n_groups: int, grid: Grid,
                 config: GPTQConfig, static: tuple[np.ndarray, np.ndarray] | None = None,
                 dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """`gptq_solve` on W [..., R, C] (leading dims: independent conv groups, vmapped) and
    H [..., C, C], padded to bucketed shapes (zero rows, zero columns with an identity
    Hessian, empty groups), retried with 10x dampening while the Cholesky factor fails.
    `dtype=np.float64` solves in double precision (for comparisons with a reference)."""
    lead = W.shape[:-2]
    R, C = W.shape[-2:]
    # powers of two: at most 2x padding, and few distinct programs to compile per model
    Rb, Cb, Gb = bucket(R, 1 << 30, 1), bucket(C + 1), bucket(n_groups, 64, 1)
    nb = math.prod(lead)
    Nb = bucket(nb, 1 << 30) if lead else 1
    Wp = np.zeros((Nb, Rb, Cb), dtype)
    Wp[:nb, :R, :C] = W.reshape(nb, R, C)
    Hp = np.broadcast_to(np.eye(Cb, dtype=dtype), (Nb, Cb, Cb)).copy()
    Hp[:nb, :C, :C] = np.asarray(H, dtype).reshape(-1, C, C)
    g = np.zeros(Cb, np.int32)
    g[:C] = gidx
    members = _members(gidx, n_groups, C)
    mp = np.full((Gb, bucket(members.shape[1], 1 << 30)), C, np.int32)
    mp[:n_groups, : members.shape[1]] = members
    s0 = np.ones((Nb, 1, Gb), np.float32)
    z0 = np.zeros((Nb, 1, Gb), np.float32)
    if static is not None:
        s_rows = static[0].reshape(nb, -1, n_groups)
        s0 = np.ones((Nb, s_rows.shape[1] if s_rows.shape[1] == 1 else Rb, Gb), np.float32)
        z0 = np.zeros_like(s0)
        s0[:nb, : s_rows.shape[1], :n_groups] = s_rows
        z0[:nb, : s_rows.shape[1], :n_groups] = static[1].reshape(nb, -1, n_groups)
    one = partial(gptq_solve, grid=grid, config=config)
    if Nb == 1:

        def solve(W: Any, H: Any, g: Any, m: Any, s: Any, z: Any, n: Any, d: Any) -> Any:
            return tuple(a[None] for a in one(W[0], H[0], g, m, s[0], z[0], n, d))

    elif R <= 4:  # depthwise-like: vmapped (the group search's cond becomes a cheap select)
        solve = jax.vmap(one, in_axes=(0, 0, None, None, 0, 0, None, None))
    else:  # one conv group after the other, each a plain call

        def solve(W: Any, H: Any, g: Any, m: Any, s: Any, z: Any, n: Any, d: Any) -> Any:
            return jax.lax.map(lambda a: one(a[0], a[1], g, m, a[2], a[3], n, d), (W, H, s, z))

    damp = config.damp
    for _ in range(4):
        with jax.enable_x64(np.dtype(dtype) == np.float64):
            Q, scale, zp = (np.asarray(a) for a in solve(Wp, Hp, g, mp, s0.astype(dtype), z0.astype(dtype),
                                                           np.int32(C), np.asarray(damp, dtype)))  # fmt: skip
        if np.isfinite(Q[:nb]).all() and np.isfinite(scale[:nb]).all():
            break
        log.info("gptq: Cholesky failed at dampening %g, retrying with %g", damp, damp * 10)
        damp *= 10
    else:
        raise FloatingPointError("gptq: the Hessian stays singular after dampening")
    shape = (*lead, R)
    rows = min(R, scale.shape[1])  # 1: one static scale row shared by every row (per tensor)
    return (Q[:nb, :R, :C].reshape(*shape, C),
            scale[:nb, :rows, :n_groups].reshape(*lead, rows, n_groups),
            zp[:nb, :rows, :n_groups].reshape(*lead, rows, n_groups))  # fmt: skip


def output_error(w: np.ndarray, w_hat: np.ndarray, H: np.ndarray) -> float:
    """Relative layer output error tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) for matrices [R, C] (or stacked
    per conv group [g, R, C] with H [g, C, C])."""
    w, d, H = (np.asarray(a, np.float64) for a in (w, np.asarray(w_hat) - w, H))
    if w.ndim == 2:
        w, d, H = w[None], d[None], H.reshape(1, *H.shape[-2:])
    num = float(np.sum(np.einsum("grc,gcd->grd", d, H) * d))
    den = float(np.sum(np.einsum("grc,gcd->grd", w, H) * w))
    return float(num / den) if den > 0 else 0.0


@register_algorithm("gptq", "weights", "GPTQ: column-by-column rounding with Hessian error "
                    "feedback (act-order, groups, lazy batches), layers in sequence")  # fmt: skip
def gptq_weight(
    t: TensorQuant,
    w: np.ndarray,
    view: MatrixView,
    grid: Grid,
    hessian: np.ndarray,
    config: GPTQConfig = GPTQConfig(),
    groups: int = 1,
) -> TensorQuant:
    """`t` with GPTQ values and params. `hessian`: [C, C], or [groups, C/groups', C/groups']
    for a grouped convolution (rows split evenly across groups)."""
    m = view.to_matrix(np.asarray(w, np.float32))
    gidx = view.group_of_column()
    n_groups = view.groups
    static = None
    # one group per row (per-channel, per-tensor): its params come from the unchanged weights
    # whether chosen up front or at its first column, so up front (a simpler program)
    if n_groups == 1 or config.static_groups:
        from edgeq.algorithms.grids import _fit_grouped

        imp = np.diagonal(np.asarray(hessian), axis1=-2, axis2=-1).reshape(-1, view.cols).mean(0)
        imp2 = np.broadcast_to(imp[None, :], (view.rows, view.cols)).astype(np.float32)
        s0, z0, _ = _fit_grouped(
            view.grouped(jnp.asarray(m)), view.grouped(jnp.asarray(imp2)), grid
        )
        static = (np.asarray(s0).reshape(-1, n_groups), np.asarray(z0).reshape(-1, n_groups))
        config = replace(config, static_groups=True)
    if groups > 1:
        rows = view.rows // groups
        if static is not None and static[0].shape[0] > 1:
            static = (
                static[0].reshape(groups, rows, n_groups),
                static[1].reshape(groups, rows, n_groups),
            )
        elif static is not None:
            static = (
                np.broadcast_to(static[0], (groups, 1, n_groups)),
                np.broadcast_to(static[1], (groups, 1, n_groups)),
            )
        Q, scale, zp = solve_padded(m.reshape(groups, rows, view.cols), np.asarray(hessian), gidx,
                                    n_groups, grid, config, static)  # fmt: skip
        Q = Q.reshape(view.rows, -1)
        # scales per row, or one shared row (per tensor: every group's copy is the same)
        scale, zp = (a.reshape(view.rows, -1) if a.shape[-2] == rows else a.reshape(-1, a.shape[-1])[:1]
                     for a in (scale, zp))  # fmt: skip
    else:
        H = np.asarray(hessian).reshape(view.cols, view.cols)
        Q, scale, zp = solve_padded(m, H, gidx, n_groups, grid, config, static)
    if view.granularity == "per_tensor":
        scale, zp = scale[:1, :1], zp[:1, :1]
    values = view.from_matrix(np.rint(Q).astype(np.int64)).astype(t.qdtype.storage)
    how = (
        "gptq"
        + ("+act_order" if config.act_order else "")
        + ("+static_groups" if config.static_groups and n_groups > 1 else "")
    )
    return replace(
        t,
        values=values,
        scale=view.params_from_matrix(scale.astype(np.float32)),
        zero_point=view.params_from_matrix(np.rint(zp).astype(np.int64)),
        provenance=f"weight:{how}",
    )


__all__ = ["GPTQConfig", "gptq_solve", "gptq_weight", "output_error"]
