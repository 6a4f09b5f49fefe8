"""Graph → Graph passes, each followed by a verifier (tinygrad style: a readable list).

`prepare(graph, input_shapes=..., input_values=...)` is the standard pipeline: fix shapes,
bind scalar inputs, constant-fold (including Shape/Gather/Concat/Cast chains and `If` with a
constant condition), fold BatchNormalization into Conv, canonicalize HardSwish/HardSigmoid/
GELU/LayerNorm patterns into single ops, drop Identity/Dropout and dead nodes, sort, infer shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from edgeq.errors import DynamicShapeError, GraphError, InputError
from edgeq.ir.exported import EXPORTED_PASSES
from edgeq.ir.graph import Graph, Node, ValueInfo, node_inputs_all
from edgeq.ir.interpreter import trace
from edgeq.ir.rewrite import Matcher as _Matcher
from edgeq.ir.rewrite import eliminate_dead_nodes, toposort
from edgeq.ir.rewrite import replace_node as _replace

log = logging.getLogger(__name__)

Pass = Callable[[Graph], Graph]
MAX_FOLD_BYTES = 64 << 20


# ---------------------------------------------------------------------------------------------
# verifier
# ---------------------------------------------------------------------------------------------
def verify(graph: Graph) -> None:
    """Structural invariants: single assignment, defined-before-use order, defined outputs."""
    defined = set(graph.constants) | set(graph.input_names) | {""}
    clash = set(graph.constants) & set(graph.input_names)
    if clash:
        raise GraphError(f"value(s) {sorted(clash)} are both an input and a constant")
    for node in graph.nodes:
        for name in node_inputs_all(node):
            if name not in defined:
                raise GraphError(f"{node} reads '{name}' before it is defined (or never)")
        for out in node.outputs:
            if out and out in defined:
                raise GraphError(f"value '{out}' is assigned twice ({node})")
            defined.add(out)
    for out in graph.output_names:
        if out not in defined:
            raise GraphError(f"graph output '{out}' is never produced")


# ---------------------------------------------------------------------------------------------
# user-facing input fixing
# ---------------------------------------------------------------------------------------------
def fix_input_shapes(graph: Graph, shapes: Mapping[str, Sequence[int]]) -> Graph:
    g = graph.copy()
    by_name = {v.name: v for v in g.inputs}
    for name, dims in shapes.items():
        if name not in by_name:
            raise InputError(
                f"--input-shape names '{name}', which is not a model input",
                f"model inputs: {', '.join(by_name) or 'none'}",
            )
        v = by_name[name]
        dims = tuple(int(d) for d in dims)
        if any(d <= 0 for d in dims):
            raise InputError(f"--input-shape {name}: dims must be positive, got {list(dims)}")
        if v.shape is not None:
            if len(v.shape) != len(dims):
                raise InputError(
                    f"--input-shape {name} has rank {len(dims)}, the model's input has rank "
                    f"{len(v.shape)} ({list(v.shape)})",
                    f"give {len(v.shape)} comma-separated dims",
                )
            for i, (old, new) in enumerate(zip(v.shape, dims, strict=True)):
                if isinstance(old, int) and old != new:
                    raise InputError(
                        f"--input-shape {name}: dim {i} is fixed to {old} in the model, got {new}",
                        f"use {old} for dim {i}",
                    )
        v.shape = dims
    return g


def inputs_to_constants(graph: Graph, values: Mapping[str, np.ndarray | float | int]) -> Graph:
    g = graph.copy()
    by_name = {v.name: v for v in g.inputs}
    for name, value in values.items():
        if name not in by_name:
            raise InputError(
                f"--input-value names '{name}', which is not a model input",
                f"model inputs: {', '.join(by_name)}",
            )
        v = by_name[name]
        arr = np.asarray(value).astype(v.dtype)
        if v.shape is not None and len(v.shape) == arr.ndim == 0:
            pass
        elif v.shape is not None and arr.size == int(
            np.prod([d for d in v.shape if isinstance(d, int)])
        ):
            arr = arr.reshape([d for d in v.shape if isinstance(d, int)] or ())
        g.constants[name] = arr
        g.inputs = [x for x in g.inputs if x.name != name]
    return g


def require_static_inputs(graph: Graph) -> Graph:
    for v in graph.inputs:
        if not v.is_static:
            dims = ",".join(str(d) if isinstance(d, int) else "N" for d in (v.shape or ("N",)))
            unfixed = [str(d) for d in (v.shape or ()) if not isinstance(d, int)]
            raise DynamicShapeError(
                f"input '{v.name}' has unfixed dim(s) {unfixed or ['rank unknown']}",
                f"fix it with --input-shape {v.name}={dims} (replace N by sizes)",
            )
    return graph


# ---------------------------------------------------------------------------------------------
# folding
# ---------------------------------------------------------------------------------------------
def constant_fold(graph: Graph) -> Graph:
    """Replace every node whose outputs are known before running by constants; inline `If`
    nodes whose condition is constant; repeat until nothing changes."""
    g = graph.copy()
    for _ in range(32):
        result = trace(g)
        keep: list[Node] = []
        folded = 0
        for node in g.nodes:
            outs = [o for o in node.outputs if o]
            foldable = node.op_type != "If" and outs and all(o in result.concrete for o in outs)
            if foldable and sum(result.concrete[o].nbytes for o in outs) <= MAX_FOLD_BYTES:
                for o in outs:
                    g.constants[o] = result.concrete[o]
                folded += 1
                continue
            keep.append(node)
        g.nodes = keep
        inlined = _inline_constant_ifs(g)
        g = eliminate_dead_nodes(g)
        # the trace already evaluated everything computable from constants, so only inlined
        # branches can expose more
        if not inlined:
            break
    return g


def _inline_constant_ifs(g: Graph) -> int:
    new_nodes: list[Node] = []
    count = 0
    for node in g.nodes:
        cond = g.constants.get(node.inputs[0]) if node.op_type == "If" else None
        if cond is None:
            new_nodes.append(node)
            continue
        branch = node.attrs["then_branch" if bool(cond.reshape(-1)[0]) else "else_branch"]
        new_nodes.extend(_inline_branch(g, node, branch))
        count += 1
    g.nodes = new_nodes
    return count


def _inline_branch(g: Graph, node: Node, branch: Graph) -> list[Node]:
    taken = set(g.constants) | set(g.input_names)
    for other in g.nodes:
        if other is not node:
            taken.update(other.outputs)
            for sub in other.subgraphs():
                taken.update(o for n in sub.walk_nodes() for o in n.outputs)
    rename: dict[str, str] = {}
    for name in list(branch.constants) + [o for n in branch.nodes for o in n.outputs if o]:
        if name in taken:
            rename[name] = g.unique_name(f"{node.name}/{name}")
            taken.add(rename[name])
    inner_out = {b.name: o for b, o in zip(branch.outputs, node.outputs, strict=True)}
    produced = {o for n in branch.nodes for o in n.outputs}
    for bname, oname in inner_out.items():
        if bname in produced:
            rename[bname] = oname
    for name, arr in branch.constants.items():
        g.constants[rename.get(name, name)] = arr
    nodes = []
    for inner in branch.nodes:
        new = Node(
            inner.op_type,
            [rename.get(i, i) for i in inner.inputs],
            [rename.get(o, o) for o in inner.outputs],
            f"{node.name}/{inner.name}",
            dict(inner.attrs),
            inner.domain,
        )
        _rename_in_subgraphs(new, rename)
        nodes.append(new)
    for bname, oname in inner_out.items():
        if bname not in produced:  # the branch returns an outer value or a constant
            nodes.append(Node("Identity", [rename.get(bname, bname)], [oname], f"{oname}/identity"))
    return nodes


def fold_batchnorm(graph: Graph) -> Graph:
    """Conv → BatchNormalization (constant params, Conv output used only there) → one Conv."""
    g = graph.copy()
    consumers = g.consumers()
    producers = g.producers()
    drop: set[int] = set()
    for bn in g.nodes:
        if bn.op_type != "BatchNormalization" or len([o for o in bn.outputs if o]) != 1:
            continue
        conv = producers.get(bn.inputs[0])
        if conv is None or conv.op_type != "Conv" or len(consumers.get(bn.inputs[0], [])) != 1:
            continue
        if bn.inputs[0] in g.output_names:
            continue
        params = [g.constants.get(n) for n in bn.inputs[1:5]]
        w = g.constants.get(conv.inputs[1])
        b = g.constants.get(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] else None
        if any(p is None for p in params) or w is None:
            continue
        scale, bias, mean, var = (p.astype(np.float64) for p in params)  # type: ignore[union-attr]
        k = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        w_new = (w.astype(np.float64) * k.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        b0 = b.astype(np.float64) if b is not None else np.zeros_like(mean)
        b_new = ((b0 - mean) * k + bias).astype(w.dtype)
        w_name = g.unique_name(f"{conv.name}.weight_bn")
        g.constants[w_name] = w_new
        b_name = g.unique_name(f"{conv.name}.bias_bn")
        g.constants[b_name] = b_new
        conv.inputs = [conv.inputs[0], w_name, b_name]
        conv.outputs = [bn.outputs[0]]
        drop.add(id(bn))
    g.nodes = [n for n in g.nodes if id(n) not in drop]
    return eliminate_dead_nodes(g)


def fold_affine_into_conv(graph: Graph) -> Graph:
    """Conv → Mul(constant) / Add(constant) chains (PP-LCNet's learnable affine blocks, BN
    written as Mul/Add) fold into the Conv's weights and bias when the constant is a scalar or
    per-output-channel. Same math, fewer tensors to quantize."""
    g = graph.copy()
    changed = True
    while changed:
        changed = False
        consumers = g.consumers()
        for conv in g.nodes:
            if conv.op_type != "Conv" or conv.inputs[1] not in g.constants:
                continue
            out = conv.outputs[0]
            users = consumers.get(out, [])
            if len(users) != 1 or out in g.output_names or users[0].op_type not in ("Mul", "Add"):
                continue
            op = users[0]
            other = op.inputs[1] if op.inputs[0] == out else op.inputs[0]
            w = g.constants[conv.inputs[1]]
            c_out = w.shape[0]
            per_channel = _per_channel_constant(g.constants.get(other), c_out, w.ndim)
            if per_channel is None:
                continue
            b = g.constants.get(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] else None
            b64 = np.zeros(c_out) if b is None else b.astype(np.float64)
            if op.op_type == "Mul":
                w_new = w.astype(np.float64) * per_channel.reshape((-1,) + (1,) * (w.ndim - 1))
                b_new = b64 * per_channel
            else:
                w_new, b_new = w.astype(np.float64), b64 + per_channel
            w_name = g.unique_name(f"{conv.name}.weight_affine")
            g.constants[w_name] = w_new.astype(w.dtype)
            b_name = g.unique_name(f"{conv.name}.bias_affine")
            g.constants[b_name] = b_new.astype(w.dtype)
            conv.inputs = [conv.inputs[0], w_name, b_name]
            conv.outputs = list(op.outputs)
            g.nodes.remove(op)
            changed = True
            break
    return eliminate_dead_nodes(g)


def fold_affine_into_next_conv(graph: Graph) -> Graph:
    """Mul(scalar) / Add(scalar) feeding only an unpadded Conv (1x1 pointwise convs after
    PP-LCNet's post-activation affine blocks) fold into that Conv:
    conv(s·h + a) = conv_{s·W}(h) + a·ΣW. Exact only without padding, so padded convs are left."""
    g = graph.copy()
    changed = True
    while changed:
        changed = False
        producers, consumers = g.producers(), g.consumers()
        for conv in g.nodes:
            if conv.op_type != "Conv" or conv.inputs[1] not in g.constants or not _unpadded(conv):
                continue
            x = conv.inputs[0]
            op = producers.get(x)
            if op is None or op.op_type not in ("Mul", "Add") or len(consumers.get(x, [])) != 1:
                continue
            if x in g.output_names:
                continue
            other = (
                op.inputs[1]
                if op.inputs[0] != op.inputs[1] and op.inputs[0] not in g.constants
                else op.inputs[0]
            )
            data = op.inputs[0] if other == op.inputs[1] else op.inputs[1]
            arr = g.constants.get(other)
            if (
                data in g.constants
                or arr is None
                or arr.size != 1
                or not np.issubdtype(arr.dtype, np.floating)
            ):
                continue
            value = float(arr.reshape(-1)[0])
            w = g.constants[conv.inputs[1]]
            b = g.constants.get(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] else None
            b64 = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
            if op.op_type == "Mul":
                w_new, b_new = w.astype(np.float64) * value, b64
            else:
                w_new = w.astype(np.float64)
                b_new = b64 + value * w_new.reshape(w.shape[0], -1).sum(axis=1)
            w_name = g.unique_name(f"{conv.name}.weight_affine_in")
            b_name = g.unique_name(f"{conv.name}.bias_affine_in")
            g.constants[w_name] = w_new.astype(w.dtype)
            g.constants[b_name] = b_new.astype(w.dtype)
            conv.inputs = [data, w_name, b_name]
            g.nodes.remove(op)
            changed = True
            break
    return eliminate_dead_nodes(g)


def _unpadded(conv: Node) -> bool:
    auto_pad = conv.attrs.get("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return True
    if auto_pad != "NOTSET":
        return all(k == 1 for k in conv.attrs.get("kernel_shape", [0]))
    return not any(conv.attrs.get("pads", []))


def _per_channel_constant(arr: np.ndarray | None, channels: int, rank: int) -> np.ndarray | None:
    """The constant as a [channels] float64 vector if it broadcasts per output channel of an
    NC... tensor (a scalar, or shape [C,1,..] / [1,C,1,..] with C = channels or 1)."""
    if arr is None or not np.issubdtype(arr.dtype, np.floating) or arr.ndim > rank:
        return None
    if arr.size == 1:
        return np.full(channels, float(arr.reshape(-1)[0]))
    shape = (1,) * (rank - arr.ndim) + arr.shape
    if shape[1] == channels and all(d == 1 for i, d in enumerate(shape) if i != 1):
        return arr.reshape(-1).astype(np.float64)
    return None


# ---------------------------------------------------------------------------------------------
# canonicalization
# ---------------------------------------------------------------------------------------------
def _clip_bounds(m: _Matcher, clip: Node) -> tuple[float | None, float | None]:
    lo = (
        m.scalar(clip.inputs[1])
        if len(clip.inputs) > 1 and clip.inputs[1]
        else clip.attrs.get("min")
    )
    hi = (
        m.scalar(clip.inputs[2])
        if len(clip.inputs) > 2 and clip.inputs[2]
        else clip.attrs.get("max")
    )
    return lo, hi


def _relu6_of_x_plus_3(m: _Matcher, name: str) -> str | None:
    """If `name` = Clip(x + 3, 0, 6) (or Relu6-like), return x."""
    clip = m.prod(name, "Clip")
    if clip is None:
        return None
    lo, hi = _clip_bounds(m, clip)
    if lo is None or hi is None or abs(lo) > 1e-6 or abs(hi - 6) > 1e-6:
        return None
    add = m.prod(clip.inputs[0], "Add")
    if add is None or not m.private(clip.inputs[0]):
        return None
    operand = m.const_operand(add)
    if operand is None or abs(operand[1] - 3.0) > 1e-6:
        return None
    return operand[0]


def _scaled_by_sixth(m: _Matcher, node: Node) -> str | None:
    """If node is Div(y, 6) or Mul(y, 1/6), return y."""
    if node.op_type == "Div" and len(node.inputs) == 2 and m.is_const(node.inputs[1], 6.0):
        return node.inputs[0]
    if node.op_type == "Mul":
        operand = m.const_operand(node)
        if operand is not None and abs(operand[1] - 1 / 6) < 1e-6:
            return operand[0]
    return None


def canonicalize(graph: Graph) -> Graph:
    """Rewrite decomposed patterns into the single ops targets have."""
    g = graph.copy()
    for rewrite in (_rewrite_hardswish, _rewrite_hardsigmoid, _rewrite_gelu, _rewrite_layernorm):
        while rewrite(g):
            pass
    return eliminate_dead_nodes(g)


def _rewrite_hardswish(g: Graph) -> bool:
    m = _Matcher(g)
    for node in g.nodes:
        # Div(Mul(x, Clip(x+3,0,6)), 6)  |  Mul(Mul(x, Clip(..)), 1/6)
        inner_name = _scaled_by_sixth(m, node)
        if inner_name is not None:
            mul = m.prod(inner_name, "Mul")
            if mul is not None and m.private(inner_name):
                for a, b in ((0, 1), (1, 0)):
                    x = _relu6_of_x_plus_3(m, mul.inputs[b])
                    if x is not None and x == mul.inputs[a] and m.private(mul.inputs[b]):
                        _replace(g, Node("HardSwish", [x], node.outputs, node.name), node)
                        return True
        # Mul(x, HardSigmoid(x, 1/6, 0.5))  |  Mul(x, Div(Clip(x+3,0,6), 6))
        if node.op_type == "Mul" and len(node.inputs) == 2:
            for a, b in ((0, 1), (1, 0)):
                x, gate = node.inputs[a], node.inputs[b]
                hs = m.prod(gate, "HardSigmoid")
                if (
                    hs is not None
                    and hs.inputs[0] == x
                    and m.private(gate)
                    and abs(hs.attrs.get("alpha", 0.2) - 1 / 6) < 1e-6
                    and abs(hs.attrs.get("beta", 0.5) - 0.5) < 1e-6
                ):
                    _replace(g, Node("HardSwish", [x], node.outputs, node.name), node)
                    return True
                div = m.producers.get(gate)
                if div is not None and m.private(gate):
                    y = _scaled_by_sixth(m, div)
                    if y is not None and _relu6_of_x_plus_3(m, y) == x and m.private(y):
                        _replace(g, Node("HardSwish", [x], node.outputs, node.name), node)
                        return True
    return False


def _rewrite_hardsigmoid(g: Graph) -> bool:
    m = _Matcher(g)
    for node in g.nodes:
        y = _scaled_by_sixth(m, node)
        if y is None or not m.private(y):
            continue
        x = _relu6_of_x_plus_3(m, y)
        if x is not None:
            attrs = {"alpha": 1.0 / 6.0, "beta": 0.5}
            _replace(g, Node("HardSigmoid", [x], node.outputs, node.name, attrs), node)
            return True
    return False


def _rewrite_gelu(g: Graph) -> bool:
    """0.5 * x * (1 + erf(x / sqrt(2))) in any association order."""
    m = _Matcher(g)
    sqrt2 = float(np.sqrt(2.0))
    for erf in g.nodes:
        if erf.op_type != "Erf":
            continue
        scaled = m.producers.get(erf.inputs[0])
        x = None
        if (
            scaled is not None
            and scaled.op_type == "Div"
            and m.is_const(scaled.inputs[1], sqrt2, 1e-5)
        ):
            x = scaled.inputs[0]
        elif scaled is not None and scaled.op_type == "Mul":
            operand = m.const_operand(scaled)
            if operand and abs(operand[1] - 1 / sqrt2) < 1e-5:
                x = operand[0]
        if x is None or not m.private(erf.inputs[0]) or not m.private(erf.outputs[0]):
            continue
        (add,) = m.consumers[erf.outputs[0]]
        if add.op_type != "Add" or not m.is_const(m.other(add, erf.outputs[0]) or "", 1.0):
            continue
        if not m.private(add.outputs[0]):
            continue
        (mul1,) = m.consumers[add.outputs[0]]
        if mul1.op_type != "Mul":
            continue
        other = m.other(mul1, add.outputs[0])
        half_node: Node | None = None
        final: Node | None = None
        if m.is_const(other or "", 0.5) and m.private(mul1.outputs[0]):  # x * (0.5 * (1+erf))
            (mul2,) = m.consumers[mul1.outputs[0]]
            if mul2.op_type == "Mul" and m.other(mul2, mul1.outputs[0]) == x:
                final, half_node = mul2, mul1
        elif other == x:  # (x * (1+erf)) * 0.5
            if m.private(mul1.outputs[0]):
                (mul2,) = m.consumers[mul1.outputs[0]]
                if mul2.op_type == "Mul" and m.is_const(m.other(mul2, mul1.outputs[0]) or "", 0.5):
                    final, half_node = mul2, mul2
        else:  # (x * 0.5) * (1+erf)
            half = m.prod(other or "", "Mul")
            if half is not None and m.private(other or ""):
                operand = m.const_operand(half)
                if operand and operand[0] == x and abs(operand[1] - 0.5) < 1e-9:
                    final, half_node = mul1, half
        if final is None or half_node is None:
            continue
        _replace(g, Node("Gelu", [x], final.outputs, final.name), final)
        return True
    return False


def _rewrite_layernorm(g: Graph) -> bool:
    """ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div[/Mul γ/Add β] over the last axis."""
    m = _Matcher(g)
    for mean in g.nodes:
        if mean.op_type != "ReduceMean" or not _last_axis_reduce(m, mean):
            continue
        x = mean.inputs[0]
        subs = [n for n in m.consumers.get(mean.outputs[0], []) if n.op_type == "Sub"]
        if (
            len(subs) != 1
            or subs[0].inputs != [x, mean.outputs[0]]
            or not m.private(mean.outputs[0])
        ):
            continue
        sub = subs[0]
        d = sub.outputs[0]
        users = m.consumers.get(d, [])
        if len(users) != 2 or d in g.output_names:
            continue
        sq = next((u for u in users if u.op_type == "Pow" and m.is_const(u.inputs[1], 2.0)), None)
        if sq is None:
            sq = next((u for u in users if u.op_type == "Mul" and u.inputs == [d, d]), None)
        div = next((u for u in users if u.op_type == "Div" and u.inputs[0] == d), None)
        if sq is None or div is None or not m.private(sq.outputs[0]):
            continue
        (var,) = m.consumers[sq.outputs[0]]
        if (
            var.op_type != "ReduceMean"
            or not _last_axis_reduce(m, var)
            or not m.private(var.outputs[0])
        ):
            continue
        (add_eps,) = m.consumers[var.outputs[0]]
        eps_operand = m.const_operand(add_eps) if add_eps.op_type == "Add" else None
        if eps_operand is None or not m.private(add_eps.outputs[0]):
            continue
        (sqrt,) = m.consumers[add_eps.outputs[0]]
        if (
            sqrt.op_type != "Sqrt"
            or div.inputs[1] != sqrt.outputs[0]
            or not m.private(sqrt.outputs[0])
        ):
            continue
        final, scale, bias = div, None, None
        if m.private(div.outputs[0]):
            (mul,) = m.consumers[div.outputs[0]]
            other = m.other(mul, div.outputs[0]) if mul.op_type == "Mul" else None
            if other is not None and other in g.constants:
                final, scale = mul, other
                if m.private(mul.outputs[0]):
                    (add,) = m.consumers[mul.outputs[0]]
                    other_b = m.other(add, mul.outputs[0]) if add.op_type == "Add" else None
                    if other_b is not None and other_b in g.constants:
                        final, bias = add, other_b
        shape = g.info(x)
        width = shape.shape[-1] if shape is not None and shape.shape else None
        dtype = g.constants[scale].dtype if scale else np.dtype(np.float32)
        if scale is None:
            if not isinstance(width, int):
                continue
            scale = g.unique_name(f"{mean.name}.ln_scale")
            g.constants[scale] = np.ones(width, dtype)
        inputs = [x, scale] + ([bias] if bias else [])
        attrs = {"axis": -1, "epsilon": eps_operand[1]}
        _replace(g, Node("LayerNormalization", inputs, final.outputs, final.name, attrs), final)
        return True
    return False


def _last_axis_reduce(m: _Matcher, node: Node) -> bool:
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1:
        arr = m.g.constants.get(node.inputs[1])
        axes = None if arr is None else [int(a) for a in arr.reshape(-1)]
    if node.attrs.get("keepdims", 1) != 1 or not axes or len(axes) != 1:
        return False
    if axes[0] == -1:
        return True
    info = m.g.info(node.inputs[0])
    return info is not None and info.shape is not None and axes[0] == len(info.shape) - 1


# ---------------------------------------------------------------------------------------------
# cleanup
# ---------------------------------------------------------------------------------------------
def remove_identity(graph: Graph) -> Graph:
    """Drop Identity and inference-time Dropout, rewiring their consumers."""
    g = graph.copy()
    producers = g.producers()
    alias: dict[str, str] = {}
    keep: list[Node] = []
    for node in g.nodes:
        is_id = node.op_type == "Identity" or (
            node.op_type == "Dropout" and len([o for o in node.outputs if o]) == 1
        )
        if not is_id:
            keep.append(node)
            continue
        src, out = node.inputs[0], node.outputs[0]
        src = alias.get(src, src)
        if out in g.output_names:
            p = producers.get(src)
            if p is None or src in g.output_names or src in g.input_names:
                node.inputs = [src]
                keep.append(node)  # output aliases an input/constant: keep a real node
                continue
            p.outputs = [out if o == src else o for o in p.outputs]
            alias[src] = out
            producers[out] = p
            continue
        alias[out] = src
    for node in keep:
        node.inputs = [alias.get(i, i) for i in node.inputs]
        _rename_in_subgraphs(node, alias)
    g.nodes = keep
    return g


def _rename_in_subgraphs(node: Node, alias: Mapping[str, str]) -> None:
    for sub in node.subgraphs():
        for inner in sub.nodes:
            inner.inputs = [alias.get(i, i) for i in inner.inputs]
            _rename_in_subgraphs(inner, alias)
        for out in sub.outputs:
            out.name = alias.get(out.name, out.name)


def infer_shapes(graph: Graph) -> Graph:
    """Record the static shape and dtype of every value (from jax.eval_shape over the ops)."""
    g = graph.copy()
    result = trace(g)
    g.value_info = {
        name: ValueInfo(name, dtype, shape)
        for name, (shape, dtype) in result.shapes.items()
        if name not in g.constants
    }
    g.outputs = [ValueInfo(o.name, *reversed(result.shapes[o.name])) for o in g.outputs]
    return g


# ---------------------------------------------------------------------------------------------
# pipeline
# ---------------------------------------------------------------------------------------------
def quantized_copies(graph: Graph) -> Graph:
    """Give MatMuls reading a LayerNorm output their own copy of it (an Identity).

    On targets that keep the residual stream float, the LayerNorm output stays float for the
    residual Add while the copy is quantized for the MatMuls, so they run as integer kernels.
    A plan is per tensor; the copy is what lets one value be float on one edge and 8-bit on
    another. Runtimes drop the Identity."""
    g = graph.copy()
    consumers = g.consumers()
    nodes: list[Node] = []
    for node in g.nodes:
        nodes.append(node)
        if node.op_type != "LayerNormalization":
            continue
        y = node.outputs[0]
        users = consumers.get(y, [])
        matmuls = [u for u in users if u.op_type in ("MatMul", "Gemm")]
        if not matmuls or len(matmuls) == len(users):
            continue
        copy_name = g.unique_name(f"{y}_matmul_input")
        nodes.append(Node("Identity", [y], [copy_name], g.unique_name(f"{node.name}_copy")))
        info = g.value_info.get(y)
        if info is not None:
            g.value_info[copy_name] = ValueInfo(copy_name, info.dtype, info.shape)
        for u in matmuls:
            u.inputs = [copy_name if i == y else i for i in u.inputs]
    g.nodes = nodes
    return g


def matmul_as_conv(graph: Graph) -> Graph:
    """MatMul with a constant [K, N] weight → a 1×1 Conv, for targets whose accelerator takes
    per-channel weights only on Conv (the Snapdragon HTP): [B, S, K] → Transpose → [B, K, S] →
    Unsqueeze → [B, K, 1, S] → Conv(W [N, K, 1, 1]) → Squeeze → Transpose → [B, S, N]; rank-2
    inputs go through Reshape. The same math, but the weight may now have one scale per output
    channel. A bias Add (a constant [N] operand) that is the MatMul output's only reader
    becomes the Conv's bias: one int32 accumulator and one quantized output instead of a
    quantized MatMul output, a bias Add and a second quantized output."""
    g = graph.copy()
    nodes: list[Node] = []
    consumers = g.consumers()
    folded: set[int] = set()  # ids of bias Adds taken into their Conv
    for node in g.nodes:
        if id(node) in folded:
            continue
        w = g.constants.get(node.inputs[1]) if node.op_type == "MatMul" else None
        info = g.info(node.inputs[0]) if w is not None else None
        if (
            w is None
            or w.ndim != 2
            or info is None
            or not info.is_static
            or len(info.shape or ()) not in (2, 3)
        ):  # type: ignore[arg-type]
            nodes.append(node)
            continue
        shape = [int(d) for d in info.shape]  # type: ignore[union-attr, arg-type]
        k, n = w.shape
        base = node.name or node.outputs[0]
        outputs, conv_bias = list(node.outputs), []
        bias = _bias_add(g, node.outputs[0], n, consumers)
        if bias is not None:
            folded.add(id(bias[0]))
            outputs, conv_bias = list(bias[0].outputs), [bias[1]]
        weight = g.unique_name(f"{node.inputs[1]}_conv")
        g.constants[weight] = np.ascontiguousarray(w.T.reshape(n, k, 1, 1))
        x4, y4 = g.unique_name(f"{base}_in4d"), g.unique_name(f"{base}_out4d")

        def const(name: str, value: list[int]) -> str:
            c = g.unique_name(name)
            g.constants[c] = np.asarray(value, np.int64)
            return c

        if len(shape) == 3:
            b, s_, _ = shape
            xt, yt = g.unique_name(f"{base}_in_t"), g.unique_name(f"{base}_out_t")
            pre = [Node("Transpose", [node.inputs[0]], [xt], g.unique_name(f"{base}_to_channels"), {"perm": [0, 2, 1]}),
                   Node("Unsqueeze", [xt, const(f"{base}_axis2", [2])], [x4], g.unique_name(f"{base}_to_4d"))]  # fmt: skip
            post = [Node("Squeeze", [y4, const(f"{base}_axis2b", [2])], [yt], g.unique_name(f"{base}_from_4d")),
                    Node("Transpose", [yt], outputs, g.unique_name(f"{base}_from_channels"), {"perm": [0, 2, 1]})]  # fmt: skip
            inter = {xt: (b, k, s_), x4: (b, k, 1, s_), y4: (b, n, 1, s_), yt: (b, n, s_)}
        else:
            b = shape[0]
            pre = [Node("Reshape", [node.inputs[0], const(f"{base}_shape4d", [b, k, 1, 1])], [x4], g.unique_name(f"{base}_to_4d"))]  # fmt: skip
            post = [Node("Reshape", [y4, const(f"{base}_shape2d", [b, n])], outputs, g.unique_name(f"{base}_from_4d"))]  # fmt: skip
            inter = {x4: (b, k, 1, 1), y4: (b, n, 1, 1)}
        for name, shp in inter.items():
            g.value_info[name] = ValueInfo(name, info.dtype, shp)
        nodes += [*pre, Node("Conv", [x4, weight, *conv_bias], [y4], base, {"kernel_shape": [1, 1]}), *post]  # fmt: skip
    g.nodes = nodes
    return eliminate_dead_nodes(g)


def _bias_add(
    g: Graph, y: str, n: int, consumers: Mapping[str, list[Node]]
) -> tuple[Node, str] | None:
    """(the Add, a new [N] bias constant) when `y` is read only by an Add of a constant that
    varies along the last axis alone (a linear layer's bias)."""
    users = consumers.get(y, [])
    if len(users) != 1 or users[0].op_type != "Add" or y in g.output_names:
        return None
    add = users[0]
    other = add.inputs[1] if add.inputs[0] == y else add.inputs[0]
    c = g.constants.get(other)
    if c is None or not np.issubdtype(c.dtype, np.floating) or c.size != n or c.shape[-1:] != (n,):
        return None
    name = g.unique_name(f"{other}_conv_bias")
    g.constants[name] = np.ascontiguousarray(c.reshape(n))
    return add, name


STANDARD_PASSES: tuple[tuple[str, Pass], ...] = (
    ("toposort", toposort),
    ("require_static", require_static_inputs),
    ("remove_identity", remove_identity),
    ("constant_fold", constant_fold),
    ("fold_batchnorm", fold_batchnorm),
    ("infer_shapes", infer_shapes),
    ("canonicalize", canonicalize),
    *EXPORTED_PASSES,
    ("remove_identity", remove_identity),
    ("eliminate_dead_nodes", eliminate_dead_nodes),
    ("toposort", toposort),
    ("infer_shapes", infer_shapes),
)


# Rewrites that keep the math exact but change float rounding enough to matter on
# ill-conditioned models; they make graphs friendlier to quantize (fewer requantization points),
# so the quantization pipeline runs them after `prepare`.
QUANTIZATION_PASSES: tuple[tuple[str, Pass], ...] = (
    ("fold_affine_into_conv", fold_affine_into_conv),
    ("fold_affine_into_next_conv", fold_affine_into_next_conv),
    ("eliminate_dead_nodes", eliminate_dead_nodes),
    ("infer_shapes", infer_shapes),
)


def run_passes(graph: Graph, passes: Sequence[tuple[str, Pass]] = STANDARD_PASSES) -> Graph:
    for name, fn in passes:
        before = len(graph.nodes)
        graph = fn(graph)
        verify(graph)
        log.debug("pass %s: %d -> %d nodes", name, before, len(graph.nodes))
    return graph


def prepare(
    graph: Graph,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    input_values: Mapping[str, np.ndarray | float | int] | None = None,
    passes: Sequence[tuple[str, Pass]] = STANDARD_PASSES,
) -> Graph:
    """The standard pipeline: fix inputs, then run `passes` with a verifier after each."""
    if input_values:
        graph = inputs_to_constants(graph, input_values)
    if input_shapes:
        graph = fix_input_shapes(graph, input_shapes)
    return run_passes(graph, passes)
