"""SmoothQuant-style per-channel smoothing (Xiao et al. 2023) for integer-only targets.

A few input channels of a transformer's MatMuls (the LayerNorm output, the residual stream's
outlier features) are 10-100x larger than the rest, so one per-tensor activation scale starves
the others. Dividing channel k of the activation by s_k and multiplying row k of every reading
MatMul's weight by s_k is exact; the 1/s_k is folded into the producer (a LayerNormalization's
scale and bias), so no op is added. s_k = max|x_k|^α / max|W_k|^(1−α) moves the difficulty from
activations (per-tensor) to weights (per-channel on most targets). A "graph" algorithm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from edgeq.algorithms.registry import register_algorithm
from edgeq.ir.graph import Graph, Node

ALPHA = 0.5
MIN = 1e-5


def smoothing_scales(
    act_absmax: np.ndarray, w_absmax: np.ndarray, alpha: float = ALPHA
) -> np.ndarray:
    """s_k = max|x_k|^α / max|W_k|^(1−α), 1 where a channel is (near) zero."""
    a = np.maximum(np.asarray(act_absmax, np.float64), MIN)
    w = np.maximum(np.asarray(w_absmax, np.float64), MIN)
    s = a**alpha / w ** (1.0 - alpha)
    return np.where(np.isfinite(s) & (s > 0), s, 1.0)


def smooth_layer(gamma: np.ndarray, beta: np.ndarray | None, weights: list[np.ndarray],
                 s: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, list[np.ndarray]]:  # fmt: skip
    """LayerNorm scale/bias divided by s; each reading MatMul weight [K, N] multiplied row-wise."""
    g = (gamma / s).astype(gamma.dtype)
    b = None if beta is None else (beta / s).astype(beta.dtype)
    return g, b, [(w * s[:, None]).astype(w.dtype) for w in weights]


@register_algorithm(
    "smoothing",
    "graph",
    "SmoothQuant: move LayerNorm-output outlier channels into the next MatMul weights",
)
def smooth_layernorm_outputs(graph: Graph, act_absmax: Mapping[str, np.ndarray],
                             alpha: float = ALPHA) -> tuple[Graph, dict[str, Any]]:  # fmt: skip
    """For every LayerNormalization (constant scale/bias) whose output is read only by MatMuls
    with constant [K, N] weights: smooth its K channels. `act_absmax` holds per-channel max |x|
    of those outputs (from calibration, e.g. `quant.statistics.ChannelMagnitude`)."""
    consts = dict(graph.constants)
    consumers = graph.consumers()
    done = 0
    for node in graph.nodes:
        if node.op_type != "LayerNormalization" or node.outputs[0] not in act_absmax:
            continue
        if len(node.inputs) < 2 or node.inputs[1] not in consts:
            continue
        users = consumers.get(node.outputs[0], [])
        mats = [u for u in users if u.op_type == "MatMul" and u.inputs[1] in consts
                and consts[u.inputs[1]].ndim == 2 and u.inputs[0] == node.outputs[0]]  # fmt: skip
        if not users or len(mats) != len(users) or node.outputs[0] in graph.output_names:
            continue
        names = [u.inputs[1] for u in mats]
        if len(set(names)) != len(names):
            continue
        w_absmax = np.max(np.stack([np.abs(consts[n]).max(axis=1) for n in names]), axis=0)
        s = smoothing_scales(act_absmax[node.outputs[0]], w_absmax, alpha)
        beta_name = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] in consts else None
        g, b, ws = smooth_layer(consts[node.inputs[1]], consts.get(beta_name) if beta_name else None,
                                [consts[n] for n in names], s)  # fmt: skip
        consts[node.inputs[1]] = g
        if beta_name is not None and b is not None:
            consts[beta_name] = b
        for n, w in zip(names, ws, strict=True):
            consts[n] = w
        done += 1
    return replace(graph, constants=consts), {"layernorms": done, "alpha": alpha}


def smoothing_sites(graph: Graph) -> dict[str, list[str]]:
    """LayerNorm outputs (-> the MatMul weights that read them) that `smooth_copies` can
    smooth: every reader is a MatMul with a constant [K, N] weight read nowhere else, or an Add
    of two activations (a residual sum), and at least one MatMul reads it."""
    consts = graph.constants
    consumers = graph.consumers()
    sites: dict[str, list[str]] = {}
    for node in graph.nodes:
        y = node.outputs[0] if node.op_type == "LayerNormalization" and node.outputs else ""
        if not y or y in graph.output_names:
            continue
        users = consumers.get(y, [])
        mats = [u for u in users if u.op_type == "MatMul" and u.inputs[0] == y
                and u.inputs[1] in consts and consts[u.inputs[1]].ndim == 2
                and len(consumers.get(u.inputs[1], [])) == 1]  # fmt: skip
        adds = [u for u in users if u.op_type == "Add" and len(u.inputs) == 2
                and not any(i in consts for i in u.inputs)]  # fmt: skip
        if mats and len(mats) + len(adds) == len(users):
            sites[y] = [u.inputs[1] for u in mats]
    return sites


@register_algorithm(
    "smoothing_copies",
    "graph",
    "SmoothQuant on a float LayerNorm's output: a float Mul by 1/s feeds the MatMuls (post-norm too)",
)
def smooth_copies(graph: Graph, act_absmax: Mapping[str, np.ndarray], alpha: float = ALPHA,
                  scales: Mapping[str, np.ndarray] | None = None,
                  ) -> tuple[Graph, list[dict[str, Any]]]:  # fmt: skip
    """For targets whose LayerNorm is a float island: every MatMul reading a LayerNorm output
    (`smoothing_sites`) reads `Mul(y, 1/s)` instead, and its weight rows are multiplied by s
    (exact in float). The LayerNorm output itself is unchanged, so a residual Add that reads
    it too (BERT's post-norm blocks) sees the same values; the Mul runs in float with the
    LayerNorm, and only its output is quantized. `scales` (s per LayerNorm output, as a plan
    records them) replace the search: the same rewrite again on a freshly prepared graph."""
    consts = dict(graph.constants)
    nodes = list(graph.nodes)
    value_info = dict(graph.value_info)
    rows = []
    for y, weights in smoothing_sites(graph).items():
        if scales is not None:
            if y not in scales:
                continue
            s = np.asarray(scales[y], np.float64)
        elif y in act_absmax:
            w_absmax = np.max(np.stack([np.abs(consts[n]).max(axis=1) for n in weights]), axis=0)
            s = smoothing_scales(act_absmax[y], w_absmax, alpha)
        else:
            continue
        for n in weights:
            consts[n] = (consts[n] * s[:, None]).astype(consts[n].dtype)
        smoothed, factor = f"{y}_smoothed", f"{y}_smoothing"
        consts[factor] = (1.0 / s).astype(np.float32)
        at = next(i for i, n in enumerate(nodes) if y in n.outputs) + 1
        for i in range(at, len(nodes)):
            n = nodes[i]
            if n.op_type == "MatMul" and n.inputs[0] == y:
                nodes[i] = replace(n, inputs=[smoothed, *n.inputs[1:]])
        nodes.insert(at, Node("Mul", [y, factor], [smoothed], f"{y}/smoothing"))
        if y in value_info:
            value_info[smoothed] = replace(value_info[y], name=smoothed)
        rows.append({"tensor": y, "matmuls": len(weights), "alpha": alpha,
                     "largest_scale": round(float(s.max()), 3),
                     "smallest_scale": round(float(s.min()), 3),
                     "scales": [float(v) for v in s]})  # fmt: skip
    return replace(graph, nodes=nodes, constants=consts, value_info=value_info), rows


__all__ = [
    "smooth_copies",
    "smooth_layer",
    "smooth_layernorm_outputs",
    "smoothing_scales",
    "smoothing_sites",
]
