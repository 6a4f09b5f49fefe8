"""The simulator: the JAX forward with fake-quantization at every quantized tensor of a plan.

It says what a correct integer runtime outputs: weights are the plan's integers dequantized,
biases the int32 values times s_in*s_w, every quantized activation goes through
quantize → clamp → dequantize with the target's rounding. Exporters are right when their
runtime reproduces this.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from edgeq.errors import EdgeqError
from edgeq.ir.graph import Graph
from edgeq.ir.interpreter import Interpreter, evaluate
from edgeq.quant.plan import QuantPlan, graph_fingerprint
from edgeq.quant.qtypes import sqnr_db


def quantized_graph(graph: Graph, plan: QuantPlan) -> Graph:
    """The graph with every quantized constant (weights, biases) replaced by its dequantized
    plan values."""
    g = graph.copy()
    for t in plan.tensors.values():
        if t.role in ("weight", "bias") and t.is_quantized and t.name in g.constants:
            g.constants[t.name] = t.dequantized().astype(g.constants[t.name].dtype)
    return g


class Simulator(Interpreter):
    """`Simulator(graph, plan)(feeds)` → outputs as an integer runtime would produce them."""

    def __init__(self, graph: Graph, plan: QuantPlan, taps: Collection[str] = (),
                 check_fingerprint: bool = True) -> None:  # fmt: skip
        if (
            check_fingerprint
            and plan.graph_fingerprint
            and plan.graph_fingerprint != graph_fingerprint(graph)
        ):
            raise EdgeqError(
                "the plan was made for a different graph (fingerprint mismatch)",
                "prepare the model with the plan's input shapes/values, or re-calibrate",
            )
        self.plan = plan
        self._acts = {
            t.name: t for t in plan.tensors.values() if t.role == "activation" and t.is_quantized
        }
        super().__init__(quantized_graph(graph, plan), taps)

    def _transform(self, name: str, value: Any) -> Any:
        t = self._acts.get(name)
        if t is None or not np.issubdtype(
            np.asarray(value).dtype if isinstance(value, np.ndarray) else value.dtype, np.floating
        ):
            return value
        return t.fake_quant(value, self.plan.rounding)

    def forward(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        env = evaluate(self.graph, feeds, transform=self._transform)
        names = [*self.graph.output_names, *self.taps]
        return {n: env[n] for n in names}


def layer_sqnr(
    graph: Graph,
    plan: QuantPlan,
    feeds: list[Mapping[str, np.ndarray]],
    tensors: Collection[str] | None = None,
    on_sample: Callable[[Mapping[str, Any], Mapping[str, Any]], None] | None = None,
    reference: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Per-tensor SQNR (dB) of the simulated forward against float, errors propagated, over
    `feeds`; worst first. Also the graph outputs. `on_sample(float_values, simulated_values)`
    sees each feed's outputs and tapped tensors (so a caller needs no second forward);
    `reference` is a float forward tapping at least these tensors (shared between plans)."""
    names = list(tensors) if tensors is not None else [
        t.name for t in plan.tensors.values() if t.role == "activation" and t.is_quantized
        and t.name not in graph.input_names
    ]  # fmt: skip
    names = [n for n in names if n not in graph.output_names]
    ref = reference if reference is not None else Interpreter(graph, taps=names)
    sim = Simulator(graph, plan, taps=names)
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}
    for feed in feeds:
        a, b = ref(feed), sim(feed)
        if on_sample is not None:
            on_sample(a, b)
        for n in [*graph.output_names, *names]:
            x = np.asarray(a[n], np.float64)
            signal[n] = signal.get(n, 0.0) + float(np.sum(x * x))
            noise[n] = noise.get(n, 0.0) + float(np.sum((x - np.asarray(b[n], np.float64)) ** 2))
    producers = graph.producers()
    rows = []
    for n in signal:
        db = float("inf") if noise[n] == 0 else 10 * np.log10(max(signal[n], 1e-30) / noise[n])
        node = producers.get(n)
        rows.append({
            "tensor": n, "op": node.op_type if node else "input", "node": node.name if node else "",
            "sqnr_db": round(db, 2), "output": n in graph.output_names,
        })  # fmt: skip
    rows.sort(key=lambda r: r["sqnr_db"])
    return rows


__all__ = ["Simulator", "layer_sqnr", "quantized_graph", "sqnr_db"]
