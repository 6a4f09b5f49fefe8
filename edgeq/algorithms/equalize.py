"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization", AIMET's DFQ).

Two convolutions with a positive-homogeneous op between them (ReLU, LeakyReLU, PReLU with one
slope, or nothing) compute the same function when output channel i of the first is divided
by s_i and input channel i of the second multiplied by s_i: f(x / s) = f(x) / s for s > 0.
With s_i = sqrt(r1_i · r2_i) / r2_i (r = per-channel max |w|) both layers' channel ranges
become sqrt(r1_i · r2_i), so one per-tensor weight scale (or a depthwise layer's narrow
channels) loses less. Float-exact: a "graph" algorithm, applied before calibration.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from edgeq.algorithms.registry import register_algorithm
from edgeq.ir.graph import Graph

HOMOGENEOUS = ("Relu", "LeakyRelu")  # f(x / s) = f(x) / s for every s > 0
MIN_RANGE = 1e-8


def equalization_scales(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """s_i = sqrt(r1_i · r2_i) / r2_i; 1 where either range is (near) zero."""
    r1, r2 = np.asarray(r1, np.float64), np.asarray(r2, np.float64)
    ok = (r1 > MIN_RANGE) & (r2 > MIN_RANGE)
    return np.where(ok, np.sqrt(np.where(ok, r1 * r2, 1.0)) / np.where(ok, r2, 1.0), 1.0)


def equalize_pair(w1: np.ndarray, b1: np.ndarray | None, w2: np.ndarray, depthwise2: bool = False
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:  # fmt: skip
    """(w1', b1', w2', s) for conv weights w1 [C, ...] feeding w2 ([O, C, ...], or [C, 1, ...]
    when the second conv is depthwise)."""
    c = w1.shape[0]
    r1 = np.abs(w1.reshape(c, -1)).max(axis=1)
    r2 = np.abs((w2 if depthwise2 else np.moveaxis(w2, 1, 0)).reshape(c, -1)).max(axis=1)
    s = equalization_scales(r1, r2)
    shape1 = (c,) + (1,) * (w1.ndim - 1)
    w1n = (w1 / s.reshape(shape1)).astype(w1.dtype)
    b1n = None if b1 is None else (b1 / s).astype(b1.dtype)
    shape2 = shape1 if depthwise2 else (1, c) + (1,) * (w2.ndim - 2)
    w2n = (w2 * s.reshape(shape2)).astype(w2.dtype)
    return w1n, b1n, w2n, s


def _conv_weight(graph: Graph, node: Any) -> np.ndarray | None:
    if node.op_type != "Conv" or len(node.inputs) < 2 or node.inputs[1] not in graph.constants:
        return None
    return graph.constants[node.inputs[1]]


@register_algorithm(
    "cle", "graph", "cross-layer equalization of Conv → ReLU → Conv pairs (float-exact)"
)
def cross_layer_equalization(graph: Graph, iterations: int = 2) -> tuple[Graph, dict[str, Any]]:
    """Equalize every Conv → [ReLU/LeakyReLU] → Conv pair whose middle tensors have one reader
    (groups 1 → groups 1 or depthwise). Returns (graph, facts)."""
    consts = dict(graph.constants)
    consumers = graph.consumers()
    pairs = []
    for n1 in graph.nodes:
        if _conv_weight(graph, n1) is None or int(n1.attrs.get("group", 1)) != 1:
            continue
        mid, act = n1.outputs[0], None
        users = consumers.get(mid, [])
        if len(users) == 1 and users[0].op_type in HOMOGENEOUS:
            act = users[0]
            mid = act.outputs[0]
            users = consumers.get(mid, [])
        if len(users) != 1 or mid in graph.output_names or n1.outputs[0] in graph.output_names:
            continue
        n2 = users[0]
        w2 = _conv_weight(graph, n2)
        if w2 is None or n2.inputs[0] != mid:
            continue
        c = consts[n1.inputs[1]].shape[0]
        g2 = int(n2.attrs.get("group", 1))
        depthwise = g2 == c and w2.shape[0] == c and w2.shape[1] == 1
        if g2 != 1 and not depthwise:
            continue
        pairs.append((n1, n2, depthwise))
    shared = {}
    for n1, n2, _ in pairs:  # a weight used twice would be rescaled twice: skip such pairs
        for name in (n1.inputs[1], n2.inputs[1], *(n1.inputs[2:3])):
            shared[name] = shared.get(name, 0) + 1
    pairs = [p for p in pairs if all(shared[n] == 1 for n in (p[0].inputs[1], p[1].inputs[1]))]
    spread = []
    for _ in range(iterations):
        for n1, n2, depthwise in pairs:
            b1 = consts.get(n1.inputs[2]) if len(n1.inputs) > 2 and n1.inputs[2] else None
            w1n, b1n, w2n, s = equalize_pair(
                consts[n1.inputs[1]], b1, consts[n2.inputs[1]], depthwise
            )
            consts[n1.inputs[1]], consts[n2.inputs[1]] = w1n, w2n
            if b1n is not None:
                consts[n1.inputs[2]] = b1n
            spread.append(float(np.max(s) / max(np.min(s), MIN_RANGE)))
    facts = {"pairs": len(pairs), "iterations": iterations,
             "max_scale_spread": round(max(spread), 3) if spread else 1.0}  # fmt: skip
    return replace(graph, constants=consts), facts


__all__ = ["cross_layer_equalization", "equalization_scales", "equalize_pair"]
