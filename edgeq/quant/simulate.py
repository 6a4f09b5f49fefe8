"""The simulator: the JAX forward with fake-quantization at every quantized tensor of a plan.

It says what a correct integer runtime outputs: weights are the plan's integers dequantized,
biases the int32 values times s_in*s_w, every quantized activation goes through
quantize → clamp → dequantize with the target's rounding. Exporters are right when their
runtime reproduces this.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from edgeq.errors import EdgeqError
from edgeq.ir.graph import Graph
from edgeq.ir.interpreter import Interpreter, evaluate, input_specs
from edgeq.ir.jit import jit
from edgeq.quant.plan import QuantPlan, graph_fingerprint
from edgeq.quant.qtypes import round_half, sqnr_db


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


@dataclass(frozen=True)
class SimLayout:
    """The arguments of a parametric simulator program: which activations are fake-quantized
    (scale, zero point, bounds and an on/off switch per tensor are arguments) and which
    constants (weights, biases) are arguments. One compiled program then serves every plan of
    the same layout: it can be compiled from the PlanSpec before calibration has produced a
    single number, and a search over ranges never recompiles."""

    activations: tuple[str, ...]
    constants: tuple[str, ...]
    rounding: str

    @staticmethod
    def of_plan(plan: QuantPlan, graph: Graph) -> SimLayout | None:
        """None when the plan needs the general Simulator (per-axis activation parameters)."""
        acts = [t for t in plan.tensors.values() if t.role == "activation" and t.is_quantized]
        if any(np.ndim(t.scale) != 0 for t in acts):
            return None
        consts = [t.name for t in plan.tensors.values()
                  if t.role in ("weight", "bias") and t.name in graph.constants]  # fmt: skip
        return SimLayout(tuple(sorted(t.name for t in acts)), tuple(sorted(consts)), plan.rounding)

    @staticmethod
    def of_spec(spec: Any, graph: Graph) -> SimLayout:
        """The layout every plan of a PlanSpec fits (from the spec alone, before calibration)."""
        acts = [t.name for t in spec.tensors.values()
                if t.role == "activation" and t.dtype != "float32"]  # fmt: skip
        consts = [t.name for t in spec.tensors.values()
                  if t.role in ("weight", "bias") and t.name in graph.constants]  # fmt: skip
        return SimLayout(tuple(sorted(acts)), tuple(sorted(consts)), spec.target.quant.rounding)

    def watch(self, graph: Graph) -> list[str]:
        """The tensors a per-layer report over this layout watches (outputs first)."""
        inner = [n for n in self.activations
                 if n not in graph.input_names and n not in graph.output_names]  # fmt: skip
        return [*graph.output_names, *inner]

    def argument_specs(self, graph: Graph) -> dict[str, Any]:
        n = len(self.activations)
        f32 = jax.ShapeDtypeStruct((n,), np.float32)
        consts = {k: jax.ShapeDtypeStruct(graph.constants[k].shape, graph.constants[k].dtype)
                  for k in self.constants}  # fmt: skip
        return {"scale": f32, "zero_point": f32, "qmin": f32, "qmax": f32,
                "on": jax.ShapeDtypeStruct((n,), np.bool_), "constants": consts}  # fmt: skip

    def admits(self, plan: QuantPlan, graph: Graph) -> bool:
        """Can this layout simulate `plan` (its quantized activations and constants are slots)?"""
        other = SimLayout.of_plan(plan, graph)
        return (other is not None and other.rounding == self.rounding
                and set(other.activations) <= set(self.activations)
                and set(other.constants) <= set(self.constants))  # fmt: skip

    def arguments(self, plan: QuantPlan, graph: Graph) -> dict[str, Any]:
        """The plan's numbers in this layout's argument structure."""
        n = len(self.activations)
        scale, zp = np.ones(n, np.float32), np.zeros(n, np.float32)
        qmin, qmax = np.zeros(n, np.float32), np.zeros(n, np.float32)
        on = np.zeros(n, bool)
        for i, name in enumerate(self.activations):
            t = plan.tensors.get(name)
            if t is None or t.role != "activation" or not t.is_quantized:
                continue
            q = t.qdtype
            scale[i], zp[i], qmin[i], qmax[i] = float(t.scale), float(t.zero_point), q.qmin, q.qmax
            on[i] = True
        consts = {}
        for name in self.constants:
            t = plan.tensors.get(name)
            value = graph.constants[name]
            if t is not None and t.role in ("weight", "bias") and t.is_quantized:
                value = t.dequantized().astype(value.dtype)
            consts[name] = value
        return {"scale": scale, "zero_point": zp, "qmin": qmin, "qmax": qmax, "on": on,
                "constants": consts}  # fmt: skip


def simulate_env(graph: Graph, layout: SimLayout, feed: Mapping[str, Any],
                 args: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The simulated forward (every value) with the plan's numbers given as `args`
    (`SimLayout.arguments`); traceable, the same arithmetic as `Simulator`."""
    import jax.numpy as jnp

    index = {n: i for i, n in enumerate(layout.activations)}

    def fake_quant(name: str, value: Any) -> Any:
        i = index.get(name)
        if i is None or not jnp.issubdtype(value.dtype, jnp.floating):
            return value
        s, z = args["scale"][i], args["zero_point"][i]
        v = jnp.clip(round_half(value / s, layout.rounding) + z, args["qmin"][i], args["qmax"][i])  # type: ignore[arg-type]
        return jnp.where(args["on"][i], ((v - z) * s).astype(value.dtype), value)

    return evaluate(graph, {**feed, **args["constants"]}, transform=fake_quant)


def sqnr_program(graph: Graph, layout: SimLayout, watch: Sequence[str]) -> Any:
    """A jitted function (batch, args) -> {tensor: [signal, noise]} energies summed over the
    batch: the float and the simulated forward side by side, vmapped over samples, so only two
    numbers per tensor leave the device."""
    import jax.numpy as jnp

    floating = [n for n in watch if np.issubdtype(_dtype(graph, n), np.floating)]

    def energies(feed: Mapping[str, Any], args: Mapping[str, Any]) -> dict[str, Any]:
        ref = evaluate(graph, feed)
        got = simulate_env(graph, layout, feed, args)
        out = {}
        for n in floating:
            x = jnp.asarray(ref[n], jnp.float64)
            d = x - jnp.asarray(got[n], jnp.float64)
            out[n] = jnp.stack([jnp.sum(x * x), jnp.sum(d * d)])
        return out

    def total(batch: Mapping[str, Any], args: Mapping[str, Any]) -> dict[str, Any]:
        per = jax.vmap(energies, in_axes=(0, None))(batch, args)
        return {k: v.sum(axis=0) for k, v in per.items()}

    return jit(total)


def compile_sqnr_program(graph: Graph, layout: SimLayout, samples: int) -> tuple[SimLayout, Any]:
    """`sqnr_program` for `samples` feeds, compiled ahead of time (no numbers needed: the plan
    comes as arguments). Safe to call from a worker thread while calibration runs."""
    interp_specs = input_specs(graph)
    batch = {k: jax.ShapeDtypeStruct((samples, *v.shape), v.dtype) for k, v in interp_specs.items()}
    fn = sqnr_program(graph, layout, layout.watch(graph))
    with jax.enable_x64(True):
        return layout, fn.lower(batch, layout.argument_specs(graph)).compile()


def _dtype(graph: Graph, name: str) -> Any:
    info = graph.info(name)
    return info.dtype if info is not None else np.float32


def report_tensors(plan: QuantPlan, graph: Graph) -> list[str]:
    """The tensors a per-layer report watches: the outputs, then every quantized activation."""
    acts = [t.name for t in plan.tensors.values() if t.role == "activation" and t.is_quantized
            and t.name not in graph.input_names and t.name not in graph.output_names]  # fmt: skip
    return [*graph.output_names, *acts]


def layer_sqnr(
    graph: Graph,
    plan: QuantPlan,
    feeds: list[Mapping[str, np.ndarray]],
    tensors: Collection[str] | None = None,
    program: tuple[SimLayout, Any] | None = None,
) -> list[dict[str, Any]]:
    """Per-tensor SQNR (dB) of the simulated forward against float, errors propagated, over
    `feeds`; worst first. Also the graph outputs.

    One compiled program (`sqnr_program`) runs the float and the simulated forward side by
    side over all feeds and returns two sums per tensor. `program` = (layout, compiled) made
    ahead of time (e.g. from the PlanSpec while calibration runs) is used when its layout
    admits this plan; otherwise one is compiled here."""
    if tensors is not None:
        watch = [*graph.output_names, *(n for n in tensors if n not in graph.output_names)]
    else:
        watch = report_tensors(plan, graph)
    layout = SimLayout.of_plan(plan, graph)
    if program is not None and tensors is None and program[0].admits(plan, graph):
        layout, fn = program
    elif layout is not None:
        fn = sqnr_program(graph, layout, watch)
    else:
        return _layer_sqnr_general(graph, plan, feeds, watch)
    interp = Interpreter(graph)
    prepared = [interp.prepare_feeds(f) for f in feeds]
    batch = {k: np.stack([f[k] for f in prepared]) for k in interp.specs}
    with jax.enable_x64(True):
        sums = {
            k: np.asarray(v, np.float64)
            for k, v in fn(batch, layout.arguments(plan, graph)).items()
        }
    return _sqnr_rows(graph, {k: (float(v[0]), float(v[1])) for k, v in sums.items()
                              if k in set(watch)})  # fmt: skip


def _layer_sqnr_general(graph: Graph, plan: QuantPlan, feeds: list[Mapping[str, np.ndarray]],
                        watch: list[str]) -> list[dict[str, Any]]:  # fmt: skip
    """The same report through the general Simulator (plans with per-axis activations)."""
    taps = [n for n in watch if n not in graph.output_names]
    ref, sim = Interpreter(graph, taps=taps), Simulator(graph, plan, taps=taps)
    sums: dict[str, tuple[float, float]] = {}
    for feed in feeds:
        a, b = ref(feed), sim(feed)
        for n in watch:
            x = np.asarray(a[n], np.float64)
            if not np.issubdtype(np.asarray(a[n]).dtype, np.floating):
                continue
            s, e = sums.get(n, (0.0, 0.0))
            sums[n] = (
                s + float(np.sum(x * x)),
                e + float(np.sum((x - np.asarray(b[n], np.float64)) ** 2)),
            )
    return _sqnr_rows(graph, sums)


def _sqnr_rows(graph: Graph, sums: Mapping[str, tuple[float, float]]) -> list[dict[str, Any]]:
    producers = graph.producers()
    rows = []
    for n, (signal, noise) in sums.items():
        db = float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-30) / noise)
        node = producers.get(n)
        rows.append({
            "tensor": n, "op": node.op_type if node else "input", "node": node.name if node else "",
            "sqnr_db": round(float(db), 2), "output": n in graph.output_names,
        })  # fmt: skip
    rows.sort(key=lambda r: r["sqnr_db"])
    return rows


__all__ = [
    "SimLayout",
    "Simulator",
    "compile_sqnr_program",
    "layer_sqnr",
    "quantized_graph",
    "report_tensors",
    "simulate_env",
    "sqnr_db",
    "sqnr_program",
]
