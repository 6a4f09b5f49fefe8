"""Quality budgets: how much a user accepts losing against the float model (`--max-loss`).

One concept shared by the export verdict (PASS/FAIL of an artifact) and by the searches that
choose bit-widths (mixed precision): both ask "does this quantized model stay within the
budget?" on held-out samples.

A budget is `METRIC=NUMBER`:

| metric | meaning of NUMBER | passes when |
|---|---|---|
| `cosine` | floor of the mean cosine similarity to float (e.g. 0.99) | quant ≥ NUMBER |
| `sqnr` | floor of the SQNR against float, in dB (e.g. 20) | quant ≥ NUMBER |
| `cer`, `wer` | allowed increase over float, in percentage points (e.g. 1.0) | quant − float ≤ NUMBER |
| `top1`, `top5`, `map`, `agreement`, `iou`, `nn` | allowed drop from float, in percentage points | float − quant ≤ NUMBER |

A user metric (`--metric module:function`) is registered under its function's name with
`register_metric` (higher is better unless the function says `lower_is_better = True`).

Metric values are given in the metric's natural unit: cosine in [-1, 1], SQNR in dB, and the
others in percent (CER 1.5 means 1.5%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from edgeq.errors import InputError

Kind = Literal["floor", "max_increase", "max_drop"]
METRICS: dict[str, Kind] = {
    "cosine": "floor",
    "sqnr": "floor",
    "cer": "max_increase",
    "wer": "max_increase",
    "top1": "max_drop",
    "top5": "max_drop",
    "map": "max_drop",
    "agreement": "max_drop",
    "iou": "max_drop",
    "nn": "max_drop",
}


def register_metric(name: str, kind: Kind) -> None:
    """Make `name` a budget metric (a user metric hook); its kind says how loss is counted."""
    if name in METRICS and METRICS[name] != kind:
        raise InputError(f"metric '{name}' is already a {METRICS[name]} metric",
                         "give the user metric another name")  # fmt: skip
    METRICS[name] = kind


@dataclass(frozen=True)
class LossBudget:
    metric: str
    value: float

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InputError(f"unknown budget metric '{self.metric}'",
                             f"use one of: {', '.join(METRICS)}")  # fmt: skip
        if not math.isfinite(self.value) or (self.value < 0 and self.kind != "floor"):
            raise InputError(f"budget {self.metric}={self.value} must be a finite number (≥ 0 for a loss)",
                             "e.g. --max-loss cer=1.0")  # fmt: skip

    @property
    def kind(self) -> Kind:
        return METRICS[self.metric]

    def loss(self, float_value: float, quant_value: float) -> float:
        """How much was lost, in the budget's unit (positive = worse than float)."""
        if self.kind == "floor":
            return float_value - quant_value
        if self.kind == "max_increase":
            return quant_value - float_value
        return float_value - quant_value

    def passes(self, float_value: float, quant_value: float) -> bool:
        if quant_value != quant_value:  # NaN never passes
            return False
        if self.kind == "floor":
            return quant_value >= self.value
        return self.loss(float_value, quant_value) <= self.value

    def describe(self) -> str:
        if self.kind == "floor":
            return f"{self.metric} ≥ {self.value:g}"
        sign = "+" if self.kind == "max_increase" else "−"
        return f"{self.metric} within {sign}{self.value:g} pp of float"

    def __str__(self) -> str:
        return f"{self.metric}={self.value:g}"


def parse_budget(spec: str) -> LossBudget:
    """`"cer=1.0"` → LossBudget("cer", 1.0)."""
    metric, sep, number = spec.partition("=")
    if not sep:
        raise InputError(f"--max-loss '{spec}' is not METRIC=NUMBER",
                         f"e.g. --max-loss cer=1.0 or --max-loss cosine=0.99 ({', '.join(METRICS)})")  # fmt: skip
    try:
        value = float(number)
    except ValueError:
        raise InputError(f"--max-loss '{spec}': '{number}' is not a number",
                         "e.g. --max-loss cer=1.0") from None  # fmt: skip
    return LossBudget(metric.strip().lower(), value)


__all__ = ["METRICS", "LossBudget", "parse_budget", "register_metric"]
