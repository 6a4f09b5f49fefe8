"""The registry of data-aware algorithms, filled by decorator, selected by name.

An algorithm is a pure function (arrays and statistics in, arrays and params out) that knows
nothing of ONNX, file formats or devices. Its `kind` says what it changes and, with it, the
calling convention the planner/pipeline uses:

- `ranges`: activation ranges of a finished plan (e.g. `refine`: output-aware range search);
- `weights`: how a layer's weights become integers (e.g. round-to-nearest grids, GPTQ);
- `graph`: float-exact rewrites of weights/graph before quantization (e.g. equalization,
  smoothing, activation-aware scaling).

Recipes select weight algorithms per node (`method`, node name > op type > global); the plan's
provenance records which one produced each tensor. The built-in algorithms register when
`edgeq.algorithms` is imported (its `__init__` imports each module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from edgeq.errors import InputError

Kind = Literal["ranges", "weights", "graph"]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Algorithm:
    name: str
    kind: Kind
    run: Callable[..., Any]
    summary: str  # one line, shown by `edgeq` help and errors


ALGORITHMS: dict[str, Algorithm] = {}


def register_algorithm(name: str, kind: Kind, summary: str) -> Callable[[F], F]:
    def add(fn: F) -> F:
        if name in ALGORITHMS and ALGORITHMS[name].run is not fn:
            raise ValueError(f"algorithm '{name}' is registered twice")
        ALGORITHMS[name] = Algorithm(name, kind, fn, summary)
        return fn

    return add


def available_algorithms(kind: Kind | None = None) -> list[str]:
    return sorted(n for n, a in ALGORITHMS.items() if kind is None or a.kind == kind)


def get_algorithm(name: str, kind: Kind | None = None) -> Algorithm:
    algo = ALGORITHMS.get(name)
    if algo is None or (kind is not None and algo.kind != kind):
        names = ", ".join(available_algorithms(kind)) or "none"
        what = f"{kind} algorithm" if kind else "algorithm"
        raise InputError(f"unknown {what} '{name}'", f"registered: {names}")
    return algo


__all__ = ["ALGORITHMS", "Algorithm", "available_algorithms", "get_algorithm", "register_algorithm"]
