"""The calibration pipeline as one call (used by the CLI, the benchmarks and the tests):
load → prepare (fixed shapes, folding, canonical ops, quantization-friendly folds) → resolve
the recipe against the target (fails before any data is read) → stream calibration data →
QuantPlan → per-layer SQNR report on held-out samples."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.files import file_sha256
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
from edgeq.quant.calibrate import collect_statistics, find_token_mask, stack_batches
from edgeq.quant.plan import QuantPlan
from edgeq.quant.planner import finalize_plan, integer_derived, make_spec
from edgeq.quant.recipe import Recipe
from edgeq.quant.simulate import layer_sqnr
from edgeq.targets import load_target

log = logging.getLogger(__name__)


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
    return graph


def _blocked(recipe: Recipe | None, profile: Any) -> bool:
    """Does the recipe ask for per-block weights on MatMuls (explicitly, or 4-bit on a target
    whose 4-bit default is per-block)? Then MatMuls stay MatMuls, where blocks are allowed."""
    base = (recipe or Recipe()).base
    rules = profile.quant
    act_bits = base.act_bits if base.act_bits is not None else rules.default_act_bits
    if rules.block_requires_act_bits and act_bits < rules.block_requires_act_bits:
        return False  # blocks are not possible at these activation bits anyway
    if base.granularity is not None:
        return base.granularity == "per_block"
    return base.weight_bits == 4 and rules.default_granularity_4bit == "per_block"


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
    `report_samples` is the former name of `eval_samples`."""
    from edgeq.calibration import batches, disjoint, open_source, subset

    if report_samples is not None:
        eval_samples = report_samples
    recipe = recipe or Recipe()
    profile = load_target(target)
    model = Path(model)
    if graph is None:
        graph = prepare_for_quantization(load_model(model), input_shapes, input_values, target,
                                         recipe)  # fmt: skip
    spec = make_spec(graph, recipe, profile)  # an impossible recipe fails here, before data
    source = open_source(calib, graph.inputs, preprocess=preprocess, tokenizer=tokenizer)
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

    def tick(n: int) -> None:
        if progress is not None:
            tick.done += n  # type: ignore[attr-defined]
            progress("collecting statistics", tick.done, len(calib_names))  # type: ignore[attr-defined]

    tick.done = 0  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    token_mask = find_token_mask(graph) if recipe.mask_handling else None
    exact = integer_derived(graph)

    def collect(stats: Mapping[str, tuple[str, Any]]) -> Any:
        stream = (feeds for _, feeds in batches(source, calib_names, graph.inputs, batch_size))
        return collect_statistics(graph, stats, stream, tick, token_mask=token_mask,
                                  unmasked=exact)  # fmt: skip

    if shared is not None:
        result = shared.collect(graph, observers, calib_names, collect)
    else:
        result = collect({n: (n, o) for n, o in observers.items()})
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
    plan = finalize_plan(
        graph, spec, result.states,
        model={
            "file": model.name, "path": str(model.resolve()), "sha256": file_sha256(model),
            "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()},
            "input_values": dict(input_values or {}),
        },
        calibration={
            "source": str(calib) if isinstance(calib, str | Path) else type(calib).__name__,
            "samples": result.samples, "seed": seed, "batch_size": batch_size,
            "seconds": round(time.perf_counter() - t0, 3), "observed_tensors": len(observers),
            "padding_ignored_via": token_mask,
        },
    )  # fmt: skip
    from edgeq.calibration import validate

    if recipe.refine_top > 0:
        from edgeq.algorithms.refine import refine_ranges

        names = calib_names[: recipe.refine_samples]
        refine_feeds = [validate(source.load(n), graph.inputs, n) for n in names]
        plan = refine_ranges(
            graph, plan, refine_feeds, top_k=recipe.refine_top,
            progress=(lambda d, t: progress("refining ranges", d, t)) if progress else None,
        )  # fmt: skip
    if report_names and layer_report:
        feeds = [source.load(n) for n in report_names]
        feeds = [validate(f, graph.inputs, n) for f, n in zip(feeds, report_names, strict=True)]
        if progress is not None:
            progress("per-layer error report", 0, len(feeds))
        plan.report = {
            "samples": len(feeds),
            "held_out": held_out,
            "layers": layer_sqnr(graph, plan, feeds),
        }
    return CalibrationRun(graph, plan, calib_names, report_names, held_out)


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
    return prepare_for_quantization(load_model(model), shapes, values, plan.target, recipe)
