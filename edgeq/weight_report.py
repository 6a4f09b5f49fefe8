"""What the weights cost and how they were chosen, for the export report: the artifact's
average bits per weight recomputed from its own stored tensors (codes, scales, zero points,
float weights), the layers mixed precision kept at 8 bits and why, and the weight algorithms'
time per phase (from the plan)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeq.ir.graph import Graph
from edgeq.quant.plan import QuantPlan


def weight_report(
    exporter: Any, artifact_path: Any, graph: Graph, plan: QuantPlan | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    storage = getattr(exporter, "weight_storage", None)
    if storage is not None:
        stored = storage(artifact_path, graph)
        elements = sum(r["elements"] for r in stored.values())
        bits = sum(r["bits"] for r in stored.values())
        out["bits_per_weight"] = bits / max(elements, 1)
        out["weight_elements"] = elements
        out["weight_bytes"] = bits / 8
        out["layers"] = len(stored)
        out["source"] = (
            "the artifact's stored weight tensors (codes, scales, zero points; float weights at their stored width)"
        )
    if plan is not None:
        counts: dict[str, int] = {}
        for t in plan.tensors.values():
            if t.role == "weight" and t.is_quantized:
                key = f"{t.qdtype.bits}-bit" + (
                    " lut" if getattr(t, "lut", None) is not None else ""
                )
                counts[key] = counts.get(key, 0) + 1
        out["quantized_layers"] = counts
        mixed = plan.calibration.get("mixed_precision")
        if mixed:
            out["mixed_precision"] = {k: mixed[k] for k in ("eight_bit", "blocked", "budget", "met", "all_4bit",
                                                            "chosen", "bpw_all_4bit", "bpw", "seconds")
                                      if k in mixed}  # fmt: skip
        algos = plan.calibration.get("weights")
        if algos:
            out["algorithms"] = {"seconds": algos.get("seconds", {}),
                                 "methods": _methods(algos.get("layers", []))}  # fmt: skip
    return out


def _methods(rows: list[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["method"]] = counts.get(r["method"], 0) + 1
    return counts


def weight_markdown(w: Mapping[str, Any]) -> list[str]:
    if not w:
        return []
    lines = [""]
    if "bits_per_weight" in w:
        lines.append(f"weights: {w['bits_per_weight']:.3f} bits per weight on average over "
                     f"{w['weight_elements']:,} weights in {w['layers']} layers (scales and zero points "
                     f"included, read from the artifact); quantized layers {w.get('quantized_layers', {})}")  # fmt: skip
    mixed = w.get("mixed_precision")
    if mixed:
        budget = mixed.get("budget", {})
        lines.append(f"mixed precision: {len(mixed.get('eight_bit', []))} layer(s) kept at 8 bits, "
                     f"{len(mixed.get('blocked', []))} in 4-bit blocks "
                     f"(budget: max-loss {budget.get('max_loss')}, bpw {budget.get('bpw')}, "
                     f"default cap {budget.get('default_cap')}); plan {mixed.get('bpw', 0):.3f} bits per weight "
                     f"vs {mixed.get('bpw_all_4bit', 0):.3f} all 4-bit; search output cosine "
                     f"{mixed.get('all_4bit', {}).get('cosine', float('nan')):.5f} → {mixed.get('chosen', {}).get('cosine', float('nan')):.5f}")  # fmt: skip
        for row in mixed.get("eight_bit", []):
            lines.append(f"- {row['node'] or row['weight']}: {row['reason']}")
        for row in mixed.get("blocked", []):
            lines.append(f"- {row['node'] or row['weight']} (4-bit blocks of {row['block']}): "
                         f"{row['reason']}")  # fmt: skip
    algos = w.get("algorithms")
    if algos:
        secs = ", ".join(f"{k} {v}" for k, v in algos.get("seconds", {}).items())
        lines.append(f"weight algorithms {algos.get('methods', {})}: {secs}")
    return lines


__all__ = ["weight_markdown", "weight_report"]
