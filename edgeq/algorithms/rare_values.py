"""Ranges that rare values do not set (a cheap percentile, on by default).

A min-max range is the widest value ever seen; in trained networks that is often one sample
or one outlier element, and every other value gets a handful of the 256 levels (PP-OCRv5's
recognizer: one calibration line sets a range 3x wider than anything in evaluation, CER 65%).
The percentile observer fixes that but builds a histogram per tensor (a scatter per tensor
per batch: 2-10x the calibration time). Here, after the min-max pass, a second pass over a
few calibration samples counts, per tensor, the values beyond fixed fractions of that range
(`tail_counts_program`: compare-and-sum reductions, no scatter), and each side of the range is cut to
the smallest fraction beyond which at most `tail` of the values lie (99.99th percentile on a
grid of fractions 0.75^k). Graph outputs keep min-max (that is what the user reads), and
`keep_max` tensors (inputs of Softmax, ArgMax, TopK: the planner marks them) keep their
maximum: their top values are rare by construction (one winner per row) and are the signal.

Pure: (min-max states, tail counts) → states; the pipeline runs the two passes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from edgeq.algorithms.registry import register_algorithm

FRACTIONS = tuple(float(0.75**k) for k in range(1, 11))  # 0.75 ... 0.056
TAIL = 1e-4  # the share of values allowed beyond the range (a 99.99th percentile)
# the cuts the pipeline chooses between by output noise (None: min-max, no cut)
RARE_TAILS: tuple[float | None, ...] = (None, TAIL, 1e-3)
MAX_VALUES = 1 << 18  # values counted per tensor and batch (a strided subsample beyond)
State = dict[str, Any]


def _cut(bound: float, counts: np.ndarray, valid: float, fractions: tuple[float, ...],
         tail: float) -> float:  # fmt: skip
    """The smallest f·bound (f from the grid, in order) with at most `tail` of the values
    beyond it; the grid is walked from the full range inward and stops at the first miss."""
    best = bound
    for f, c in zip(fractions, counts, strict=True):
        if c > tail * valid:
            break
        best = f * bound
    return best


@register_algorithm(
    "rare_values",
    "ranges",
    "cut min-max ranges that rare values set (≈ 99.99th percentile, no histograms)",
)
def clip_rare_values(ranges: Mapping[str, tuple[float, float]], counts: Mapping[str, State],
                     tail: float = TAIL, fractions: tuple[float, ...] = FRACTIONS,
                     keep_max: Collection[str] = ()) -> dict[str, tuple[float, float]]:  # fmt: skip
    """New (lo, hi) per tensor from its min-max range and its tail counts ({above, below, valid});
    the tensors in `keep_max` keep their hi."""
    out = dict(ranges)
    for name, state in counts.items():
        lo, hi = ranges[name]
        valid = float(state["valid"])
        if valid <= 0:
            continue
        top = hi > 0 and name not in keep_max
        new_hi = _cut(hi, np.asarray(state["above"]), valid, fractions, tail) if top else hi
        new_lo = _cut(lo, np.asarray(state["below"]), valid, fractions, tail) if lo < 0 else lo
        out[name] = (new_lo, new_hi)
    return out


__all__ = [
    "FRACTIONS",
    "RARE_TAILS",
    "TAIL",
    "TailCounts",
    "clip_rare_values",
    "compile_tail_counts",
    "count_tails",
    "cut_rare_values",
    "cut_states",
    "tail_counts_program",
    "tail_facts",
]


def tail_counts_program(graph: Any, keys: list[str], token_mask: str | None = None) -> Any:
    """jitted (counts, batch, his, los) -> counts: the tail counts of `keys` over one batch.
    The thresholds are arguments, so the program needs no range: it can be compiled from the
    plan spec while the min-max pass runs (`compile_tail_counts`)."""
    from edgeq.ir.interpreter import evaluate
    from edgeq.ir.jit import jit
    from edgeq.quant.calibrate import _mask_padding

    seq = int(graph.info(token_mask).shape[-1]) if token_mask else 0

    def forward(feed: Any) -> dict[str, Any]:
        env = evaluate(graph, feed)
        if not token_mask:
            return {n: env[n] for n in keys}
        real = jnp.reshape(feed[token_mask] != 0, (-1,))
        return {n: _mask_padding(env[n], real, seq) for n in keys}

    def step(counts: dict[str, Any], batch: Any, his: Any, los: Any) -> dict[str, Any]:
        import jax

        f = jnp.asarray(FRACTIONS, jnp.float32)[None, :]
        values = jax.vmap(forward)(batch)
        out = {}
        for i, n in enumerate(keys):
            x = jnp.asarray(values[n], jnp.float32).reshape(-1)
            x = x[:: max(1, x.size // MAX_VALUES)].reshape(-1, 1)  # a strided subsample
            out[n] = {"above": counts[n]["above"] + jnp.sum(x > f * his[i], axis=0, dtype=jnp.float32),
                      "below": counts[n]["below"] + jnp.sum(x < f * los[i], axis=0, dtype=jnp.float32),
                      "valid": counts[n]["valid"] + jnp.sum(jnp.isfinite(x), dtype=jnp.float32)}  # fmt: skip
        return out

    return jit(step)


def _count_specs(keys: list[str]) -> tuple[dict[str, Any], Any]:
    import jax

    vec = jax.ShapeDtypeStruct((len(FRACTIONS),), np.float32)
    counts = {n: {"above": vec, "below": vec, "valid": jax.ShapeDtypeStruct((), np.float32)}
              for n in keys}  # fmt: skip
    return counts, jax.ShapeDtypeStruct((len(keys),), np.float32)


def compile_tail_counts(graph: Any, keys: list[str], batch: Mapping[str, Any],
                        token_mask: str | None = None) -> Any:  # fmt: skip
    """`tail_counts_program` compiled for batches shaped like `batch` (ShapeDtypeStructs);
    thread-safe, so it can compile while the min-max pass streams."""
    import jax

    counts, bounds = _count_specs(keys)
    with jax.enable_x64(True):
        compiled = tail_counts_program(graph, keys, token_mask).lower(
            counts, dict(batch), bounds, bounds).compile()  # fmt: skip
    shapes = {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in batch.items()}
    return CompiledTailCounts(compiled, shapes)


@dataclass(frozen=True)
class CompiledTailCounts:
    """A compiled tail-count step and the batch shapes it takes."""

    step: Any
    shapes: dict[str, tuple[tuple[int, ...], Any]]

    def fits(self, batch: Mapping[str, np.ndarray]) -> bool:
        return self.shapes == {k: (v.shape, v.dtype) for k, v in batch.items()}


@dataclass(frozen=True)
class TailCounts:
    """The min-max ranges of the counted tensors and, per tensor, how many values lay beyond
    each fraction of them ({above, below, valid}), over `samples` calibration samples."""

    ranges: dict[str, tuple[float, float]]
    counts: dict[str, State]
    samples: int
    seconds: float


def count_tails(graph: Any, states: Mapping[str, State], names: list[str], batches: Any,
                token_mask: str | None = None, program: Any = None) -> TailCounts:  # fmt: skip
    """The second calibration pass: tail counts for the min-max `states` of `names` over
    `batches` (one jitted, vmapped forward; the thresholds are inputs, so one compile).
    `program`: `compile_tail_counts` of the same `names` (compiled ahead), used for batches of
    its shape."""
    import time

    import jax

    t0 = time.perf_counter()
    ranges = {n: (float(states[n]["min"]), float(states[n]["max"])) for n in names
              if np.isfinite(states[n]["min"]) and np.isfinite(states[n]["max"])}  # fmt: skip
    if not ranges:
        return TailCounts({}, {}, 0, 0.0)
    keys = list(names)  # every name keeps its slot (a program compiled ahead has them all)
    his = np.array([max(ranges[n][1], 0.0) if n in ranges else 0.0 for n in keys], np.float32)
    los = np.array([min(ranges[n][0], 0.0) if n in ranges else 0.0 for n in keys], np.float32)
    zero = np.zeros(len(FRACTIONS), np.float32)
    counts: dict[str, Any] = {
        n: {"above": zero, "below": zero, "valid": np.float32(0)} for n in keys
    }
    general = None
    samples = 0
    with jax.enable_x64(True):
        for batch in batches:
            batch = {k: np.asarray(v) for k, v in batch.items()}
            if program is not None and program.fits(batch):
                step = program.step
            else:
                general = general or tail_counts_program(graph, keys, token_mask)
                step = general
            counts = step(counts, batch, his, los)
            samples += len(next(iter(batch.values())))
    host = {n: {k: np.asarray(v) for k, v in counts[n].items()} for n in ranges}
    return TailCounts(ranges, host, samples, time.perf_counter() - t0)


def cut_states(states: Mapping[str, State], tails: TailCounts, tail: float | None = TAIL,
               keep_max: Collection[str] = ()) -> tuple[dict[str, State], int]:  # fmt: skip
    """`states` with the counted tensors' min/max cut at `tail` (`clip_rare_values`; None:
    left at min-max) and how many changed."""
    out = dict(states)
    if tail is None or not tails.ranges:
        return out, 0
    cut = clip_rare_values(tails.ranges, tails.counts, tail, keep_max=keep_max)
    changed = 0
    for n, (lo, hi) in cut.items():
        if (lo, hi) != tails.ranges[n]:
            changed += 1
            out[n] = {**states[n], "min": np.float32(lo), "max": np.float32(hi)}
    return out, changed


def cut_rare_values(graph: Any, states: dict[str, State], names: list[str], batches: Any,
                    tail: float = TAIL, token_mask: str | None = None, program: Any = None,
                    keep_max: Collection[str] = ()) -> tuple[dict[str, State], dict[str, Any]]:  # fmt: skip
    """`count_tails`, then the min/max cut at `tail` (`cut_states`). Returns (states, facts for
    the plan). `keep_max`: names whose maximum stays (see `clip_rare_values`)."""
    tails = count_tails(graph, states, names, batches, token_mask, program)
    if not tails.ranges:
        return dict(states), {"tensors": 0}
    out, changed = cut_states(states, tails, tail, keep_max)
    return out, tail_facts(tails, changed, tail, keep_max)


def tail_facts(tails: TailCounts, changed: int, tail: float | None,
               keep_max: Collection[str]) -> dict[str, Any]:  # fmt: skip
    """What the plan's calibration section records about the cut."""
    kept = sorted(n for n in keep_max if n in tails.ranges)
    return {"tensors": len(tails.ranges), "cut": changed, "samples": tails.samples,
            "tail": tail, "max_kept": kept, "seconds": round(tails.seconds, 3)}  # fmt: skip
