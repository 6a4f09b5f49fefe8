"""Comparing an artifact's outputs with the simulator and with float (pure functions).

Parity is the fraction of output elements within one quantization step of the simulator. The
step of a quantized output is its plan scale. An output the plan leaves float (weight-only
plans, float heads) has no step of its own; it gets the step of an 8-bit grid over the
simulator's output range on the evaluated samples, and the report says so (`step_source`).
Where the runtime's outputs are themselves a coarser float (a Core ML program computes and
returns float16), one step of that float at each value is the floor: a float16 output cannot
come closer to the simulator than its own spacing, whatever grid the range suggests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeq.quant.padding import token_keep, zero_padding
from edgeq.quant.plan import QuantPlan


def output_step(
    plan: QuantPlan | None, name: str, sim_values: Sequence[np.ndarray]
) -> tuple[float, str]:
    """(step, where it came from) for graph output `name`."""
    t = plan.get(name) if plan is not None else None
    if t is not None and t.role == "activation" and t.is_quantized and np.ndim(t.scale) == 0:
        return float(np.asarray(t.scale)), "plan scale"
    flat = np.concatenate([np.asarray(v, np.float64).ravel() for v in sim_values])
    span = float(flat.max() - flat.min()) if flat.size else 0.0
    return (span / 255.0 if span > 0 else 1e-6), "8-bit grid over the simulator's output range"


def float_spacing(values: np.ndarray, dtype: str) -> np.ndarray:
    """One step of float `dtype` at each value (the gap to the next representable number
    away from zero)."""
    return np.spacing(np.abs(np.asarray(values, np.float64)).astype(dtype)).astype(np.float64)


def within_step(test: np.ndarray, ref: np.ndarray, step: float | np.ndarray) -> float:
    """Fraction of elements of `test` within one `step` of `ref` (a hair of slack for float
    rounding: outputs come back as float32, so an exact one-step difference near
    a large value can read a few ulps over the step). `step` is a scalar or one per element."""
    test, ref = np.asarray(test, np.float64), np.asarray(ref, np.float64)
    if test.shape != ref.shape:
        raise ValueError(f"shape {test.shape} vs {ref.shape}")
    if test.size == 0:
        return 1.0
    return float(np.mean(np.abs(test - ref) <= step * (1 + 1e-3) + 1e-12))


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    ref, test = np.asarray(ref, np.float64), np.asarray(test, np.float64)
    noise = float(np.sum((ref - test) ** 2))
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(max(float(np.sum(ref * ref)), 1e-30) / noise))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    den = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / den) if den else float(np.array_equal(a, b))


def compare(
    artifact: Sequence[Mapping[str, np.ndarray]],
    simulator: Sequence[Mapping[str, np.ndarray]] | None,
    reference: Sequence[Mapping[str, np.ndarray]],
    plan: QuantPlan | None,
    outputs: Sequence[str],
    output_dtype: str | None = None,
    token_masks: Sequence[np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per output: parity with the simulator and error against float, over all samples.
    `output_dtype`: the float type the runtime computes its outputs in, when coarser than
    float32 (the target profile's `output_dtype`; "float16" on Core ML). `token_masks` (per
    sample, a token model's attention-mask input): errors against float leave out padded token
    positions, as the task metrics do; parity with the simulator still covers every value."""
    result: dict[str, dict[str, Any]] = {}
    for name in outputs:
        art = np.concatenate([np.asarray(o[name], np.float64).ravel() for o in artifact])
        ref = np.concatenate([np.asarray(o[name], np.float64).ravel() for o in reference])
        real_art, real_ref = art, ref
        seq = int(np.size(token_masks[0])) if token_masks else 0
        padded = (
            seq > 0
            and token_keep(np.shape(reference[0][name]), np.ones(seq, bool), seq) is not None
        )
        if padded:
            shapes = [np.shape(o[name]) for o in reference]
            real_art, real_ref = (
                np.concatenate([zero_padding(o[name], m, s).ravel()
                                for o, m, s in zip(outs, token_masks, shapes, strict=False)])
                for outs in (artifact, reference)
            )  # fmt: skip
        row: dict[str, Any] = {
            "vs_float": {"sqnr_db": round(sqnr_db(real_ref, real_art), 2),
                         "cosine": cosine(real_ref, real_art),
                         "max_abs": float(np.max(np.abs(real_ref - real_art))) if art.size else 0.0,
                         **({"padding_excluded": True} if padded else {})},
        }  # fmt: skip
        if simulator is not None:
            sim_list = [np.asarray(o[name]) for o in simulator]
            sim = np.concatenate([s.astype(np.float64).ravel() for s in sim_list])
            step, source = output_step(plan, name, sim_list)
            tolerance: float | np.ndarray = step
            if output_dtype is not None and source != "plan scale":
                tolerance = np.maximum(step, float_spacing(sim, output_dtype))
                source += f", at least one {output_dtype} step at each value"
            row["vs_simulator"] = {
                "within_one_step": within_step(art, sim, tolerance),
                "step": step,
                "step_source": source,
                "max_abs": float(np.max(np.abs(sim - art))) if art.size else 0.0,
                "max_steps": float(np.max(np.abs(sim - art)) / step) if art.size else 0.0,
            }
            real_sim = sim
            if padded:
                real_sim = np.concatenate([zero_padding(s, m, np.shape(o[name])).ravel()
                                           for s, m, o in zip(sim_list, token_masks, reference,
                                                              strict=False)])  # fmt: skip
            row["simulator_vs_float"] = {"sqnr_db": round(sqnr_db(real_ref, real_sim), 2),
                                         "cosine": cosine(real_ref, real_sim)}  # fmt: skip
        result[name] = row
    return result


__all__ = ["compare", "cosine", "float_spacing", "output_step", "sqnr_db", "within_step"]
