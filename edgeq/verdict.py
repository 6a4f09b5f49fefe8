"""The export verdict: does the artifact stay within the loss budget on its task metric?

Budgets come from `--max-loss METRIC=NUMBER` (every one given must pass) or, when none is given,
from the target profile's `[budgets] max_loss` list (`targets/*.toml`): the first metric the
task measured that has a default budget decides. A metric that was not measured never passes
silently: asking for it is an error before any work (`check_measurable`), and an export with no
evaluation data at all is UNCHECKED, which the CLI treats like a FAIL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeq.budget import LossBudget, parse_budget
from edgeq.errors import InputError
from edgeq.metrics import MetricValue

# the budget metrics each task can measure (with labels: `labelled`; user hooks add theirs)
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "ctc": ("cer", "sqnr"),
    "classify": ("agreement", "sqnr"),
    "embed": ("cosine", "nn", "sqnr"),
    "mask": ("iou", "sqnr"),
    "detect": ("map", "sqnr"),
    "generic": ("cosine", "sqnr"),
}
LABELLED_METRICS: dict[str, tuple[str, ...]] = {"classify": ("top1", "top5")}


def default_budgets(profile: Any) -> list[LossBudget]:
    """The target profile's default budgets (`[budgets] max_loss = ["cer=1.0", ...]`)."""
    specs = (getattr(profile, "raw", {}) or {}).get("budgets", {}).get("max_loss", [])
    return [parse_budget(s) for s in specs]


def check_measurable(budgets: Sequence[LossBudget], task: str, labelled: bool,
                     hooks: Sequence[str] = ()) -> None:  # fmt: skip
    """Refuse, before any work, a budget on a metric this task will not measure."""
    measured = set(TASK_METRICS.get(task, ())) | set(hooks)
    if labelled:
        measured |= set(LABELLED_METRICS.get(task, ()))
    for b in budgets:
        if b.metric not in measured:
            extra = " (top1/top5 need labels: a labels.json beside the evaluation samples)" \
                if b.metric in ("top1", "top5") and task == "classify" else ""  # fmt: skip
            raise InputError(
                f"--max-loss {b}: the {task} task does not measure '{b.metric}'{extra}",
                f"use one of: {', '.join(sorted(measured))} (or --task to choose another task)",
            )


@dataclass(frozen=True)
class Check:
    budget: LossBudget
    metric: MetricValue | None
    passed: bool

    @property
    def loss(self) -> float | None:
        if self.metric is None:
            return None
        return self.budget.loss(self.metric.float_value, self.metric.quant_value)

    def describe(self) -> str:
        m = self.metric
        if m is None:
            return f"{self.budget.metric}: not measured"
        if self.budget.kind == "floor":
            return f"{m.name} {m.show(m.quant_value)} (budget {self.budget.describe()})"
        unit = "pp" if m.unit == "%" else m.unit
        change = self.loss if self.budget.kind == "max_increase" else -(self.loss or 0)
        sign = "+" if change >= 0 else "−"
        return (
            f"{m.name} {m.show(m.quant_value)} vs float {m.show(m.float_value)} "
            f"({sign}{abs(change):.2f} {unit}; budget {self.budget.describe()})"
        )

    def as_dict(self) -> dict[str, Any]:
        m = self.metric
        return {"budget": str(self.budget), "rule": self.budget.describe(), "passed": self.passed,
                "metric": m.name if m else self.budget.metric,
                "against": m.against if m else None,
                "float": m.as_dict()["float"] if m else None,
                "quant": m.as_dict()["quant"] if m else None,
                "loss": self.loss}  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    status: str  # PASS | FAIL | UNCHECKED
    checks: tuple[Check, ...] = ()
    source: str = ""  # "--max-loss" or "target default"
    where: str = ""  # e.g. "16 held-out samples, labels"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return self.status == "PASS"

    @property
    def deciding(self) -> Check | None:
        failed = [c for c in self.checks if not c.passed]
        return failed[0] if failed else (self.checks[0] if self.checks else None)

    def line(self) -> str:
        """One line for the terminal: status, the number that decided it, and on what."""
        c = self.deciding
        if c is None:
            return f"{self.status}: {'; '.join(self.notes) or 'nothing was measured'}"
        return f"{self.status}: {c.describe()} — {self.where}"

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "line": self.line(), "budget_source": self.source,
                "checks": [c.as_dict() for c in self.checks], "notes": list(self.notes)}  # fmt: skip


def judge(metrics: Sequence[MetricValue], budgets: Sequence[LossBudget], profile: Any,
          where: str = "") -> Verdict:  # fmt: skip
    """PASS when every budget holds. `budgets` empty: the profile's default for the first
    measured metric that has one (the task's lead metric unless a user metric leads)."""
    if not metrics:
        return Verdict(
            "UNCHECKED", notes=("no evaluation data: nothing was measured",), where=where
        )
    source = "--max-loss"
    if not budgets:
        source = "target default"
        defaults = {b.metric: b for b in default_budgets(profile)}
        chosen = next((defaults[m.name] for m in metrics if m.name in defaults), None)
        if chosen is None:
            return Verdict("UNCHECKED", source=source, where=where,
                           notes=(f"no default budget for {', '.join(m.name for m in metrics)}: "
                                  "pass --max-loss METRIC=NUMBER",))  # fmt: skip
        budgets = [chosen]
    checks = []
    for b in budgets:
        rows = [m for m in metrics if m.name == b.metric]
        row = next((m for m in rows if m.against == "labels"), rows[0] if rows else None)
        ok = row is not None and b.passes(row.float_value, row.quant_value)
        checks.append(Check(b, row, ok))
    status = "PASS" if all(c.passed for c in checks) else "FAIL"
    return Verdict(status, tuple(checks), source, where)


def next_steps(plan: Any, profile: Any) -> list[str]:
    """What to try when an artifact FAILs, from what the plan did and what the target runs
    (every suggestion is an option this plan did not use and this target accepts)."""
    tensors = list(plan.tensors.values())
    acts8 = any(t.role == "activation" and t.is_quantized and t.qdtype.bits == 8 for t in tensors)
    weights4 = any(t.role == "weight" and t.is_quantized and t.qdtype.bits == 4 for t in tensors)
    recipe = plan.recipe or {}
    steps = []
    if acts8:
        if "diagnosis" not in (plan.report or {}):
            steps.append("--diagnose: the report names the tensor whose quantization breaks the "
                         "output, and why")  # fmt: skip
        if recipe.get("rare_values") is not False and recipe.get("rare_values_tail") != "auto":
            steps.append('a --recipe file with rare_values_tail = "auto": the activation ranges\' '
                         "cut is chosen by the simulated output error (or set a share, e.g. 1e-3)")  # fmt: skip
        if profile.quant.act_dtype(16) is not None:
            steps.append(f"--act-bits 16: 16-bit activations ({profile.name} runs them; larger "
                         "and slower)")  # fmt: skip
    if weights4:
        steps.append("--max-loss cosine=0.99 or --bpw: keep more layers at 8 bits; --bits 8 for "
                     "8-bit weights")  # fmt: skip
    return steps


__all__ = [
    "TASK_METRICS",
    "Check",
    "Verdict",
    "check_measurable",
    "default_budgets",
    "judge",
    "next_steps",
]
