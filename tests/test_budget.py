"""--max-loss budgets: parsing and the pass rule per kind of metric."""

import pytest

from edgeq.budget import LossBudget, parse_budget
from edgeq.errors import InputError


def test_floor_metrics_compare_the_quantized_value() -> None:
    b = parse_budget("cosine=0.99")
    assert b.passes(1.0, 0.991) and not b.passes(1.0, 0.989)
    assert parse_budget("sqnr=20").passes(float("inf"), 20.0)


def test_task_metrics_compare_against_float() -> None:
    cer = parse_budget("cer=1.0")  # percentage points more errors than float
    assert cer.passes(2.0, 3.0) and not cer.passes(2.0, 3.01)
    top1 = parse_budget("top1=0.5")  # percentage points fewer correct than float
    assert top1.passes(80.0, 79.5) and not top1.passes(80.0, 79.4)
    assert top1.loss(80.0, 79.0) == pytest.approx(1.0)


def test_nan_never_passes() -> None:
    assert not parse_budget("cosine=0.5").passes(1.0, float("nan"))
    assert not parse_budget("cer=100").passes(0.0, float("nan"))


@pytest.mark.parametrize("spec", ["cer", "cer=abc", "bleu=1", "cer=-1", "cer=inf", "=3"])
def test_bad_specs_are_input_errors(spec: str) -> None:
    with pytest.raises(InputError):
        parse_budget(spec)


def test_describe_says_the_rule() -> None:
    assert LossBudget("cer", 1.0).describe() == "cer within +1 pp of float"
    assert str(LossBudget("cosine", 0.99)) == "cosine=0.99"
