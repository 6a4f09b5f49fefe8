"""The simulator: the JAX forward with fake-quantization at every quantized tensor of a plan.

It says what a correct integer runtime outputs: weights are the plan's integers dequantized,
biases the int32 values times s_in*s_w, every quantized activation goes through
quantize → clamp → dequantize with the target's rounding. Exporters are right when their
runtime reproduces this.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
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
    (scale, zero point and integer bounds of each are scalar arguments) and which constants
    (weights, biases) are arguments. One compiled program then serves every plan of the same
    layout: it can be compiled from the PlanSpec before calibration has produced a number, and
    a search over ranges never recompiles. (Scalar arguments per tensor, not one vector: on an
    H100 the vector form took 1.7x longer to compile.)"""

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
        """The layout of the plans a PlanSpec makes (from the spec alone, before calibration)."""
        acts = [t.name for t in spec.tensors.values()
                if t.role == "activation" and t.dtype != "float32"]  # fmt: skip
        consts = [t.name for t in spec.tensors.values()
                  if t.role in ("weight", "bias") and t.name in graph.constants]  # fmt: skip
        return SimLayout(tuple(sorted(acts)), tuple(sorted(consts)), spec.target.quant.rounding)

    def admits(self, plan: QuantPlan, graph: Graph) -> bool:
        """Can this layout simulate `plan` (the same quantized activations; its constants are
        slots)? A plan that turned an activation float afterwards needs its own program."""
        other = SimLayout.of_plan(plan, graph)
        return (other is not None and other.rounding == self.rounding
                and other.activations == self.activations
                and set(other.constants) <= set(self.constants))  # fmt: skip

    def watch(self, graph: Graph) -> list[str]:
        """The tensors a per-layer report over this layout watches (outputs first)."""
        inner = [n for n in self.activations
                 if n not in graph.input_names and n not in graph.output_names]  # fmt: skip
        floating = [n for n in [*graph.output_names, *inner]
                    if np.issubdtype(_dtype(graph, n), np.floating)]  # fmt: skip
        return floating

    def arguments(self, plan: QuantPlan, graph: Graph) -> dict[str, Any]:
        """The plan's numbers in this layout's argument structure."""
        acts = {}
        for name in self.activations:
            t = plan.tensors[name]
            q = t.qdtype
            acts[name] = {k: np.float32(v) for k, v in (("scale", float(t.scale)),
                          ("zero_point", float(t.zero_point)), ("qmin", q.qmin), ("qmax", q.qmax))}  # fmt: skip
        consts = {}
        for name in self.constants:
            t = plan.tensors.get(name)
            value = graph.constants[name]
            if t is not None and t.role in ("weight", "bias") and t.is_quantized:
                value = t.dequantized().astype(value.dtype)
            consts[name] = value
        return {"activations": acts, "constants": consts}

    def argument_specs(self, graph: Graph) -> dict[str, Any]:
        scalar = jax.ShapeDtypeStruct((), np.float32)
        acts = {n: dict.fromkeys(("scale", "zero_point", "qmin", "qmax"), scalar)
                for n in self.activations}  # fmt: skip
        consts = {k: jax.ShapeDtypeStruct(graph.constants[k].shape, graph.constants[k].dtype)
                  for k in self.constants}  # fmt: skip
        return {"activations": acts, "constants": consts}


def simulate_env(graph: Graph, layout: SimLayout, feed: Mapping[str, Any],
                 args: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The simulated forward (every value) with the plan's numbers given as `args`
    (`SimLayout.arguments`); traceable, the same arithmetic as `Simulator`."""
    import jax.numpy as jnp

    acts = args["activations"]

    def fake_quant(name: str, value: Any) -> Any:
        a = acts.get(name)
        if a is None or not jnp.issubdtype(value.dtype, jnp.floating):
            return value
        s, z = a["scale"], a["zero_point"]
        v = jnp.clip(round_half(value / s, layout.rounding) + z, a["qmin"], a["qmax"])  # type: ignore[arg-type]
        return ((v - z) * s).astype(value.dtype)

    return evaluate(graph, {**feed, **args["constants"]}, transform=fake_quant)


@dataclass(frozen=True)
class ReportPrograms:
    """The per-layer report as two compiled programs: the float forward returning the watched
    tensors (they stay on the device), and the simulated forward returning, per tensor, the
    signal and noise energies against them. Two programs compile faster than one (XLA's GPU
    compile time grows faster than the program: 16 s for the pair as one program on an H100,
    3.4 s and 3.7 s apart) and can compile at the same time."""

    layout: SimLayout
    watch: tuple[str, ...]
    float_taps: Any
    energies: Any


def float_taps_program(graph: Graph, watch: Sequence[str]) -> Any:
    """jitted batch -> {tensor: values [B, ...]} of the float forward."""

    def one(feed: Mapping[str, Any]) -> dict[str, Any]:
        env = evaluate(graph, feed)  # traced once: every watched tensor comes from this env
        return {n: env[n] for n in watch}

    def taps(batch: Mapping[str, Any]) -> dict[str, Any]:
        return jax.vmap(one)(batch)

    return jit(taps)


def energies_program(graph: Graph, layout: SimLayout, watch: Sequence[str]) -> Any:
    """jitted (batch, args, float taps) -> {tensor: [signal, noise]} summed over the batch."""
    import jax.numpy as jnp

    def one(feed: Mapping[str, Any], ref: Mapping[str, Any], args: Mapping[str, Any]) -> Any:
        got = simulate_env(graph, layout, feed, args)
        out = {}
        for n in watch:
            x = jnp.asarray(ref[n], jnp.float64)
            d = x - jnp.asarray(got[n], jnp.float64)
            out[n] = jnp.stack([jnp.sum(x * x), jnp.sum(d * d)])
        return out

    def total(batch: Mapping[str, Any], args: Mapping[str, Any], ref: Mapping[str, Any]) -> Any:
        per = jax.vmap(one, in_axes=(0, 0, None))(batch, ref, args)
        return {k: v.sum(axis=0) for k, v in per.items()}

    return jit(total)


def compile_float_taps(graph: Graph, layout: SimLayout, samples: int) -> Any:
    """The float half of `ReportPrograms`, compiled for `samples` feeds (thread-safe)."""
    batch = _batch_specs(graph, samples)
    with jax.enable_x64(True):
        return float_taps_program(graph, layout.watch(graph)).lower(batch).compile()


def compile_energies(graph: Graph, layout: SimLayout, samples: int) -> Any:
    """The simulated half of `ReportPrograms`, compiled for `samples` feeds (thread-safe); needs
    no numbers: the plan comes as arguments."""
    batch = _batch_specs(graph, samples)
    watch = layout.watch(graph)
    ref = {n: jax.ShapeDtypeStruct((samples, *graph.info(n).shape), graph.info(n).dtype)  # type: ignore[union-attr,misc]
           for n in watch}  # fmt: skip
    with jax.enable_x64(True):
        fn = energies_program(graph, layout, watch)
        return fn.lower(batch, layout.argument_specs(graph), ref).compile()


def _batch_specs(graph: Graph, samples: int) -> dict[str, Any]:
    return {k: jax.ShapeDtypeStruct((samples, *v.shape), v.dtype)
            for k, v in input_specs(graph).items()}  # fmt: skip


def _dtype(graph: Graph, name: str) -> Any:
    info = graph.info(name)
    return info.dtype if info is not None else np.float32


def layer_sqnr(
    graph: Graph,
    plan: QuantPlan,
    feeds: list[Mapping[str, np.ndarray]],
    tensors: Collection[str] | None = None,
    programs: ReportPrograms | None = None,
    on_sample: Callable[[Mapping[str, Any], Mapping[str, Any]], None] | None = None,
    reference: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Per-tensor SQNR (dB) of the simulated forward against float, errors propagated, over
    `feeds`; worst first. Also the graph outputs.

    Runs `ReportPrograms` (two sums per tensor leave the device); `programs` compiled ahead of
    time (e.g. from the PlanSpec while calibration runs) are used when their layout admits this
    plan, otherwise they are compiled here. `on_sample(float_values, simulated_values)` sees
    each feed's outputs and tapped tensors (so a caller needs no second forward); `reference`
    is a float forward tapping at least these tensors (shared between plans); either one runs
    the report sample by sample through the general Simulator."""
    layout = SimLayout.of_plan(plan, graph)
    if layout is None or on_sample is not None or reference is not None:
        watch = report_tensors(plan, graph) if tensors is None else [
            *graph.output_names, *(n for n in tensors if n not in graph.output_names)]  # fmt: skip
        return _layer_sqnr_general(graph, plan, feeds, watch, on_sample, reference)
    if programs is None or tensors is not None or not programs.layout.admits(plan, graph):
        watch = layout.watch(graph)
        if tensors is not None:
            watch = [n for n in watch if n in graph.output_names or n in set(tensors)]
        programs = ReportPrograms(layout, tuple(watch), float_taps_program(graph, watch),
                                  energies_program(graph, layout, watch))  # fmt: skip
    interp = Interpreter(graph)
    prepared = [interp.prepare_feeds(f) for f in feeds]
    batch = {k: np.stack([f[k] for f in prepared]) for k in interp.specs}
    with jax.enable_x64(True):
        ref = programs.float_taps(batch)
        out = programs.energies(batch, programs.layout.arguments(plan, graph), ref)
        sums = {k: np.asarray(v, np.float64) for k, v in out.items()}
    return _sqnr_rows(graph, {k: (float(v[0]), float(v[1])) for k, v in sums.items()})


@dataclass(frozen=True)
class NoisePrograms:
    """`output_noise`'s two programs for batches of `chunk` feeds: the float outputs, and per
    sample the simulated outputs' mean noise/signal ratio (the plan comes as arguments)."""

    layout: SimLayout
    outputs: tuple[str, ...]
    chunk: int
    float_outputs: Any
    noise: Any


def _float_outputs(graph: Graph) -> tuple[str, ...]:
    return tuple(o for o in graph.output_names
                 if np.issubdtype(np.dtype(_dtype(graph, o)), np.floating))  # fmt: skip


def noise_programs(
    graph: Graph, layout: SimLayout, chunk: int, compile: bool = False
) -> NoisePrograms:
    """`NoisePrograms` for `layout` (jitted; `compile`: compiled now for batches of `chunk`,
    thread-safe, so it can run while calibration streams)."""
    import jax.numpy as jnp

    outs = _float_outputs(graph)

    def one(feed: Mapping[str, Any], ref: Mapping[str, Any], args: Mapping[str, Any]) -> Any:
        got = simulate_env(graph, layout, feed, args)
        ratios = []
        for o in outs:
            x = jnp.asarray(ref[o], jnp.float64)
            d = x - jnp.asarray(got[o], jnp.float64)
            ratios.append(jnp.sum(d * d) / jnp.maximum(jnp.sum(x * x), 1e-30))
        return jnp.mean(jnp.stack(ratios))

    noise = jit(jax.vmap(one, in_axes=(0, 0, None)))
    taps = float_taps_program(graph, outs)
    if compile and outs:
        batch = _batch_specs(graph, chunk)
        ref = {o: jax.ShapeDtypeStruct((chunk, *graph.info(o).shape), graph.info(o).dtype)  # type: ignore[union-attr,misc]
               for o in outs}  # fmt: skip
        with jax.enable_x64(True):
            taps = taps.lower(batch).compile()
            noise = noise.lower(batch, ref, layout.argument_specs(graph)).compile()
    return NoisePrograms(layout, outs, chunk, taps, noise)


def output_noise(graph: Graph, plans: Sequence[QuantPlan], feeds: list[Mapping[str, np.ndarray]],
                 programs: NoisePrograms) -> list[float]:  # fmt: skip
    """For each plan (all admitted by `programs.layout`), how far its simulated outputs are
    from float on `feeds`: per sample, the mean over the graph's float outputs of noise
    energy / signal energy (1/SQNR, so outputs of any scale weigh alike); over samples, the
    median (one sample with a flipped decision must not decide). Feeds go in batches of
    `programs.chunk` (a last partial batch is dropped); one float forward serves every plan."""
    chunk = programs.chunk
    used = len(feeds) // chunk * chunk
    if not programs.outputs or used == 0:
        return [0.0 for _ in plans]
    interp = Interpreter(graph)
    prepared = [interp.prepare_feeds(f) for f in feeds[:used]]
    per_plan: list[list[float]] = [[] for _ in plans]
    with jax.enable_x64(True):
        args = [programs.layout.arguments(p, graph) for p in plans]
        for i in range(0, used, chunk):
            batch = {k: np.stack([f[k] for f in prepared[i : i + chunk]]) for k in interp.specs}
            ref = programs.float_outputs(batch)
            for j, a in enumerate(args):
                per_plan[j].extend(np.asarray(programs.noise(batch, ref, a), np.float64).tolist())
    return [float(np.median(v)) for v in per_plan]


def report_tensors(plan: QuantPlan, graph: Graph) -> list[str]:
    """The tensors a per-layer report watches: the outputs, then every quantized activation."""
    acts = [t.name for t in plan.tensors.values() if t.role == "activation" and t.is_quantized
            and t.name not in graph.input_names and t.name not in graph.output_names]  # fmt: skip
    return [*graph.output_names, *acts]


def _layer_sqnr_general(
    graph: Graph, plan: QuantPlan, feeds: list[Mapping[str, np.ndarray]], watch: list[str],
    on_sample: Callable[[Mapping[str, Any], Mapping[str, Any]], None] | None = None,
    reference: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """The same report through the general Simulator (plans with per-axis activations)."""
    taps = [n for n in watch if n not in graph.output_names]
    ref = reference if reference is not None else Interpreter(graph, taps=taps)
    sim = Simulator(graph, plan, taps=taps)
    sums: dict[str, tuple[float, float]] = {}
    for feed in feeds:
        a, b = ref(feed), sim(feed)
        if on_sample is not None:
            on_sample(a, b)
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
    "NoisePrograms",
    "SimLayout",
    "Simulator",
    "layer_sqnr",
    "noise_programs",
    "output_noise",
    "quantized_graph",
    "report_tensors",
    "simulate_env",
    "sqnr_db",
]
