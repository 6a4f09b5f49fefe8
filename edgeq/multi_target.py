"""One calibration, many targets.

Tensor statistics describe the float model and do not depend on the target, but some targets
rewrite the graph before planning (onnx gives MatMuls a copy of each LayerNorm output; qnn turns
constant-weight MatMuls into 1x1 Convs), so a target's observed tensors are those of *its*
prepared graph. `SharedStatistics` keeps that exact: targets whose prepared graphs are identical
(same `graph_fingerprint`) share one streaming pass over the calibration data, observing the
union of the tensors (and observers) they ask for; each target then reads back exactly the
states a run of its own would have produced. Targets with a different graph get their own pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeq.ir.graph import Graph
from edgeq.quant.plan import graph_fingerprint

log = logging.getLogger(__name__)


@dataclass
class _Pass:
    """The statistics of one prepared graph, over one list of calibration samples."""

    wanted: dict[tuple[str, Any], str] = field(default_factory=dict)  # (tensor, observer) -> key
    result: Any = None  # CalibrationStats, once collected
    names: tuple[str, ...] = ()
    targets: list[str] = field(default_factory=list)


class SharedStatistics:
    """Register every target's observers first (`want`), then calibrate each target with
    `calibrate_model(..., shared=this)`: the first target of a graph runs the pass for all."""

    def __init__(self) -> None:
        self._passes: dict[str, _Pass] = {}
        self.passes_run = 0
        self.seconds = 0.0

    def want(self, graph: Graph, observers: Mapping[str, Any], target: str = "") -> str:
        """Note that a target on `graph` will observe `observers` (tensor -> observer)."""
        fp = graph_fingerprint(graph)
        entry = self._passes.setdefault(fp, _Pass())
        for tensor, obs in observers.items():
            entry.wanted.setdefault((tensor, obs), f"{tensor}#{len(entry.wanted)}")
        if target:
            entry.targets.append(target)
        return fp

    def collect(self, graph: Graph, observers: Mapping[str, Any], names: Sequence[str],
                run: Callable[[Mapping[str, tuple[str, Any]]], Any]) -> Any:  # fmt: skip
        """The statistics `run({key: (tensor, observer)})` gives for `observers`, collected
        once per graph and sample list for every target registered on that graph."""
        from edgeq.quant.calibrate import CalibrationStats

        fp = graph_fingerprint(graph)
        entry = self._passes.setdefault(fp, _Pass())
        for tensor, obs in observers.items():
            entry.wanted.setdefault((tensor, obs), f"{tensor}#{len(entry.wanted)}")
        fresh = entry.result is None or entry.names != tuple(names)
        if fresh:
            if entry.result is not None:
                log.info("calibration samples differ between targets: statistics collected again")
            t0 = time.perf_counter()
            entry.result = run({key: (t, o) for (t, o), key in entry.wanted.items()})
            entry.names = tuple(names)
            self.passes_run += 1
            self.seconds += time.perf_counter() - t0
        full = entry.result
        missing = [(t, o) for t, o in observers.items() if (t, o) not in entry.wanted]
        if missing:  # not registered before the pass ran: observe them now
            extra = run({f"{t}#x{i}": (t, o) for i, (t, o) in enumerate(missing)})
            for i, (t, o) in enumerate(missing):
                entry.wanted[(t, o)] = f"{t}#x{i}"
                full.states[f"{t}#x{i}"] = extra.states[f"{t}#x{i}"]
            self.passes_run += 1
        states = {t: full.states[entry.wanted[(t, o)]] for t, o in observers.items()}
        compile_s = full.compile_seconds if fresh else 0.0  # reused: nothing compiled for it
        return CalibrationStats(states, full.samples, full.batches, full.seconds, compile_s,
                                full.devices)  # fmt: skip

    def groups(self) -> list[list[str]]:
        """Targets grouped by the graph they share (one calibration pass per group)."""
        return [p.targets for p in self._passes.values() if p.targets]


__all__ = ["SharedStatistics"]
