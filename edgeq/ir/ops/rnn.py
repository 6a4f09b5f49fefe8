"""Recurrent ops (ONNX LSTM), as a lax.scan over time."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from edgeq.errors import UnsupportedOpError
from edgeq.ir.ops.registry import register

Array = Any
HIGHEST = lax.Precision.HIGHEST


def _lstm_direction(x: Array, w: Array, r: Array, b: Array, h0: Array, c0: Array,
                    p: Array | None, reverse: bool, clip: float | None) -> tuple[Array, Array, Array]:  # fmt: skip
    # gates in ONNX order: input, output, forget, cell
    hidden = jnp.shape(r)[-1]
    wb, rb = (b[: 4 * hidden], b[4 * hidden :]) if b is not None else (0.0, 0.0)
    x_proj = jnp.einsum("tbi,gi->tbg", x, w, precision=HIGHEST) + wb + rb
    pi, po, pf = (
        (p[:hidden], p[hidden : 2 * hidden], p[2 * hidden :]) if p is not None else (0, 0, 0)
    )

    def step(carry: tuple[Array, Array], xt: Array) -> tuple[tuple[Array, Array], Array]:
        h, c = carry
        g = xt + jnp.matmul(h, r.T, precision=HIGHEST)
        i, o, f, cc = jnp.split(g, 4, axis=-1)
        # clip bounds the inputs of the gate activations, peephole terms included
        i = jax.nn.sigmoid(_clip(i + pi * c, clip))
        f = jax.nn.sigmoid(_clip(f + pf * c, clip))
        c_new = f * c + i * jnp.tanh(_clip(cc, clip))
        o = jax.nn.sigmoid(_clip(o + po * c_new, clip))
        h_new = o * jnp.tanh(c_new)
        return (h_new, c_new), h_new

    (h, c), ys = lax.scan(step, (h0, c0), x_proj, reverse=reverse)
    return ys, h, c


def _clip(x: Array, clip: float | None) -> Array:
    return x if clip is None else jnp.clip(x, -clip, clip)


@register("LSTM")
def lstm(
    x: Array,
    w: Array,
    r: Array,
    b: Array = None,
    sequence_lens: Array = None,
    initial_h: Array = None,
    initial_c: Array = None,
    p: Array = None,
    *,
    activation_alpha: list[float] | None = None,
    activation_beta: list[float] | None = None,
    activations: list[str] | None = None,
    clip: float | None = None,
    direction: str = "forward",
    hidden_size: int | None = None,
    input_forget: int = 0,
    layout: int = 0,
) -> tuple[Array, Array, Array]:
    if activations and [a.lower() for a in activations[:3]] != ["sigmoid", "tanh", "tanh"]:
        raise UnsupportedOpError(
            f"LSTM activations {activations} not supported", "use the defaults"
        )
    if input_forget:
        raise UnsupportedOpError("LSTM input_forget=1 not supported")
    if layout:
        x = jnp.swapaxes(x, 0, 1)
    num_dir, _, hidden = jnp.shape(r)[0], None, jnp.shape(r)[-1]
    batch = jnp.shape(x)[1]
    dtype = jnp.asarray(x).dtype
    if initial_h is None:
        initial_h = jnp.zeros((num_dir, batch, hidden), dtype)
    elif layout:
        initial_h = jnp.swapaxes(initial_h, 0, 1)
    if initial_c is None:
        initial_c = jnp.zeros((num_dir, batch, hidden), dtype)
    elif layout:
        initial_c = jnp.swapaxes(initial_c, 0, 1)
    ys, hs, cs = [], [], []
    for d in range(num_dir):
        reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
        y, h, c = _lstm_direction(
            x, w[d], r[d], None if b is None else b[d], initial_h[d], initial_c[d],
            None if p is None else p[d], reverse, clip,
        )  # fmt: skip
        ys.append(y)
        hs.append(h)
        cs.append(c)
    y_all = jnp.stack(ys, axis=1)  # [seq, num_dir, batch, hidden]
    h_all, c_all = jnp.stack(hs), jnp.stack(cs)
    if layout:
        y_all = jnp.transpose(y_all, (2, 0, 1, 3))
        h_all, c_all = jnp.swapaxes(h_all, 0, 1), jnp.swapaxes(c_all, 0, 1)
    return y_all, h_all, c_all


def _gru_direction(x: Array, w: Array, r: Array, b: Array | None, h0: Array, reverse: bool,
                   linear_before_reset: bool, clip: float | None) -> tuple[Array, Array]:  # fmt: skip
    # gates in ONNX order: update (z), reset (r), hidden (h)
    hidden = jnp.shape(r)[-1]
    zeros = jnp.zeros(3 * hidden, jnp.asarray(w).dtype)
    wb, rb = (b[: 3 * hidden], b[3 * hidden :]) if b is not None else (zeros, zeros)
    x_proj = jnp.einsum("tbi,gi->tbg", x, w, precision=HIGHEST) + wb
    rz, rr, rh = r[:hidden], r[hidden : 2 * hidden], r[2 * hidden :]
    bz, br, bh = rb[:hidden], rb[hidden : 2 * hidden], rb[2 * hidden :]

    def step(h: Array, xt: Array) -> tuple[Array, Array]:
        xz, xr, xh = jnp.split(xt, 3, axis=-1)
        z = jax.nn.sigmoid(_clip(xz + jnp.matmul(h, rz.T, precision=HIGHEST) + bz, clip))
        rg = jax.nn.sigmoid(_clip(xr + jnp.matmul(h, rr.T, precision=HIGHEST) + br, clip))
        if linear_before_reset:
            hh = xh + rg * (jnp.matmul(h, rh.T, precision=HIGHEST) + bh)
        else:
            hh = xh + jnp.matmul(rg * h, rh.T, precision=HIGHEST) + bh
        h_new = (1 - z) * jnp.tanh(_clip(hh, clip)) + z * h
        h_new = h_new.astype(h.dtype)
        return h_new, h_new

    h, ys = lax.scan(step, h0, x_proj, reverse=reverse)
    return ys, h


@register("GRU")
def gru(
    x: Array,
    w: Array,
    r: Array,
    b: Array = None,
    sequence_lens: Array = None,
    initial_h: Array = None,
    *,
    activation_alpha: list[float] | None = None,
    activation_beta: list[float] | None = None,
    activations: list[str] | None = None,
    clip: float | None = None,
    direction: str = "forward",
    hidden_size: int | None = None,
    layout: int = 0,
    linear_before_reset: int = 0,
) -> tuple[Array, Array]:
    if activations and [a.lower() for a in activations[:2]] != ["sigmoid", "tanh"]:
        raise UnsupportedOpError(f"GRU activations {activations} not supported", "use the defaults")
    if layout:
        x = jnp.swapaxes(x, 0, 1)
    num_dir, hidden = jnp.shape(r)[0], jnp.shape(r)[-1]
    batch = jnp.shape(x)[1]
    if initial_h is None:
        initial_h = jnp.zeros((num_dir, batch, hidden), jnp.asarray(x).dtype)
    elif layout:
        initial_h = jnp.swapaxes(initial_h, 0, 1)
    ys, hs = [], []
    for d in range(num_dir):
        reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
        y, h = _gru_direction(x, w[d], r[d], None if b is None else b[d], initial_h[d], reverse,
                              bool(linear_before_reset), clip)  # fmt: skip
        ys.append(y)
        hs.append(h)
    y_all, h_all = jnp.stack(ys, axis=1), jnp.stack(hs)
    if layout:
        y_all, h_all = jnp.transpose(y_all, (2, 0, 1, 3)), jnp.swapaxes(h_all, 0, 1)
    return y_all, h_all
