"""Which tensor's quantization breaks the output, and why.

Propagated per-layer SQNR (`simulate.layer_sqnr`) shows *where* the error is, not *who* made
it: after one bad range every later tensor looks bad. Here every quantized tensor is judged by
its **own contribution**: the output SQNR when that tensor alone is quantized and everything
else stays float. Each one gets the facts that explain it, measured on the same samples:

- its range against the values it sees (clipped fraction, clipping vs rounding error);
- `fixed_encoding`: a Sigmoid/Softmax/Tanh-style fixed encoding that the values exceed,
  including one *shared* through Concat (a detector's box coordinates forced to 1/256);
- `shared_scale`: a scale shared through Concat/pooling/shape ops that does not fit this
  tensor (clips it, or leaves it a few levels);
- `outlier_channels`: one channel (axis 1 of NCHW, the last axis of [.., tokens, features])
  far larger than the median channel, so one per-tensor scale starves the others;
- `rare_values`: a min-max range set by a handful of values while almost all sit near zero;
- `top_clipped`: a range whose top is below the values' maximum on a tensor read by Softmax,
  ArgMax or TopK: the few largest values decide those ops, so saturating them ties the
  winners although the clipped energy (and the tensor's own SQNR) is tiny. Such tensors are
  measured exactly first;
- `clipping` (incl. a saturating consumer's active region) and, for weights,
  `weight_outlier_channels` / `weight_rounding`.

Pure: (graph, plan, feeds) → data (`Diagnosis.to_dict()` goes into the plan's report JSON;
the CLI and the HTML report render it). Cost: one float pass with statistics, then one
forward per measured tensor and sample (one compiled function; the tensor is a mask input).
With more tensors than `max_forwards` allows, the ones with the lowest own (local) SQNR
are measured exactly and the rest keep their local figures (`measured: "local"`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from edgeq.ir.graph import Graph
from edgeq.ir.interpreter import evaluate
from edgeq.quant.plan import QuantPlan, TensorQuant
from edgeq.quant.planner import DECIDED_BY_MAX

Feeds = Mapping[str, np.ndarray]
OUTLIER_CHANNEL_RATIO = 8.0  # max channel |x| over the median channel's
RARE_FRACTION = 1e-3  # share of values beyond half the range's reach that counts as rare


@dataclass(frozen=True)
class Cause:
    code: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "text": self.text}


@dataclass
class Diagnosis:
    samples: int
    rows: list[dict[str, Any]] = field(default_factory=list)  # worst own contribution first
    output_sqnr_db: float | None = None  # everything quantized (the plan as is)

    @property
    def culprit(self) -> dict[str, Any] | None:
        return self.rows[0] if self.rows else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "method": "own contribution: output SQNR with only this tensor quantized",
            "output_sqnr_db": self.output_sqnr_db,
            "culprit": self.culprit["tensor"] if self.culprit else None,
            "rows": self.rows,
        }


MASK_FILL = 1e30  # |x| at or above this is an attention-mask fill value, not a signal


def _db(signal: float, noise: float) -> float:
    if noise <= 0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


def _channel_axis(ndim: int) -> int | None:
    if ndim == 4:
        return 1
    if ndim == 3:
        return 2
    return None


def _activation_stats(graph: Graph, acts: Sequence[TensorQuant], feeds: Sequence[Feeds],
                      rounding: str) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per activation over `feeds` (float forward, nothing propagated): signal, rounding and
    clipping error energy, clipped count, observed min/max, per-channel max |x|, and how many
    values fall in the outer half of the range."""
    names = [t.name for t in acts]

    @jax.jit
    def stats(feed: Mapping[str, Any]) -> dict[str, Any]:
        env = evaluate(graph, feed)
        out = {}
        for t in acts:
            raw = jnp.asarray(env[t.name], jnp.float32)
            # an additive mask's fill (float-min, -inf) is no signal: calibration ignores it
            # too, and its square would make every energy here inf (inf/inf: NaN dB)
            x = jnp.where(jnp.abs(raw) < MASK_FILL, raw, 0.0)
            q = t.qdtype
            s, z = jnp.float32(t.scale), jnp.float32(t.zero_point)
            lo, hi = (q.qmin - z) * s, (q.qmax - z) * s
            xc = jnp.clip(x, lo, hi)
            fq = t.fake_quant(x, rounding)
            axis = _channel_axis(x.ndim)
            cmax = jnp.max(jnp.abs(x), axis=tuple(a for a in range(x.ndim) if a != axis)) \
                if axis is not None else jnp.max(jnp.abs(x))[None]  # fmt: skip
            half = 0.5 * jnp.maximum(-lo, hi)
            out[t.name] = {
                "signal": jnp.sum(x * x), "clip": jnp.sum((x - xc) ** 2),
                "round": jnp.sum((xc - fq) ** 2), "clipped": jnp.sum(x != xc),
                "count": jnp.float32(x.size), "min": jnp.min(raw), "max": jnp.max(raw),
                "outer": jnp.sum(jnp.abs(x) > half), "cmax": cmax,
            }  # fmt: skip
        return out

    acc: dict[str, dict[str, Any]] = {}
    with jax.enable_x64(True):
        for feed in feeds:
            for n, d in stats(dict(feed)).items():
                d = {k: np.asarray(v, np.float64) for k, v in d.items()}
                if n not in acc:
                    acc[n] = d
                    continue
                a = acc[n]
                for k in ("signal", "clip", "round", "clipped", "count", "outer"):
                    a[k] = a[k] + d[k]
                a["min"], a["max"] = np.minimum(a["min"], d["min"]), np.maximum(a["max"], d["max"])
                a["cmax"] = np.maximum(a["cmax"], d["cmax"])
    return {n: acc[n] for n in names if n in acc}


def _weight_facts(w: np.ndarray, t: TensorQuant) -> dict[str, Any]:
    wq = t.dequantized().astype(np.float64)
    w = np.asarray(w, np.float64)
    axis = t.axis if t.axis is not None else 0
    cmax = np.max(np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)), axis=1) \
        if w.ndim else np.abs(w)[None]  # fmt: skip
    return {"signal": float(np.sum(w * w)), "noise": float(np.sum((w - wq) ** 2)), "cmax": cmax}


def _channel_ratio(cmax: np.ndarray) -> tuple[float, int]:
    cmax = np.asarray(cmax, np.float64).reshape(-1)
    if cmax.size < 4:
        return 1.0, 0
    med = float(np.median(cmax))
    top = int(np.argmax(cmax))
    return (float(cmax[top]) / med if med > 0 else math.inf), top


def explain(t: TensorQuant, facts: Mapping[str, Any]) -> list[Cause]:
    """Why this tensor's quantization costs what it costs (most specific first)."""
    causes: list[Cause] = []
    if t.role == "weight":
        ratio, ch = _channel_ratio(facts["cmax"])
        if t.granularity == "per_tensor" and ratio >= OUTLIER_CHANNEL_RATIO:
            causes.append(Cause("weight_outlier_channels", f"one scale for all output channels: "
                                f"channel {ch} is {ratio:.0f}x the median channel's max |w|"))  # fmt: skip
        causes.append(Cause("weight_rounding", f"{t.qdtype.bits}-bit {t.granularity} weights: "
                            f"weight SQNR {_db(facts['signal'], facts['noise']):.1f} dB"))  # fmt: skip
        return causes
    q = t.qdtype
    s, z = float(t.scale), float(t.zero_point)  # type: ignore[arg-type]
    lo, hi = (q.qmin - z) * s, (q.qmax - z) * s
    vmin, vmax = float(facts["min"]), float(facts["max"])
    clipped = float(facts["clipped"]) / max(float(facts["count"]), 1.0)
    clip_dominates = facts["clip"] > facts["round"]
    where = f"range [{lo:.4g}, {hi:.4g}], values [{vmin:.4g}, {vmax:.4g}]"
    decided_by = facts.get("decided_by")
    if decided_by and vmax > hi + 0.5 * s:
        causes.append(Cause("top_clipped", f"read by {decided_by}: the range's top {hi:.4g} is "
                            f"below the values' maximum {vmax:.4g}, so the largest values, which "
                            f"decide the {decided_by}, saturate and tie ({where})"))  # fmt: skip
    shared = "shared with" in t.provenance or "shares" in t.reason
    if t.provenance.startswith("fixed") and clipped > 0:
        what = "a shared fixed encoding" if "shares" in t.reason else "its fixed output encoding"
        causes.append(Cause("fixed_encoding", f"{t.reason or 'fixed encoding'}: {what} clips "
                            f"{clipped:.1%} of values ({where})"))  # fmt: skip
    elif shared:
        span = max(abs(vmin), abs(vmax))
        if clip_dominates and clipped > 0:
            causes.append(Cause("shared_scale", f"{t.provenance or t.reason}: the shared range "
                                f"clips {clipped:.1%} of this tensor's values ({where})"))  # fmt: skip
        elif span > 0 and span < 0.125 * (hi - lo):
            levels = span / s
            causes.append(Cause("shared_scale", f"{t.provenance or t.reason}: the shared range is "
                                f"{(hi - lo) / span:.0f}x this tensor's, which gets ~{levels:.0f} "
                                f"levels ({where})"))  # fmt: skip
    ratio, ch = _channel_ratio(facts["cmax"])
    if ratio >= OUTLIER_CHANNEL_RATIO and not clip_dominates:
        causes.append(Cause("outlier_channels", f"channel {ch} reaches {float(np.max(facts['cmax'])):.4g}, "
                            f"{ratio:.0f}x the median channel's max |x|: one per-tensor scale "
                            f"leaves the other channels few levels"))  # fmt: skip
    outer = float(facts["outer"]) / max(float(facts["count"]), 1.0)
    if outer < RARE_FRACTION and not clip_dominates and not t.provenance.startswith("fixed"):
        causes.append(Cause("rare_values", f"range set by rare values: {outer:.3%} of values reach "
                            f"beyond half of it ({where})"))  # fmt: skip
    if (
        clip_dominates
        and clipped > 0
        and not any(c.code in ("fixed_encoding", "shared_scale") for c in causes)
    ):
        region = "active input region" in t.reason
        code = "saturating_op_range" if region else "clipping"
        why = "the saturating consumer's active region" if region else "the chosen range"
        causes.append(Cause(code, f"{why} clips {clipped:.2%} of values ({where})"))
    if not causes:
        causes.append(Cause("rounding", f"{q.bits}-bit rounding over {where}"))
    return causes


def _own_contribution(graph: Graph, plan: QuantPlan, names: Sequence[str], feeds: Sequence[Feeds]
                      ) -> dict[str, tuple[float, float]]:  # fmt: skip
    """(output signal, output noise) with each of `names` alone quantized, everything else
    float. One compiled function; which tensor is quantized is an input."""
    index = {n: i for i, n in enumerate(names)}
    acts = {n: plan.tensors[n] for n in names if plan.tensors[n].role == "activation"}
    weights = {n: plan.tensors[n] for n in names if plan.tensors[n].role == "weight"}
    deq = {n: t.dequantized().astype(graph.constants[n].dtype) for n, t in weights.items()}
    outs = graph.output_names
    rounding = plan.rounding

    def forward(feed: Mapping[str, Any], mask: Any) -> Any:
        consts = dict(graph.constants)
        for n in weights:
            w = jnp.asarray(graph.constants[n])
            consts[n] = w + mask[index[n]] * (jnp.asarray(deq[n]) - w)
        g = replace(graph, constants=consts)

        def fq(name: str, value: Any) -> Any:
            t = acts.get(name)
            if t is None or not jnp.issubdtype(value.dtype, jnp.floating):
                return value
            return value + mask[index[name]] * (t.fake_quant(value, rounding) - value)

        env = evaluate(g, feed, transform=fq)
        return [jnp.asarray(env[o], jnp.float32) for o in outs]

    @jax.jit
    def noise(feed: Mapping[str, Any], mask: Any, ref: Sequence[Any]) -> Any:
        got = forward(feed, mask)
        return sum(jnp.sum((a - b) ** 2) for a, b in zip(got, ref, strict=True))

    result = {n: [0.0, 0.0] for n in names}
    with jax.enable_x64(True):
        zero = jnp.zeros(len(names), jnp.float32)
        for feed in feeds:
            feed = dict(feed)
            ref = jax.jit(forward)(feed, zero)
            signal = float(sum(jnp.sum(r * r) for r in ref))
            for n in names:
                mask = np.zeros(len(names), np.float32)
                mask[index[n]] = 1.0
                result[n][0] += signal
                result[n][1] += float(noise(feed, mask, ref))
    return {n: (s, e) for n, (s, e) in result.items()}


def diagnose(graph: Graph, plan: QuantPlan, feeds: Sequence[Feeds], *,
             max_forwards: int = 64, include_weights: bool = True) -> Diagnosis:  # fmt: skip
    """Each quantized tensor's own contribution to the output error, with its causes."""
    feeds = list(feeds)
    acts = [t for t in plan.tensors.values() if t.role == "activation" and t.is_quantized
            and t.scale is not None and np.ndim(t.scale) == 0 and t.name in graph.value_info]  # fmt: skip
    stats = _activation_stats(graph, acts, feeds, plan.rounding)
    facts: dict[str, dict[str, Any]] = dict(stats)
    local: dict[str, float] = {
        n: _db(f["signal"], f["clip"] + f["round"]) for n, f in stats.items()
    }
    if include_weights:
        for t in plan.tensors.values():
            if (
                t.role == "weight"
                and t.is_quantized
                and t.values is not None
                and t.name in graph.constants
            ):
                f = _weight_facts(graph.constants[t.name], t)
                facts[t.name] = f
                local[t.name] = _db(f["signal"], f["noise"])
    consumers = graph.consumers()
    for n, f in stats.items():
        ops = sorted({u.op_type for u in consumers.get(n, []) if u.op_type in DECIDED_BY_MAX})
        if ops:
            f["decided_by"] = "/".join(ops)
    # a clipped top under a Softmax/ArgMax costs little energy here (few values) but decides
    # the output: measure those exactly first, then the lowest local SQNR
    first = {
        n for n in stats if any(c.code == "top_clipped" for c in explain(plan.tensors[n], facts[n]))
    }
    names = sorted(local, key=lambda n: (n not in first, local[n]))
    budget = max(1, max_forwards // max(len(feeds), 1))
    measured = names[:budget]
    own = _own_contribution(graph, plan, measured, feeds) if measured and feeds else {}
    producers = graph.producers()
    rows = []
    for n in names:
        t = plan.tensors[n]
        f = facts[n]
        node = producers.get(n) if t.role == "activation" else None
        row: dict[str, Any] = {
            "tensor": n, "role": t.role, "dtype": t.dtype, "granularity": t.granularity,
            "op": node.op_type if node is not None else ("weight" if t.role == "weight" else "input"),
            "node": t.node, "provenance": t.provenance,
            "own_sqnr_db": round(_db(*own[n]), 2) if n in own else None,
            "local_sqnr_db": round(local[n], 2),
            "measured": "exact" if n in own else "local",
        }  # fmt: skip
        if t.role == "activation":
            q = t.qdtype
            s, z = float(t.scale), float(t.zero_point)  # type: ignore[arg-type]
            row.update(range=[round((q.qmin - z) * s, 6), round((q.qmax - z) * s, 6)],
                       observed=[round(float(f["min"]), 6), round(float(f["max"]), 6)],
                       clipped_fraction=float(f["clipped"]) / max(float(f["count"]), 1.0))  # fmt: skip
        ratio, _ch = _channel_ratio(f["cmax"])
        row["channel_ratio"] = round(ratio, 2) if math.isfinite(ratio) else None
        row["causes"] = [c.to_dict() for c in explain(t, f)]
        rows.append(row)

    def key(r: dict[str, Any]) -> tuple[int, float]:
        v = r["own_sqnr_db"] if r["own_sqnr_db"] is not None else r["local_sqnr_db"]
        return (0 if r["measured"] == "exact" else 1, v)

    rows.sort(key=key)
    return Diagnosis(samples=len(feeds), rows=rows)


__all__ = ["Cause", "Diagnosis", "diagnose", "explain"]
