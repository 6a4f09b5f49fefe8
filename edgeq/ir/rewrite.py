"""Small tools every graph rewrite uses: a pattern matcher over producers/consumers, node
replacement, dead-node elimination and topological sorting (shared by `edgeq.ir.passes` and
`edgeq.ir.exported`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeq.ir.graph import Graph, Node, node_inputs_all, topological_order


@dataclass
class Matcher:
    g: Graph

    def __post_init__(self) -> None:
        self.producers = self.g.producers()
        self.consumers = self.g.consumers()

    def prod(self, name: str, op: str) -> Node | None:
        n = self.producers.get(name)
        return n if n is not None and n.op_type == op else None

    def scalar(self, name: str) -> float | None:
        arr = self.g.constants.get(name)
        if arr is None or arr.size != 1 or not np.issubdtype(arr.dtype, np.floating):
            return None
        return float(arr.reshape(-1)[0])

    def is_const(self, name: str, value: float, tol: float = 1e-6) -> bool:
        v = self.scalar(name)
        return v is not None and abs(v - value) <= tol * max(1.0, abs(value))

    def other(self, node: Node, name: str) -> str | None:
        """The binary node's operand that is not `name` (None if `name` is not an operand)."""
        if len(node.inputs) != 2 or name not in node.inputs:
            return None
        return node.inputs[1] if node.inputs[0] == name else node.inputs[0]

    def private(self, name: str, users: int = 1) -> bool:
        return name not in self.g.output_names and len(self.consumers.get(name, [])) == users

    def const_operand(self, node: Node) -> tuple[str, float] | None:
        """(the non-constant operand, the scalar constant) of a binary node."""
        for i, j in ((0, 1), (1, 0)):
            v = self.scalar(node.inputs[j]) if len(node.inputs) == 2 else None
            if v is not None and node.inputs[i] not in self.g.constants:
                return node.inputs[i], v
        return None


def replace_node(g: Graph, new: Node, before: Node) -> None:
    """Insert `new` at the position of `before` (dead producers are removed later)."""
    idx = next(i for i, n in enumerate(g.nodes) if n is before)
    g.nodes.insert(idx, new)
    g.nodes.remove(before)


def eliminate_dead_nodes(graph: Graph) -> Graph:
    """Remove nodes and constants that no graph output depends on."""
    g = graph.copy()
    producers = g.producers()
    live: set[str] = set(g.output_names)
    stack = list(live)
    live_nodes: set[int] = set()
    while stack:
        name = stack.pop()
        node = producers.get(name)
        if node is None or id(node) in live_nodes:
            continue
        live_nodes.add(id(node))
        for i in node_inputs_all(node):
            if i not in live:
                live.add(i)
                stack.append(i)
    g.nodes = [n for n in g.nodes if id(n) in live_nodes]
    g.constants = {k: v for k, v in g.constants.items() if k in live}
    g.value_info = {k: v for k, v in g.value_info.items() if k in live}
    return g


def toposort(graph: Graph) -> Graph:
    g = graph.copy()
    g.nodes = topological_order(g)
    return g
