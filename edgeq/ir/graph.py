"""The graph IR: nodes, values with shapes and dtypes, constants as numpy arrays.

A `Graph` is a plain container; passes (`edgeq.ir.passes`) take a graph and return a new one.
Value names are global within a graph and its subgraphs (ONNX forbids shadowing), so a node
refers to its inputs by name. Constants (ONNX initializers and folded values) live in
`Graph.constants`; everything else flows at run time.
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeq.errors import GraphError

Dim = int | str  # an int is fixed; a str is a symbolic (unfixed) dimension


@dataclass
class ValueInfo:
    """Name, element dtype and shape of a tensor; shape None when unknown (rank unknown)."""

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...] | None

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def dynamic_dims(self) -> list[int]:
        if self.shape is None:
            return []
        return [i for i, d in enumerate(self.shape) if not isinstance(d, int)]


@dataclass
class Node:
    """One operator application. Empty-string inputs are absent optional inputs (ONNX style)."""

    op_type: str
    inputs: list[str]
    outputs: list[str]
    name: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""

    def subgraphs(self) -> Iterator[Graph]:
        for value in self.attrs.values():
            if isinstance(value, Graph):
                yield value
            elif isinstance(value, list) and value and isinstance(value[0], Graph):
                yield from value

    def __str__(self) -> str:
        return f"{self.op_type} node '{self.name or self.outputs[0]}'"


@dataclass
class Graph:
    """Nodes in execution order, named inputs/outputs, constants, and known value infos."""

    nodes: list[Node]
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    value_info: dict[str, ValueInfo] = field(default_factory=dict)
    name: str = "graph"
    opset: int = 17
    metadata: dict[str, str] = field(default_factory=dict)

    # ---- queries -------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [v.name for v in self.outputs]

    def producers(self) -> dict[str, Node]:
        return {out: node for node in self.nodes for out in node.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        result: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in set(node.inputs) | outer_scope_inputs(node):
                if name:
                    result.setdefault(name, []).append(node)
        return result

    def info(self, name: str) -> ValueInfo | None:
        if name in self.constants:
            arr = self.constants[name]
            return ValueInfo(name, arr.dtype, tuple(arr.shape))
        for v in self.inputs:
            if v.name == name:
                return v
        return self.value_info.get(name)

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for node in self.walk_nodes():
            hist[node.op_type] = hist.get(node.op_type, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    def walk_nodes(self) -> Iterator[Node]:
        """All nodes, including those inside If/Loop subgraphs."""
        for node in self.nodes:
            yield node
            for sub in node.subgraphs():
                yield from sub.walk_nodes()

    def copy(self) -> Graph:
        """A deep copy of the structure; constant arrays are shared (treat them as immutable)."""
        consts = self.constants
        self.constants = {}
        try:
            dup = copy.deepcopy(self)
        finally:
            self.constants = consts
        dup.constants = dict(consts)
        _share_subgraph_constants(self, dup)
        return dup

    def unique_name(self, base: str) -> str:
        taken = self._all_names()
        if base not in taken:
            return base
        i = 1
        while f"{base}_{i}" in taken:
            i += 1
        return f"{base}_{i}"

    def _all_names(self) -> set[str]:
        names = set(self.constants) | {v.name for v in self.inputs}
        for node in self.walk_nodes():
            names.update(node.outputs)
            names.add(node.name)
        return names


def _share_subgraph_constants(src: Graph, dst: Graph) -> None:
    for s_node, d_node in zip(src.nodes, dst.nodes, strict=True):
        for s_sub, d_sub in zip(s_node.subgraphs(), d_node.subgraphs(), strict=True):
            d_sub.constants = dict(s_sub.constants)
            _share_subgraph_constants(s_sub, d_sub)


def outer_scope_inputs(node: Node) -> set[str]:
    """Names a node's subgraphs read from the enclosing scope (implicit inputs)."""
    needed: set[str] = set()
    for sub in node.subgraphs():
        defined = set(sub.constants) | {v.name for v in sub.inputs}
        for inner in sub.nodes:
            for name in list(inner.inputs) + sorted(outer_scope_inputs(inner)):
                if name and name not in defined:
                    needed.add(name)
            defined.update(inner.outputs)
        for out in sub.outputs:
            if out.name not in defined:
                needed.add(out.name)
    return needed


def node_inputs_all(node: Node) -> list[str]:
    """Explicit inputs plus implicit outer-scope inputs of subgraphs (for dependency order)."""
    return [n for n in node.inputs if n] + sorted(outer_scope_inputs(node))


def topological_order(graph: Graph) -> list[Node]:
    """Nodes sorted so every input is produced before use (stable: among the nodes ready to
    run, the earliest in the original order goes first). Kahn's algorithm with a heap of
    original positions: O(n log n), so a 50,000-node graph sorts in well under a second."""
    available = set(graph.constants) | set(graph.input_names) | {""}
    produced_by = graph.producers()
    remaining = list(graph.nodes)
    ordered: list[Node] = []
    pending_count = [0] * len(remaining)
    waiting: dict[str, list[int]] = {}
    ready: list[int] = []
    for i, node in enumerate(remaining):
        missing = {name for name in node_inputs_all(node) if name not in available}
        for name in missing:
            if name not in produced_by:
                raise GraphError(
                    f"{node} reads '{name}', which no node, input or constant defines",
                    "check the model with onnx.checker or re-export it",
                )
            waiting.setdefault(name, []).append(i)
        pending_count[i] = len(missing)
        if not missing:
            ready.append(i)
    heapq.heapify(ready)
    while ready:
        i = heapq.heappop(ready)
        ordered.append(remaining[i])
        for out in remaining[i].outputs:
            for consumer in waiting.pop(out, []):
                pending_count[consumer] -= 1
                if pending_count[consumer] == 0:
                    heapq.heappush(ready, consumer)
    if len(ordered) != len(remaining):
        stuck = [n for i, n in enumerate(remaining) if pending_count[i] > 0]
        raise GraphError(
            f"graph has a cycle through {len(stuck)} node(s), e.g. {stuck[0]}",
            "ONNX graphs must be acyclic; re-export the model",
        )
    return ordered


def iter_values(graph: Graph) -> Iterable[str]:
    yield from graph.input_names
    yield from graph.constants
    for node in graph.nodes:
        yield from (o for o in node.outputs if o)
