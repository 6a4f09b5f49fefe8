"""MLX exporter: a folder with `model.safetensors`, `config.json` and `graph.json`.

Quantized weights are the plan's integers, re-expressed in MLX's affine group format (what
`mx.quantize(w, group_size, bits)` produces): `<path>.weight` packed into uint32 from the low
bits, `<path>.scales` and `<path>.biases` with w = scale * q + bias, bias = -scale * zero_point.
Signed plans (int4/int8) are shifted to unsigned codes (q + 2^(b-1), zp + 2^(b-1)); the real
values do not change.

MLX groups run along the last dim of the weight as stored, so each weight is first permuted into
MLX order (MatMul W[K, N] → [N, K]; Conv W[O, I, kh, kw] → [O, kh, kw, I], MLX's conv layout;
Gather tables stay [vocab, dim]) and viewed as rows × K. The plan's blocks run along the input
dim, which is then the last one. Per-channel / per-tensor weights use one scale per row, so any
group size works; each weight takes the group size (32/64/128) that stores it in the fewest bits,
rows whose length is not a multiple of it padded with zero-valued codes (q = zero point) and
the activation zero-padded at run time to match (exact). A weight whose
parameters cannot be written as groups of 32/64/128 along its last dim is stored as float32,
dequantized from the plan, and the artifact notes say so.

`config.json` carries the mlx-lm style `quantization` block: the most common
`{"group_size", "bits", "mode": "affine"}` plus per-layer overrides by path (false for a
planned weight kept float). `plan=None` writes the float baseline (no quantization block).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from edgeq.errors import EdgeqError
from edgeq.exporters import Artifact, ExportOptions, Runner, atomic_output, require_valid_plan
from edgeq.exporters.mlx.runtime import (
    CONFIG_FILE,
    GRAPH_FILE,
    GRAPH_FORMAT,
    GRAPH_VERSION,
    GROUP_SIZES,
    SUPPORTED_OPS,
    WEIGHTS_FILE,
    MlxProgram,
    encode_attr,
    unsupported,
)
from edgeq.ir.graph import Graph
from edgeq.quant.plan import QuantPlan, TensorQuant
from edgeq.quant.qtypes import broadcast_param
from edgeq.targets import TargetProfile

_PACK_BITS = (2, 4, 8)  # bit widths that tile a uint32 word exactly
_SCALE_DTYPES = {"float16": np.float16, "float32": np.float32}


# ---- weight layout -------------------------------------------------------------------------------
def mlx_order(graph: Graph, name: str) -> tuple[int, ...]:
    """Permutation taking weight `name` from ONNX order to MLX order (rows first, the input
    dim last), decided by the node that consumes it."""
    rank = graph.constants[name].ndim
    for node in graph.nodes:
        if node.op_type == "MatMul" and node.inputs[1:2] == [name] and rank == 2:
            return (1, 0)
        if node.op_type == "Gemm" and node.inputs[1:2] == [name]:
            return (0, 1) if int(node.attrs.get("transB", 0)) else (1, 0)
        if node.op_type == "Conv" and node.inputs[1:2] == [name] and rank == 4:
            return (0, 2, 3, 1)
    return tuple(range(rank))


def group_layout(t: TensorQuant, shape: tuple[int, ...], perm: tuple[int, ...]) -> int | None:
    """`split`: MLX-order dims [split:] form the grouped input dim K, or None when the plan's
    parameters cannot be written as per-row groups along the last dim."""
    if len(shape) < 2:
        return None
    if t.block is not None:
        axis = (t.axis or 0) % len(shape)
        return len(shape) - 1 if perm.index(axis) == len(shape) - 1 else None
    if t.axis is None:
        return 1
    return 1 if perm[0] == t.axis % len(shape) else None


def affine_groups(t: TensorQuant, shape: tuple[int, ...], perm: tuple[int, ...], split: int,
                  scale_dtype: type) -> dict[str, Any] | None:  # fmt: skip
    """The plan's weight as MLX affine groups: packed codes, scales, biases, group size, bits,
    K and padded K; None when it does not fit MLX's format."""
    assert t.values is not None and t.scale is not None and t.zero_point is not None
    q = t.qdtype
    if q.bits not in _PACK_BITS:
        return None
    offset = 0 if not q.signed else 1 << (q.bits - 1)
    full = tuple(int(d) for d in shape)
    s = np.broadcast_to(
        broadcast_param(np.asarray(t.scale, np.float64), full, t.axis, t.block), full
    )
    z = np.broadcast_to(
        broadcast_param(np.asarray(t.zero_point, np.int64), full, t.axis, t.block), full
    )
    mlx_shape = tuple(full[p] for p in perm)
    k = math.prod(mlx_shape[split:])

    def rows(a: np.ndarray) -> np.ndarray:
        return np.transpose(a, perm).reshape(-1, k)

    v0 = rows(t.values.astype(np.int64)) + offset
    s0, z0 = rows(s), rows(z) + offset
    if v0.min() < 0 or v0.max() >= (1 << q.bits):
        return None
    # the group size (and K padded to a multiple of it) that stores the fewest bits among those
    # the plan's parameters allow: a per-channel row of 480 in groups of 32 would store 15
    # scales and biases, padded to 512 in groups of 128 four (`row_group_bits` estimates it)
    best: tuple[int, int, int] | None = None  # (stored bits per row, group, padded K)
    scale_bits = 8 * np.dtype(scale_dtype).itemsize
    for g in GROUP_SIZES:
        kp = -(-k // g) * g
        s2 = np.pad(s0, ((0, 0), (0, kp - k)), mode="edge")
        z2 = np.pad(z0, ((0, 0), (0, kp - k)), mode="edge")
        sg, zg = s2.reshape(-1, kp // g, g), z2.reshape(-1, kp // g, g)
        if not (np.all(sg == sg[..., :1]) and np.all(zg == zg[..., :1])):
            continue
        stored = kp * q.bits + kp // g * 2 * scale_bits
        if best is None or stored < best[0]:
            best = (stored, g, kp)
    if best is None:
        return None
    _, g, kp = best
    s2 = np.pad(s0, ((0, 0), (0, kp - k)), mode="edge")
    z2 = np.pad(z0, ((0, 0), (0, kp - k)), mode="edge")
    v = z2.copy()  # padding codes equal the zero point: they dequantize to 0
    v[:, :k] = v0
    sg, zg = s2.reshape(-1, kp // g, g), z2.reshape(-1, kp // g, g)
    scales = sg[..., 0].astype(np.float32)
    biases = -(scales.astype(np.float64) * zg[..., 0])
    return {
        "weight": pack(v.astype(np.uint32), q.bits),
        "scales": scales.astype(scale_dtype),
        "biases": biases.astype(scale_dtype),
        "group_size": g, "bits": q.bits, "k": k, "k_padded": kp, "mlx_shape": mlx_shape,
    }  # fmt: skip


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes [R, K] → uint32 [R, K * bits / 32], element i of a word in bits
    [bits*i, bits*(i+1)) (what mx.quantize writes)."""
    per = 32 // bits
    r, k = codes.shape
    c = codes.astype(np.uint32).reshape(r, k // per, per)
    shifts = (np.arange(per, dtype=np.uint32) * bits)[None, None, :]
    return np.bitwise_or.reduce(c << shifts, axis=2).astype(np.uint32)


def unpack(words: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of `pack`: uint32 [R, W] → codes [R, W * 32 / bits]."""
    per = 32 // bits
    shifts = (np.arange(per, dtype=np.uint32) * bits)[None, None, :]
    mask = np.uint32((1 << bits) - 1)
    return ((words[:, :, None] >> shifts) & mask).reshape(words.shape[0], -1)


# ---- export --------------------------------------------------------------------------------------
def _check_ops(graph: Graph) -> None:
    for node in graph.nodes:
        if node.op_type not in SUPPORTED_OPS or node.domain not in ("", "ai.onnx"):
            raise unsupported(node.op_type, node.name or node.outputs[0])
        if any(isinstance(v, Graph) or (isinstance(v, list) and v and isinstance(v[0], Graph))
               for v in node.attrs.values()):  # fmt: skip
            raise unsupported(node.op_type, node.name or node.outputs[0])


def _const_array(name: str, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        return np.ascontiguousarray(arr, np.float32)
    if arr.dtype == np.uint64:
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "biu":
        raise EdgeqError(f"constant '{name}' has dtype {arr.dtype}, which MLX cannot store",
                         "fold or remove it before exporting")  # fmt: skip
    return np.ascontiguousarray(arr)


def _activation_params(plan: QuantPlan | None) -> dict[str, Any]:
    """Quantized activations (W8A8 plans): the runtime fake-quantizes them as the simulator does."""
    out: dict[str, Any] = {}
    if plan is None:
        return out
    for t in plan.quantized("activation"):
        if np.ndim(t.scale) != 0:
            continue
        q = t.qdtype
        out[t.name] = {"scale": float(np.asarray(t.scale)), "zero_point": int(np.asarray(t.zero_point)),
                       "qmin": q.qmin, "qmax": q.qmax}  # fmt: skip
    return out


class MlxExporter:
    format = "mlx"
    suffix = ""

    def export(self, graph: Graph, plan: QuantPlan | None, profile: TargetProfile, out: Path,
               options: ExportOptions) -> Artifact:  # fmt: skip
        require_valid_plan(plan)
        _check_ops(graph)
        # "auto" (the profile default): float16 scales/biases (mlx-lm's convention, 5 bits a
        # weight at 4-bit/g32) only where that is lossless (scale and scale*zero_point exact in
        # float16), else float32. Rounding scales to float16 moves a dequantized weight by
        # ~2^-12 of its range, which measurably breaks parity with the simulator (ppocr-cls).
        scale_name = str(options.extra.get("scale_dtype", profile.raw.get("scale_dtype", "auto")))
        if scale_name == "auto":
            scale_name = "float16" if plan is not None and _fp16_lossless(plan) else "float32"
        if scale_name not in _SCALE_DTYPES:
            raise EdgeqError(
                f"scale_dtype '{scale_name}' is not one MLX stores here",
                f"use one of {sorted(_SCALE_DTYPES)} or auto",
            )
        scale_dtype = _SCALE_DTYPES[scale_name]
        used = {i for n in graph.nodes for i in n.inputs if i in graph.constants}
        tensors: dict[str, np.ndarray] = {}
        quantized: dict[str, Any] = {}
        layers: dict[str, Any] = {}
        notes: list[str] = []
        kept_float: list[str] = []
        padded: list[str] = []
        max_rel = 0.0
        for name in sorted(used):
            arr = graph.constants[name]
            t = plan.get(name) if plan is not None else None
            if t is None or not t.is_quantized or t.values is None:
                tensors[name] = _const_array(name, arr)
                continue
            if t.role != "weight":  # e.g. int32 biases of a W8A8 plan: their plan values
                tensors[name] = _const_array(name, t.dequantized())
                continue
            shape = tuple(int(d) for d in arr.shape)
            perm = mlx_order(graph, name)
            split = group_layout(t, shape, perm)
            groups = (
                affine_groups(t, shape, perm, split, scale_dtype) if split is not None else None
            )
            if groups is None:
                tensors[name] = _const_array(name, t.dequantized())
                layers[name] = False
                kept_float.append(name)
                continue
            path = (
                name
                if not any(f"{name}.{s}" in used for s in ("weight", "scales", "biases"))
                else f"edgeq_q{len(quantized)}.{name}"
            )
            for key in ("weight", "scales", "biases"):
                tensors[f"{path}.{key}"] = groups[key]
            quantized[name] = {"path": path, "bits": groups["bits"], "group_size": groups["group_size"],
                               "shape": list(shape), "perm": list(perm), "split": split,
                               "k": groups["k"], "k_padded": groups["k_padded"], "dtype": t.dtype}  # fmt: skip
            layers[path] = {"group_size": groups["group_size"], "bits": groups["bits"]}
            if groups["k_padded"] != groups["k"]:
                padded.append(f"{name} ({groups['k']}→{groups['k_padded']})")
            max_rel = max(max_rel, _stored_error(t, groups, perm))
        config: dict[str, Any] = {
            "model_type": "edgeq-graph",
            "format": "edgeq-mlx",
            "graph": GRAPH_FILE,
            "weights": WEIGHTS_FILE,
            "edgeq": {"target": profile.name, "plan_hash": plan.plan_hash() if plan else None,
                      "scale_dtype": scale_name if quantized else None},
        }  # fmt: skip
        if quantized:
            common = Counter((q["group_size"], q["bits"]) for q in quantized.values()).most_common(
                1
            )[0][0]
            block: dict[str, Any] = {"group_size": common[0], "bits": common[1], "mode": "affine"}
            for path, layer in layers.items():
                if layer is False or (layer["group_size"], layer["bits"]) != common:
                    block[path] = layer
            config["quantization"] = block
            kinds = Counter(f"{q['bits']}-bit/g{q['group_size']}" for q in quantized.values())
            notes.append(f"{len(quantized)} weights stored as MLX affine groups ({dict(kinds)}); "
                         f"scales and biases as {scale_name} (max dequantized-weight change vs the plan: "
                         f"{max_rel:.2e} of the weight's range)")  # fmt: skip
        if padded:
            notes.append(f"{len(padded)} weights had an input dim that is not a multiple of their group; rows padded "
                         f"with zero-valued codes and the activation zero-padded at run time: "
                         f"{', '.join(padded[:5])}{' ...' if len(padded) > 5 else ''}")  # fmt: skip
        if kept_float:
            notes.append(f"{len(kept_float)} planned weights cannot be MLX groups of 32/64/128 along "
                         f"their input dim and are stored float32 (dequantized plan values): "
                         f"{', '.join(kept_float[:5])}{' ...' if len(kept_float) > 5 else ''}")  # fmt: skip
        convs = [n.name for n in graph.nodes if n.op_type == "Conv" and n.inputs[1] in quantized
                 and not _pointwise(n)]  # fmt: skip
        if convs:
            notes.append(f"{len(convs)} Conv weights are dequantized once at load (MLX has no "
                         f"quantized convolution); pointwise Convs run mx.quantized_matmul")  # fmt: skip
        acts = _activation_params(plan)
        if acts:
            notes.append(f"{len(acts)} activations are fake-quantized (quantize/dequantize in float): "
                         f"MLX has no integer activation kernels")  # fmt: skip
        doc = {
            "format": GRAPH_FORMAT,
            "version": GRAPH_VERSION,
            "opset": graph.opset,
            "inputs": [{"name": v.name, "dtype": str(np.dtype(v.dtype)), "shape": list(v.shape or ())}
                       for v in graph.inputs],
            "outputs": [{"name": v.name, "shape": list(v.shape or ())} for v in graph.outputs],
            "nodes": [{"op": n.op_type, "name": n.name, "inputs": n.inputs, "outputs": n.outputs,
                       "attrs": {k: encode_attr(v) for k, v in n.attrs.items()}} for n in graph.nodes],
            "constants": sorted(k for k in tensors if k in used),
            "quantized": quantized,
            "activations": acts,
        }  # fmt: skip

        def write(tmp: Path) -> None:
            tmp.mkdir()
            arrays = {k: mx.array(v) for k, v in tensors.items()}
            mx.save_safetensors(str(tmp / WEIGHTS_FILE), arrays, metadata={"format": "mlx"})
            (tmp / GRAPH_FILE).write_text(json.dumps(doc))
            (tmp / CONFIG_FILE).write_text(json.dumps({**config, "notes": notes}, indent=1))

        atomic_output(out, write)
        checks = {"quantized_weights": len(quantized), "float_planned_weights": kept_float,
                  "padded_weights": len(padded),
                  "weight_bytes": int(sum(v.nbytes for v in tensors.values()))}  # fmt: skip
        return Artifact(Path(out), profile.name, self.format, plan is not None, notes, checks)

    def op_support(self, profile: TargetProfile) -> dict[str, dict[str, Any]]:
        from edgeq.exporters.mlx.runtime import op_support

        return op_support()

    def refusal(self, op: str, profile: TargetProfile) -> str:
        return f"no MLX lowering for {op} in edgeq"

    def open(self, path: Path, **kwargs: Any) -> Runner:
        return MlxProgram(path, **kwargs)

    def weight_storage(self, path: Path, graph: Graph) -> dict[str, dict[str, int]]:
        """Stored bits of every layer weight, read from the artifact: packed codes, scales and
        biases of an affine-quantized weight, or the float tensor."""
        import mlx.core as mx

        from edgeq.quant.planner import weight_operand

        doc = json.loads((Path(path) / GRAPH_FILE).read_text())
        tensors = mx.load(str(Path(path) / WEIGHTS_FILE))
        out: dict[str, dict[str, int]] = {}
        for node in graph.nodes:
            w = weight_operand(node, graph)
            if w is None or node.inputs[w[0]] in out:
                continue
            name = node.inputs[w[0]]
            rec = doc.get("quantized", {}).get(name)
            if rec is not None:
                stored = sum(
                    tensors[f"{rec['path']}.{k}"].nbytes for k in ("weight", "scales", "biases")
                )
            elif name in tensors:
                stored = tensors[name].nbytes
            else:
                continue
            out[name] = {"elements": int(graph.constants[name].size), "bits": 8 * int(stored)}
        return out


def _fp16_lossless(plan: QuantPlan) -> bool:
    """Every weight scale and scale * zero point is exactly representable in float16."""
    for t in plan.quantized("weight"):
        s = np.asarray(t.scale, np.float64)
        sz = s * np.asarray(t.zero_point, np.float64)
        for v in (s, sz):
            if not np.array_equal(v.astype(np.float16).astype(np.float64), v):
                return False
    return True


def _pointwise(node: Any) -> bool:
    return (
        list(node.attrs.get("kernel_shape", [])) == [1, 1]
        and int(node.attrs.get("group", 1)) == 1
        and list(node.attrs.get("strides", [1, 1])) == [1, 1]
    )


def _stored_error(t: TensorQuant, groups: dict[str, Any], perm: tuple[int, ...]) -> float:
    """Largest |stored affine value - plan value| over the weight's range (0 for float32
    scales up to float rounding; about 2^-11 of the range for float16)."""
    codes = unpack(groups["weight"], groups["bits"]).astype(np.float64)
    g = groups["group_size"]
    s = np.repeat(groups["scales"].astype(np.float64), g, axis=1)
    b = np.repeat(groups["biases"].astype(np.float64), g, axis=1)
    stored = (codes * s + b)[:, : groups["k"]]
    plan = np.transpose(t.dequantized().astype(np.float64), perm).reshape(stored.shape)
    span = float(plan.max() - plan.min()) or 1.0
    return float(np.max(np.abs(stored - plan)) / span)


EXPORTER = MlxExporter()

__all__ = ["EXPORTER", "MlxExporter", "affine_groups", "mlx_order", "pack", "unpack"]
