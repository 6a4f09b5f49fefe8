"""Apply the recipe's weight algorithms to a finished plan: the step between the planner's
data-free weights and the exporters.

For every planned weight at 4 bits (or with an explicit `method`):
- `rtn`: round to nearest on the target's grid (scale search, scales in the precision the
  target stores), data-free;
- `gptq` (the 4-bit default where the layer has an input Hessian: MatMul, Gemm, 2-D Conv incl.
  grouped/depthwise): solved layer by layer in graph order, each layer's Hessian from samples
  that ran through the layers already solved (`layerwise.run_layerwise`).
Layers that cannot take a method fall back to `rtn`, and the plan says why. Biases are
re-derived from the final weight scales. Returns the plan and a report per layer (method,
relative output error tr(ΔW H ΔWᵀ)/tr(W H Wᵀ) where a Hessian was measured) and per phase.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgeq.algorithms.gptq import GPTQConfig, gptq_weight, output_error
from edgeq.algorithms.grids import Grid, MatrixView, grid_for, rtn_weight, view_of
from edgeq.algorithms.layerwise import FakeQuant, LayerJob, layer_job, run_layerwise
from edgeq.algorithms.lut import lut_weight
from edgeq.algorithms.mixed_precision import Budget, Storage, choose_bits
from edgeq.algorithms.registry import get_algorithm
from edgeq.ir.graph import Graph
from edgeq.quant.plan import QuantPlan, TensorQuant
from edgeq.quant.planner import PlanSpec, derive_biases, weight_operand
from edgeq.quant.recipe import Recipe

log = logging.getLogger(__name__)
MIN_MIDDLE_BLOCK = 32  # finer blocks as a middle step: down to blocks of 32
Feeds = Mapping[str, np.ndarray]
HESSIAN_METHODS = ("gptq", "lut")


@dataclass(frozen=True)
class WeightTarget:
    """One planned weight an algorithm will (re)quantize."""

    name: str
    node_index: int
    method: str
    view: MatrixView
    grid: Grid
    job: LayerJob | None = None


def weight_targets(graph: Graph, spec: PlanSpec, plan: QuantPlan,
                   names: Iterable[str] | None = None) -> dict[str, WeightTarget]:  # fmt: skip
    """The planned weights the algorithms act on: 4-bit ones, and any with an explicit method
    other than rtn (or the `names` given)."""
    rules = spec.target.quant
    index = {}
    for i, node in enumerate(graph.nodes):
        w = weight_operand(node, graph)
        if w is not None:
            index.setdefault(node.inputs[w[0]], (i, w))
    wanted = set(names) if names is not None else None
    out: dict[str, WeightTarget] = {}
    for name, t in spec.tensors.items():
        tq = plan.tensors.get(name)
        if t.role != "weight" or tq is None or not tq.is_quantized or name not in index:
            continue
        if wanted is not None and name not in wanted:
            continue
        if wanted is None and tq.qdtype.bits != 4 and t.method == "rtn":
            continue
        get_algorithm(t.method, "weights")  # an unknown method fails naming the registered
        i, (_, channel, contract) = index[name]
        view = view_of(tq, graph.constants[name].shape, channel, contract)
        grid = grid_for(tq, t.observer or "mse", rules.scale_dtype(tq.block), rules.affine_bias)
        job = layer_job(graph, i) if t.method in HESSIAN_METHODS else None
        out[name] = WeightTarget(name, i, t.method, view, grid, job)
    return out


def requantized_weights(graph: Graph, spec: PlanSpec) -> set[str]:
    """The weights `weight_targets` will pick (and `apply_weight_algorithms` quantize again),
    known from the spec before the plan exists: `finalize_plan(requantized=...)` skips their
    clipping search."""
    from edgeq.quant.qtypes import qdtype

    operands = {node.inputs[w[0]] for node in graph.nodes
                if (w := weight_operand(node, graph)) is not None}  # fmt: skip
    out = set()
    for name, t in spec.tensors.items():
        if t.role != "weight" or name not in operands or t.dtype in ("float32", "float16"):
            continue
        if qdtype(t.dtype, t.narrow).bits == 4 or t.method != "rtn":
            out.add(name)
    return out


def apply_weight_algorithms(
    graph: Graph,
    spec: PlanSpec,
    plan: QuantPlan,
    feeds: Callable[[], Iterable[Feeds]],
    *,
    recipe: Recipe | None = None,
    targets: Mapping[str, WeightTarget] | None = None,
    token_mask: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    blocked: dict[str, TensorQuant] | None = None,
) -> tuple[QuantPlan, dict[str, Any]]:
    """The plan with its weights re-quantized by their algorithms (see the module doc).
    `blocked` (filled when given): for each GPTQ-solved 4-bit weight with a middle step
    (`blocked_alternatives`), that step solved by GPTQ on the same Hessian."""
    recipe = recipe or Recipe()
    targets = dict(targets) if targets is not None else weight_targets(graph, spec, plan)
    tensors = dict(plan.tensors)
    rows: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for name, wt in targets.items():
        if wt.job is not None:
            continue
        t = tensors[name]
        reason = t.reason
        if t.lut is not None:
            new, how = lut_weight(t, graph.constants[name]), "lut"
        else:
            if wt.method in HESSIAN_METHODS:
                why = f"{wt.method} needs a MatMul/Gemm/2-D Conv input: rtn"
                reason = (reason + "; " if reason else "") + why
            new, how = rtn_weight(t, graph.constants[name], wt.view, wt.grid), "rtn"
        tensors[name] = replace(new, reason=reason)
        rows[name] = {"weight": name, "node": t.node, "method": how}
    seconds: dict[str, float] = {"rtn": round(time.perf_counter() - t0, 3)}
    jobs = {wt.job.weight: wt for wt in targets.values() if wt.job is not None}
    middle_grids = {}
    if blocked is not None:
        solved = [n for n, wt in jobs.items() if wt.method in HESSIAN_METHODS]
        middle_grids = _middle_grids(graph, spec, plan, solved)
    if jobs:
        config = GPTQConfig(damp=recipe.gptq_damp, act_order=recipe.gptq_act_order,
                            static_groups=recipe.gptq_static_groups)  # fmt: skip
        acts = {
            t.name: t for t in plan.tensors.values() if t.role == "activation" and t.is_quantized
        }

        transform = FakeQuant(acts, plan.rounding)

        def solve(job: LayerJob, H: np.ndarray, rescale: Any) -> np.ndarray:
            wt = jobs[job.weight]
            t = tensors[job.weight]
            w = graph.constants[job.weight]
            if wt.method == "lut":
                diag = np.diagonal(H if H.ndim == 3 else H[None], axis1=-2, axis2=-1)
                per_row = np.repeat(diag, wt.view.rows // diag.shape[0], axis=0)
                new = lut_weight(t, w, wt.view.from_matrix(per_row))
            else:
                h = H if job.groups > 1 else H[0] if H.ndim == 3 else H
                new = gptq_weight(t, w, wt.view, wt.grid, h, config, groups=job.groups)
                if job.weight in middle_grids and blocked is not None:
                    tq, view, grid = middle_grids[job.weight]
                    blocked[job.weight] = gptq_weight(tq, w, view, grid, h, config,
                                                      groups=job.groups)  # fmt: skip
            tensors[job.weight] = new
            deq = new.dequantized()
            m, mh = wt.view.to_matrix(np.asarray(w, np.float64)), wt.view.to_matrix(deq)
            hh = H if H.ndim == 3 else H[None]
            g = hh.shape[0]
            err = output_error(m.reshape(g, -1, m.shape[1]), mh.reshape(g, -1, m.shape[1]), hh)
            rows[job.weight] = {"weight": job.weight, "node": t.node, "method": wt.method,
                                "output_error": err}  # fmt: skip
            log.info("%s %s %s: output error %.3g", wt.method, job.node, w.shape, err)
            return deq.astype(w.dtype)

        current = {n: t.dequantized().astype(graph.constants[n].dtype)
                   for n, t in tensors.items() if t.role == "weight" and t.is_quantized}  # fmt: skip
        result = run_layerwise(
            graph, [wt.job for wt in jobs.values() if wt.job is not None], feeds(), solve,
            weights=current, transform=transform if acts else None, token_mask=token_mask,
            progress=progress,
        )  # fmt: skip
        seconds.update({f"layerwise_{k}": v for k, v in result.seconds.items()})
        seconds["samples"] = result.samples
        seconds["spilled_mb"] = round(result.spilled_bytes / 2**20, 1)
        seconds["segments"], seconds["programs"] = result.segments, result.programs
    tensors = derive_biases(graph, spec, tensors)
    report = {"layers": list(rows.values()), "seconds": seconds}
    calibration = {**plan.calibration, "weights": report}
    return replace(plan, tensors=tensors, calibration=calibration), report


def eight_bit_alternatives(graph: Graph, spec: PlanSpec, plan: QuantPlan,
                           names: Iterable[str]) -> dict[str, TensorQuant]:  # fmt: skip
    """8-bit versions of planned 4-bit weights, as the target plans 8-bit weights (granularity,
    dtype), rounded to nearest with float16-exact scales where the target stores float16
    (symmetric there, so an affine bias −scale·128 stays exact too)."""
    return _rtn_alternatives(graph, spec, plan, names, 8, None, "minmax")


def blocked_alternatives(graph: Graph, spec: PlanSpec, plan: QuantPlan,
                         names: Iterable[str]) -> dict[str, TensorQuant]:  # fmt: skip
    """The middle step mixed precision may choose between a 4-bit weight as planned and its
    8-bit copy, rounded to nearest on an MSE-searched grid (`apply_weight_algorithms` solves
    the GPTQ ones): 4-bit blocks (the target's block size and block symmetry) for a
    per-channel 4-bit weight where the target also runs that layer blocked (onnx: a float
    layer instead of the integer kernels — a little slower, as small where blocks' float16
    scales cost what a float32 scale per channel does, much more accurate on layers with
    outlier input channels), and blocks half as long for a blocked one of 64 or more (MLX:
    groups of 32 instead of 64, +0.5 bit per weight)."""
    return _rounded(graph, _middle_grids(graph, spec, plan, names))


def _middle_grids(graph: Graph, spec: PlanSpec, plan: QuantPlan,
                  names: Iterable[str]) -> dict[str, tuple[TensorQuant, MatrixView, Grid]]:  # fmt: skip
    rules = spec.target.quant
    if not rules.per_block_ops:  # no blocked weights on this target (rpi): no middle step
        return {}
    ops = {node.name: node.op_type for node in graph.nodes}
    by_block: dict[int | None, list[str]] = {}
    for n in names:
        t = plan.tensors[n]
        if t.qdtype.bits != 4 or getattr(t, "lut", None) is not None:
            continue
        if t.block is None:
            if rules.block_step_ops is None or ops.get(t.node or "") in rules.block_step_ops:
                by_block.setdefault(None, []).append(n)
        elif t.block // 2 >= MIN_MIDDLE_BLOCK and t.block // 2 in rules.block_sizes:
            by_block.setdefault(t.block // 2, []).append(n)
    out: dict[str, tuple[TensorQuant, MatrixView, Grid]] = {}
    for block, group in by_block.items():
        found = _alternative_grids(graph, spec, plan, group, 4, "per_block", "mse", block)
        out.update({n: g for n, g in found.items()
                    if g[0].block and (block is None or g[0].block == block)})  # fmt: skip
    return out


def _rtn_alternatives(graph: Graph, spec: PlanSpec, plan: QuantPlan, names: Iterable[str],
                      bits: int, granularity: str | None, search: str) -> dict[str, TensorQuant]:  # fmt: skip
    return _rounded(graph, _alternative_grids(graph, spec, plan, names, bits, granularity, search))


def _rounded(graph: Graph, grids: Mapping[str, tuple[TensorQuant, MatrixView, Grid]]
             ) -> dict[str, TensorQuant]:  # fmt: skip
    """Each weight rounded to nearest on its (layout, view, grid)."""
    return {
        n: rtn_weight(tq, graph.constants[n], view, grid) for n, (tq, view, grid) in grids.items()
    }


def _alternative_grids(
    graph: Graph, spec: PlanSpec, plan: QuantPlan, names: Iterable[str], bits: int,
    granularity: str | None, search: str, block_size: int | None = None,
) -> dict[str, tuple[TensorQuant, MatrixView, Grid]]:  # fmt: skip
    """(layout, matrix view, grid) of each weight in `names` planned at `bits`, `granularity`
    and `block_size` (None: the target's defaults) as the target plans it."""
    from edgeq.quant.planner import make_spec

    rules = spec.target.quant
    base = replace(spec.recipe.base, weight_bits=bits, method="rtn", weight_method=search,
                   granularity=granularity, block_size=block_size)  # fmt: skip
    # a node whose override pins its granularity keeps it (no blocked alternative then)
    alt_spec = make_spec(graph, replace(spec.recipe, base=base), spec.target)
    index = {}
    for node in graph.nodes:
        w = weight_operand(node, graph)
        if w is not None:
            index.setdefault(node.inputs[w[0]], w)
    out: dict[str, tuple[TensorQuant, MatrixView, Grid]] = {}
    for name in names:
        ta, t4 = alt_spec.tensors.get(name), plan.tensors[name]
        if ta is None or ta.role != "weight" or name not in index:
            continue
        if granularity == "per_block" and not ta.block:
            continue
        symmetric = ta.symmetric or (bits == 8 and rules.weight_scale_dtype == "float16")
        tq = TensorQuant(name, "weight", ta.dtype, axis=ta.axis, block=ta.block,
                         narrow=ta.narrow, symmetric=symmetric, node=t4.node, reason=ta.reason)  # fmt: skip
        _, channel, contract = index[name]
        grid = grid_for(tq, search, rules.scale_dtype(tq.block), rules.affine_bias)
        out[name] = (tq, view_of(tq, graph.constants[name].shape, channel, contract), grid)
    return out


def weight_sizes(graph: Graph) -> dict[str, int]:
    """Elements of every layer weight (MatMul/Gemm/Conv/ConvTranspose/Gather tables), the
    denominator of bits per weight."""
    out: dict[str, int] = {}
    for node in graph.nodes:
        w = weight_operand(node, graph)
        if w is not None:
            out.setdefault(node.inputs[w[0]], int(graph.constants[node.inputs[w[0]]].size))
    return out


def apply_mixed_precision(
    graph: Graph,
    spec: PlanSpec,
    plan: QuantPlan,
    feeds: Sequence[Feeds],
    budget: Budget,
    progress: Callable[[int, int], None] | None = None,
    token_mask: str | None = None,
    blocked: Mapping[str, TensorQuant] | None = None,
) -> tuple[QuantPlan, dict[str, Any]]:
    """Mixed precision on the 4-bit weights whose bits the user did not pin per node (the
    output error over real tokens only when `token_mask` names the attention-mask input).
    `blocked`: GPTQ-solved blocked versions from `apply_weight_algorithms`; per-channel
    weights without one get a rounded-to-nearest one (`blocked_alternatives`)."""
    recipe = spec.recipe
    nodes = {n.name: n for n in graph.nodes}
    candidates = []
    for name, t in plan.tensors.items():
        if (
            t.role != "weight"
            or not t.is_quantized
            or t.qdtype.bits != 4
            or getattr(t, "lut", None) is not None
        ):
            continue
        node = nodes.get(t.node)
        pinned = node is not None and any(
            o.config.weight_bits is not None and o.matches(node.name, node.op_type)
            for o in recipe.overrides
        )
        if not pinned:  # a per-node override that sets weight_bits pins them
            candidates.append(name)
    alternatives = eight_bit_alternatives(graph, spec, plan, candidates)
    given = {n: t for n, t in (blocked or {}).items() if n in candidates}
    middle = {**blocked_alternatives(graph, spec, plan, [n for n in candidates if n not in given]),
              **given}  # fmt: skip
    storage = Storage.of(spec.target.quant)
    result, report = choose_bits(graph, plan, alternatives, feeds, weight_sizes(graph), storage,
                                 budget, progress, token_mask, middle)  # fmt: skip
    result = replace(result, tensors=derive_biases(graph, spec, result.tensors))
    return result, report


__all__ = [
    "WeightTarget",
    "apply_mixed_precision",
    "apply_weight_algorithms",
    "blocked_alternatives",
    "eight_bit_alternatives",
    "requantized_weights",
    "weight_sizes",
    "weight_targets",
]
