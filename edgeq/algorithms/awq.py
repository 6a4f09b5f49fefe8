"""Activation-aware scaling (AWQ-style, Lin et al. 2023), folded exactly into the graph.

For a tensor X whose every consumer is a linear layer (MatMul/Gemm/Conv with a constant weight,
X its data input), a per-channel factor s can move between X's producer and the consumers
without changing the float function: X' = X / s (the producer's output channels divided) and
W' = W · diag(s) (each consumer's input channels multiplied). Salient input channels (large
mean |x|) scaled up get relatively finer 4-bit steps. The factor is s = mean|x|^α (normalized),
α searched on a grid to minimize the consumers' output error tr(ΔW H ΔWᵀ), ΔW = Q(W·diag(s))
/ diag(s) − W, with H the Hessian of X on calibration data; α = 0 (no scaling) is in the grid,
so the search never makes that error worse.

Producers that take the division exactly: LayerNormalization (scale and bias), MatMul / Gemm /
Conv with a constant weight (output channels, and the bias Add that follows), and Relu in
front of one of those (Relu(x/s) = Relu(x)/s for s > 0). Anything else (a residual Add, a
GELU, a graph output among the readers) leaves X unscaled.

Pure with respect to formats: (graph, statistics) → scales → a graph with folded constants.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.algorithms.grids import Grid, MatrixView, round_to_grid
from edgeq.algorithms.registry import register_algorithm
from edgeq.ir.graph import Graph, Node
from edgeq.quant.statistics import ChannelMagnitude, ConvInputHessian, InputHessian

ALPHAS = tuple(np.linspace(0.0, 1.0, 21))


@dataclass(frozen=True)
class Consumer:
    node: str
    weight: str
    kind: str  # matmul | gemm_t (W [N, K]) | conv
    groups: int = 1


@dataclass(frozen=True)
class Site:
    """A tensor whose channels can be rescaled exactly between producer and consumers."""

    tensor: str
    channels: int
    channel_axis: int  # -1 (MatMul/Gemm inputs) or 1 (NCHW conv inputs)
    producer: str  # node name
    fold: tuple[tuple[str, int], ...]  # (constant, axis) divided by s: the producer side
    consumers: tuple[Consumer, ...]


def _consumer(node: Node, tensor: str, consts: Mapping[str, np.ndarray]) -> Consumer | None:
    ins = node.inputs
    if (
        node.op_type == "MatMul"
        and ins[0] == tensor
        and ins[1] in consts
        and consts[ins[1]].ndim == 2
    ):
        return Consumer(node.name, ins[1], "matmul")
    if (
        node.op_type == "Gemm"
        and ins[0] == tensor
        and ins[1] in consts
        and not node.attrs.get("transA", 0)
    ):
        return Consumer(node.name, ins[1], "gemm_t" if node.attrs.get("transB", 0) else "matmul")
    if (
        node.op_type == "Conv"
        and ins[0] == tensor
        and ins[1] in consts
        and consts[ins[1]].ndim == 4
    ):
        return Consumer(node.name, ins[1], "conv", int(node.attrs.get("group", 1)))
    return None


def find_sites(graph: Graph) -> list[Site]:
    """Every tensor AWQ can rescale exactly (see the module doc)."""
    consts = graph.constants
    consumers = graph.consumers()
    producers = graph.producers()
    outputs = set(graph.output_names)
    sites = []
    for tensor, users in consumers.items():
        if tensor in consts or tensor in outputs or tensor not in producers:
            continue
        found = [_consumer(u, tensor, consts) for u in users]
        if not found or any(c is None for c in found):
            continue
        cons = tuple(c for c in found if c is not None)
        conv = [c.kind == "conv" for c in cons]
        if any(conv) and not all(conv):
            continue
        axis = 1 if all(conv) else -1
        info = graph.info(tensor)
        if info is None or not info.is_static:
            continue
        channels = int(info.shape[axis])  # type: ignore[index,arg-type]
        fold = _producer_fold(
            producers[tensor], tensor, axis, channels, graph, consumers, producers
        )
        if fold is not None:
            sites.append(Site(tensor, channels, axis, producers[tensor].name, fold, cons))
    return sites


def _producer_fold(node: Node, tensor: str, axis: int, channels: int, graph: Graph,
                   consumers: Mapping[str, list[Node]], producers: Mapping[str, Node],
                   ) -> tuple[tuple[str, int], ...] | None:  # fmt: skip
    """Constants (and the axis of their output channels) that divide `tensor` by s when
    divided by s themselves, or None."""
    consts = graph.constants
    ins = node.inputs
    only = lambda t: len(consumers.get(t, [])) == 1 and t not in graph.output_names  # noqa: E731

    def const_vec(name: str) -> bool:
        return name in consts and consts[name].size == channels and consts[name].ndim >= 1

    if (
        node.op_type == "LayerNormalization"
        and axis == -1
        and int(node.attrs.get("axis", -1)) in (-1, len(graph.info(tensor).shape) - 1)
    ):  # type: ignore[union-attr,arg-type]
        if len(ins) > 1 and const_vec(ins[1]) and (len(ins) < 3 or not ins[2] or const_vec(ins[2])):
            return tuple((n, -1) for n in ins[1:3] if n)
        return None
    if node.op_type == "Relu" and only(ins[0]) and ins[0] in producers:
        return _producer_fold(
            producers[ins[0]], ins[0], axis, channels, graph, consumers, producers
        )
    if node.op_type == "Add":  # a bias Add after a linear layer
        const = [i for i in ins if i in consts]
        data = [i for i in ins if i not in consts]
        if (
            len(const) == 1
            and len(data) == 1
            and const_vec(const[0])
            and only(data[0])
            and data[0] in producers
        ):
            if axis == -1 and consts[const[0]].shape[-1] != channels:
                return None
            inner = _producer_fold(
                producers[data[0]], data[0], axis, channels, graph, consumers, producers
            )
            return None if inner is None else (*inner, (const[0], -1 if axis == -1 else 0))
        return None
    if node.op_type == "MatMul" and axis == -1 and ins[1] in consts and consts[ins[1]].ndim == 2:
        return ((ins[1], 1),)
    if (
        node.op_type == "Gemm"
        and axis == -1
        and ins[1] in consts
        and not node.attrs.get("transA", 0)
    ):
        fold = [(ins[1], 0 if node.attrs.get("transB", 0) else 1)]
        if len(ins) > 2 and ins[2] and const_vec(ins[2]):
            fold.append((ins[2], -1))
        return tuple(fold)
    if node.op_type == "Conv" and axis == 1 and ins[1] in consts:
        fold = [(ins[1], 0)]
        if len(ins) > 2 and ins[2] and const_vec(ins[2]):
            fold.append((ins[2], 0))
        return tuple(fold)
    return None


def _scaled(shape: tuple[int, ...], axis: int, s: np.ndarray) -> np.ndarray:
    view = [1] * len(shape)
    view[axis % len(shape)] = -1
    return s.reshape(view)


def fold_scales(graph: Graph, site: Site, s: np.ndarray) -> Graph:
    """The graph with `site.tensor` divided by s (producer side) and every consumer's input
    channels multiplied by s: the same float function."""
    g = graph.copy()
    s = np.asarray(s, np.float64)
    for name, axis in site.fold:
        arr = g.constants[name]
        g.constants[name] = (arr / _scaled(arr.shape, axis if arr.ndim > 1 else 0, s)).astype(
            arr.dtype
        )
    for c in site.consumers:
        w = g.constants[c.weight]
        if c.kind == "matmul":
            w = w * s[:, None]
        elif c.kind == "gemm_t":
            w = w * s[None, :]
        else:  # conv [O, I/g, kh, kw]: input channel i is group i // (I/g), position i % (I/g)
            cg = w.shape[1]
            per_out = s.reshape(c.groups, cg)
            w = w * np.repeat(per_out, w.shape[0] // c.groups, axis=0)[:, :, None, None]
        g.constants[c.weight] = w.astype(graph.constants[c.weight].dtype)
    return g


def statistics_for(site: Site, graph: Graph) -> dict[str, tuple[str, Any]]:
    """The calibration statistics a site's search needs: the magnitude of its channels and
    the Hessian of each consumer's input (im2col for convs)."""
    out: dict[str, tuple[str, Any]] = {
        f"awq:mag:{site.tensor}": (site.tensor, ChannelMagnitude(site.channels, site.channel_axis))
    }
    nodes = {n.name: n for n in graph.nodes}
    for c in site.consumers:
        if c.kind == "conv":
            n = nodes[c.node]
            w = graph.constants[c.weight]
            stat: Any = ConvInputHessian(
                site.channels, (int(w.shape[2]), int(w.shape[3])),
                tuple(int(v) for v in n.attrs.get("strides", (1, 1))),  # type: ignore[arg-type]
                tuple(int(v) for v in n.attrs.get("pads", (0, 0, 0, 0))),  # type: ignore[arg-type]
                tuple(int(v) for v in n.attrs.get("dilations", (1, 1))),  # type: ignore[arg-type]
                c.groups,
            )  # fmt: skip
            out[f"awq:h:{c.weight}"] = (site.tensor, stat)
        else:
            out[f"awq:h:{site.tensor}"] = (site.tensor, InputHessian(site.channels))
    return out


def _layer_error(w: np.ndarray, c: Consumer, h: np.ndarray, s: np.ndarray, grid: Grid,
                 view: MatrixView) -> float:  # fmt: skip
    """tr(ΔW H ΔWᵀ) for consumer weight `w` scaled by s, rounded on `grid`, unscaled."""
    site_scaled = {"matmul": w * s[:, None], "gemm_t": w * s[None, :]}.get(c.kind)
    if site_scaled is None:
        cg = w.shape[1]
        per = np.repeat(s.reshape(c.groups, cg), w.shape[0] // c.groups, axis=0)[:, :, None, None]
        site_scaled, unscale = w * per, per
    else:
        unscale = s[:, None] if c.kind == "matmul" else s[None, :]
    values, scale, zp = round_to_grid(site_scaled, view, grid)
    from edgeq.quant.qtypes import dequantize

    deq = dequantize(values, scale, zp, *_param_axis(view)) / unscale
    m, mh = view.to_matrix(w.astype(np.float64)), view.to_matrix(deq.astype(np.float64))
    d = (mh - m).reshape(c.groups if c.kind == "conv" else 1, -1, m.shape[1])
    hh = h if h.ndim == 3 else h[None]
    return float(np.sum(np.einsum("grc,gcd->grd", d, hh) * d))


def _param_axis(view: MatrixView) -> tuple[int | None, int | None]:
    if view.granularity == "per_block":
        return view.contract, view.block
    if view.granularity == "per_channel":
        return view.channel, None
    return None, None


@register_algorithm("awq", "graph", "activation-aware per-channel scaling of linear layer "
                    "inputs, searched on the output error and folded exactly into producers")  # fmt: skip
def search_scales(
    site: Site,
    graph: Graph,
    stats: Mapping[str, Any],
    grids: Mapping[str, tuple[Grid, MatrixView]],
    alphas: Sequence[float] = ALPHAS,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The factor s for `site` (all ones when no α beats α = 0) and the search record.
    `stats`: finalized statistics from `statistics_for`; `grids`: consumer weight → (grid,
    matrix view) of its planned quantization."""
    mag = np.asarray(stats[f"awq:mag:{site.tensor}"]["mean_abs"], np.float64)
    mag = np.maximum(mag, 1e-8 * max(float(mag.max()), 1e-30))
    errors = []
    best = (float("inf"), np.ones(site.channels))
    for a in alphas:
        s = mag**a
        s = s / np.sqrt(s.max() * s.min())
        total = 0.0
        for c in site.consumers:
            h = stats[f"awq:h:{c.weight}"] if c.kind == "conv" else stats[f"awq:h:{site.tensor}"]
            grid, view = grids[c.weight]
            total += _layer_error(graph.constants[c.weight], c, np.asarray(h), s, grid, view)
        errors.append(total)
        if total < best[0]:
            best = (total, s)
    return best[1], {"tensor": site.tensor, "alpha": float(alphas[int(np.argmin(errors))]),
                     "error_ratio": float(min(errors) / errors[0]) if errors[0] > 0 else 1.0}  # fmt: skip


def apply_awq(graph: Graph, sites: Sequence[Site], stats: Mapping[str, Any],
              grids: Mapping[str, tuple[Grid, MatrixView]],
              progress: Callable[[int, int], None] | None = None,
              ) -> tuple[Graph, dict[str, list[float]], list[dict[str, Any]]]:  # fmt: skip
    """Search and fold every site; returns the graph, the scales per site tensor (to re-fold
    the same graph later) and the search records."""
    scales: dict[str, list[float]] = {}
    rows = []
    for i, site in enumerate(sites):
        if not all(c.weight in grids for c in site.consumers):
            continue
        s, row = search_scales(site, graph, stats, grids)
        rows.append(row)
        if row["alpha"] > 0:
            graph = fold_scales(graph, site, s)
            scales[site.tensor] = [float(v) for v in s]
        if progress is not None:
            progress(i + 1, len(sites))
    return graph, scales, rows


def refold(graph: Graph, scales: Mapping[str, Sequence[float]]) -> Graph:
    """Apply recorded AWQ scales again (a plan re-prepares its graph from the model)."""
    by_tensor = {s.tensor: s for s in find_sites(graph)}
    for tensor, s in scales.items():
        site = by_tensor.get(tensor)
        if site is None:
            raise ValueError(f"AWQ site '{tensor}' is not in this graph")
        if np.shape(s) != (site.channels,):
            raise ValueError(f"AWQ site '{tensor}' has {site.channels} channels, the plan "
                             f"records {np.size(s)} factors")  # fmt: skip
        graph = fold_scales(graph, site, np.asarray(s))
    return graph


__all__ = ["Consumer", "Site", "apply_awq", "find_sites", "fold_scales", "refold", "search_scales",
           "statistics_for"]  # fmt: skip
