"""The calibration engine: stream batches through the jitted, vmapped forward, updating
observer (and algorithm) statistics inside the compiled function so only fixed-size state
leaves it. Peak memory does not grow with the number of samples."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import numpy as np

from edgeq.ir.graph import Graph
from edgeq.ir.interpreter import evaluate
from edgeq.ir.jit import jit
from edgeq.quant.observers import Observer
from edgeq.quant.padding import find_token_mask, token_keep
from edgeq.quant.plan import QuantPlan
from edgeq.quant.planner import PlanSpec, finalize_plan, integer_derived, make_spec
from edgeq.quant.recipe import Recipe
from edgeq.quant.simulate import layer_sqnr
from edgeq.targets import TargetProfile

log = logging.getLogger(__name__)
Feeds = Mapping[str, np.ndarray]


class Statistic(Protocol):
    def init(self) -> dict[str, Any]: ...
    def update(self, state: dict[str, Any], x: Any) -> dict[str, Any]: ...


@dataclass
class CalibrationStats:
    states: dict[str, dict[str, np.ndarray]]  # by key (tensor name for observers)
    samples: int
    batches: int
    seconds: float
    compile_seconds: float = 0.0  # tracing, lowering and XLA compile of the steps (in `seconds`)
    devices: int = 1  # devices the batches were split over


def calibration_devices(count: int | None = None) -> list[Any]:
    """The devices calibration runs on: the first `count` of JAX's default backend (all when
    None). Raises InputError when more are asked for than exist."""
    from edgeq.errors import InputError

    available = jax.devices()
    if count is None or count == 0:
        return list(available)
    if count < 0 or count > len(available):
        raise InputError(
            f"--devices {count}: this machine has {len(available)} {available[0].platform} "
            f"device(s)",
            f"pass --devices 1..{len(available)} (or leave it out to use all)",
        )
    return list(available[:count])


def shard_batch_size(batch_size: int, devices: int) -> int:
    """The smallest multiple of `devices` that is at least `batch_size` (each device gets an
    equal slice of every full batch)."""
    return max(devices, -(-batch_size // devices) * devices)


def stack_batches(feeds: Iterable[Feeds], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Group single-sample feeds into stacked batches [B, *shape] (streaming)."""
    chunk: list[Feeds] = []
    for feed in feeds:
        chunk.append(feed)
        if len(chunk) == batch_size:
            yield {k: np.stack([f[k] for f in chunk]) for k in chunk[0]}
            chunk = []
    if chunk:
        yield {k: np.stack([f[k] for f in chunk]) for k in chunk[0]}


def collect_statistics(
    graph: Graph,
    stats: Mapping[str, tuple[str, Statistic]],
    batches: Iterable[Mapping[str, np.ndarray]],
    progress: Callable[[int], None] | None = None,
    group_bytes: int = 64 << 20,
    token_mask: str | None = None,
    unmasked: Collection[str] = (),
    devices: Sequence[Any] | None = None,
) -> CalibrationStats:
    """Run every batch ([B, *input_shape] per input) and update `stats` (key -> (tensor,
    statistic)). The forward is vmapped over the batch axis of a batch-1 graph and jitted
    together with the statistic updates.

    With several `devices` (default: JAX's first device only) every batch is split along its
    batch axis over them (data parallel, `jax.sharding`); the statistic states are replicated
    and XLA reduces the updates across devices (min/max, histogram counts, Hessian sums). A
    batch whose size the device count does not divide runs replicated instead. The result is
    the same as on one device up to float summation order.

    Batches go through plain reductions (`Observer.update_unfiltered`: XLA's library kernels,
    about half the compile and run time of reductions with a select in them) as long as every
    value counts; the first batch holding NaN, ±inf or mask fill is redone with the filtering
    updates, as is every batch after it. Observers that need only a batch's extremes (minmax,
    ema_minmax) are folded per kind as one vector, so 200 tensors do not compile 200 tiny
    state kernels. In the filtering step, other statistics of the same kind on tensors of the
    same shape are stacked into one vmapped update (one kernel set per group instead of one
    per tensor); groups are capped at `group_bytes` per sample.

    `token_mask` names an attention-mask input ([1, S], nonzero = real token): values at padded
    positions (every axis of length S) become NaN, which observers ignore, so padding never
    sets a range. Tensors in `unmasked` (the mask path itself, computed from integer inputs
    only) are observed everywhere: their padded values are real values at run time."""
    seq = int(graph.info(token_mask).shape[-1]) if token_mask else 0  # type: ignore[union-attr,index]
    tensors = sorted({t for t, _ in stats.values()})
    # observers that need only each batch's extremes are folded per kind, as vectors
    kinds: dict[Observer, list[str]] = {}
    for key, (_, stat) in stats.items():
        if isinstance(stat, Observer) and stat.extremes_suffice:
            kinds.setdefault(stat, []).append(key)
    packed = list(kinds.items())
    in_packed = {k for keys in kinds.values() for k in keys}
    single = {k: v for k, v in stats.items() if k not in in_packed}
    groups = _group_statistics(graph, single, group_bytes)

    def forward(feeds: Mapping[str, Any]) -> dict[str, Any]:
        env = evaluate(graph, feeds)
        if not token_mask:
            return {t: env[t] for t in tensors}
        real = jax.numpy.reshape(feeds[token_mask] != 0, (-1,))
        return {t: env[t] if t in unmasked else _mask_padding(env[t], real, seq) for t in tensors}

    def fold_packed(values: Mapping[str, Any], states: list[Any], filtering: bool) -> Any:
        out, exact = [], []
        for (obs, keys), state in zip(packed, states, strict=True):
            ext = [obs.extremes(values[stats[k][0]], filtering) for k in keys]
            lo, hi = jax.numpy.stack([e[2] for e in ext]), jax.numpy.stack([e[3] for e in ext])
            exact.append(jax.numpy.all(obs.counts_all(lo, hi)))
            out.append(jax.vmap(obs.fold, in_axes=(0, None, None, 0, 0))(state, None, None, lo, hi))
        return out, exact

    def fast(states: tuple[list[Any], dict[str, Any]], batch: Mapping[str, Any]) -> Any:
        """Plain reductions, one update per statistic; (states, exact)."""
        values = jax.vmap(forward)(batch)
        out, exact = fold_packed(values, states[0], filtering=False)
        rest = {}
        for key, (tensor, stat) in single.items():
            rest[key], ok = _unfiltered(stat, states[1][key], values[tensor])
            exact.append(ok)
        return (out, rest), jax.numpy.all(jax.numpy.stack(exact)) if exact else True

    def filtered(states: tuple[list[Any], dict[str, Any]], batch: Mapping[str, Any]) -> Any:
        """Filtering updates; statistics of a kind on same-shape tensors are stacked into one
        vmapped update (fewer kernels to compile on 200-tensor models)."""
        values = jax.vmap(forward)(batch)
        out, _ = fold_packed(values, states[0], filtering=True)
        rest = {}
        for stat, keys in groups:
            if len(keys) == 1:
                rest[keys[0]] = stat.update(states[1][keys[0]], values[single[keys[0]][0]])
                continue
            stacked = jax.numpy.stack([values[single[k][0]] for k in keys])
            state = jax.tree.map(lambda *v: jax.numpy.stack(v), *[states[1][k] for k in keys])
            new = jax.vmap(stat.update)(state, stacked)
            rest.update({k: jax.tree.map(lambda v, j=j: v[j], new) for j, k in enumerate(keys)})
        return out, rest

    devices = list(devices) if devices else jax.devices()[:1]
    place = _placement(devices)
    compiled: dict[tuple[Any, ...], Any] = {}
    compile_seconds = 0.0

    def step(fn: Callable[..., Any], states: Any, batch: Mapping[str, Any]) -> Any:
        """fn(states, batch), compiled once per (step, batch shapes and layout) ahead of the
        call so the compile time is measured apart from the run time."""
        nonlocal compile_seconds
        layout = tuple((k, v.shape, str(v.dtype), v.sharding) for k, v in sorted(batch.items()))
        key = (fn.__name__, layout)
        if key not in compiled:
            t = time.perf_counter()
            jitted = jit(fn, **place.jit_shardings(batch))
            compiled[key] = jitted.lower(states, batch).compile()
            compile_seconds += time.perf_counter() - t
        return compiled[key](states, batch)

    # NaN padding (token masks) needs the filtering updates from the start; otherwise the
    # plain ones run until a batch holds a value they cannot ignore (NaN, ±inf, mask fill),
    # which is redone with the filtering ones, as is every batch after it
    filtering = bool(token_mask)
    states: tuple[list[Any], dict[str, Any]] = (
        [{n: np.stack([np.asarray(v)] * len(keys)) for n, v in obs.init().items()}
         for obs, keys in packed],
        {key: stat.init() for key, (_, stat) in single.items()},
    )  # fmt: skip
    t0 = time.perf_counter()
    n_samples = n_batches = 0
    with jax.enable_x64(True):
        states = place.replicate(states)
        for batch in batches:
            size = len(next(iter(batch.values())))
            batch = place.batch({k: np.asarray(v) for k, v in batch.items()}, size)
            if not filtering:
                new, exact = step(fast, states, batch)
                if bool(exact):
                    states = new
                else:
                    log.info("calibration batch %d holds NaN, inf or mask fill: observers "
                             "switch to their filtering updates", n_batches)  # fmt: skip
                    filtering = True
            if filtering:
                states = step(filtered, states, batch)
            n_samples += size
            n_batches += 1
            if progress is not None:
                progress(size)
        host = {k: {n: np.asarray(v) for n, v in state.items()} for k, state in states[1].items()}
        for (_, keys), state in zip(packed, states[0], strict=True):
            arrays = {n: np.asarray(v) for n, v in state.items()}
            host.update({k: {n: v[j] for n, v in arrays.items()} for j, k in enumerate(keys)})
    return CalibrationStats(host, n_samples, n_batches, time.perf_counter() - t0,
                            compile_seconds, len(devices))  # fmt: skip


@dataclass(frozen=True)
class _Placement:
    """Where calibration arrays live: one device, or a 1-D mesh with the batch axis split."""

    devices: tuple[Any, ...]

    def replicate(self, tree: Any) -> Any:
        if len(self.devices) == 1:
            return jax.device_put(tree, self.devices[0])
        return jax.device_put(tree, self._sharding(split=False))

    def batch(self, batch: dict[str, np.ndarray], size: int) -> Any:
        if len(self.devices) == 1:
            return jax.device_put(batch, self.devices[0])
        return jax.device_put(batch, self._sharding(split=size % len(self.devices) == 0))

    def jit_shardings(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """in/out shardings for a step: states replicated in and out, the batch as placed."""
        if len(self.devices) == 1:
            return {}
        rep = self._sharding(split=False)
        return {"in_shardings": (rep, {k: v.sharding for k, v in batch.items()}),
                "out_shardings": rep}  # fmt: skip

    def _sharding(self, split: bool) -> Any:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        mesh = Mesh(np.asarray(self.devices), ("batch",))
        return NamedSharding(mesh, PartitionSpec("batch") if split else PartitionSpec())


def _placement(devices: Sequence[Any]) -> _Placement:
    return _Placement(tuple(devices))


def _unfiltered(stat: Any, state: Any, x: Any) -> tuple[Any, Any]:
    """(state, exact) from the statistic's plain update (`Observer.update_unfiltered`); a
    statistic without one counts every value anyway."""
    plain = getattr(stat, "update_unfiltered", None)
    return plain(state, x) if plain is not None else (stat.update(state, x), jax.numpy.bool_(True))


def _mask_padding(value: Any, real: Any, seq: int) -> Any:
    """NaN at padded token positions along every axis (after the batch axis) of length `seq`."""
    value = jax.numpy.asarray(value)
    if not jax.numpy.issubdtype(value.dtype, jax.numpy.floating):
        return value
    keep = token_keep(value.shape, real, seq)
    return value if keep is None else jax.numpy.where(keep, value, jax.numpy.nan)


def _group_statistics(
    graph: Graph, stats: Mapping[str, tuple[str, Statistic]], group_bytes: int
) -> list[tuple[Statistic, list[str]]]:
    by_kind: dict[tuple[Any, ...], list[str]] = {}
    for key, (tensor, stat) in stats.items():
        info = graph.info(tensor)
        shape = tuple(info.shape) if info is not None and info.shape is not None else (key,)
        dtype = str(info.dtype) if info is not None else ""
        by_kind.setdefault((stat, shape, dtype), []).append(key)
    groups: list[tuple[Statistic, list[str]]] = []
    for (stat, shape, _), keys in by_kind.items():
        per = 4 * int(np.prod([d for d in shape if isinstance(d, int)] or [1]))
        cap = max(1, group_bytes // max(per, 1))
        for i in range(0, len(keys), cap):
            groups.append((stat, keys[i : i + cap]))
    return groups


def calibrate(
    graph: Graph,
    feeds: Iterable[Feeds],
    target: TargetProfile,
    recipe: Recipe | None = None,
    *,
    batch_size: int = 8,
    report_feeds: Sequence[Feeds] = (),
    model: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    spec: PlanSpec | None = None,
) -> QuantPlan:
    """Resolve the recipe (fails before any work if the target cannot run it), stream the
    calibration feeds, and return the QuantPlan (with a per-layer SQNR report on
    `report_feeds` when given)."""
    recipe = recipe or Recipe()
    spec = spec or make_spec(graph, recipe, target)
    observers = spec.observers()
    result = collect_statistics(
        graph,
        {n: (n, o) for n, o in observers.items()},
        stack_batches(feeds, batch_size),
        progress,
        token_mask=find_token_mask(graph) if recipe.mask_handling else None,
        unmasked=integer_derived(graph),
    )
    if result.samples == 0:
        from edgeq.errors import InputError

        raise InputError("no calibration samples", "point --calib at a folder with samples")
    plan = finalize_plan(
        graph, spec, result.states, model=model,
        calibration={"samples": result.samples, "batches": result.batches,
                     "seconds": round(result.seconds, 3), "batch_size": batch_size,
                     "observed_tensors": len(observers)},
    )  # fmt: skip
    if report_feeds:
        rows = layer_sqnr(graph, plan, list(report_feeds))
        plan.report = {"samples": len(report_feeds), "layers": rows}
    return plan
