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

Two parts: `hessian_factor` (dampening, act-order, Hinv) in float64 with LAPACK on the host —
XLA's CPU triangular solve took 0.5 s for a 512x512 H, LAPACK a few ms — and `gptq_columns`,
the column loop, one jitted program per padded shape (`lax.fori_loop` over blocks and
columns, float32 at HIGHEST matmul precision, or float64 under `jax.enable_x64`), compiled
with edgeq's GPU options. It runs on an accelerator where JAX has one. Pure: no ONNX, no plan.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from functools import cache, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from scipy.linalg import lapack

from edgeq.algorithms.grids import Grid, MatrixView, fit, quantize
from edgeq.algorithms.registry import register_algorithm
from edgeq.ir.jit import jit
from edgeq.quant.plan import TensorQuant

log = logging.getLogger(__name__)
HIGHEST = lax.Precision.HIGHEST


@dataclass(frozen=True)
class GPTQConfig:
    damp: float = 0.01  # λ: fraction of mean(diag H) added to the diagonal
    block: int = 128  # lazy-batch block (columns)
    act_order: bool = True
    static_groups: bool = False


def _members(gidx: np.ndarray, n_groups: int) -> np.ndarray:
    """[groups, max group size] column indices of each group, padded with -1."""
    size = max(int(np.max(np.bincount(gidx, minlength=n_groups))), 1)
    out = np.full((n_groups, size), -1, np.int32)
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


def hessian_factor(H: np.ndarray, damp: float,
                   act_order: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(perm, Hinv, diag): the processing order (act-order: by decreasing diag H), the upper
    Cholesky factor of the inverse of the dampened, permuted H (H⁻¹ = Hinvᵀ Hinv) and that
    H's diagonal, in float64 with LAPACK on the host. Dead columns (diag 0) get diag 1. Without forming H⁻¹: with J the
    reversal, J H J = M Mᵀ (M lower) gives H = V Vᵀ, V = J M J upper, so Hinv = V⁻¹ = J M⁻¹ J.
    Raises np.linalg.LinAlgError where H + λ·mean(diag H)·I is not positive definite."""
    H = np.array(H, np.float64)
    dead = np.diagonal(H) == 0
    H[dead, dead] = 1.0
    H[np.diag_indices_from(H)] += damp * np.mean(np.diagonal(H))
    perm = np.argsort(-np.diagonal(H), kind="stable") if act_order else np.arange(len(H))
    H = H[perm][:, perm]
    M, info = lapack.dpotrf(H[::-1, ::-1], lower=1)
    if info == 0:
        M, info = lapack.dtrtri(np.tril(M), lower=1)
    Hinv = np.tril(M)[::-1, ::-1]
    if info != 0 or not np.isfinite(Hinv).all():
        raise np.linalg.LinAlgError("gptq: H is not positive definite")
    return perm, np.ascontiguousarray(Hinv), np.diagonal(H).copy()


def gptq_columns(W: Any, Hinv: Any, group: Any, first: Any, members: Any, valid: Any,
                 importance: Any, scale: Any, zp: Any, *, grid: Grid, block: int,
                 static_groups: bool) -> tuple[Any, Any, Any]:  # fmt: skip
    """GPTQ's column loop with lazy batch updates, on arrays already in processing order:
    W [R, C] (dead and padding columns 0), Hinv [C, C] (`hessian_factor`; identity on
    padding), each column's group [C], whether it is its group's first [C], each group's
    columns [G, S] (`valid` masks the padding), importance [C] (diag H; 0 on padding), params
    [R or 1, G] (kept with `static_groups`, else chosen at each group's first column from
    its columns' weights as updated so far). Returns integer values Q [R, C], scale, zp."""
    dtype = W.dtype
    R, C = W.shape
    B = min(block, C)

    def run_block(b: Any, carry: tuple[Any, Any, Any, Any]) -> tuple[Any, Any, Any, Any]:
        W, Q, scale, zp = carry
        b0 = b * B
        W1 = lax.dynamic_slice(W, (0, b0), (R, B))
        Hinv1 = lax.dynamic_slice(Hinv, (b0, b0), (B, B))
        Hinv_rows = lax.dynamic_slice(Hinv, (b0, 0), (B, C))

        def column(i: Any, inner: tuple[Any, ...]) -> tuple[Any, ...]:
            W1, Q1, Err1, scale, zp = inner
            g = group[b0 + i]

            def choose(sz: tuple[Any, Any]) -> tuple[Any, Any]:
                c, real = members[g], valid[g]  # all at or after this column
                now = W[:, c] - jnp.matmul(Err1, Hinv_rows[:, c], precision=HIGHEST)
                imp = jnp.where(real, importance[c], 0.0)[None, :]
                s, z = fit(jnp.where(real[None, :], now, 0.0), imp, grid)
                return sz[0].at[:, g].set(s), sz[1].at[:, g].set(z)

            if not static_groups:
                scale, zp = lax.cond(first[b0 + i], choose, lambda sz: sz, (scale, zp))
            w, s, z = W1[:, i], scale[:, g], zp[:, g]
            q = quantize(w, s, z, grid)
            err = (w - (q - z) * s) / Hinv1[i, i]
            # Hinv1 is upper triangular: this updates the columns after i (and column i,
            # which is never read again)
            W1 = W1 - err[:, None] * Hinv1[i][None, :]
            return W1, Q1.at[:, i].set(q), Err1.at[:, i].set(err), scale, zp

        zeros = jnp.zeros((R, B), dtype)
        W1, Q1, Err1, scale, zp = lax.fori_loop(0, B, column, (W1, zeros, zeros, scale, zp))
        later = jnp.matmul(Err1, Hinv_rows, precision=HIGHEST)  # the lazy batch update
        W = W - jnp.where(jnp.arange(C)[None, :] >= b0 + B, later, 0.0)
        return W, lax.dynamic_update_slice(Q, Q1, (0, b0)), scale, zp

    if not static_groups:  # every row's own params, chosen in the loop
        scale, zp = jnp.ones((R, members.shape[0]), dtype), jnp.zeros((R, members.shape[0]), dtype)
    init = (W, jnp.zeros((R, C), dtype), scale.astype(dtype), zp.astype(dtype))
    _, Q, scale, zp = lax.fori_loop(0, C // B, run_block, init)
    return Q, scale, zp


@cache
def _program(mode: str, grid: Grid, block: int, static_groups: bool) -> Any:
    """The compiled column loop for one layer (`one`), or vmapped over conv groups (`vmap`:
    depthwise-like, few rows: the group search's cond becomes a cheap select), or one group
    after the other (`map`). Cached: one trace per (mode, grid), one compile per shape."""
    one = partial(gptq_columns, grid=grid, block=block, static_groups=static_groups)
    if mode == "vmap":
        return jit(jax.vmap(one))
    if mode == "map":
        return jit(lambda *args: lax.map(lambda a: one(*a), args))
    return jit(lambda *args: tuple(a[None] for a in one(*(x[0] for x in args))))


def solve_padded(W: np.ndarray, H: np.ndarray, gidx: np.ndarray, n_groups: int, grid: Grid,
                 config: GPTQConfig, static: tuple[np.ndarray, np.ndarray] | None = None,
                 dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """GPTQ of W [..., R, C] (leading dims: independent conv groups) given H [..., C, C]:
    `hessian_factor` on the host (retried with 10x dampening while H + λ·I is not positive
    definite), then `gptq_columns` on shapes padded to buckets (zero rows, zero columns with
    an identity Hinv, empty groups). `dtype=np.float64` runs the column loop in double
    precision (for comparisons with a reference)."""
    lead = W.shape[:-2]
    R, C = W.shape[-2:]
    nb = math.prod(lead)
    Rb, Cb, Gb = bucket(R, 128, 1), bucket(C), bucket(n_groups, 64, 1)
    members = _members(gidx, n_groups)
    S = bucket(members.shape[1], 1 << 30, 1)
    Nb = bucket(nb, 1 << 30, 1) if lead else 1
    Ws, Hs = W.reshape(nb, R, C), np.asarray(H).reshape(nb, C, C)
    Wp, Hinv = (
        np.zeros((Nb, Rb, Cb), dtype),
        np.broadcast_to(np.eye(Cb, dtype=dtype), (Nb, Cb, Cb)).copy(),
    )
    group, first = np.zeros((Nb, Cb), np.int32), np.zeros((Nb, Cb), bool)
    pos, valid = np.zeros((Nb, Gb, S), np.int32), np.zeros((Nb, Gb, S), bool)
    importance = np.zeros((Nb, Cb), dtype)
    perms = []
    for k in range(nb):
        damp = config.damp
        for _ in range(4):
            try:
                perm, Hinv_k, diag = hessian_factor(Hs[k], damp, config.act_order)
                break
            except np.linalg.LinAlgError:
                log.info("gptq: Cholesky failed at dampening %g, retrying with %g", damp, damp * 10)
                damp *= 10
        else:
            raise FloatingPointError("gptq: the Hessian stays singular after dampening")
        perms.append(perm)
        invperm = np.argsort(perm)
        alive = np.diagonal(Hs[k]) != 0
        Wp[k, :R, :C] = np.where(alive[None, :], Ws[k], 0.0)[:, perm]
        Hinv[k, :C, :C] = Hinv_k
        importance[k, :C] = diag
        group[k, :C] = gidx[perm]
        real = members >= 0
        at = np.where(real, invperm[np.maximum(members, 0)], 0)  # processing positions
        pos[k, :n_groups, : members.shape[1]] = at
        valid[k, :n_groups, : members.shape[1]] = real
        if not config.static_groups:
            first[k, np.min(np.where(real, at, C), axis=1)[real.any(axis=1)]] = True
    s0 = np.ones((Nb, 1, Gb), dtype)
    z0 = np.zeros((Nb, 1, Gb), dtype)
    if static is not None:
        s_rows = static[0].reshape(nb, -1, n_groups)
        s0 = np.ones((Nb, s_rows.shape[1] if s_rows.shape[1] == 1 else Rb, Gb), dtype)
        z0 = np.zeros_like(s0)
        s0[:nb, : s_rows.shape[1], :n_groups] = s_rows
        z0[:nb, : s_rows.shape[1], :n_groups] = static[1].reshape(nb, -1, n_groups)
    mode = "one" if Nb == 1 else "vmap" if R <= 4 else "map"
    program = _program(mode, grid, config.block, config.static_groups)
    with jax.enable_x64(np.dtype(dtype) == np.float64):
        Q, scale, zp = (np.asarray(a) for a in program(Wp, Hinv, group, first, pos, valid,
                                                         importance, s0, z0))  # fmt: skip
    Q = np.stack([Q[k, :R, :C][:, np.argsort(perm)] for k, perm in enumerate(perms)])
    shape = (*lead, R)
    rows = min(R, scale.shape[1])  # 1: one static scale row shared by every row (per tensor)
    return (Q.reshape(*shape, C),
            scale[:nb, :rows, :n_groups].reshape(*lead, rows, n_groups),
            zp[:nb, :rows, :n_groups].reshape(*lead, rows, n_groups))  # fmt: skip


def output_error(w: np.ndarray, w_hat: np.ndarray, H: np.ndarray) -> float:
    """Relative layer output error tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) for matrices [R, C] (or stacked
    per conv group [g, R, C] with H [g, C, C])."""
    w, d, H = (np.asarray(a, np.float64) for a in (w, np.asarray(w_hat) - w, H))
    if w.ndim == 2:
        w, d, H = w[None], d[None], H.reshape(1, *H.shape[-2:])
    # matmul, not einsum: numpy's einsum loops (no BLAS) took seconds for a 384x1536 layer
    num = float(np.sum(np.matmul(d, H) * d))
    den = float(np.sum(np.matmul(w, H) * w))
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


__all__ = [
    "GPTQConfig",
    "gptq_columns",
    "gptq_weight",
    "hessian_factor",
    "output_error",
    "solve_padded",
]
