"""Elementwise and activation ops."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from edgeq.ir.ops.registry import register

Array = Any


def _binary(name: str, fn: Any) -> None:
    register(name)(lambda a, b: fn(a, b))


_binary("Add", jnp.add)
_binary("Sub", jnp.subtract)
_binary("Mul", jnp.multiply)
_binary("Equal", jnp.equal)
_binary("Less", jnp.less)
_binary("LessOrEqual", jnp.less_equal)
_binary("Greater", jnp.greater)
_binary("GreaterOrEqual", jnp.greater_equal)
_binary("And", jnp.logical_and)
_binary("Or", jnp.logical_or)
_binary("Xor", jnp.logical_xor)


@register("Div")
def div(a: Array, b: Array) -> Array:
    a, b = jnp.asarray(a), jnp.asarray(b)
    if jnp.issubdtype(a.dtype, jnp.integer):
        # ONNX integer division truncates toward zero (C semantics)
        q = jnp.abs(a) // jnp.abs(b)
        return jnp.where((a < 0) != (b < 0), -q, q).astype(a.dtype)
    return a / b


@register("Mod")
def mod(a: Array, b: Array, *, fmod: int = 0) -> Array:
    return jnp.fmod(a, b) if fmod else jnp.mod(a, b)


@register("Pow")
def power(a: Array, b: Array) -> Array:
    a = jnp.asarray(a)
    b = jnp.asarray(b)
    if jnp.issubdtype(b.dtype, jnp.floating) and b.ndim == 0 and _is_const(b):
        exponent = float(np.asarray(b))
        if exponent == 2.0:
            return (a * a).astype(a.dtype)
        if exponent == 0.5:
            return jnp.sqrt(a)
    return jnp.power(a, b.astype(a.dtype)).astype(a.dtype)


def _is_const(x: Array) -> bool:
    try:
        np.asarray(x)
    except Exception:
        return False
    return True


def _unary(name: str, fn: Any) -> None:
    register(name)(lambda x: fn(x))


_unary("Neg", jnp.negative)
_unary("Abs", jnp.abs)
_unary("Sqrt", jnp.sqrt)
_unary("Exp", jnp.exp)
_unary("Log", jnp.log)
_unary("Tanh", jnp.tanh)
_unary("Sin", jnp.sin)
_unary("Cos", jnp.cos)
_unary("Floor", jnp.floor)
_unary("Ceil", jnp.ceil)
_unary("Round", jnp.round)  # round half to even, as ONNX
_unary("Reciprocal", jnp.reciprocal)
_unary("Sign", jnp.sign)
_unary("Not", jnp.logical_not)
_unary("Erf", jax.lax.erf)
_unary("Sigmoid", jax.nn.sigmoid)
_unary("Softsign", lambda x: x / (1 + jnp.abs(x)))
_unary("Softplus", jax.nn.softplus)
_unary("IsNaN", jnp.isnan)


@register("IsInf")
def isinf(x: Array, *, detect_negative: int = 1, detect_positive: int = 1) -> Array:
    return (jnp.isneginf(x) & bool(detect_negative)) | (jnp.isposinf(x) & bool(detect_positive))


@register("Relu")
def relu(x: Array) -> Array:
    return jnp.maximum(x, jnp.zeros((), jnp.asarray(x).dtype))


@register("LeakyRelu")
def leaky_relu(x: Array, *, alpha: float = 0.01) -> Array:
    return jnp.where(x >= 0, x, x * alpha)


@register("PRelu")
def prelu(x: Array, slope: Array) -> Array:
    return jnp.where(x >= 0, x, x * slope)


@register("Elu")
def elu(x: Array, *, alpha: float = 1.0) -> Array:
    return jnp.where(x >= 0, x, alpha * jnp.expm1(x))


@register("Selu")
def selu(x: Array, *, alpha: float = 1.67326319217681884765625,
         gamma: float = 1.05070102214813232421875) -> Array:  # fmt: skip
    return gamma * jnp.where(x > 0, x, alpha * jnp.expm1(x))


@register("HardSigmoid")
def hard_sigmoid(x: Array, *, alpha: float = 0.2, beta: float = 0.5) -> Array:
    return jnp.clip(x * alpha + beta, 0.0, 1.0)


@register("HardSwish")
def hard_swish(x: Array) -> Array:
    return x * jnp.clip(x * (1.0 / 6.0) + 0.5, 0.0, 1.0)


@register("Gelu")
def gelu(x: Array, *, approximate: str = "none") -> Array:
    if approximate == "tanh":
        return jax.nn.gelu(x, approximate=True)
    return 0.5 * x * (1.0 + jax.lax.erf(x * np.float32(1.0 / np.sqrt(2.0))))


@register("Clip")
def clip(x: Array, lo: Array = None, hi: Array = None, *, min: float | None = None,
         max: float | None = None) -> Array:  # fmt: skip
    # opset < 11 passes the bounds as attributes, later as optional inputs
    lo = min if lo is None else lo
    hi = max if hi is None else hi
    dtype = jnp.asarray(x).dtype
    if lo is not None:
        x = jnp.maximum(x, jnp.asarray(lo, dtype))
    if hi is not None:
        x = jnp.minimum(x, jnp.asarray(hi, dtype))
    return x


def _variadic(name: str, fn: Any) -> None:
    def op(*xs: Array) -> Array:
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out

    register(name)(op)


_variadic("Sum", jnp.add)
_variadic("Max", jnp.maximum)
_variadic("Min", jnp.minimum)


@register("Mean")
def mean(*xs: Array) -> Array:
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out / len(xs)


@register("Where")
def where(cond: Array, a: Array, b: Array) -> Array:
    return jnp.where(cond, a, b)


@register("BitShift")
def bitshift(a: Array, b: Array, *, direction: str) -> Array:
    return jnp.left_shift(a, b) if direction == "LEFT" else jnp.right_shift(a, b)
