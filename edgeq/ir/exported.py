"""Canonicalization of what torch.onnx.export (TorchScript and dynamo) and paddle2onnx emit.

Each pass takes a graph with fixed shapes and known dtypes (after `infer_shapes`) and returns a
graph computing the same numbers with ops every target can run; `edgeq.ir.passes.verify` runs
after each (as for every pass) and the tests check each against onnxruntime on hand-built and
exporter-made graphs.

- `index_gathers_to_reshape`: Gather/GatherND with constant indices that read every element
  once, in order (HF's mask `Flatten → Gather` and dynamo's `GatherND` over an arange) → Reshape.
- `simplify_bool_logic`: Cast bool→bool, And/Or with an all-True/all-False constant (a
  broadcast: Expand), Not(Not(x)).
- `masks_to_arithmetic`: `Where(bool mask, a, b)` with scalar constants a, b (attention-mask
  fills) → `a·m + b·(1 − m)` in float, with `−inf` fills written as float32's lowest value where
  the result only reaches a Softmax through an Add (exp of either is exactly 0); the bool mask
  becomes a float 0/1 tensor: `Cast(to float)` moved back through the shape ops that carry it to
  its integer source, where `Cast(Cast(x, bool), float)` is `Min(Abs(Cast(x, float)), 1)`.
- `drop_softmax_nan_guards`: `Where(IsNaN(s), 0, s)` with `s` a Softmax of values that contain
  no infinite constant → `s` (a Softmax of finite values is never NaN).

Exactness: identical to onnxruntime except an input whose whole attention row is padding (no
real token at all): with `−inf` fills torch's graph returns 0 there through its NaN guard, the
canonical graph a uniform average. A tokenizer's output always has at least one real token.

- `split_to_slices`: Split → one Slice per output (for runtimes without a split kernel).
- `gelu_tanh`: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` → `Gelu(approximate="tanh")`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgeq.errors import GraphError
from edgeq.ir.graph import Graph, Node, ValueInfo
from edgeq.ir.rewrite import Matcher, eliminate_dead_nodes, replace_node, toposort

FLOAT32_LOWEST = float(np.finfo(np.float32).min)
_MOVES = ("Reshape", "Flatten", "Expand", "Unsqueeze", "Squeeze", "Transpose", "Identity")


def _info(g: Graph, name: str) -> ValueInfo | None:
    return g.info(name)


def _dtype(g: Graph, name: str) -> np.dtype | None:
    info = g.info(name)
    return None if info is None else np.dtype(info.dtype)


def _static(g: Graph, name: str) -> tuple[int, ...] | None:
    info = g.info(name)
    if info is None or not info.is_static:
        return None
    return tuple(int(d) for d in info.shape or ())


def _const(g: Graph, value: np.ndarray, base: str) -> str:
    c = g.unique_name(base)
    g.constants[c] = value
    return c


def _set_info(g: Graph, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    g.value_info[name] = ValueInfo(name, np.dtype(dtype), shape)


# ---- shared initializers ------------------------------------------------------------------------
def unshare_constants(graph: Graph) -> Graph:
    """A float tensor constant read by several nodes gets one copy per node. The dynamo
    exporter stores equal initializers once (a freshly initialized model's zero biases and
    LayerNorm betas become one tensor): one plan entry per use lets each be quantized for its
    own role (a bias at s_in·s_w, a LayerNorm beta in float)."""
    g = graph.copy()
    uses: dict[str, int] = {}
    for node in g.nodes:
        for i in set(node.inputs):
            if i in g.constants:
                uses[i] = uses.get(i, 0) + 1
    seen: dict[str, int] = {}
    for node in g.nodes:
        renamed: dict[str, str] = {}
        for i in node.inputs:
            arr = g.constants.get(i)
            if arr is None or uses.get(i, 0) < 2 or arr.size < 2 or i in renamed:
                continue
            if not np.issubdtype(arr.dtype, np.floating):
                continue
            seen[i] = seen.get(i, 0) + 1
            if seen[i] > 1:  # the first reader keeps the original name
                renamed[i] = _const(g, arr, f"{i}_use{seen[i]}")
        if renamed:
            node.inputs = [renamed.get(i, i) for i in node.inputs]
    return g


# ---- common subexpressions -----------------------------------------------------------------------
def merge_duplicates(graph: Graph) -> Graph:
    """Nodes with the same op, inputs and attributes compute the same values: keep the first
    (torch repeats a layer's mask arithmetic in every layer; one copy is one tensor to plan)."""
    g = graph.copy()
    seen: dict[tuple[object, ...], Node] = {}
    alias: dict[str, str] = {}
    keep: list[Node] = []
    for node in g.nodes:
        node.inputs = [alias.get(i, i) for i in node.inputs]
        if any(node.subgraphs()) or not node.outputs:
            keep.append(node)
            continue
        key = (node.op_type, node.domain, tuple(_operand_key(g, i) for i in node.inputs),
               repr(sorted(node.attrs.items())))  # fmt: skip
        first = seen.get(key)
        if (
            first is None
            or len(first.outputs) != len(node.outputs)
            or any(o in g.output_names for o in node.outputs)
        ):
            seen.setdefault(key, node)
            keep.append(node)
            continue
        alias.update(zip(node.outputs, first.outputs, strict=True))
    g.nodes = keep
    return g


def _operand_key(g: Graph, name: str) -> object:
    """Small constants compare by value (each layer carries its own copy of 0 and -inf)."""
    arr = g.constants.get(name)
    if arr is None or arr.size > 64:
        return name
    return ("const", str(arr.dtype), arr.shape, arr.tobytes())


# ---- Gather with constant in-order indices → Reshape ----------------------------------------------
def index_gathers_to_reshape(graph: Graph) -> Graph:
    g = graph.copy()
    for i, node in enumerate(g.nodes):
        if node.op_type not in ("Gather", "GatherND") or node.inputs[1] not in g.constants:
            continue
        if node.inputs[0] in g.constants:
            continue
        shape, out_shape = _static(g, node.inputs[0]), _static(g, node.outputs[0])
        if shape is None or out_shape is None:
            continue
        probe = np.arange(int(np.prod(shape))).reshape(shape)
        idx = g.constants[node.inputs[1]].astype(np.int64)
        try:
            if node.op_type == "Gather":
                axis = int(node.attrs.get("axis", 0)) % len(shape)
                picked = np.take(probe, np.where(idx < 0, idx + shape[axis], idx), axis=axis)
            else:
                if int(node.attrs.get("batch_dims", 0)):
                    continue
                k = idx.shape[-1]
                flat = np.where(idx < 0, idx + np.asarray(shape[:k]), idx).reshape(-1, k)
                picked = probe[tuple(flat[:, j] for j in range(k))]
        except IndexError:
            continue
        if picked.size != probe.size or not np.array_equal(picked.reshape(-1), probe.reshape(-1)):
            continue
        target = _const(g, np.asarray(out_shape, np.int64), f"{node.name or node.outputs[0]}_shape")
        g.nodes[i] = Node("Reshape", [node.inputs[0], target], node.outputs, node.name)
    return g


def _const_value(g: Graph, name: str) -> np.ndarray | None:
    return g.constants.get(name)


def collapse_reshapes(graph: Graph) -> Graph:
    """Reshape/Flatten/Squeeze/Unsqueeze of a Reshape/Flatten/Squeeze/Unsqueeze read by
    nothing else → one Reshape to the final static shape."""
    g = graph.copy()
    kinds = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")
    changed = True
    while changed:
        changed = False
        producers, consumers = g.producers(), g.consumers()
        for i, node in enumerate(g.nodes):
            inner = producers.get(node.inputs[0]) if node.op_type in kinds else None
            out_shape = _static(g, node.outputs[0])
            if (
                inner is None or inner.op_type not in kinds or out_shape is None
                or len(consumers.get(node.inputs[0], [])) != 1
                or node.inputs[0] in g.output_names
            ):  # fmt: skip
                continue
            target = _const(
                g, np.asarray(out_shape, np.int64), f"{node.name or node.outputs[0]}_shape"
            )
            g.nodes[i] = Node("Reshape", [inner.inputs[0], target], node.outputs, node.name)
            changed = True
            break
    return eliminate_dead_nodes(g)


# ---- bool logic -----------------------------------------------------------------------------------
def simplify_bool_logic(graph: Graph) -> Graph:
    """Cast bool→bool → Identity; And(x, all-True) / Or(x, all-False) → Expand(x) to the
    broadcast shape (Identity when it is x's); Not(Not(x)) → Identity."""
    g = graph.copy()
    producers = g.producers()
    for i, node in enumerate(g.nodes):
        op = node.op_type
        if (
            op == "Cast"
            and _dtype(g, node.inputs[0]) == np.bool_
            and _dtype(g, node.outputs[0]) == np.bool_
        ):
            g.nodes[i] = Node("Identity", [node.inputs[0]], node.outputs, node.name)
        elif op in ("And", "Or"):
            neutral = op == "And"
            for a, b in ((0, 1), (1, 0)):
                c = _const_value(g, node.inputs[b])
                if c is None or c.dtype != np.bool_ or not np.all(c == neutral):
                    continue
                x = node.inputs[a]
                out_shape, x_shape = _static(g, node.outputs[0]), _static(g, x)
                if out_shape is None or x_shape is None or x in g.constants:
                    break
                if out_shape == x_shape:
                    g.nodes[i] = Node("Identity", [x], node.outputs, node.name)
                else:
                    s = _const(g, np.asarray(out_shape, np.int64), f"{node.name}_shape")
                    g.nodes[i] = Node("Expand", [x, s], node.outputs, node.name)
                break
        elif op == "Not":
            inner = producers.get(node.inputs[0])
            if inner is not None and inner.op_type == "Not":
                g.nodes[i] = Node("Identity", [inner.inputs[0]], node.outputs, node.name)
    return g


# ---- attention-mask fills → float arithmetic ------------------------------------------------------
def _scalar(g: Graph, name: str) -> float | None:
    arr = g.constants.get(name)
    if arr is None or arr.size != 1 or not np.issubdtype(arr.dtype, np.floating):
        return None
    return float(arr.reshape(-1)[0])


def _only_softmax_through_add(g: Graph, name: str, consumers: dict[str, list[Node]]) -> bool:
    """Every use of `name` is an Add (through shape moves) whose result only feeds Softmax."""
    users = consumers.get(name, [])
    if not users or name in g.output_names:
        return False
    for u in users:
        if u.op_type in _MOVES:
            if not _only_softmax_through_add(g, u.outputs[0], consumers):
                return False
            continue
        if u.op_type != "Add" or u.outputs[0] in g.output_names:
            return False
        if not all(v.op_type == "Softmax" for v in consumers.get(u.outputs[0], [])):
            return False
        if not consumers.get(u.outputs[0]):
            return False
    return True


def masks_to_arithmetic(graph: Graph) -> Graph:
    g = graph.copy()
    consumers = g.consumers()
    new_nodes: list[Node] = []
    changed = False
    for node in g.nodes:
        if node.op_type != "Where" or _dtype(g, node.inputs[0]) != np.bool_:
            new_nodes.append(node)
            continue
        a, b = _scalar(g, node.inputs[1]), _scalar(g, node.inputs[2])
        out = node.outputs[0]
        shape = _static(g, out)
        dtype = _dtype(g, out)
        if a is None or b is None or shape is None or dtype is None:
            new_nodes.append(node)
            continue
        if any(math.isinf(v) for v in (a, b)):
            if any(v == math.inf for v in (a, b)) or not _only_softmax_through_add(
                g, out, consumers
            ):
                new_nodes.append(node)
                continue
            a, b = (FLOAT32_LOWEST if math.isinf(v) else v for v in (a, b))
        base = node.name or out
        cond_shape = _static(g, node.inputs[0])
        if cond_shape is None:
            new_nodes.append(node)
            continue
        m = g.unique_name(f"{base}_mask_float")
        new_nodes.append(Node("Cast", [node.inputs[0]], [m], f"{base}_to_float", {"to": 1}))
        _set_info(g, m, dtype, cond_shape)
        terms: list[str] = []
        if a != 0.0:
            t = g.unique_name(f"{base}_where_true")
            ca = _const(g, np.asarray(a, dtype), f"{base}_true_value")
            new_nodes.append(Node("Mul", [m, ca], [t], f"{base}_true"))
            _set_info(g, t, dtype, cond_shape)
            terms.append(t)
        if b != 0.0:
            inv = g.unique_name(f"{base}_mask_inverse")
            one = _const(g, np.asarray(1.0, dtype), f"{base}_one")
            new_nodes.append(Node("Sub", [one, m], [inv], f"{base}_not"))
            _set_info(g, inv, dtype, cond_shape)
            t = g.unique_name(f"{base}_where_false")
            cb = _const(g, np.asarray(b, dtype), f"{base}_false_value")
            new_nodes.append(Node("Mul", [inv, cb], [t], f"{base}_false"))
            _set_info(g, t, dtype, cond_shape)
            terms.append(t)
        if not terms:  # both zero
            zero = _const(g, np.zeros((), dtype), f"{base}_zero")
            terms.append(zero)
        result = terms[0]
        if len(terms) == 2:
            result = g.unique_name(f"{base}_sum")
            new_nodes.append(Node("Add", terms, [result], f"{base}_add"))
            _set_info(g, result, dtype, cond_shape)
        if cond_shape == shape:
            new_nodes.append(Node("Identity", [result], [out], base))
        else:
            s = _const(g, np.asarray(shape, np.int64), f"{base}_shape")
            new_nodes.append(Node("Expand", [result, s], [out], base))
        changed = True
    g.nodes = new_nodes
    del changed
    return _float_masks_from_source(g)


def _float_masks_from_source(g: Graph) -> Graph:
    """Move Cast(bool → float) back through shape moves to the bool's source; a Cast(x → bool)
    of an integer x then becomes Min(Abs(Cast(x, float)), 1) (x != 0 as 0/1, exactly)."""
    moved = True
    while moved:
        moved = False
        producers, consumers = g.producers(), g.consumers()
        for i, cast in enumerate(g.nodes):
            if cast.op_type != "Cast" or _dtype(g, cast.inputs[0]) != np.bool_:
                continue
            to = _dtype(g, cast.outputs[0])
            if to is None or not np.issubdtype(to, np.floating):
                continue
            src = producers.get(cast.inputs[0])
            if src is None:
                continue
            if src.op_type in _MOVES and len(consumers.get(cast.inputs[0], [])) == 1 \
                    and cast.inputs[0] not in g.output_names:  # fmt: skip
                # Cast(move(x)) → move(Cast(x)): the same values, one op earlier
                x = src.inputs[0]
                xf = g.unique_name(f"{x}_float")
                shape = _static(g, x)
                if shape is None:
                    continue
                new_cast = Node(
                    "Cast", [x], [xf], g.unique_name(f"{x}_to_float"), {"to": cast.attrs["to"]}
                )
                _set_info(g, xf, to, shape)
                new_move = Node(src.op_type, [xf, *src.inputs[1:]], list(cast.outputs), src.name,
                                dict(src.attrs))  # fmt: skip
                j = g.nodes.index(src)
                g.nodes[j] = new_cast
                g.nodes[i] = new_move
                moved = True
                break
            if src.op_type == "Cast":
                x = src.inputs[0]
                xd = _dtype(g, x)
                shape = _static(g, x)
                if xd is None or shape is None or not np.issubdtype(xd, np.integer):
                    continue
                base = g.unique_name(f"{x}_nonzero")
                xf, ab = g.unique_name(f"{x}_float"), g.unique_name(f"{x}_abs")
                one = _const(g, np.asarray(1.0, to), f"{base}_one")
                nodes = [Node("Cast", [x], [xf], f"{base}_cast", {"to": cast.attrs["to"]}),
                         Node("Abs", [xf], [ab], f"{base}_abs"),
                         Node("Min", [ab, one], list(cast.outputs), f"{base}_nonzero")]  # fmt: skip
                _set_info(g, xf, to, shape)
                _set_info(g, ab, to, shape)
                g.nodes[i : i + 1] = nodes
                moved = True
                break
    return toposort(eliminate_dead_nodes(g))


# ---- NaN guards after Softmax ---------------------------------------------------------------------
def _finite_ancestry(g: Graph, name: str, producers: dict[str, Node], limit: int = 64) -> bool:
    """No infinite or NaN constant within `limit` nodes upstream of `name`."""
    seen: set[str] = set()
    stack = [name]
    while stack and len(seen) < limit:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        arr = g.constants.get(v)
        if arr is not None:
            if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
                return False
            continue
        p = producers.get(v)
        if p is not None:
            stack.extend(i for i in p.inputs if i)
    return True


def drop_softmax_nan_guards(graph: Graph) -> Graph:
    g = graph.copy()
    producers = g.producers()
    alias: dict[str, str] = {}
    for node in g.nodes:
        if node.op_type != "Where" or len(node.inputs) != 3:
            continue
        isnan = producers.get(node.inputs[0])
        s = node.inputs[2]
        soft = producers.get(s)
        zero = _scalar(g, node.inputs[1])
        if (
            isnan is None or isnan.op_type != "IsNaN" or isnan.inputs[0] != s or zero is None
            or soft is None or soft.op_type != "Softmax"
            or not _finite_ancestry(g, soft.inputs[0], producers)
        ):  # fmt: skip
            continue
        alias[node.outputs[0]] = s
    if not alias:
        return g
    keep = []
    for node in g.nodes:
        if node.outputs and node.outputs[0] in alias:
            if node.outputs[0] in g.output_names:
                keep.append(Node("Identity", [alias[node.outputs[0]]], node.outputs, node.name))
            continue
        node.inputs = [alias.get(i, i) for i in node.inputs]
        keep.append(node)
    g.nodes = keep
    return eliminate_dead_nodes(g)


# ---- Split → Slices -------------------------------------------------------------------------------
def split_to_slices(graph: Graph) -> Graph:
    """Every Split becomes one Slice per output (same values: Split is a partition)."""
    g = graph.copy()
    nodes: list[Node] = []
    for node in g.nodes:
        shape = _static(g, node.inputs[0]) if node.op_type == "Split" else None
        if shape is None:
            nodes.append(node)
            continue
        axis = int(node.attrs.get("axis", 0)) % len(shape)
        sizes = [_static(g, o)[axis] for o in node.outputs]  # type: ignore[index]
        base = node.name or node.outputs[0]
        start = 0
        for k, (out, size) in enumerate(zip(node.outputs, sizes, strict=True)):
            st = _const(g, np.asarray([start], np.int64), f"{base}_start{k}")
            en = _const(g, np.asarray([start + size], np.int64), f"{base}_end{k}")
            ax = _const(g, np.asarray([axis], np.int64), f"{base}_axis{k}")
            nodes.append(Node("Slice", [node.inputs[0], st, en, ax], [out], f"{base}_slice{k}"))
            start += size
    g.nodes = nodes
    return g


# ---- 1-D convolutions as 2-D ---------------------------------------------------------------------
def conv1d_as_conv2d(graph: Graph) -> Graph:
    """Conv over [N, C, L] → Reshape to [N, C, 1, L], a 2-D Conv with kernel [1, k], Reshape
    back (for runtimes whose convolution kernels are 2-D only). The same sums in the same order."""
    g = graph.copy()
    nodes: list[Node] = []
    for node in g.nodes:
        w = g.constants.get(node.inputs[1]) if node.op_type == "Conv" else None
        x_shape = _static(g, node.inputs[0]) if w is not None else None
        y_shape = _static(g, node.outputs[0]) if w is not None else None
        if w is None or w.ndim != 3 or x_shape is None or y_shape is None:
            nodes.append(node)
            continue
        base = node.name or node.outputs[0]
        w2 = _const(g, w.reshape(w.shape[0], w.shape[1], 1, w.shape[2]), f"{node.inputs[1]}_2d")
        x4, y4 = g.unique_name(f"{base}_in2d"), g.unique_name(f"{base}_out2d")
        attrs = dict(node.attrs)
        attrs["kernel_shape"] = [1, int(w.shape[2])]
        attrs["strides"] = [1, *[int(v) for v in node.attrs.get("strides", [1])]]
        attrs["dilations"] = [1, *[int(v) for v in node.attrs.get("dilations", [1])]]
        if "pads" in node.attrs:
            pb, pe = (int(v) for v in node.attrs["pads"])
            attrs["pads"] = [0, pb, 0, pe]
        in4 = (x_shape[0], x_shape[1], 1, x_shape[2])
        out4 = (y_shape[0], y_shape[1], 1, y_shape[2])
        dtype = _dtype(g, node.inputs[0]) or np.dtype(np.float32)
        s_in = _const(g, np.asarray(in4, np.int64), f"{base}_shape2d")
        s_out = _const(g, np.asarray(y_shape, np.int64), f"{base}_shape1d")
        nodes += [
            Node("Reshape", [node.inputs[0], s_in], [x4], f"{base}_to_2d"),
            Node("Conv", [x4, w2, *node.inputs[2:]], [y4], base, attrs),
            Node("Reshape", [y4, s_out], list(node.outputs), f"{base}_to_1d"),
        ]
        _set_info(g, x4, dtype, in4)
        _set_info(g, y4, dtype, out4)
    g.nodes = nodes
    return eliminate_dead_nodes(g)


# Rewrites a target asks for by name (`rewrites = [...]` in its profile), applied after
# `prepare` and before planning: exact, and only where that target's runtime needs them.
TARGET_REWRITES = {
    "split_to_slices": split_to_slices,
    "conv1d_as_conv2d": conv1d_as_conv2d,
}


# ---- GELU (tanh approximation) written out --------------------------------------------------------
def gelu_tanh(graph: Graph) -> Graph:
    """0.5·x·(1 + tanh(c·(x + 0.044715·x³))), c = √(2/π), as torch and Keras write
    `gelu(approximate="tanh")` → one `Gelu(approximate="tanh")`."""
    g = graph.copy()
    c = math.sqrt(2.0 / math.pi)
    while True:
        m = Matcher(g)
        found = False
        for th in g.nodes:
            if th.op_type != "Tanh":
                continue
            scaled = m.prod(th.inputs[0], "Mul")
            op = m.const_operand(scaled) if scaled is not None else None
            if op is None or abs(op[1] - c) > 1e-4:
                continue
            inner = m.prod(op[0], "Add")  # x + 0.044715·x³
            if inner is None or len(inner.inputs) != 2:
                continue
            x = cube = None
            for a, b in ((0, 1), (1, 0)):
                mul = m.prod(inner.inputs[b], "Mul")
                k = m.const_operand(mul) if mul is not None else None
                if k is not None and abs(k[1] - 0.044715) < 1e-6:
                    x, cube = inner.inputs[a], k[0]
            if x is None or cube is None or not _is_cube(m, cube, x):
                continue
            add1 = m.consumers.get(th.outputs[0], [])
            if len(add1) != 1 or add1[0].op_type != "Add":
                continue
            one = m.const_operand(add1[0])
            if one is None or abs(one[1] - 1.0) > 1e-9:
                continue
            final = _times_half_x(m, add1[0].outputs[0], x)
            if final is None:
                continue
            replace_node(
                g, Node("Gelu", [x], final.outputs, final.name, {"approximate": "tanh"}), final
            )
            found = True
            break
        if not found:
            return eliminate_dead_nodes(g)


def _is_cube(m: Matcher, name: str, x: str) -> bool:
    p = m.producers.get(name)
    if p is None:
        return False
    if p.op_type == "Pow":
        return p.inputs[0] == x and m.is_const(p.inputs[1], 3.0)
    if p.op_type == "Mul":
        a, b = p.inputs
        q = m.producers.get(b) if a == x else m.producers.get(a) if b == x else None
        return q is not None and q.op_type == "Mul" and q.inputs == [x, x]
    return False


def _times_half_x(m: Matcher, name: str, x: str) -> Node | None:
    """The node computing 0.5·x·name in any association: (x·name)·0.5, (0.5·x)·name,
    x·(0.5·name), (0.5·name)·x."""
    users = m.consumers.get(name, [])
    if len(users) != 1 or users[0].op_type != "Mul":
        return None
    mul = users[0]
    other = mul.inputs[1] if mul.inputs[0] == name else mul.inputs[0]
    if other == x:  # (x·name)·0.5
        nxt = m.consumers.get(mul.outputs[0], [])
        if len(nxt) == 1 and nxt[0].op_type == "Mul":
            k = m.const_operand(nxt[0])
            if k is not None and abs(k[1] - 0.5) < 1e-9:
                return nxt[0]
        return None
    k = m.const_operand(mul)
    if k is not None and abs(k[1] - 0.5) < 1e-9:  # (0.5·name)·x
        nxt = m.consumers.get(mul.outputs[0], [])
        if len(nxt) == 1 and nxt[0].op_type == "Mul" and x in nxt[0].inputs:
            return nxt[0]
        return None
    half = m.producers.get(other)
    hk = m.const_operand(half) if half is not None and half.op_type == "Mul" else None
    if hk is not None and hk[0] == x and abs(hk[1] - 0.5) < 1e-9:  # (0.5·x)·name
        return mul
    return None


EXPORTED_PASSES = (
    ("unshare_constants", unshare_constants),
    ("merge_duplicates", merge_duplicates),
    ("index_gathers_to_reshape", index_gathers_to_reshape),
    ("simplify_bool_logic", simplify_bool_logic),
    ("collapse_reshapes", collapse_reshapes),
    ("masks_to_arithmetic", masks_to_arithmetic),
    ("drop_softmax_nan_guards", drop_softmax_nan_guards),
    ("gelu_tanh", gelu_tanh),
    ("merge_duplicates", merge_duplicates),
    ("masks_to_arithmetic", masks_to_arithmetic),
)

__all__ = [
    "EXPORTED_PASSES",
    "TARGET_REWRITES",
    "conv1d_as_conv2d",
    "drop_softmax_nan_guards",
    "gelu_tanh",
    "index_gathers_to_reshape",
    "masks_to_arithmetic",
    "simplify_bool_logic",
    "split_to_slices",
    "target_rewrites",
    "unshare_constants",
]


def target_rewrites(names: list[str]) -> tuple[tuple[str, Any], ...]:
    """The named target rewrites as passes (an unknown name lists the known ones)."""
    unknown = [n for n in names if n not in TARGET_REWRITES]
    if unknown:
        raise GraphError(f"unknown target rewrite(s) {unknown}",
                         f"known: {', '.join(sorted(TARGET_REWRITES))}")  # fmt: skip
    return tuple((n, TARGET_REWRITES[n]) for n in names)
