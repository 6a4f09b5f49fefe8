"""Per-channel scales on residual branches, for targets whose residual sum runs in float.

A transformer's linear layer that writes into the residual stream (attention output and FFN
output projections) has a few output channels 10-50x larger than the rest: the outlier
features of trained models. On a target that quantizes that layer's output per tensor (TFLite's
int8 FULLY_CONNECTED) one int8 grid is set by those few channels and the others keep a handful
of steps. Where the residual Add after it runs in float anyway (the LayerNorm is a float island:
`float_residual`), the branch can carry per-channel scales for free: column k of the layer's
weight and its bias are divided by c_k (exact; per-channel weight scales absorb it), the
layer's int8 output then spans similar ranges in every channel, and a float Mul by c right
before the float residual Add restores the values. A "graph" algorithm, exact in float.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgeq.algorithms.registry import register_algorithm
from edgeq.ir.graph import Graph, Node

MIN_GAIN = 2.0  # a site whose largest channel is under this many medians is left alone


@dataclass(frozen=True)
class BranchSite:
    """A linear layer's output (after its bias) read only by a residual Add into a LayerNorm."""

    tensor: str  # the branch the residual Add reads
    weight: str  # the layer's constant weight
    weight_axis: int  # the weight's output-channel axis
    bias: str | None  # the layer's constant bias vector, if any
    add: str  # the residual Add node
    channels: int


def _linear(node: Node, consts: Mapping[str, np.ndarray]) -> tuple[str, int] | None:
    """(weight, output-channel axis) of a MatMul/Gemm with a constant 2-D weight, or None."""
    if node.op_type == "MatMul" and len(node.inputs) == 2 and node.inputs[1] in consts:
        w = consts[node.inputs[1]]
        return (node.inputs[1], 1) if w.ndim == 2 else None
    if node.op_type == "Gemm" and len(node.inputs) >= 2 and node.inputs[1] in consts:
        if float(node.attrs.get("alpha", 1.0)) != 1.0 or int(node.attrs.get("transA", 0)):
            return None
        return node.inputs[1], 0 if int(node.attrs.get("transB", 0)) else 1
    return None


def find_branch_sites(graph: Graph) -> list[BranchSite]:
    """Every residual branch `LinearLayer (+ bias Add) -> Add(branch, other) -> LayerNorm` whose
    weight, bias and branch tensor nothing else reads."""
    consts = graph.constants
    consumers = graph.consumers()
    producers = graph.producers()
    outputs = set(graph.output_names)
    sites = []
    for add in graph.nodes:
        if add.op_type != "Add" or len(add.inputs) != 2 or any(i in consts for i in add.inputs):
            continue
        readers = consumers.get(add.outputs[0], [])
        if not any(r.op_type == "LayerNormalization" for r in readers):
            continue
        for branch in add.inputs:
            if branch in outputs or len(consumers.get(branch, [])) != 1:
                continue
            node, bias = producers.get(branch), None
            if node is not None and node.op_type == "Add":  # the layer's bias Add
                const = [i for i in node.inputs if i in consts]
                data = [i for i in node.inputs if i not in consts]
                if len(const) != 1 or len(data) != 1 or len(consumers.get(data[0], [])) != 1:
                    continue
                bias, node = const[0], producers.get(data[0])
            if node is None:
                continue
            lin = _linear(node, consts)
            if lin is None:
                continue
            weight, axis = lin
            n = int(consts[weight].shape[axis])
            if node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2]:
                if bias is not None or node.inputs[2] not in consts:
                    continue
                bias = node.inputs[2]
            if bias is not None and consts[bias].size != n:
                continue
            shared = [c for c in (weight, bias) if c and len(consumers.get(c, [])) != 1]
            if shared:
                continue
            sites.append(BranchSite(branch, weight, axis, bias, add.name, n))
    return sites


def branch_factors(max_abs: np.ndarray, min_gain: float = MIN_GAIN) -> np.ndarray | None:
    """c_k = max(1, max|y_k| / median_k max|y_k|): channels above the median come down to it,
    the rest stay. None when no channel reaches `min_gain` medians (nothing to win)."""
    m = np.asarray(max_abs, np.float64)
    live = m[m > 0]
    if live.size == 0:
        return None
    c = np.maximum(m / float(np.median(live)), 1.0)
    if float(c.max()) < min_gain:
        return None
    return c.astype(np.float32)


@register_algorithm(
    "branch_scales",
    "graph",
    "per-channel scales on residual branches whose residual sum runs in float (TFLite)",
)
def rescale_branches(graph: Graph, sites: Sequence[BranchSite],
                     factors: Mapping[str, np.ndarray]) -> tuple[Graph, list[dict[str, Any]]]:  # fmt: skip
    """Divide each site's weight columns and bias by its factors and insert `Mul(branch, c)`
    before the residual Add (float-exact). Sites without factors are left alone."""
    consts = dict(graph.constants)
    nodes = list(graph.nodes)
    value_info = dict(graph.value_info)
    rows = []
    for site in sites:
        c = factors.get(site.tensor)
        if c is None:
            continue
        w = consts[site.weight]
        shape = [1] * w.ndim
        shape[site.weight_axis] = -1
        consts[site.weight] = (w / c.reshape(shape)).astype(w.dtype)
        if site.bias is not None:
            b = consts[site.bias]
            consts[site.bias] = (b / c.reshape(b.shape)).astype(b.dtype)
        scaled, factor = f"{site.tensor}_branch_scaled", f"{site.tensor}_branch_scale"
        consts[factor] = c.astype(np.float32)
        at = next(i for i, n in enumerate(nodes) if n.name == site.add)
        add = nodes[at]
        nodes[at] = replace(add, inputs=[scaled if i == site.tensor else i for i in add.inputs])
        nodes.insert(at, Node("Mul", [site.tensor, factor], [scaled], f"{site.add}/branch_scale"))
        if site.tensor in value_info:
            value_info[scaled] = replace(value_info[site.tensor], name=scaled)
        rows.append({"branch": site.tensor, "channels": site.channels,
                     "largest_factor": round(float(c.max()), 3),
                     "scaled_channels": int(np.sum(c > 1.0)),
                     "factors": [float(v) for v in c]})  # fmt: skip
    return replace(graph, nodes=nodes, constants=consts, value_info=value_info), rows


def reapply_branch_scales(graph: Graph, rows: Sequence[Mapping[str, Any]]) -> Graph:
    """The branch scales a plan records (`rows` from `rescale_branches`), applied again to a
    freshly prepared graph. ValueError when a site is not in this graph or its size differs."""
    sites = {s.tensor: s for s in find_branch_sites(graph)}
    factors = {}
    for row in rows:
        site = sites.get(row["branch"])
        if site is None:
            raise ValueError(f"residual branch '{row['branch']}' is not in this graph")
        c = np.asarray(row["factors"], np.float32)
        if c.shape != (site.channels,):
            raise ValueError(f"residual branch '{row['branch']}' has {site.channels} channels, "
                             f"the plan records {c.size} factors")  # fmt: skip
        factors[site.tensor] = c
    return rescale_branches(graph, list(sites.values()), factors)[0]


__all__ = [
    "BranchSite",
    "branch_factors",
    "find_branch_sites",
    "reapply_branch_scales",
    "rescale_branches",
]
