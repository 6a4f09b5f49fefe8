"""The calibration pipeline as one call (used by the CLI, the benchmarks and the tests):
load → prepare (fixed shapes, folding, canonical ops, quantization-friendly folds) → resolve
the recipe against the target (fails before any data is read) → stream calibration data →
QuantPlan → per-layer SQNR report on held-out samples."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.files import file_sha256
from edgeq.ir.exported import target_rewrites
from edgeq.ir.graph import Graph
from edgeq.ir.onnx_io import load_model
from edgeq.ir.passes import (
    QUANTIZATION_PASSES,
    STANDARD_PASSES,
    matmul_as_conv,
    prepare,
    quantized_copies,
    run_passes,
)
from edgeq.quant.calibrate import (
    calibration_devices,
    collect_statistics,
    find_token_mask,
    shard_batch_size,
    stack_batches,
)
from edgeq.quant.plan import QuantPlan, TensorQuant
from edgeq.quant.planner import finalize_plan, integer_derived, make_spec
from edgeq.quant.recipe import Recipe
from edgeq.quant.simulate import (
    ReportPrograms,
    SimLayout,
    compile_energies,
    compile_float_taps,
    layer_sqnr,
)
from edgeq.support import require_support
from edgeq.targets import load_target

log = logging.getLogger(__name__)
RARE_CHOICE_SAMPLES = 16  # calibration samples that choose the rare-value cut
RARE_CHOICE_MARGIN_DB = 0.5  # ... and by how much a cut must beat the recipe's to replace it
RARE_CHOICE_CHUNK = 8  # ... simulated in batches of this many (one compiled program)
DIAGNOSIS_SAMPLES = 2


def prepare_for_quantization(
    graph: Graph,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    input_values: Mapping[str, Any] | None = None,
    target: str | None = None,
    recipe: Recipe | None = None,
) -> Graph:
    """`prepare` plus the quantization-friendly folds (affine blocks into convs), and the
    target's own graph needs (a quantized copy of float LayerNorm outputs for the MatMuls that
    read them, on targets that keep the residual stream float)."""
    # the standard pipeline's closing shape inference is left to the quantization passes
    standard = STANDARD_PASSES[:-1] if STANDARD_PASSES[-1][0] == "infer_shapes" else STANDARD_PASSES
    graph = run_passes(prepare(graph, input_shapes, input_values, standard), QUANTIZATION_PASSES)
    profile = load_target(target) if target is not None else None
    if profile is not None and profile.quant.high_precision == "float":
        graph = run_passes(graph, (("quantized_copies", quantized_copies),))
    if profile is not None and profile.raw.get("matmul_as_conv") and not _blocked(recipe, profile):
        graph = run_passes(graph, (("matmul_as_conv", matmul_as_conv),))
    if profile is not None:
        graph = run_passes(graph, target_rewrites(profile.raw.get("rewrites", [])))
    return graph


def _blocked(recipe: Recipe | None, profile: Any) -> bool:
    """Does the recipe ask for per-block weights on MatMuls (explicitly, or 4-bit on a target
    whose 4-bit default is per-block)? Then MatMuls stay MatMuls, where blocks are allowed."""
    base = (recipe or Recipe()).base
    rules = profile.quant
    act_bits = (
        base.act_bits if base.act_bits is not None else rules.act_bits_default(base.weight_bits)
    )
    if rules.block_requires_act_bits and act_bits < rules.block_requires_act_bits:
        return False  # blocks are not possible at these activation bits anyway
    if base.granularity is not None:
        return base.granularity == "per_block"
    return base.weight_bits == 4 and rules.granularity_default(4, act_bits) == "per_block"


class PhaseTimer:
    """Wall time per named phase, in order: `done(name)` closes the phase that ran since the
    last call; `add(name, s)` records a sub-phase measured elsewhere (subtract it with
    `done(..., minus=s)`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 3)

    def done(self, name: str, minus: float = 0.0) -> None:
        now = time.perf_counter()
        self.add(name, now - self._t - minus)
        self._t = now


@dataclass
class CalibrationRun:
    graph: Graph
    plan: QuantPlan
    calib_names: list[str]
    report_names: list[str]  # the evaluation samples (held out unless the data is too small)
    held_out: bool = True

    @property
    def report(self) -> dict[str, Any]:
        """The per-layer SQNR report (`edgeq report`), as stored in the plan."""
        return self.plan.report


def held_out_count(total: int, eval_samples: int) -> int:
    """How many of `total` samples to hold out for evaluation: `eval_samples`, but never more
    than a quarter of the data (calibration keeps at least three quarters); 0 when fewer than
    4 samples exist (then evaluation can only reuse calibration samples, and reports say so)."""
    return max(0, min(eval_samples, total // 4))


def calibrate_model(
    model: str | Path,
    calib: Any,
    target: str,
    recipe: Recipe | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    input_values: Mapping[str, Any] | None = None,
    samples: int | None = 256,
    seed: int = 0,
    batch_size: int = 8,
    eval_samples: int = 8,
    preprocess: Any = None,
    tokenizer: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    devices: int | None = None,
    diagnose: bool = False,
    layer_report: bool = True,
    graph: Graph | None = None,
    shared: Any = None,
    report_samples: int | None = None,
) -> CalibrationRun:
    """Calibrate `model` on `calib` (a path `--calib` accepts, or an iterable of feed dicts)
    for `target`. `progress(stage, done, total)` is called as work advances.

    `eval_samples` are held out of the calibration data for evaluation (at most a quarter of
    it, see `held_out_count`; 0: calibrate on everything); with `layer_report` their per-layer
    SQNR goes into `plan.report`. `graph` (already prepared for this target) and `shared`
    (`edgeq.multi_target.SharedStatistics`) let one calibration serve several targets.
    `report_samples` is the former name of `eval_samples`. `devices`: how many of JAX's
    devices the batches are split over (None: all; the batch size is rounded up to a
    multiple). `diagnose`: add each tensor's own contribution to the output error, with its
    causes, to the report (`edgeq.quant.diagnose`; a few seconds more)."""
    from edgeq.calibration import batches, disjoint, open_source, subset

    if report_samples is not None:
        eval_samples = report_samples
    phases = PhaseTimer()
    recipe = recipe or Recipe()
    if recipe.max_loss:
        from edgeq.budget import parse_budget

        parse_budget(recipe.max_loss)  # a bad budget fails before any work
    profile = load_target(target)
    model = Path(model)
    run_on = calibration_devices(devices)
    batch_size = shard_batch_size(batch_size, len(run_on))
    if graph is None:
        graph = prepare_for_quantization(load_model(model), input_shapes, input_values, target,
                                         recipe)  # fmt: skip
    require_support(graph, target)  # an op the target cannot run fails here, before data
    phases.done("load and prepare")
    spec = make_spec(graph, recipe, profile)  # an impossible recipe fails here, before data
    source = open_source(calib, graph.inputs, preprocess=preprocess, tokenizer=tokenizer)
    awq: dict[str, Any] = {}
    if any(t.role == "weight" and t.awq for t in spec.tensors.values()):
        graph, awq = _awq(graph, spec, recipe, source, subset(source, min(samples or len(source), len(source)), seed),
                          find_token_mask(graph) if recipe.mask_handling else None)  # fmt: skip
        spec = make_spec(graph, recipe, profile)
        phases.done("activation-aware scaling")
    island: dict[str, Any] = {}
    if profile.quant.float_residual and (recipe.branch_scales or recipe.smoothing):
        graph, island = _float_island_scales(graph, recipe, source, subset(source, min(samples or len(source), len(source)), seed),
                                             find_token_mask(graph) if recipe.mask_handling else None)  # fmt: skip
        if island:
            spec = make_spec(graph, recipe, profile)
            phases.done("float-island scales")
    total = len(source)
    n_eval = held_out_count(total, eval_samples)
    n_calib = min(samples or total, total - n_eval)
    if n_eval:
        calib_names, report_names = disjoint(source, n_calib, n_eval, seed)
    else:
        calib_names, report_names = subset(source, n_calib, seed), []
    held_out = bool(report_names)
    if not report_names and eval_samples:
        report_names = calib_names[:eval_samples]  # too little data to hold any out: say so
    observers = spec.observers()
    # the per-layer report's program needs no numbers (the plan comes as arguments): compile it
    # in a worker thread while the statistics step compiles and the data streams
    ahead = _compile_report_ahead(
        graph, SimLayout.of_spec(spec, graph), len(report_names) if layer_report else 0
    )
    token_mask = find_token_mask(graph) if recipe.mask_handling else None
    exact = integer_derived(graph)
    rare_names: list[str] = []
    rare_program = None
    noise_ahead = None
    if recipe.rare_values and recipe.base.act_observer is None and calib_names:
        # min-max ranges that rare values set are cut after the min-max pass (a second, short
        # pass of tail counts); its program takes the ranges as arguments: compile it now
        rare_names = [n for n, o in observers.items() if o.name == "minmax" and n not in exact
                      and n not in graph.output_names]  # fmt: skip
        few = min(len(calib_names), recipe.rare_values_samples, batch_size)
        rare_program = _compile_ahead(_tail_counts_program, graph, rare_names, few, token_mask)
        if recipe.rare_values_tail == "auto" and len(calib_names) >= RARE_CHOICE_CHUNK:
            from edgeq.quant.simulate import noise_programs

            layout = SimLayout.of_spec(spec, graph)
            if layout is not None:
                noise_ahead = _compile_ahead(noise_programs, graph, layout, RARE_CHOICE_CHUNK, True)

    def tick(n: int) -> None:
        if progress is not None:
            tick.done += n  # type: ignore[attr-defined]
            progress("collecting statistics", tick.done, len(calib_names))  # type: ignore[attr-defined]

    tick.done = 0  # type: ignore[attr-defined]
    t0 = time.perf_counter()

    def collect(stats: Mapping[str, tuple[str, Any]]) -> Any:
        stream = (feeds for _, feeds in batches(source, calib_names, graph.inputs, batch_size))
        return collect_statistics(graph, stats, stream, tick, token_mask=token_mask,
                                  unmasked=exact, devices=run_on)  # fmt: skip

    if shared is not None:
        result = shared.collect(graph, observers, calib_names, collect)
    else:
        result = collect({n: (n, o) for n, o in observers.items()})
    phases.add("compile statistics step", result.compile_seconds)
    phases.done("stream calibration data", minus=result.compile_seconds)
    mask_path = sorted(exact & set(observers))
    if token_mask and mask_path and calib_names:
        # the mask path (token counts, expanded masks) is quantized on integer-only targets:
        # its range must cover every mask, not only the calibration sentences' lengths
        from edgeq.calibration import validate

        sample = validate(source.load(calib_names[0]), graph.inputs, calib_names[0])
        extremes = collect_statistics(
            graph, {n: (n, observers[n]) for n in mask_path},
            stack_batches(mask_extremes(sample, token_mask), 2),
        )  # fmt: skip
        for n in mask_path:
            result.states[n] = observers[n].merge(result.states[n], extremes.states[n])
        phases.done("mask extremes")
    rare: dict[str, Any] = {}
    tails = None
    keep_max = [n for n in rare_names if spec.tensors[n].keep_max]
    if rare_names:
        # min-max ranges that rare values set are cut (edgeq.algorithms.rare_values)
        from edgeq.algorithms.rare_values import TAIL, count_tails, cut_states, tail_facts

        few_names = calib_names[: recipe.rare_values_samples]
        stream = (feeds for _, feeds in batches(source, few_names, graph.inputs, batch_size))
        tails = count_tails(graph, result.states, rare_names, stream, token_mask=token_mask,
                            program=_ahead_result(rare_program, "rare-value tail counts"))  # fmt: skip
        minmax_states = result.states
        tail = TAIL if recipe.rare_values_tail == "auto" else float(recipe.rare_values_tail)
        result.states, changed = cut_states(minmax_states, tails, tail, keep_max)
        rare = tail_facts(tails, changed, tail, keep_max) if tails.ranges else {"tensors": 0}
        phases.done("cut rare values")
    from edgeq.algorithms.data_aware import requantized_weights

    plan = finalize_plan(
        graph, spec, result.states, requantized=requantized_weights(graph, spec),
        model={
            "file": model.name, "path": str(model.resolve()), "sha256": file_sha256(model),
            "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()},
            "input_values": dict(input_values or {}),
        },
        calibration={
            "source": str(calib) if isinstance(calib, str | Path) else type(calib).__name__,
            "samples": result.samples, "seed": seed, "batch_size": batch_size,
            "seconds": round(time.perf_counter() - t0, 3), "observed_tensors": len(observers),
            "padding_ignored_via": token_mask, **({"rare_values": rare} if rare else {}),
            "devices": {"count": result.devices, "platform": run_on[0].platform},
        },
    )  # fmt: skip
    if tails is not None and tails.ranges and recipe.rare_values_tail == "auto":
        plan = _choose_rare_tail(graph, spec, plan, minmax_states, tails, keep_max, source,
                                 calib_names, _ahead_result(noise_ahead, "output noise programs"))  # fmt: skip
        phases.done("choose rare-value cut")
    phases.done("plan")
    from edgeq.calibration import validate

    if awq:
        plan.calibration["awq"] = awq
    plan.calibration.update(island)
    plan = _weight_algorithms(graph, spec, plan, recipe, source, calib_names, token_mask, progress)
    phases.done("weight algorithms")
    if recipe.refine_top > 0:
        from edgeq.algorithms.refine import refine_ranges

        names = calib_names[: recipe.refine_samples]
        refine_feeds = [validate(source.load(n), graph.inputs, n) for n in names]
        plan = refine_ranges(
            graph, plan, refine_feeds, top_k=recipe.refine_top,
            progress=(lambda d, t: progress("refining ranges", d, t)) if progress else None,
        )  # fmt: skip
        phases.done("refine")
    if report_names and layer_report:
        feeds = [source.load(n) for n in report_names]
        feeds = [validate(f, graph.inputs, n) for f, n in zip(feeds, report_names, strict=True)]
        if progress is not None:
            progress("per-layer error report", 0, len(feeds))
        plan.report = {
            "samples": len(feeds),
            "held_out": held_out,
            "layers": layer_sqnr(graph, plan, feeds, programs=_report_programs(ahead)),
        }
        phases.done("per-layer report")
    if diagnose:
        from edgeq.quant.diagnose import diagnose as diagnose_plan

        names = report_names or calib_names
        few = [validate(source.load(n), graph.inputs, n) for n in names[:DIAGNOSIS_SAMPLES]]
        if progress is not None:
            progress("diagnose", 0, len(few))
        plan.report["diagnosis"] = diagnose_plan(graph, plan, few).to_dict()
        phases.done("diagnose")
    plan.calibration["phases"] = phases.seconds
    return CalibrationRun(graph, plan, calib_names, report_names, held_out)


def _compile_report_ahead(graph: Graph, layout: SimLayout,
                          samples: int) -> tuple[SimLayout, list[str], Future[Any], Future[Any]] | None:  # fmt: skip
    """Compile the report's two programs in worker threads, at the same time."""
    if samples == 0:
        return None
    taps = _compile_ahead(compile_float_taps, graph, layout, samples)
    energies = _compile_ahead(compile_energies, graph, layout, samples)
    return layout, layout.watch(graph), taps, energies


def _tail_counts_program(graph: Graph, names: list[str], samples: int,
                         token_mask: str | None) -> Any:  # fmt: skip
    from edgeq.algorithms.rare_values import compile_tail_counts
    from edgeq.quant.simulate import _batch_specs

    return compile_tail_counts(graph, names, _batch_specs(graph, samples), token_mask)


def _compile_ahead(fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """`fn(*args)` in a worker thread (XLA compiles outside the GIL)."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="edgeq-compile")
    future = pool.submit(fn, *args)
    pool.shutdown(wait=False)
    return future


def _ahead_result(future: Future[Any] | None, what: str) -> Any:
    """What a worker compiled, or None (the caller compiles its own) if that failed."""
    if future is None:
        return None
    try:
        return future.result()
    except Exception as exc:  # a fallback, never fatal
        log.warning("%s compiled ahead failed (%s); compiling again", what, exc)
        return None


def _choose_rare_tail(graph: Graph, spec: Any, plan: QuantPlan, minmax: Mapping[str, Any],
                      tails: Any, keep_max: list[str], source: Any,
                      calib_names: Sequence[str], programs: Any) -> QuantPlan:  # fmt: skip
    """The plan whose rare-value cut (`RARE_TAILS`: none, or at most 1e-4 / 1e-3 of the values
    beyond the range) leaves its simulated outputs closest to float (`output_noise`: the
    median sample) on the last `RARE_CHOICE_SAMPLES` calibration samples (the cut was counted
    on the first ones); another cut replaces the recipe's only when it is at least
    `RARE_CHOICE_MARGIN_DB` better. Why a median of 16: on PP-OCRv4 rec (1e-4 better than 1e-3
    on 256 held-out lines: CER 0.76% vs 1.00%), windows of 8 lines preferred 1e-3 in 4 of 16
    cases (by up to 2.4 dB), windows of 16 never (1e-4 ahead by 0.5-6 dB). Plans with
    per-axis activations are left as they are. The choice and each candidate's output SQNR
    go into the plan."""
    from edgeq.algorithms.rare_values import RARE_TAILS, cut_states, tail_facts
    from edgeq.calibration import validate
    from edgeq.quant.planner import with_activation_stats
    from edgeq.quant.simulate import noise_programs, output_noise

    layout = SimLayout.of_plan(plan, graph)
    names = list(calib_names[-RARE_CHOICE_SAMPLES:])
    names = names[: len(names) // RARE_CHOICE_CHUNK * RARE_CHOICE_CHUNK]  # whole batches
    if layout is None or not names:
        return plan
    if programs is None or not programs.layout.admits(plan, graph):
        programs = noise_programs(graph, layout, RARE_CHOICE_CHUNK)
    chosen = plan.calibration.get("rare_values", {}).get("tail")
    plans, changes = {}, {}
    for tail in RARE_TAILS:
        if tail == chosen:
            plans[tail], changes[tail] = plan, plan.calibration["rare_values"]["cut"]
            continue
        states, changes[tail] = cut_states(minmax, tails, tail, keep_max)
        plans[tail] = with_activation_stats(plan, graph, spec, states)
    if not all(programs.layout.admits(p, graph) for p in plans.values()):
        return plan
    feeds = [validate(source.load(n), graph.inputs, n) for n in names]
    noise = dict(
        zip(plans, output_noise(graph, list(plans.values()), feeds, programs), strict=True)
    )
    best = min(noise, key=lambda t: (noise[t], t != chosen))  # ties keep the recipe's tail
    if noise[best] > noise[chosen] * 10 ** (-RARE_CHOICE_MARGIN_DB / 10):
        best = chosen
    out = plans[best]
    out.calibration["rare_values"] = {
        **tail_facts(tails, changes[best], best, keep_max),
        "chosen_by": f"least output noise against float (median of {len(names)} calibration "
        "samples)",
        "output_sqnr_db": {str(t): round(float(-10 * np.log10(max(v, 1e-30))), 2)
                           for t, v in noise.items()},
    }  # fmt: skip
    log.info("rare-value cut: tail %s (output SQNR by tail: %s)", best,
             out.calibration["rare_values"]["output_sqnr_db"])  # fmt: skip
    return out


def _report_programs(ahead: tuple[SimLayout, list[str], Future[Any], Future[Any]] | None) -> Any:
    """The programs compiled ahead, or None (the report then compiles its own) if that failed."""
    if ahead is None:
        return None
    layout, watch, taps, energies = ahead
    programs = (_ahead_result(taps, "report float program"),
                _ahead_result(energies, "report simulator program"))  # fmt: skip
    if None in programs:
        return None
    return ReportPrograms(layout, tuple(watch), *programs)


def _weight_algorithms(graph: Graph, spec: Any, plan: QuantPlan, recipe: Recipe, source: Any,
                       names: Sequence[str], token_mask: str | None,
                       progress: Callable[[str, int, int], None] | None) -> QuantPlan:  # fmt: skip
    """GPTQ/grids on the weights that ask for them (4-bit by default), streaming up to
    `recipe.algorithm_samples` calibration samples."""
    from edgeq.algorithms.data_aware import apply_weight_algorithms, weight_targets
    from edgeq.calibration import validate

    targets = weight_targets(graph, spec, plan)
    if not targets:
        return plan
    chosen = list(names[: recipe.algorithm_samples])

    def feeds() -> Any:
        return (validate(source.load(n), graph.inputs, n) for n in chosen)

    mixed = recipe.mixed_precision == "auto"
    blocked: dict[str, TensorQuant] = {}  # GPTQ-solved middle steps, for mixed precision
    plan, _ = apply_weight_algorithms(
        graph, spec, plan, feeds, recipe=recipe, targets=targets, token_mask=token_mask,
        progress=(lambda d, t: progress("gptq", d, t)) if progress else None,
        blocked=blocked if mixed else None,
    )  # fmt: skip
    if mixed and any(
        t.role == "weight" and t.is_quantized and t.qdtype.bits == 4 for t in plan.tensors.values()
    ):
        from edgeq.algorithms.data_aware import apply_mixed_precision

        search = [validate(source.load(n), graph.inputs, n) for n in chosen[:MIXED_SAMPLES]]
        plan, report = apply_mixed_precision(
            graph, spec, plan, search, search_budget(recipe),
            progress=(lambda d, t: progress("mixed precision", d, t)) if progress else None,
            token_mask=token_mask, blocked=blocked,
        )  # fmt: skip
        plan.calibration["mixed_precision"] = report
    return plan


def _awq(graph: Graph, spec: Any, recipe: Recipe, source: Any, names: Sequence[str],
         token_mask: str | None) -> tuple[Graph, dict[str, Any]]:  # fmt: skip
    """AWQ-style scaling on the float graph (before any calibration, so activation ranges see
    the scaled tensors): statistics over `recipe.algorithm_samples` samples, one search and an
    exact fold per site whose consumers ask for it."""
    from edgeq.algorithms.awq import apply_awq, find_sites, statistics_for
    from edgeq.algorithms.grids import grid_for, view_of
    from edgeq.calibration import validate
    from edgeq.quant.plan import TensorQuant
    from edgeq.quant.planner import weight_operand

    t0 = time.perf_counter()
    wanted = {n for n, t in spec.tensors.items() if t.role == "weight" and t.awq}
    sites = [s for s in find_sites(graph) if any(c.weight in wanted for c in s.consumers)]
    if not sites:
        return graph, {}
    grids = {}
    for node in graph.nodes:
        w = weight_operand(node, graph)
        t = spec.tensors.get(node.inputs[w[0]]) if w is not None else None
        if w is None or t is None or t.role != "weight":
            continue
        tq = TensorQuant(t.name, "weight", t.dtype, axis=t.axis, block=t.block, narrow=t.narrow,
                         symmetric=t.symmetric)  # fmt: skip
        rules = spec.target.quant
        grids[t.name] = (grid_for(tq, "minmax", rules.scale_dtype(tq.block), rules.affine_bias),
                         view_of(tq, graph.constants[t.name].shape, w[1], w[2]))  # fmt: skip
    stats = {k: v for site in sites for k, v in statistics_for(site, graph).items()}
    chosen = list(names[: recipe.algorithm_samples])
    feeds = (validate(source.load(n), graph.inputs, n) for n in chosen)
    result = collect_statistics(graph, stats, stack_batches(feeds, 8), token_mask=token_mask,
                                unmasked=integer_derived(graph))  # fmt: skip
    final = {k: stat.finalize({n: np.asarray(v) for n, v in result.states[k].items()})
             for k, (_, stat) in stats.items()}  # fmt: skip
    graph, scales, rows = apply_awq(graph, sites, final, grids)
    return graph, {"scales": scales, "sites": rows, "seconds": round(time.perf_counter() - t0, 3)}


ISLAND_SAMPLES = 32  # calibration samples the channel maxima around float islands come from


def _float_island_scales(graph: Graph, recipe: Recipe, source: Any, names: Sequence[str],
                         token_mask: str | None) -> tuple[Graph, dict[str, Any]]:  # fmt: skip
    """Targets whose LayerNorm runs in float (`float_residual`): per-channel scales on the
    residual branches (`edgeq.algorithms.branch_scales`) and SmoothQuant on the LayerNorm
    outputs the MatMuls read (`edgeq.algorithms.smoothing.smooth_copies`), both float-exact,
    from channel maxima over a few calibration samples (one pass)."""
    from edgeq.algorithms.branch_scales import branch_factors, find_branch_sites, rescale_branches
    from edgeq.algorithms.smoothing import smooth_copies, smoothing_sites
    from edgeq.calibration import validate
    from edgeq.quant.statistics import ChannelMagnitude

    branches = find_branch_sites(graph) if recipe.branch_scales else []
    norms = list(smoothing_sites(graph)) if recipe.smoothing else []
    width = {s.tensor: s.channels for s in branches}
    for y in norms:
        info = graph.info(y)
        if info is not None and info.is_static:
            width[y] = int(info.shape[-1])  # type: ignore[index,arg-type]
    if not width:
        return graph, {}
    stats = {t: (t, ChannelMagnitude(n)) for t, n in width.items()}
    feeds = (validate(source.load(n), graph.inputs, n) for n in list(names[:ISLAND_SAMPLES]))
    result = collect_statistics(graph, stats, stack_batches(feeds, 8), token_mask=token_mask,
                                unmasked=integer_derived(graph))  # fmt: skip
    absmax = {t: ChannelMagnitude(n).finalize({k: np.asarray(v) for k, v in result.states[t].items()})["max_abs"]
              for t, n in width.items()}  # fmt: skip
    facts: dict[str, Any] = {}
    factors = {s.tensor: c for s in branches if (c := branch_factors(absmax[s.tensor])) is not None}
    graph, rows = rescale_branches(graph, branches, factors)
    if rows:
        facts["branch_scales"] = rows
    graph, rows = smooth_copies(graph, {y: absmax[y] for y in norms if y in absmax})
    if rows:
        facts["smoothing"] = rows
    return graph, facts


MIXED_SAMPLES = 16  # calibration samples the bit-width search measures the output error on


def search_budget(recipe: Recipe) -> Any:
    """The mixed-precision budget from the recipe's --max-loss / --bpw: output metrics the
    search can measure itself (cosine, sqnr); a task metric (cer, top1, ...) is checked by the
    export verdict, and the search then uses its default rule within --bpw."""
    from edgeq.algorithms.mixed_precision import OUTPUT_METRICS, Budget
    from edgeq.budget import parse_budget

    loss = parse_budget(recipe.max_loss) if recipe.max_loss else None
    if loss is not None and loss.metric in OUTPUT_METRICS:
        return Budget(loss.metric, loss.value, recipe.bpw)
    return Budget(None, None, recipe.bpw)


def mask_extremes(feed: Mapping[str, Any], token_mask: str) -> list[dict[str, Any]]:
    """`feed` with the attention mask all real tokens, and with only the first one real."""
    mask = np.asarray(feed[token_mask])
    full, first = np.ones_like(mask), np.zeros_like(mask)
    first[..., 0] = 1
    return [{**feed, token_mask: full}, {**feed, token_mask: first}]


def graph_for_plan(model: str | Path, plan: QuantPlan) -> Graph:
    """Re-prepare the model exactly as the plan was made (shapes/values from the plan)."""
    shapes = {k: tuple(v) for k, v in plan.model.get("input_shapes", {}).items()}
    values = plan.model.get("input_values", {})
    recipe = Recipe.from_dict(plan.recipe) if plan.recipe else None
    graph = prepare_for_quantization(load_model(model), shapes, values, plan.target, recipe)
    scales = plan.calibration.get("awq", {}).get("scales")
    if scales:  # the AWQ factors the plan was made with, folded again
        from edgeq.algorithms.awq import refold
        from edgeq.quant.plan_check import PlanError

        try:
            graph = refold(graph, scales)
        except ValueError as exc:  # a plan made for another graph, or edited
            raise PlanError(str(exc), "use the plan made for this model, or calibrate it") from None
    return reapply_float_island_scales(graph, plan.calibration)


def reapply_float_island_scales(graph: Graph, calibration: Mapping[str, Any]) -> Graph:
    """The float-island rewrites a plan records (`_float_island_scales`: residual-branch
    scales and LayerNorm-output smoothing), applied again to a freshly prepared graph."""
    branches, smoothing = calibration.get("branch_scales"), calibration.get("smoothing")
    if not branches and not smoothing:
        return graph
    from edgeq.algorithms.branch_scales import reapply_branch_scales
    from edgeq.algorithms.smoothing import smooth_copies
    from edgeq.quant.plan_check import PlanError

    try:
        if branches:
            graph = reapply_branch_scales(graph, branches)
        if smoothing:
            scales = {r["tensor"]: np.asarray(r["scales"]) for r in smoothing}
            graph, rows = smooth_copies(graph, {}, scales=scales)
            if len(rows) != len(scales):
                raise ValueError("a smoothed LayerNorm output of the plan is not in this graph")
    except (ValueError, KeyError, TypeError) as exc:  # a plan made for another graph, or edited
        raise PlanError(f"float-island scales: {exc}",
                        "use the plan made for this model, or calibrate it") from None  # fmt: skip
    return graph
