"""Mixed precision: which layers of a 4-bit plan go back to 8 bits, decided from measurement.

1. Sensitivity: each candidate layer alone is quantized to 4 bits, every other candidate at 8
   bits, and the model's output error against float is measured on calibration samples (one
   compiled forward with the weights as arguments: no recompiles). A layer's gain is how much
   output error (relative output noise energy) 8 bits instead of 4 remove: measured one layer
   at a time near the 8-bit model, where layers' errors add up, rather than by restoring one
   layer of a broken all-4-bit model (where the rest of the error swamps it: PP-OCRv4 rec at
   4 bits per channel has output cosine 0.66).
2. Greedy search over gain per added bit: layers go to 8 bits, best ratio first,
   - `max_loss` (METRIC=NUMBER, cosine or sqnr measured on the outputs): until the measured
     metric passes (checked on the actual mixed plan, not predicted);
   - `bpw` (average bits per weight, scales and zero points included, as the artifact stores
     them): never above it;
   - neither (the default): layers whose 4-bit error dominates — 8 bits remove at least
     `DOMINANT` of the output error 4 bits add — within the default size cap (`default_cap`:
     5 bits per weight, or `DEFAULT_EXTRA_BITS` above the all-4-bit size where a format's
     4-bit storage alone comes close to 5).
Where the target runs a layer both per channel (its 4-bit default) and in blocks (onnx
MatMuls: the integer kernels vs a float layer), or in blocks half as long (MLX: groups of 32
instead of 64), that blocked layout is a middle step: a fraction of a bit per weight more
instead of four, and most of 8 bits' accuracy on layers with outlier input channels; the search
ranks every step of every layer by removed error per added bit.
Every layer's decision and its reason go into the report. On token models (an attention-mask
input) the output error leaves out padded token positions (`edgeq.quant.padding`), as the
export's accuracy metrics do.

Pure: (graph, plan, alternatives, feeds, budgets) → plan choice; no formats.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from edgeq.algorithms.registry import register_algorithm
from edgeq.ir.graph import Graph
from edgeq.ir.interpreter import evaluate
from edgeq.ir.jit import jit
from edgeq.quant.padding import token_keep
from edgeq.quant.plan import QuantPlan, TensorQuant

if TYPE_CHECKING:
    from edgeq.targets import QuantRules

log = logging.getLogger(__name__)
Feeds = Mapping[str, np.ndarray]
DOMINANT = 0.01  # default: a layer whose 8-bit copy removes ≥ 1% of the error 4 bits add
DEFAULT_CAP = 5.0  # default size cap of a 4-bit plan, bits per weight (scales included)
DEFAULT_EXTRA_BITS = 0.5  # ... or this much over the all-4-bit plan, where that is larger
MIN_HEADROOM = 0.1  # the absolute cap applies when the all-4-bit plan leaves at least this
MIDDLE_MIN = DOMINANT  # 4-bit blocks are measured for layers that may count as dominant
EIGHT, BLOCKS = "8-bit", "blocks"  # the steps a per-channel 4-bit layer can climb


def default_cap(bpw4: float) -> float:
    """The default size cap for a plan whose all-4-bit size is `bpw4`: `--bits 4` means at
    most 5 bits per weight on average, scales and zero points included (the issue's bar for a
    4-bit model), where the format leaves room for 8-bit layers under it; formats whose 4-bit
    storage alone costs about 5 bits (MLX: a float16 scale and bias per 32 weights) get
    `DEFAULT_EXTRA_BITS` over their all-4-bit size instead."""
    if bpw4 <= DEFAULT_CAP - MIN_HEADROOM:
        return DEFAULT_CAP
    return bpw4 + DEFAULT_EXTRA_BITS


OUTPUT_METRICS = ("cosine", "sqnr")


# ---------------------------------------------------------------------------------------------
# bits per weight, as an artifact stores them
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Storage:
    """How a target stores weights: bits of a scale, of an asymmetric zero point (0: the
    weight's own width), of an affine bias per group (MLX), of a float weight."""

    scale_bits: int = 32
    zero_point_bits: int = 0  # 0: the weight's bit width
    affine_bias_bits: int = 0  # MLX: −scale·zero_point per group, for every group
    float_bits: int = 32
    pad_blocks: bool = False  # a partial last block is stored padded to the full block
    symmetric_zero_point_bits: int = 0  # stored per channel of a symmetric weight without blocks
    block_scale_bits: int = 0  # a blocked weight's scale where it differs (0: scale_bits)
    row_groups: tuple[int, ...] = ()  # rows stored in groups of one of these sizes (MLX)

    @staticmethod
    def of(rules: QuantRules) -> Storage:
        scale = 16 if rules.weight_scale_dtype == "float16" else 32
        block = 16 if (rules.block_scale_dtype or rules.weight_scale_dtype) == "float16" else 32
        return Storage(scale, 0, scale if rules.affine_bias else 0, rules.float_weight_bits,
                       rules.partial_blocks == "ceil" and rules.pad_partial_blocks,
                       rules.symmetric_zero_point_bits,
                       block if block != scale else 0, rules.row_groups)  # fmt: skip


def row_group_bits(rows: int, k: int, bits: int, block: int | None, group_bits: int,
                   sizes: Sequence[int]) -> float | None:  # fmt: skip
    """Stored bits of `rows` rows of `k` weights kept as groups (MLX): for each group size the
    plan's blocks allow (one dividing the block; any for one scale per row), the row padded to
    a multiple of it plus `group_bits` per group; the fewest (None: no size fits)."""
    best: float | None = None
    for g in sizes:
        if block and block % g:
            continue
        kp = -(-k // g) * g
        stored = float(rows * (kp * bits + kp // g * group_bits))
        best = stored if best is None else min(best, stored)
    return best


def weight_bits(t: TensorQuant | None, elements: int, storage: Storage) -> float:
    """Stored bits of one weight: values + scales + zero points (or affine biases)."""
    if t is None or not t.is_quantized:
        return float(elements * storage.float_bits)
    lut = getattr(t, "lut", None)
    if lut is not None:
        return float(elements * t.qdtype.bits + np.size(lut) * storage.scale_bits)
    n_params = int(np.size(t.scale))
    if storage.row_groups and t.axis is not None and t.values is not None:
        shape = np.shape(t.values)
        along = int(shape[int(t.axis)])  # blocks run along the axis; channels are rows
        rows, k = (elements // along, along) if t.block else (along, elements // along)
        group_bits = storage.scale_bits + storage.affine_bias_bits
        stored = row_group_bits(rows, k, t.qdtype.bits, t.block, group_bits, storage.row_groups)
        if stored is not None:
            return stored
    if storage.pad_blocks and t.block and t.axis is not None and t.values is not None:
        k = int(np.shape(t.values)[t.axis])
        elements = elements // k * (-(-k // t.block) * t.block)
    scale_bits = (
        storage.block_scale_bits if t.block and storage.block_scale_bits else storage.scale_bits
    )
    bits = elements * t.qdtype.bits + n_params * scale_bits
    if storage.affine_bias_bits:
        bits += n_params * storage.affine_bias_bits
    elif not t.symmetric:
        bits += n_params * (storage.zero_point_bits or t.qdtype.bits)
    elif not t.block:
        bits += n_params * storage.symmetric_zero_point_bits
    return float(bits)


def bits_per_weight(plan: QuantPlan, sizes: Mapping[str, int], storage: Storage) -> float:
    """Average stored bits per weight element over the layers in `sizes` (name → elements)."""
    total = sum(weight_bits(plan.tensors.get(n), e, storage) for n, e in sizes.items())
    return total / max(sum(sizes.values()), 1)


# ---------------------------------------------------------------------------------------------
# output error of a candidate assignment
# ---------------------------------------------------------------------------------------------
class OutputError:
    """Measures a weight assignment's outputs against float on fixed samples, compiled once.
    With `token_mask` (a token model's attention-mask input), padded token positions of the
    outputs are zero in both, so they count in no error, signal or cosine."""

    def __init__(self, graph: Graph, plan: QuantPlan, names: Sequence[str],
                 feeds: Sequence[Feeds], token_mask: str | None = None) -> None:  # fmt: skip
        self.names = list(names)
        acts = {
            t.name: t for t in plan.tensors.values() if t.role == "activation" and t.is_quantized
        }
        base = dict(graph.constants)
        for t in plan.tensors.values():  # every other quantized weight as planned
            if (
                t.role == "weight"
                and t.is_quantized
                and t.name in base
                and t.name not in self.names
            ):
                base[t.name] = t.dequantized().astype(base[t.name].dtype)
        g = replace(graph, constants={k: v for k, v in base.items() if k not in self.names})
        outs = graph.output_names
        seq = int(graph.info(token_mask).shape[-1]) if token_mask else 0  # type: ignore[union-attr,index]

        def flat(env: Mapping[str, Any], feed: Mapping[str, Any]) -> list[Any]:
            values = [env[o] for o in outs]
            if token_mask:
                real = jnp.reshape(feed[token_mask] != 0, (-1,))
                keeps = [token_keep(v.shape, real, seq) for v in values]
                values = [
                    v if k is None else jnp.where(k, v, 0)
                    for v, k in zip(values, keeps, strict=True)
                ]
            return [jnp.ravel(v).astype(jnp.float32) for v in values]

        def transform(name: str, value: Any) -> Any:
            t = acts.get(name)
            return value if t is None else t.fake_quant(value, plan.rounding)

        def forward(feed: Mapping[str, Any], weights: Mapping[str, Any]) -> Any:
            env = evaluate(g, {**feed, **weights}, transform=transform if acts else None)
            return flat(env, feed)

        def float_forward(feed: Mapping[str, Any]) -> Any:
            return flat(evaluate(graph, feed), feed)

        self._run = jit(jax.vmap(forward, in_axes=(0, None)))
        self.batch = {k: np.stack([np.asarray(f[k]) for f in feeds]) for k in feeds[0]}
        with jax.enable_x64(True):
            self.reference = [
                np.asarray(r, np.float64) for r in jit(jax.vmap(float_forward))(self.batch)
            ]
        self.evaluations = 0

    def __call__(self, weights: Mapping[str, np.ndarray]) -> dict[str, float]:
        """noise (relative output noise energy), sqnr (dB), cosine (mean per sample)."""
        with jax.enable_x64(True):
            outs = [np.asarray(o, np.float64) for o in self._run(self.batch, dict(weights))]
        self.evaluations += 1
        noise = sum(float(np.sum((o - r) ** 2)) for o, r in zip(outs, self.reference, strict=True))
        signal = sum(float(np.sum(r**2)) for r in self.reference)
        a = np.concatenate(outs, axis=1)
        b = np.concatenate(self.reference, axis=1)
        den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cos = np.where(den > 0, np.sum(a * b, axis=1) / np.where(den > 0, den, 1.0), 1.0)
        rel = noise / max(signal, 1e-30)
        return {"noise": rel, "sqnr": -10 * math.log10(rel) if rel > 0 else float("inf"),
                "cosine": float(np.mean(cos))}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the search
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """What the search must meet; `metric`/`floor` from --max-loss (cosine/sqnr), `bpw` the
    size budget."""

    metric: str | None = None
    floor: float | None = None
    bpw: float | None = None

    def passes(self, m: Mapping[str, float]) -> bool:
        if self.metric is None or self.floor is None:
            return True
        return m[self.metric] >= self.floor


@register_algorithm("mixed_precision", "weights", "keep at 8 bits (or in 4-bit blocks) the layers "
                    "whose measured 4-bit error dominates, within --max-loss / --bpw")  # fmt: skip
def choose_bits(
    graph: Graph,
    plan: QuantPlan,
    alternatives: Mapping[str, TensorQuant],
    feeds: Sequence[Feeds],
    sizes: Mapping[str, int],
    storage: Storage,
    budget: Budget = Budget(),
    progress: Callable[[int, int], None] | None = None,
    token_mask: str | None = None,
    middle: Mapping[str, TensorQuant] | None = None,
) -> tuple[QuantPlan, dict[str, Any]]:
    """The plan with some 4-bit weights replaced by their 8-bit `alternatives` (or by their
    `middle` alternatives: 4-bit in blocks, for per-channel 4-bit layers where the target
    runs blocks), and the report: per layer bits and why, the plan's bits per weight and
    measured output metrics (over real tokens only when `token_mask` names a token model's
    attention-mask input).

    A middle step is measured only for layers whose 8-bit copy removes at least
    `MIDDLE_MIN` of the all-4-bit error (it cannot remove more than 8 bits, so the others
    cannot reach the thresholds); the greedy search then ranks every step of every layer by
    removed error per added bit, a layer climbing from 4-bit to blocks to 8 bits."""
    t0 = time.perf_counter()
    names = [n for n in alternatives if n in plan.tensors]
    low = {n: plan.tensors[n].dequantized().astype(graph.constants[n].dtype) for n in names}
    high = {n: alternatives[n].dequantized().astype(graph.constants[n].dtype) for n in names}
    error = OutputError(graph, plan, names, feeds, token_mask)
    base = error(low)  # every candidate at 4 bits
    floor = error(high)  # every candidate at 8 bits
    alone: dict[str, float] = {}  # each layer alone at 4 bits, every other one at 8 bits
    for i, n in enumerate(names):
        alone[n] = error({**high, n: low[n]})["noise"]
        if progress is not None:
            progress(i + 1, len(names) + 1)
    gains = {n: alone[n] - floor["noise"] for n in names}
    # the output error 4 bits add: the all-4-bit model's, or the layers' own errors added up
    # where those exceed it (a broken all-4-bit model saturates), so shares stay within 100%
    added = max(base["noise"] - floor["noise"], sum(g for g in gains.values() if g > 0), 1e-30)
    middle = {n: t for n, t in (middle or {}).items()
              if n in gains and gains[n] >= MIDDLE_MIN * added}  # fmt: skip
    mid = {n: middle[n].dequantized().astype(graph.constants[n].dtype) for n in middle}
    mid_gains = {n: alone[n] - error({**high, n: mid[n]})["noise"] for n in middle}
    extra = {n: weight_bits(alternatives[n], sizes[n], storage)
             - weight_bits(plan.tensors[n], sizes[n], storage) for n in names}  # fmt: skip
    mid_extra = {n: weight_bits(middle[n], sizes[n], storage)
                 - weight_bits(plan.tensors[n], sizes[n], storage) for n in middle}  # fmt: skip
    total_elements = max(sum(sizes.values()), 1)
    bpw4 = bits_per_weight(plan, sizes, storage)
    cap = budget.bpw
    default = budget.metric is None and budget.bpw is None
    if default:
        cap = default_cap(bpw4)

    def step(n: str, r: str) -> tuple[float, float]:  # (gain, extra bits) of rung r of layer n
        return (gains[n], extra[n]) if r == EIGHT else (mid_gains[n], mid_extra[n])

    options = [(n, EIGHT) for n in names] + [(n, BLOCKS) for n in middle]
    order = sorted(options, key=lambda o: -step(*o)[0] / max(step(*o)[1], 1.0))
    rung: dict[str, str] = {}
    bits_now = bpw4 * total_elements
    current = base
    reasons: dict[str, str] = {}

    def assignment() -> dict[str, np.ndarray]:
        return {**low, **{n: high[n] if r == EIGHT else mid[n] for n, r in rung.items()}}

    for n, r in order:
        gain, more = step(n, r)
        now = rung.get(n)
        if now in (EIGHT, r):
            continue
        if now == BLOCKS:  # climbing from blocks to 8 bits: what the climb adds
            gain, more = gain - mid_gains[n], more - mid_extra[n]
        what = "8 bits" if r == EIGHT else f"4-bit blocks of {middle[n].block}"
        if gain <= 0:
            if now is None:
                reasons.setdefault(n, f"{what} would not lower the output error")
            continue
        if not default and budget.passes(current) and budget.metric is not None:
            break
        if default and gain < DOMINANT * added:
            if now is None:
                reasons.setdefault(n, f"its 4-bit error is {gain / added:.1%} of the model's: below the "
                                      f"{DOMINANT:.0%} that counts as dominant")  # fmt: skip
            continue
        if cap is not None and (bits_now + more) / total_elements > cap + 1e-9:
            if now is None:
                reasons[n] = (f"{what} would exceed {'--bpw' if budget.bpw else 'the default size cap'} "
                              f"{cap:.2f}")  # fmt: skip
            continue
        rung[n] = r
        bits_now += more
        why = (f"{'8 bits remove' if r == EIGHT else what + ' remove'} {step(n, r)[0] / added:.1%} of "
               f"the 4-bit output error ({step(n, r)[1] / sizes[n]:+.2f} bits per weight of this layer)")  # fmt: skip
        if budget.metric is not None:
            current = error(assignment())
            why += f"; {budget.metric} then {current[budget.metric]:.4g}"
        reasons[n] = why
    if budget.metric is not None and not budget.passes(current):
        chosen = [n for n, r in rung.items() if r == EIGHT]
        context = {**low, **{n: mid[n] for n, r in rung.items() if r == BLOCKS}}
        climb = {n: extra[n] - (mid_extra[n] if rung.get(n) == BLOCKS else 0.0) for n in names}
        current, bits_now = _in_context(error, context, high, chosen, names, climb, sizes, cap,
                                        total_elements, bits_now, budget, base, reasons)  # fmt: skip
        rung.update({n: EIGHT for n in chosen})
    tensors = dict(plan.tensors)
    for n, r in rung.items():
        alt = alternatives[n] if r == EIGHT else middle[n]
        kept = "kept at 8 bits: " if r == EIGHT else f"4-bit in blocks of {alt.block}: "
        tensors[n] = replace(alt, provenance=alt.provenance + "+mixed_precision",
                             reason=(alt.reason + "; " if alt.reason else "") + kept + reasons[n])  # fmt: skip
    final = error(assignment())
    result = replace(plan, tensors=tensors)
    report = {
        "candidates": len(names),
        "eight_bit": [
            {"weight": n, "node": plan.tensors[n].node, "reason": reasons[n]}
            for n in names
            if rung.get(n) == EIGHT
        ],
        "blocked": [
            {
                "weight": n,
                "node": plan.tensors[n].node,
                "block": middle[n].block,
                "reason": reasons[n],
            }
            for n in names
            if rung.get(n) == BLOCKS
        ],
        "layers": [
            {
                "weight": n,
                "node": plan.tensors[n].node,
                "bits": 8 if rung.get(n) == EIGHT else plan.tensors[n].qdtype.bits,
                "step": rung.get(n, "as planned"),
                "gain": gains[n],
                "share_of_4bit_error": gains[n] / added,
                **({"blocks_gain": mid_gains[n]} if n in mid_gains else {}),
                "reason": reasons.get(n, ""),
            }
            for n in names
        ],
        "budget": {
            "max_loss": f"{budget.metric}={budget.floor:g}" if budget.metric else None,
            "bpw": budget.bpw,
            "default_cap": cap if default else None,
        },
        "met": budget.passes(final)
        and (budget.bpw is None or bits_now / total_elements <= budget.bpw + 1e-9),
        "all_4bit": {k: base[k] for k in ("sqnr", "cosine")},
        "all_8bit": {k: floor[k] for k in ("sqnr", "cosine")},
        "chosen": {k: final[k] for k in ("sqnr", "cosine")},
        "bpw_all_4bit": bpw4,
        "bpw": bits_now / total_elements,
        "samples": len(feeds),
        "padding_excluded": token_mask is not None,
        "evaluations": error.evaluations,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return result, report


def _in_context(
    error: OutputError,
    low: Mapping[str, np.ndarray],
    high: Mapping[str, np.ndarray],
    chosen: list[str],
    names: Sequence[str],
    extra: Mapping[str, float],
    sizes: Mapping[str, int],
    cap: float | None,
    total_elements: int,
    bits_now: float,
    budget: Budget,
    base: Mapping[str, float],
    reasons: dict[str, str],
) -> tuple[dict[str, float], float]:
    """A --max-loss budget still unmet after the one-at-a-time pass: a layer's gain measured
    alone against the all-4-bit model can be zero or negative (its error cancels another
    layer's) and changes once those layers are at 8 bits. So, in rounds, the remaining layers'
    gains are measured again with `chosen` at 8 bits and the best per added bit go to 8 bits
    until the budget passes, no layer lowers the error any more, or all are at 8 bits.
    Appends to `chosen`, rewrites `reasons`; returns the final metrics and stored bits."""
    assert budget.metric is not None
    current = error({**low, **{c: high[c] for c in chosen}})
    while not budget.passes(current):
        fits = [n for n in names if n not in chosen
                and (cap is None or (bits_now + extra[n]) / total_elements <= cap + 1e-9)]  # fmt: skip
        if not fits:
            break
        context = {**low, **{c: high[c] for c in chosen}}
        gains = {n: current["noise"] - error({**context, n: high[n]})["noise"] for n in fits}
        ranked = sorted(
            (n for n in fits if gains[n] > 0), key=lambda n: -gains[n] / max(extra[n], 1.0)
        )
        if not ranked:
            for n in fits:
                reasons[n] = (f"8 bits would not lower the output error, measured with "
                              f"{len(chosen)} other layers at 8 bits")  # fmt: skip
            break
        for n in ranked:  # a round: best first, while each step still lowers the error
            before = current
            chosen.append(n)
            bits_now += extra[n]
            current = error({**low, **{c: high[c] for c in chosen}})
            share = gains[n] / max(base["noise"], 1e-30)
            reasons[n] = (f"with {len(chosen) - 1} other layers at 8 bits, restoring it removes "
                          f"{share:.1%} of the all-4-bit output error ({extra[n] / sizes[n]:+.2f} "
                          f"bits per weight of this layer); {budget.metric} then "
                          f"{current[budget.metric]:.4g}")  # fmt: skip
            if budget.passes(current) or current["noise"] >= before["noise"]:
                break  # met, or the gains measured this round no longer hold: measure again
    return current, bits_now


__all__ = ["Budget", "OutputError", "Storage", "bits_per_weight", "choose_bits", "weight_bits"]
