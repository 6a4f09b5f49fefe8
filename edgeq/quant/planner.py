"""Recipe + target profile + graph → PlanSpec (what to quantize, how), then + statistics →
QuantPlan (the numbers).

The spec is resolved before any calibration, so an impossible recipe fails fast, naming the
node and the target rule. Where the user did not ask for something explicitly and the target
cannot run it (say per-channel MatMul weights on QNN), the planner falls back to what the
target runs and records why in the plan.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgeq.errors import EdgeqError
from edgeq.ir.graph import Graph, Node
from edgeq.quant.observers import Observer, make_observer
from edgeq.quant.plan import QuantPlan, TensorQuant, graph_fingerprint
from edgeq.quant.qtypes import choose_qparams, qdtype
from edgeq.quant.recipe import LayerConfig, Recipe
from edgeq.quant.weights import (
    bias_safe_weight_scale,
    bias_scale,
    quantize_bias,
    quantize_weight,
    weight_qparams,
)
from edgeq.targets import QuantRules, TargetProfile

log = logging.getLogger(__name__)


class RecipeError(EdgeqError):
    """The recipe asks for something the target cannot run."""


# weight operand index and per-channel (output-feature) axis, per op
def weight_operand(node: Node, graph: Graph) -> tuple[int, int, int] | None:
    """(input index, channel axis, block axis) of a node's quantizable weight, if any."""
    op = node.op_type
    consts = graph.constants

    def const(i: int) -> bool:
        return (
            len(node.inputs) > i and node.inputs[i] in consts and _is_float(consts[node.inputs[i]])
        )

    if op == "Conv" and const(1):
        return 1, 0, 1
    if op == "ConvTranspose" and const(1):
        return 1, 1, 0
    if op == "MatMul" and const(1) and consts[node.inputs[1]].ndim == 2:
        return 1, 1, 0
    if op == "Gemm" and const(1):
        trans = int(node.attrs.get("transB", 0))
        return (1, 0, 1) if trans else (1, 1, 0)
    if (
        op == "Gather"
        and const(0)
        and consts[node.inputs[0]].ndim == 2
        and int(node.attrs.get("axis", 0)) == 0
    ):
        return 0, 0, 1  # embedding table [vocab, dim]: per row, blocks along dim
    return None


def _is_float(arr: np.ndarray) -> bool:
    return np.issubdtype(arr.dtype, np.floating)


FIXED_RANGE = {
    "Sigmoid": (0.0, 1.0),
    "Softmax": (0.0, 1.0),
    "HardSigmoid": (0.0, 1.0),
    "Tanh": (-1.0, 1.0),
}
PASS_THROUGH = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Expand", "Tile",
                "DepthToSpace", "SpaceToDepth"}  # fmt: skip
MASK_RANGE = (-64.0, 0.0)  # integer-only targets: additive masks clamp here (0 stays exact)
MASKED_FLOOR = 16.0  # masked scores: range reaches at least this far below the max


@dataclass(frozen=True)
class TensorSpec:
    """How one tensor will be quantized; numbers come later from statistics."""

    name: str
    role: str  # activation | weight | bias | float
    dtype: str = "float32"
    symmetric: bool = False
    narrow: bool = False
    axis: int | None = None
    block: int | None = None
    observer: str | None = None  # activations: observer name; weights: "minmax" | "mse"
    method: str = "rtn"  # weights: the weights algorithm (rtn, gptq, ...)
    awq: bool = False  # weights: activation-aware input scaling where it folds exactly
    weight_format: str = "affine"  # weights: affine (scale, zero point) | lut
    fixed: tuple[float, int] | None = None
    fixed_range: tuple[float, float] | None = None
    group: str | None = None  # shared-scale group root
    bias_of: tuple[str, str] | None = None  # (input activation, weight)
    masked_floor: float | None = None
    clip: tuple[float, float] | None = None  # consumers ignore values outside (Relu, HardSwish...)
    keep_max: bool = False  # read by Softmax/ArgMax-style ops: no range cut lowers the top
    source: str = ""
    reason: str = ""
    node: str = ""


@dataclass
class PlanSpec:
    target: TargetProfile
    recipe: Recipe
    tensors: dict[str, TensorSpec] = field(default_factory=dict)
    observer_settings: dict[str, Any] = field(default_factory=dict)

    def observers(self) -> dict[str, Observer]:
        """The activation tensors to observe during calibration, with their observers.

        Pass-through ops (Reshape, Transpose, ...) are not observed: their values equal their
        input's, which is observed in the same group."""
        out: dict[str, Observer] = {}
        for t in self.tensors.values():
            if t.role == "activation" and t.fixed is None and t.fixed_range is None and t.observer:
                if t.reason.startswith("pass-through"):
                    continue
                out[t.name] = make_observer(t.observer, **self.observer_settings)
        return out

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tensors.values():
            key = f"{t.role}:{t.dtype}"
            counts[key] = counts.get(key, 0) + 1
        return counts


# ---------------------------------------------------------------------------------------------
# stage 1: resolve the recipe against the target (no data)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Effective:
    config: LayerConfig
    explicit: frozenset[str]
    source: str


def _effective(recipe: Recipe, rules: QuantRules, node: Node | None) -> _Effective:
    user, source = recipe.config_for(node.name, node.op_type) if node else (recipe.base, "global")
    bits = user.weight_bits or 8
    # activations follow the model's --bits (not one layer's): a weight-only 4-bit model keeps
    # every activation float, its 8-bit layers' too
    act = (
        user.act_bits
        if user.act_bits is not None
        else rules.act_bits_default(recipe.base.weight_bits)
    )
    defaults = LayerConfig(
        weight_bits=8,
        act_bits=rules.act_bits_default(recipe.base.weight_bits),
        granularity=rules.granularity_default(bits, act),  # type: ignore[arg-type]
        block_size=rules.default_block_size,
        weight_symmetric=rules.weight_symmetric,
        act_symmetric=False,
        act_observer="minmax",
        weight_method="mse" if bits == 4 else "minmax",
        method="lut" if user.weight_format == "lut" else "gptq" if bits == 4 else "rtn",
        awq=False,
        weight_format="affine",
    )
    explicit = frozenset(user.set_fields())
    config = defaults.merged(user)
    # QNN-like targets: 4-bit blockwise weights only with 16-bit activations, so a user who
    # asked only for --bits 4 gets W4A16 there.
    if (
        config.weight_bits == 4
        and rules.block_requires_act_bits
        and config.granularity == "per_block"
        and "act_bits" not in explicit
    ):
        config = replace(config, act_bits=rules.block_requires_act_bits)
    return _Effective(config, explicit, source)


def _fail(node: Node | None, rule: str, fix: str) -> RecipeError:
    where = f"{node} " if node is not None else ""
    return RecipeError(f"{where}{rule}", fix)


def _check_globals(recipe: Recipe, target: TargetProfile) -> None:
    rules = target.quant
    eff = _effective(recipe, rules, None)
    c = eff.config
    if c.weight_format == "lut" and not rules.weight_lut:
        raise _fail(None, f"target '{target.name}' has no palettized (look-up table) weights",
                    "use --weight-format affine, or --target ane")  # fmt: skip
    if c.weight_format != "lut" and rules.weight_dtype(c.weight_bits or 8) is None:
        raise _fail(None, f"target '{target.name}' has no {c.weight_bits}-bit weights",
                    f"use --bits 8 (supported: {_weight_bits(rules)})")  # fmt: skip
    act = c.act_bits if c.act_bits is not None else rules.act_bits_default(c.weight_bits)
    if act == 0 and not rules.float_activations:
        raise _fail(None, f"target '{target.name}' runs only quantized activations (no float)",
                    "use --act-bits 8 or 16")  # fmt: skip
    if act and rules.act_dtype(act) is None:
        raise _fail(None, f"target '{target.name}' has no {act}-bit activations",
                    f"use --act-bits {8 if rules.act8 else 0}")  # fmt: skip
    if c.granularity == "per_block" and "granularity" in eff.explicit and not rules.per_block_ops:
        raise _fail(None, f"target '{target.name}' has no per-block weights",
                    "use --granularity per_channel")  # fmt: skip
    if (
        c.granularity == "per_block"
        and rules.per_block_ops
        and c.block_size not in rules.block_sizes
    ):
        raise _fail(None, f"block size {c.block_size} is not one target '{target.name}' runs",
                    f"use one of {list(rules.block_sizes)}")  # fmt: skip
    if c.weight_symmetric is False and not rules.weight_asymmetric_allowed:
        raise _fail(None, f"target '{target.name}' needs symmetric weights (zero point 0)",
                    "drop weight_symmetric = false")  # fmt: skip
    if recipe.keep_float and not rules.float_activations:
        raise _fail(None, f"target '{target.name}' cannot keep layers in float (keep_float)",
                    "remove keep_float or pick a target that mixes float and integer ops")  # fmt: skip


def _weight_bits(rules: QuantRules) -> list[int]:
    return [b for b in (8, 4) if rules.weight_dtype(b)]


def make_spec(
    graph: Graph, recipe: Recipe, target: TargetProfile, **observer_settings: Any
) -> PlanSpec:
    """Decide, for every tensor, how it is quantized. Raises RecipeError before any work when
    the recipe asks for something the target cannot run."""
    rules = target.quant
    _check_globals(recipe, target)
    spec = PlanSpec(target, recipe, observer_settings=observer_settings)
    producers = graph.producers()
    consumers = graph.consumers()
    int_derived = integer_derived(graph)

    # weights and biases first: they decide which MatMul outputs are fused accumulators
    fused_acc: set[str] = set()
    for node in graph.nodes:
        eff = _effective(recipe, rules, node)
        _check_node(node, eff, target)
        w = weight_operand(node, graph)
        if w is not None and node.inputs[w[0]] not in spec.tensors:
            spec.tensors[node.inputs[w[0]]] = _weight_spec(graph, node, w, eff, target)
        bias = _bias_input(graph, node, consumers, rules)
        if bias is not None and w is not None:
            bias_name, acc = bias
            if acc:
                fused_acc.add(acc)
            spec.tensors[bias_name] = TensorSpec(
                bias_name, "bias", "int32", symmetric=True,
                axis=0 if np.ndim(graph.constants[bias_name]) else None,
                bias_of=(node.inputs[1 - w[0]] if node.op_type in ("MatMul", "Gather") else node.inputs[0],
                         node.inputs[w[0]]),
                source=eff.source, reason="int32, scale = input scale x weight scale",
                node=node.name,
            )  # fmt: skip

    # activations: graph inputs, then node outputs
    global_eff = _effective(recipe, rules, None)
    for v in graph.inputs:
        if np.issubdtype(v.dtype, np.floating):
            spec.tensors[v.name] = _activation_spec(v.name, None, global_eff, rules, "graph input")
    for node in graph.nodes:
        eff = _effective(recipe, rules, node)
        for out in node.outputs:
            info = graph.value_info.get(out)
            if not out or info is None or not np.issubdtype(info.dtype, np.floating):
                continue
            if out in fused_acc:
                spec.tensors[out] = TensorSpec(out, "float", reason="int32 accumulator fused with its bias Add", node=node.name)  # fmt: skip
                continue
            kept = recipe.keeps_float(node.name, node.op_type)
            if kept:
                spec.tensors[out] = TensorSpec(out, "float", reason=f"keep_float {kept}", node=node.name)  # fmt: skip
                continue
            if recipe.mask_handling and out in int_derived and _feeds_add(out, consumers):
                spec.tensors[out] = _mask_spec(out, node, eff, rules)
                continue
            if recipe.mask_handling and out in int_derived and rules.float_activations:
                # e.g. Cast(attention_mask): rounding 1.0 to 1.0000001 and multiplying by
                # float-min would put +4e31 on real tokens; such tensors stay exact
                spec.tensors[out] = TensorSpec(out, "float", node=node.name,
                                               reason="computed from integer inputs only (mask path): kept exact")  # fmt: skip
                continue
            t = _activation_spec(out, node, eff, rules, eff.source)
            if (
                t.role == "activation"
                and node.op_type == "Add"
                and recipe.mask_handling
                and any(i in int_derived for i in node.inputs if i)
            ):
                t = replace(t, masked_floor=MASKED_FLOOR,
                            reason="masked scores: mask fill ignored, range floor max-16")  # fmt: skip
            spec.tensors[out] = t
    if recipe.norm_inputs_16bit:
        _norm_inputs_16bit(spec, graph, consumers, rules)
        if rules.norm_outputs_16bit:
            _norm_outputs_16bit(spec, graph, consumers, rules)
    if rules.float_residual:
        _float_residual_sums(spec, graph, consumers)
    _assign_groups(spec, graph, producers)
    _consumer_clips(spec, graph, consumers)
    _keep_max_of_argmax_inputs(spec, graph, consumers)
    _integer_only_constants(spec, graph, rules)
    return spec


NORM_OPS = ("LayerNormalization", "Softmax")


def _norm_inputs_16bit(spec: PlanSpec, graph: Graph, consumers: Mapping[str, list[Node]],
                       rules: QuantRules) -> None:  # fmt: skip
    """Transformer safety: the inputs of LayerNorm (the residual stream, with its outlier
    channels) and Softmax (attention scores) go to 16 bits when the target has 16-bit
    activations; 8-bit per-tensor ranges there cost most of a transformer's accuracy."""
    to_float = rules.high_precision == "float" and rules.float_activations
    if not to_float and (rules.act16 is None or not rules.mixed_precision):
        return
    producers = graph.producers()
    for node in graph.nodes:
        if node.op_type not in NORM_OPS:
            continue
        names = [(node.inputs[0], f"{node.op_type} input")]
        residual = producers.get(node.inputs[0])
        if (
            node.op_type == "LayerNormalization"
            and residual is not None
            and residual.op_type == "Add"
        ):
            names += [(i, "residual branch into a LayerNorm") for i in residual.inputs if i]
            for i in residual.inputs:  # a linear layer's bias Add: its MatMul output too
                bias_add = producers.get(i)
                if bias_add is not None and bias_add.op_type == "Add":
                    for j in bias_add.inputs:
                        # back through layout ops (a MatMul rewritten as a 1x1 Conv) to the
                        # accumulator itself: the whole chain shares one precision
                        while j and j not in graph.constants:
                            names.append((j, "residual branch into a LayerNorm"))
                            p = producers.get(j)
                            j = p.inputs[0] if p is not None and p.op_type in PASS_THROUGH else ""
        # back through layout ops (a MatMul as a 1x1 Conv with its bias folded in): one
        # 16-bit chain (float members of a shared-scale group need no such walk)
        for name, why in [] if to_float else list(names):
            p = producers.get(name)
            while (
                p is not None and p.op_type in PASS_THROUGH and p.inputs[0] not in graph.constants
            ):
                names.append((p.inputs[0], why))
                p = producers.get(p.inputs[0])
        for name, why in names:
            t = spec.tensors.get(name)
            if t is None or t.role != "activation" or t.dtype == rules.act16 or t.fixed is not None:
                continue
            if to_float:
                spec.tensors[name] = TensorSpec(name, "float", node=t.node,
                                                reason=f"{why} kept float (transformer safety)")  # fmt: skip
                continue
            spec.tensors[name] = replace(
                t, dtype=rules.act16, symmetric=rules.act16 == "int16",
                reason=(t.reason + "; " if t.reason else "") + f"{why} kept at 16 bits (transformer safety)",
            )  # fmt: skip


MATMUL_OPS = ("MatMul", "Gemm", "Conv")


def _chain_to_matmuls(name: str, consumers: Mapping[str, list[Node]]) -> list[str]:
    """`name` and the layout-op outputs after it that lead into a MatMul/Gemm/Conv data input
    (the tensors that MatMul reads, through Transpose/Reshape/...), in order."""
    found: list[str] = []
    for user in consumers.get(name, []):
        if user.inputs[0] != name:
            continue
        if user.op_type in MATMUL_OPS:
            found.append(name)
        elif user.op_type in PASS_THROUGH:
            below = _chain_to_matmuls(user.outputs[0], consumers)
            if below:
                found += [name, *below]
    return list(dict.fromkeys(found))


def _norm_outputs_16bit(spec: PlanSpec, graph: Graph, consumers: Mapping[str, list[Node]],
                        rules: QuantRules) -> None:  # fmt: skip
    """Targets that run 16-bit activations into 8-bit-weight MatMuls/Convs (`norm_outputs_16bit`,
    the QNN HTP's A16W8): a LayerNorm output read by a MatMul, and the layout ops between them,
    go to 16 bits. A transformer's LayerNorm output carries a few channels 10-100x larger than
    the rest (the norm's scale), so one 8-bit per-tensor grid starves the others."""
    if rules.act16 is None or not rules.mixed_precision:
        return
    for node in graph.nodes:
        if node.op_type != "LayerNormalization" or not node.outputs or not node.outputs[0]:
            continue
        for name in _chain_to_matmuls(node.outputs[0], consumers):
            t = spec.tensors.get(name)
            if t is None or t.role != "activation" or t.dtype == rules.act16 or t.fixed is not None:
                continue
            spec.tensors[name] = replace(
                t, dtype=rules.act16, symmetric=rules.act16 == "int16",
                reason=(t.reason + "; " if t.reason else "")
                + "LayerNorm output read by a MatMul kept at 16 bits (outlier channels; A16W8)",
            )  # fmt: skip


RESIDUAL_READERS = ("LayerNormalization", "Add")


def _float_residual_sums(spec: PlanSpec, graph: Graph,
                         consumers: Mapping[str, list[Node]]) -> None:  # fmt: skip
    """Targets whose LayerNorm is a float island (`float_residual`): the Add of two
    activations that feeds a LayerNorm stays float, when everything that reads it (the
    LayerNorm, the next residual Add of a pre-norm block) runs on float inputs too."""
    producers = graph.producers()
    for node in graph.nodes:
        if node.op_type != "LayerNormalization":
            continue
        x = node.inputs[0]
        add = producers.get(x)
        t = spec.tensors.get(x)
        if add is None or add.op_type != "Add" or t is None or t.role != "activation":
            continue
        if any(not i or i in graph.constants for i in add.inputs):
            continue
        if any(c.op_type not in RESIDUAL_READERS for c in consumers.get(x, [])):
            continue
        spec.tensors[x] = TensorSpec(x, "float", node=add.name,
                                     reason="residual sum into a LayerNorm kept float (the "
                                     "LayerNorm runs in float32 on this target)")  # fmt: skip
        for branch in add.inputs:  # a per-channel rescale of a branch (branch_scales) joins it
            mul = producers.get(branch)
            consts = [i for i in mul.inputs if i in graph.constants] if mul is not None else []
            if (mul is None or mul.op_type != "Mul" or len(consts) != 1
                    or len(consumers.get(branch, [])) != 1):  # fmt: skip
                continue
            why = "per-channel rescale of a residual branch, in float before the float residual sum"
            spec.tensors[branch] = TensorSpec(branch, "float", node=mul.name, reason=why)
            spec.tensors[consts[0]] = TensorSpec(consts[0], "float", node=mul.name, reason=why)
    _float_smoothed_norms(spec, graph, consumers)


def _float_smoothed_norms(spec: PlanSpec, graph: Graph,
                          consumers: Mapping[str, list[Node]]) -> None:  # fmt: skip
    """A float LayerNorm's output read only by float residual sums and smoothing Muls
    (`smoothing.smooth_copies`: the MatMuls read `Mul(y, 1/s)`) stays float: the Mul runs in
    float with the LayerNorm and only its output is quantized."""
    for node in graph.nodes:
        if node.op_type != "LayerNormalization" or not node.outputs:
            continue
        y = node.outputs[0]
        readers = consumers.get(y, [])
        # a smoothing MUL: y times a constant, read only as the data input of MatMuls
        muls = [r for r in readers if r.op_type == "Mul"
                and sum(i in graph.constants for i in r.inputs) == 1
                and consumers.get(r.outputs[0])
                and all(u.op_type == "MatMul" and u.inputs[0] == r.outputs[0]
                        for u in consumers[r.outputs[0]])]  # fmt: skip
        rest = [r for r in readers if r not in muls]
        if not muls or y in graph.output_names or any(
            r.op_type != "Add" or spec.tensors.get(r.outputs[0]) is None
            or spec.tensors[r.outputs[0]].role != "float" for r in rest
        ):  # fmt: skip
            continue
        why = "LayerNorm output kept float for its smoothing Mul and the float residual sum"
        spec.tensors[y] = TensorSpec(y, "float", node=node.name, reason=why)
        for m in muls:
            for i in m.inputs:
                if i in graph.constants:
                    spec.tensors[i] = TensorSpec(i, "float", node=m.name,
                                                 reason="smoothing factors (float, with the LayerNorm)")  # fmt: skip


def _active_region(node: Node, graph: Graph) -> tuple[float, float] | None:
    """Input interval outside which a saturating op's output no longer changes."""
    op = node.op_type
    if op == "Relu":
        return (0.0, np.inf)
    if op == "HardSwish":
        return (-3.0, np.inf)
    if op == "HardSigmoid":
        alpha, beta = float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
        ends = sorted(((0.0 - beta) / alpha, (1.0 - beta) / alpha))
        return (ends[0], ends[1])
    if op == "Clip":

        def bound(i: int, attr: str, default: float) -> float | None:
            if len(node.inputs) > i and node.inputs[i]:
                arr = graph.constants.get(node.inputs[i])
                return None if arr is None else float(arr.reshape(-1)[0])
            return float(node.attrs.get(attr, default))

        lo, hi = bound(1, "min", -np.inf), bound(2, "max", np.inf)
        return None if lo is None or hi is None else (lo, hi)
    return None


def _activation_groups(spec: PlanSpec) -> dict[str, list[str]]:
    """Activation tensors by the root of the shared-scale group they are in (a lone tensor is
    its own root)."""
    groups: dict[str, list[str]] = {}
    for name, t in spec.tensors.items():
        if t.role == "activation":
            groups.setdefault(t.group or name, []).append(name)
    return groups


def _consumer_clips(spec: PlanSpec, graph: Graph, consumers: Mapping[str, list[Node]]) -> None:
    """A tensor read only by saturating ops (Relu, HardSwish, HardSigmoid, Clip) needs no
    resolution outside their active input region: clipping its range there is exact and
    buys resolution where it matters (TFLite's fused-ReLU ranges, generalized). A group of
    tensors sharing one scale qualifies as a whole when its members are joined by
    pass-through ops (a Conv1d lowered to Conv2d between two Reshapes, then Relu): every
    member's readers are saturating ops or pass-through ops into the group."""
    groups = _activation_groups(spec)
    for members in groups.values():
        if any(m in graph.output_names for m in members):
            continue
        inside = set(members)
        regions: list[tuple[float, float] | None] = []
        ops: set[str] = set()
        closed = True
        for m in members:
            for u in consumers.get(m, []):
                if u.op_type in PASS_THROUGH and all(o in inside for o in u.outputs if o):
                    continue
                regions.append(_active_region(u, graph))
                ops.add(u.op_type)
            closed = closed and bool(consumers.get(m))
        if not closed or not regions or any(r is None for r in regions):
            continue
        lo = min(r[0] for r in regions)  # type: ignore[index]
        hi = max(r[1] for r in regions)  # type: ignore[index]
        for m in members:
            t = spec.tensors[m]
            spec.tensors[m] = replace(
                t,
                clip=(lo, hi),
                reason=(t.reason + "; " if t.reason else "")
                + f"range clipped to {'/'.join(sorted(ops))} active input region",
            )


# ops whose output the largest input values decide: the top of their input's range is the
# signal, however few values reach it (one winning logit per row of 18k classes is 1/18k of
# the tensor), so no percentile-style cut may clip it
DECIDED_BY_MAX = frozenset({"Softmax", "LogSoftmax", "ArgMax", "TopK", "Hardmax"})


def _keep_max_of_argmax_inputs(
    spec: PlanSpec, graph: Graph, consumers: Mapping[str, list[Node]]
) -> None:
    """Mark the inputs of Softmax/ArgMax/TopK-style ops `keep_max`: range cuts that target
    rare values (`rare_values`) leave their upper bound at the observed maximum. Cutting it
    saturates every winning logit at one level, so the largest ones tie: PP-OCRv5's
    recognizer read 3.5% CER on LiteRT for 0.1% in float. The mark spreads to every tensor
    sharing a scale with a marked one and back through a constant offset (a bias Add that a
    target keeps apart from its MatMul, as QNN does): the winners are the same rare values."""
    producers = graph.producers()
    marked: dict[str, str] = {}  # tensor or group root -> the reading op
    todo: list[tuple[str, str]] = []
    for name, t in spec.tensors.items():
        if t.role != "activation":
            continue
        ops = sorted({u.op_type for u in consumers.get(name, []) if u.op_type in DECIDED_BY_MAX})
        if ops:
            todo.append((name, "/".join(ops)))
    groups = _activation_groups(spec)
    while todo:
        name, op = todo.pop()
        root = spec.tensors[name].group or name
        if root in marked:
            continue
        marked[root] = op
        for member in groups.get(root, [name]):
            node = producers.get(member)
            if node is None or node.op_type not in ("Add", "Sub") or len(node.inputs) != 2:
                continue
            data = [i for i in node.inputs if i not in graph.constants]
            if len(data) != 1 or (node.op_type == "Sub" and node.inputs[0] != data[0]):
                continue  # an offset by a constant (x + c, x - c), not c - x
            t = spec.tensors.get(data[0])
            if t is not None and t.role == "activation":
                todo.append((data[0], op))
    for name, t in list(spec.tensors.items()):
        op = marked.get(t.group or name) if t.role == "activation" else None
        if op is None or t.fixed is not None:
            continue
        why = f"range top kept at the observed maximum (read by {op}: its largest values decide)"
        spec.tensors[name] = replace(t, keep_max=True,
                                     reason=(t.reason + "; " if t.reason else "") + why)  # fmt: skip


def _check_node(node: Node, eff: _Effective, target: TargetProfile) -> None:
    """Explicit per-node requests the target cannot run are errors (naming node and rule)."""
    rules = target.quant
    c = eff.config
    if eff.source == "global":
        return
    if "weight_bits" in eff.explicit and rules.weight_dtype(c.weight_bits or 8) is None:
        raise _fail(node, f"asks for {c.weight_bits}-bit weights; target '{target.name}' has none",
                    f"supported: {_weight_bits(rules)}")  # fmt: skip
    if "act_bits" in eff.explicit:
        if c.act_bits == 0 and not rules.float_activations:
            raise _fail(node, f"asks for float activations; target '{target.name}' runs only quantized ones",
                        "remove the override")  # fmt: skip
        if c.act_bits and rules.act_dtype(c.act_bits) is None:
            raise _fail(node, f"asks for {c.act_bits}-bit activations; target '{target.name}' has none",
                        "remove the override")  # fmt: skip
    if "granularity" in eff.explicit:
        if c.granularity == "per_channel" and node.op_type not in rules.per_channel_ops:
            raise _fail(node, f"asks for per-channel weights; target '{target.name}' allows them only on "
                        f"{', '.join(rules.per_channel_ops)}", "use per_tensor for this node")  # fmt: skip
        if c.granularity == "per_block" and node.op_type not in rules.per_block_ops:
            raise _fail(node, f"asks for per-block weights; target '{target.name}' allows them only on "
                        f"{', '.join(rules.per_block_ops) or 'no op'}", "use per_channel")  # fmt: skip
        if (
            c.granularity == "per_block"
            and rules.block_requires_act_bits
            and c.act_bits != rules.block_requires_act_bits
        ):
            raise _fail(node, f"asks for per-block weights with {c.act_bits}-bit activations; target "
                        f"'{target.name}' runs blockwise weights only with {rules.block_requires_act_bits}-bit activations",
                        f"add act_bits = {rules.block_requires_act_bits} or use per_channel")  # fmt: skip
    if (
        "weight_symmetric" in eff.explicit
        and c.weight_symmetric is False
        and not rules.weight_asymmetric_allowed
    ):
        raise _fail(node, f"asks for asymmetric weights; target '{target.name}' needs zero point 0",
                    "remove weight_symmetric = false")  # fmt: skip


def _weight_spec(graph: Graph, node: Node, w: tuple[int, int, int], eff: _Effective,
                 target: TargetProfile) -> TensorSpec:  # fmt: skip
    rules = target.quant
    c = eff.config
    name = node.inputs[w[0]]
    arr = graph.constants[name]
    bits = c.weight_bits or 8
    if c.weight_format == "lut":
        return _lut_spec(node, w, eff, target, arr.shape)
    dtype = rules.weight_dtype(bits)
    assert dtype is not None
    symmetric = bool(c.weight_symmetric)
    q = qdtype(dtype)
    narrow = rules.narrow_weights and q.signed and symmetric and bits == 8
    granularity, reason = c.granularity, ""
    act_bits = c.act_bits
    block_size: int | None = int(c.block_size or 32)
    if granularity == "per_block":
        k = arr.shape[w[2]]
        if node.op_type not in rules.per_block_ops:
            granularity, reason = (
                "per_channel",
                f"{target.name}: per-block only on {', '.join(rules.per_block_ops) or 'no op'}",
            )
        elif rules.block_requires_act_bits and act_bits != rules.block_requires_act_bits:
            granularity, reason = (
                "per_channel",
                f"{target.name}: per-block needs {rules.block_requires_act_bits}-bit activations",
            )
        elif k % block_size:
            block_size, reason = _partial_block(k, block_size, rules.partial_blocks)
            if block_size is None:
                granularity = "per_channel"
    if (
        bits == 4
        and granularity == "per_block"
        and rules.weight_symmetric_block4 is not None
        and rules.weight_asymmetric_allowed
        and "weight_symmetric" not in eff.explicit
    ):
        symmetric = rules.weight_symmetric_block4
    if granularity == "per_channel" and node.op_type not in rules.per_channel_ops:
        granularity = "per_tensor"
        reason = (reason + "; " if reason else "") + (
            f"{target.name}: per-channel only on {', '.join(rules.per_channel_ops)}"
        )
    if granularity == "per_block":
        axis, block = w[2], block_size
    elif granularity == "per_channel":
        axis, block = w[1], None
    else:
        axis, block = None, None
    return TensorSpec(
        name, "weight", dtype, symmetric=symmetric, narrow=narrow, axis=axis, block=block,
        observer=c.weight_method, method=c.method or "rtn", awq=bool(c.awq),
        weight_format=c.weight_format or "affine", source=eff.source, reason=reason, node=node.name,
    )  # fmt: skip


LUT_CHANNEL_GROUP = 16  # default output channels sharing one look-up table


def _lut_spec(node: Node, w: tuple[int, int, int], eff: _Effective, target: TargetProfile,
              shape: tuple[int, ...]) -> TensorSpec:  # fmt: skip
    """Palettized weights: indices of `weight_bits` bits into look-up tables of 2^bits values,
    one table per tensor (per_tensor) or per group of `block_size` output channels (default
    16; the largest divisor of the channel count not above it)."""
    c = eff.config
    bits = int(c.weight_bits or 4)
    name = node.inputs[w[0]]
    if c.granularity == "per_tensor":
        axis, block, reason = None, None, f"{bits}-bit look-up table per tensor"
    else:
        channels = int(shape[w[1]])
        want = (
            int(c.block_size)
            if "block_size" in eff.explicit and c.block_size
            else LUT_CHANNEL_GROUP
        )
        block = max(b for b in range(1, min(want, channels) + 1) if channels % b == 0)
        axis, reason = w[1], f"{bits}-bit look-up table per {block} output channel(s)"
    return TensorSpec(name, "weight", f"uint{bits}", axis=axis, block=block, observer="minmax",
                      method=c.method or "lut", weight_format="lut", source=eff.source,
                      reason=reason, node=node.name)  # fmt: skip


def _partial_block(k: int, block: int, mode: str) -> tuple[int | None, str]:
    """(block size, reason) for an input dim `k` that is not a multiple of `block`, as the
    target stores it (`partial_blocks` in its profile): "ceil" keeps ceil(k/block) blocks with a
    partial last one (ONNX blocked DequantizeLinear; MLX pads the codes), "divisor" takes the
    largest divisor of k not above the block (Core ML needs whole blocks); None: per-channel."""
    if k < block:
        return None, f"input dim {k} is below block {block}: one group per channel"
    if mode == "ceil":
        return block, f"input dim {k}: last block partial ({k % block} of {block})"
    if mode == "divisor":
        d = max(b for b in range(1, block + 1) if k % b == 0)
        if 2 * d >= block:
            return d, f"input dim {k} is not a multiple of {block}: blocks of {d} (divisor)"
    return None, f"input dim {k} is not a multiple of block {block}"


def _bias_input(graph: Graph, node: Node, consumers: Mapping[str, list[Node]],
                rules: QuantRules) -> tuple[str, str | None] | None:  # fmt: skip
    """(bias constant, fused accumulator tensor or None) for ops that take an int32 bias."""
    consts = graph.constants
    if (
        node.op_type in ("Conv", "ConvTranspose", "Gemm")
        and len(node.inputs) > 2
        and node.inputs[2] in consts
    ):
        b = consts[node.inputs[2]]
        return (node.inputs[2], None) if b.ndim <= 1 and _is_float(b) else None
    if node.op_type == "MatMul" and rules.fuse_bias_add:
        out = node.outputs[0]
        users = consumers.get(out, [])
        if len(users) == 1 and users[0].op_type == "Add" and out not in graph.output_names:
            add = users[0]
            other = add.inputs[1] if add.inputs[0] == out else add.inputs[0]
            if other in consts and consts[other].ndim == 1 and _is_float(consts[other]):
                return other, out
    return None


def _activation_spec(name: str, node: Node | None, eff: _Effective, rules: QuantRules,
                     source: str) -> TensorSpec:  # fmt: skip
    c = eff.config
    node_name = node.name if node is not None else ""
    if not c.act_bits:
        return TensorSpec(
            name, "float", reason="weight-only: activations stay float", node=node_name
        )
    dtype = rules.act_dtype(c.act_bits)
    assert dtype is not None
    symmetric = bool(c.act_symmetric) or (c.act_bits == 16 and dtype == "int16")
    op = node.op_type if node is not None else ""
    if op in FIXED_RANGE:
        fixed = rules.fixed.get(op, {}).get(dtype)
        if fixed is not None:
            return TensorSpec(name, "activation", dtype, fixed=fixed, source=f"target {op} encoding",
                              reason=f"fixed {op} output encoding", node=node_name)  # fmt: skip
        return TensorSpec(name, "activation", dtype, symmetric=symmetric, fixed_range=FIXED_RANGE[op],
                          source=source, reason=f"{op} output range {FIXED_RANGE[op]}", node=node_name)  # fmt: skip
    return TensorSpec(name, "activation", dtype, symmetric=symmetric, observer=c.act_observer,
                      source=source, node=node_name)  # fmt: skip


def _mask_spec(name: str, node: Node, eff: _Effective, rules: QuantRules) -> TensorSpec:
    if rules.float_activations:
        return TensorSpec(name, "float", node=node.name,
                          reason="additive attention mask: kept float, never sets a range")  # fmt: skip
    dtype = rules.act_dtype(eff.config.act_bits or 8) or "int8"
    return TensorSpec(name, "activation", dtype, fixed_range=MASK_RANGE, node=node.name,
                      reason=f"additive attention mask on an integer-only target: range {MASK_RANGE}")  # fmt: skip


def integer_derived(graph: Graph) -> set[str]:
    """Float tensors computed only from integer graph inputs and constants (attention masks,
    pooling weights): they carry no activation statistics of their own."""
    float_inputs = {v.name for v in graph.inputs if np.issubdtype(v.dtype, np.floating)}
    data_dependent: set[str] = set(float_inputs)
    has_input: set[str] = {v.name for v in graph.inputs}
    result: set[str] = set()
    for node in graph.nodes:
        ins = [i for i in node.inputs if i]
        lookup = (
            node.op_type == "Gather"
            and ins[0] in graph.constants
            and _is_float(graph.constants[ins[0]])
        )
        if lookup or any(i in data_dependent for i in ins):  # an embedding lookup yields data
            data_dependent.update(node.outputs)
        elif any(i in has_input for i in ins):
            has_input.update(node.outputs)
            for o in node.outputs:
                info = graph.value_info.get(o)
                if info is not None and np.issubdtype(info.dtype, np.floating):
                    result.add(o)
    return result


def _feeds_add(name: str, consumers: Mapping[str, list[Node]]) -> bool:
    return any(n.op_type == "Add" for n in consumers.get(name, []))


def _assign_groups(spec: PlanSpec, graph: Graph, producers: Mapping[str, Node]) -> None:
    """Union tensors that must share one scale (shape ops, Concat, pooling...)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    shared = set(spec.target.quant.shared_scale_ops)
    tensors = spec.tensors
    widened = _widen_mixed_concats(spec, graph)
    for node in graph.nodes:
        if node.op_type not in shared or (node.outputs and node.outputs[0] in widened):
            continue
        data_inputs = (
            [node.inputs[0]] if node.op_type != "Concat" else [i for i in node.inputs if i]
        )
        members = [
            t
            for t in data_inputs + node.outputs
            if t in tensors and tensors[t].role == "activation"
        ]
        if len(members) < 2:
            continue
        for m in members[1:]:
            union(members[0], m)
        if node.op_type in PASS_THROUGH:
            for out in node.outputs:
                if out in tensors and tensors[out].role == "activation":
                    kept = tensors[out].reason  # e.g. why it is 16-bit: stays said
                    tensors[out] = replace(
                        tensors[out],
                        reason="pass-through: same values as its input"
                        + (f"; {kept}" if kept else ""),
                    )
    groups: dict[str, list[str]] = {}
    for name in list(parent):
        groups.setdefault(find(name), []).append(name)
    for root, members in groups.items():
        members = sorted(set(members) | {root}, key=lambda m: m != root)
        wide = next((tensors[m] for m in members if m in widened), None)
        if wide is not None:  # the whole group (Reshapes after the Concat) takes its type
            for m in members:
                if tensors[m].role == "activation":
                    tensors[m] = replace(tensors[m], dtype=wide.dtype, symmetric=wide.symmetric)
        fixed = next(
            (tensors[m] for m in members if tensors[m].fixed or tensors[m].fixed_range), None
        )
        for m in members:
            t = tensors[m]
            changes: dict[str, Any] = {"group": root}
            if fixed is not None and fixed.name != m:
                changes.update(fixed=fixed.fixed, fixed_range=fixed.fixed_range, observer=None,
                               reason=f"shares {fixed.name}'s fixed encoding")  # fmt: skip
            tensors[m] = replace(t, **changes)


def _widen_mixed_concats(spec: PlanSpec, graph: Graph) -> set[str]:
    """Concats that join a fixed-encoded input (Sigmoid/Softmax scores, 0..1) with one that is
    not (a detector's box coordinates, 0..hundreds) share no scale: forcing the fixed 1/256
    encoding on the others clips them, and one 8-bit scale over both leaves the scores a level
    or two. The inputs keep their own encodings (runtimes requantize them into the Concat) and
    the output goes to 16 bits where the target runs them, float where it allows a float
    tensor; 8-bit-only targets keep 8 bits over the union range. {node name: output}."""
    rules = spec.target.quant
    out: set[str] = set()
    for node in graph.nodes:
        if node.op_type != "Concat" or "Concat" not in rules.shared_scale_ops:
            continue
        ins = [spec.tensors.get(i) for i in node.inputs if i]
        acts = [t for t in ins if t is not None and t.role == "activation"]
        fixed = [t for t in acts if t.fixed is not None or t.fixed_range is not None]
        y = spec.tensors.get(node.outputs[0])
        if not fixed or len(fixed) == len(acts) or y is None or y.role != "activation":
            continue
        why = (f"Concat of fixed-encoded {fixed[0].name} with a wider input: inputs keep their "
               "own encodings (requantized)")  # fmt: skip
        if rules.float_activations and rules.high_precision == "float":
            spec.tensors[y.name] = TensorSpec(y.name, "float", node=y.node,
                                              reason=why + "; output kept float")  # fmt: skip
        elif rules.act16 is not None:
            spec.tensors[y.name] = replace(y, dtype=rules.act16, symmetric=rules.act16 == "int16",
                                           reason=why + "; output at 16 bits")  # fmt: skip
        else:
            spec.tensors[y.name] = replace(y, reason=why + "; output at 8 bits over both")
        out.add(y.name)
    return out


def _integer_only_constants(spec: PlanSpec, graph: Graph, rules: QuantRules) -> None:
    """Full-integer targets: float constant operands of other ops are int8 per-tensor too."""
    if not rules.integer_only:
        return
    for node in graph.nodes:
        out = spec.tensors.get(node.outputs[0]) if node.outputs else None
        on_mask = out is not None and out.fixed_range == MASK_RANGE
        for i in node.inputs:
            if i in graph.constants and i not in spec.tensors and _is_float(graph.constants[i]):
                if node.op_type in ("Reshape", "Resize", "Pad", "Slice", "Expand", "Tile"):
                    continue
                # a mask fill (float-min, -1e4) times 0/1 only has to reach the mask range:
                # quantizing float-min itself would overflow the scale
                clip = MASK_RANGE if on_mask and node.op_type == "Mul" else None
                reason = "integer-only target: constant operand"
                if clip is not None:
                    reason += f", mask fill clipped to {clip[0]:g}"
                spec.tensors[i] = TensorSpec(i, "weight", "int8", symmetric=True, narrow=True,
                                             observer="minmax", node=node.name, clip=clip,
                                             reason=reason)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# stage 2: numbers from statistics
# ---------------------------------------------------------------------------------------------
def finalize_plan(
    graph: Graph,
    spec: PlanSpec,
    stats: Mapping[str, Any],
    *,
    model: Mapping[str, Any] | None = None,
    calibration: Mapping[str, Any] | None = None,
    requantized: Collection[str] = (),
) -> QuantPlan:
    """The plan from the spec and the calibration statistics. `requantized`: weights that a
    weights algorithm quantizes again right after (GPTQ, RTN's grid search; see
    `edgeq.algorithms.data_aware.requantized_weights`): they get min-max params here, since
    a clipping search of theirs would be thrown away (it cost most of the 4-bit plan phase)."""
    rules = spec.target.quant
    observers = spec.observers()
    tensors: dict[str, TensorQuant] = {}
    ranges = _group_ranges(spec, observers, stats)
    for name, t in spec.tensors.items():
        if t.role == "float":
            tensors[name] = TensorQuant(name, "float", "float32", reason=t.reason, node=t.node)
        elif t.role == "activation":
            tensors[name] = _activation_quant(t, ranges, rules)
    for name, t in spec.tensors.items():
        if t.role == "weight":
            quick = name in requantized and t.weight_format != "lut"
            tensors[name] = _weight_quant(replace(t, observer="minmax") if quick else t,
                                          graph.constants[name])  # fmt: skip
    for name, t in spec.tensors.items():
        if t.role == "bias":
            tensors[name] = _bias_quant(t, graph, tensors)
    return QuantPlan(
        target=spec.target.name,
        tensors=tensors,
        recipe=spec.recipe.to_dict(),
        graph_fingerprint=graph_fingerprint(graph),
        model=dict(model or {}),
        rounding=rules.rounding,
        calibration=dict(calibration or {}),
    )


def with_activation_stats(plan: QuantPlan, graph: Graph, spec: PlanSpec,
                          stats: Mapping[str, Any]) -> QuantPlan:  # fmt: skip
    """`plan` (from `finalize_plan`) with its activations planned again from other observer
    `stats` (e.g. ranges cut at another tail) and the int32 biases re-derived; the weights
    are kept as they are."""
    ranges = _group_ranges(spec, spec.observers(), stats)
    tensors = dict(plan.tensors)
    for name, t in spec.tensors.items():
        if t.role == "activation":
            tensors[name] = _activation_quant(t, ranges, spec.target.quant)
    return replace(plan, tensors=derive_biases(graph, spec, tensors),
                   calibration=dict(plan.calibration))  # fmt: skip


def derive_biases(
    graph: Graph, spec: PlanSpec, tensors: Mapping[str, TensorQuant]
) -> dict[str, TensorQuant]:
    """`tensors` with every int32 bias re-derived from the current weight scales (after an
    algorithm changed the weights)."""
    out = dict(tensors)
    for name, t in spec.tensors.items():
        if t.role == "bias":
            out[name] = _bias_quant(t, graph, out)
    return out


def _group_ranges(spec: PlanSpec, observers: Mapping[str, Observer],
                  stats: Mapping[str, Any]) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Real range per group root (or per tensor when ungrouped), from merged observer states."""
    by_root: dict[str, list[str]] = {}
    for name in observers:
        t = spec.tensors[name]
        by_root.setdefault(t.group or name, []).append(name)
    ranges: dict[str, tuple[float, float]] = {}
    for root, names in by_root.items():
        missing = [n for n in names if n not in stats]
        if missing:
            raise EdgeqError(f"no calibration statistics for tensor(s) {missing[:3]}",
                             "calibrate with the same plan spec")  # fmt: skip
        obs = observers[names[0]]
        state = stats[names[0]]
        for n in names[1:]:
            state = obs.merge(state, stats[n])
        t = spec.tensors[names[0]]
        q = qdtype(t.dtype)
        lo, hi = obs.finalize(state, q, t.symmetric)
        floors = [spec.tensors[n].masked_floor for n in names if spec.tensors[n].masked_floor]
        if floors:
            lo = min(lo, hi - max(floors))  # type: ignore[type-var]
        clips = {spec.tensors[n].clip for n in by_root[root]}
        if len(clips) == 1 and t.clip is not None:  # every member clipped alike (above)
            lo, hi = max(lo, t.clip[0]), min(hi, t.clip[1])
        ranges[root] = (float(lo), float(hi))
    return ranges


def _activation_quant(t: TensorSpec, ranges: Mapping[str, tuple[float, float]],
                      rules: QuantRules) -> TensorQuant:  # fmt: skip
    q = qdtype(t.dtype)
    if t.fixed is not None:
        scale, zp = np.float32(t.fixed[0]), np.int64(t.fixed[1])
        provenance = "fixed"
    else:
        if t.fixed_range is not None:
            lo, hi = t.fixed_range
            provenance = "fixed range"
        else:
            lo, hi = ranges.get(t.group or t.name, ranges.get(t.name, (0.0, 0.0)))
            provenance = f"observer:{t.observer}" + (
                f" (shared with {t.group})" if t.group and t.group != t.name else ""
            )
        s, z = choose_qparams(lo, hi, q, t.symmetric, rules.min_range)
        scale, zp = np.float32(s), np.int64(z)
    return TensorQuant(t.name, "activation", t.dtype, scale=np.asarray(scale), zero_point=np.asarray(zp),
                       symmetric=t.symmetric, provenance=provenance, reason=t.reason, node=t.node)  # fmt: skip


def _weight_quant(t: TensorSpec, w: np.ndarray) -> TensorQuant:
    if t.weight_format == "lut":
        return _uniform_lut(t, w)
    q = qdtype(t.dtype, t.narrow)
    if t.clip is not None:
        w = np.clip(w, *t.clip)
    scale, zp = weight_qparams(w, q, axis=t.axis, block=t.block, symmetric=t.symmetric,
                               method=t.observer or "minmax")  # fmt: skip
    values = quantize_weight(w, scale, zp, q, t.axis, t.block)
    return TensorQuant(t.name, "weight", t.dtype, scale=scale, zero_point=zp, axis=t.axis, block=t.block,
                       narrow=t.narrow, symmetric=t.symmetric, values=values,
                       provenance=f"weight:{t.observer or 'minmax'}", reason=t.reason, node=t.node)  # fmt: skip


def _uniform_lut(t: TensorSpec, w: np.ndarray) -> TensorQuant:
    """A valid starting table: 2^bits evenly spaced float16 values over each group's range
    (the `lut` weights algorithm replaces it with a weighted k-means table)."""
    levels = 1 << qdtype(t.dtype).bits
    lut_shape = [1] * w.ndim
    if t.axis is not None and t.block:
        lut_shape[t.axis] = w.shape[t.axis] // t.block
    groups = (
        np.moveaxis(w, t.axis, 0).reshape(lut_shape[t.axis], -1)
        if t.axis is not None and t.block
        else w.reshape(1, -1)
    )
    lo, hi = groups.min(axis=1, keepdims=True), groups.max(axis=1, keepdims=True)
    table = (
        (lo + (hi - lo) * np.linspace(0.0, 1.0, levels)[None, :])
        .astype(np.float16)
        .astype(np.float32)
    )
    lut = table.reshape(*lut_shape, levels)
    full = lut
    for axis in range(w.ndim):
        full = np.repeat(full, w.shape[axis] // lut.shape[axis], axis=axis)
    values = np.argmin(np.abs(w[..., None] - full), axis=-1).astype(np.uint8)
    return TensorQuant(t.name, "weight", t.dtype, axis=t.axis, block=t.block, values=values, lut=lut,
                       provenance="weight:uniform_lut", reason=t.reason, node=t.node)  # fmt: skip


def _bias_quant(t: TensorSpec, graph: Graph, tensors: dict[str, TensorQuant]) -> TensorQuant:
    assert t.bias_of is not None
    x_name, w_name = t.bias_of
    b = graph.constants[t.name]
    x, w = tensors.get(x_name), tensors.get(w_name)
    if (x is None or not x.is_quantized or w is None or not w.is_quantized or w.block is not None
            or w.lut is not None):  # fmt: skip
        why = (
            "input activation is float"
            if x is None or not x.is_quantized
            else "weight is per-block or float"
        )
        return TensorQuant(
            t.name, "float", "float32", reason=f"bias stays float: {why}", node=t.node
        )
    assert x.scale is not None and w.scale is not None
    w_scale = w.scale
    safe = bias_safe_weight_scale(b, float(x.scale), w_scale)
    if not np.array_equal(safe, w_scale):  # int32 bias would overflow: raise the weight scale
        q = w.qdtype
        values = quantize_weight(graph.constants[w_name], safe, w.zero_point, q, w.axis, w.block)  # type: ignore[arg-type]
        tensors[w_name] = replace(w, scale=safe, values=values,
                                  reason=(w.reason + "; " if w.reason else "") + "scale raised so the int32 bias fits")  # fmt: skip
        w_scale = safe
    scale = bias_scale(float(x.scale), w_scale)
    if scale.ndim and b.ndim == 0:
        b = np.broadcast_to(b, scale.shape)
    values = quantize_bias(b, scale)
    return TensorQuant(t.name, "bias", "int32", scale=scale, zero_point=np.zeros(scale.shape, np.int64),
                       axis=0 if scale.ndim else None, symmetric=True, values=values,
                       provenance="derived:s_in*s_w", reason=t.reason, node=t.node)  # fmt: skip
