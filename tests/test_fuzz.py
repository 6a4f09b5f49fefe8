"""A seeded, bounded fuzz run in CI: mutations of a real model (PP-OCR cls), calibration data,
plans and firmware bundles through the commands that read them (benchmarks/fuzz.py has the
generator; `python -m benchmarks.fuzz` is the long run). Every case must be a success or one
clean error line: no traceback, no hang, no crash (a crash would end this process)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.fuzz import build_workspace, generate, run_cases

SEED = 17
CASES = 400
BUDGET_S = 45.0  # stop early on a slow machine; the run still has to cover MIN_CASES
MIN_CASES = 60
CASE_TIMEOUT_S = 20.0


def test_fuzz_every_case_is_clean(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    w = build_workspace(tmp_path / "workspace")
    cases = generate(w, SEED, CASES)
    outcomes = run_cases(cases, tmp_path / "cases", CASE_TIMEOUT_S,
                         budget_s=BUDGET_S - (time.perf_counter() - t0))  # fmt: skip
    verdicts = Counter(o.verdict for o in outcomes)
    print(f"fuzz: {len(outcomes)} cases in {time.perf_counter() - t0:.1f} s: {dict(verdicts)}")
    not_clean = [o for o in outcomes if o.verdict in ("bad", "hang")]
    assert not not_clean, "\n".join(
        f"#{o.index} {o.label}: {o.verdict}: {o.line}" for o in not_clean
    )
    unexpected = [o for o in outcomes if o.verdict == "refused (unexpected)"]
    assert not unexpected, "\n".join(f"#{o.index} {o.label}: {o.line}" for o in unexpected)
    assert len(outcomes) >= MIN_CASES, f"only {len(outcomes)} cases ran in {BUDGET_S} s"
    assert verdicts["refused"] > 0 and verdicts["ok"] > 0  # the mutations do both


@pytest.mark.parametrize("seed", [0, 1])
def test_the_generator_is_seeded(tmp_path: Path, seed: int) -> None:
    w = {k: tmp_path / k for k in ("real", "small", "calib", "plan", "tar", "bundle", "npz",
                                   "tflite", "key", "pub")}  # fmt: skip
    a = [c.kind for c in generate(w, seed, 50)]
    b = [c.kind for c in generate(w, seed, 50)]
    assert a == b and len(set(a)) > 5
