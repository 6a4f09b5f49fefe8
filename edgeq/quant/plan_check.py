"""What a QuantPlan must satisfy before anything uses it.

A plan on disk is input like any other: it can be hand-edited, truncated, tampered with, or
made for another model. `QuantPlan.load` checks the schema (no unknown or missing keys, right
types) and every number; `export`/`devicetest` then check it against the model they were given
(its SHA-256, the graph's shapes and fingerprint). Exporters call `check_numbers` once more at
their boundary: a NaN or zero scale that reaches an exporter is a bug, never an artifact.

Numbers: every scale finite, > 0 and a normal float32; zero points integers inside their
dtype's range; stored integer weights and biases inside their dtype's range (never wrapped);
parameter shapes consistent with the tensor's axis and block.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeq.errors import InputError
from edgeq.quant.qtypes import QDTYPES

if TYPE_CHECKING:
    from edgeq.ir.graph import Graph
    from edgeq.quant.plan import QuantPlan, TensorQuant

ROLES = ("activation", "weight", "bias", "float")
FLOAT_DTYPES = ("float32", "float16", "bfloat16")
ROUNDINGS = ("half_even", "half_away")
_NUMBER = (int, float)
# key -> allowed types (None allowed where listed); keys not here are refused
TOP_KEYS: dict[str, tuple[type, ...]] = {
    "format": (str,), "version": (int,), "target": (str,), "rounding": (str,),
    "graph_fingerprint": (str,), "model": (dict,), "recipe": (dict,), "calibration": (dict,),
    "report": (dict,), "tensors": (list,),
}  # fmt: skip
TOP_REQUIRED = ("format", "version", "target", "tensors")
TENSOR_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,), "role": (str,), "dtype": (str,), "axis": (int, type(None)),
    "block": (int, type(None)), "provenance": (str,), "reason": (str,), "node": (str,),
    "narrow": (bool,), "symmetric": (bool,), "scale": _NUMBER, "zero_point": _NUMBER,
}  # fmt: skip
TENSOR_REQUIRED = ("name", "role", "dtype")
_ARRAY_KEY = re.compile(r"t(\d+)\.(scale|zero_point|values|lut)")
_FIX = "re-create the plan with `edgeq calibrate` (a plan is not meant to be edited by hand)"
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


class PlanError(InputError):
    """A plan that is malformed, holds impossible numbers, or was made for another model."""


def _typename(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_keys(obj: Mapping[str, Any], allowed: Mapping[str, tuple[type, ...]],
                required: tuple[str, ...], where: str) -> None:  # fmt: skip
    unknown = sorted(str(k) for k in obj if k not in allowed)
    if unknown:
        raise PlanError(f"{where} has unknown key(s) {unknown}", _FIX)
    missing = [k for k in required if k not in obj]
    if missing:
        raise PlanError(f"{where} lacks key(s) {missing}", _FIX)
    for key, value in obj.items():
        types = allowed[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise PlanError(f"{where}: '{key}' is {_typename(value)}, not {want}", _FIX)


def check_json(meta: Any, source: str) -> None:
    """The schema of plan.json (as parsed), before anything is built from it."""
    if not isinstance(meta, dict):
        raise PlanError(f"{source} holds a JSON {_typename(meta)}, not a plan object", _FIX)
    _check_keys(meta, TOP_KEYS, TOP_REQUIRED, source)
    if meta["format"] != "edgeq-quant-plan":
        raise PlanError(f"{source} is not an edgeq plan (format '{meta['format']}')", _FIX)
    if meta.get("rounding", "half_even") not in ROUNDINGS:
        raise PlanError(f"{source}: rounding '{meta['rounding']}' is not one of {ROUNDINGS}", _FIX)
    _check_model_info(meta.get("model", {}), source)
    _check_calibration(meta.get("calibration", {}), source)
    _check_report(meta.get("report", {}), source)
    names: set[str] = set()
    for i, t in enumerate(meta["tensors"]):
        where = f"{source} tensor #{i}"
        if not isinstance(t, dict):
            raise PlanError(f"{where} is a JSON {_typename(t)}, not an object", _FIX)
        _check_keys(t, TENSOR_KEYS, TENSOR_REQUIRED, where)
        if not t["name"] or t["name"] in names:
            raise PlanError(f"{where}: name '{t['name']}' is empty or repeated", _FIX)
        names.add(t["name"])
        if t["role"] not in ROLES:
            raise PlanError(f"{where} ('{t['name']}'): role '{t['role']}' is not one of {ROLES}",
                            _FIX)  # fmt: skip
        dtypes = FLOAT_DTYPES if t["role"] == "float" else tuple(QDTYPES)
        if t["dtype"] not in dtypes:
            raise PlanError(f"{where} ('{t['name']}'): dtype '{t['dtype']}' is not one of "
                            f"{list(dtypes)} for role {t['role']}", _FIX)  # fmt: skip
        if t.get("block") is not None and (t["block"] < 1 or t.get("axis") is None):
            raise PlanError(f"{where} ('{t['name']}'): block {t['block']} needs an axis and "
                            "must be positive", _FIX)  # fmt: skip


def _check_model_info(model: Mapping[str, Any], source: str) -> None:
    sha = model.get("sha256")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise PlanError(f"{source}: model.sha256 is not a SHA-256 hex digest", _FIX)
    shapes = model.get("input_shapes", {})
    if not isinstance(shapes, dict) or not all(
        isinstance(v, list) and all(type(d) is int and 0 < d < 1 << 31 for d in v)
        for v in shapes.values()
    ):
        raise PlanError(f"{source}: model.input_shapes must map inputs to lists of positive "
                        "integers", _FIX)  # fmt: skip
    values = model.get("input_values", {})
    if not isinstance(values, dict) or not all(
        isinstance(v, _NUMBER) and not isinstance(v, bool) for v in values.values()
    ):
        raise PlanError(f"{source}: model.input_values must map inputs to numbers", _FIX)


def _check_calibration(calibration: Mapping[str, Any], source: str) -> None:
    """The parts of plan.calibration that a --plan export computes with (AWQ factors folded
    into the graph again) are numbers like scales; the parts only shown (mixed precision,
    weight algorithms) must at least have the shape the report reads."""
    awq = calibration.get("awq", {})
    if not isinstance(awq, dict) or not isinstance(awq.get("scales", {}), dict):
        raise PlanError(f"{source}: calibration.awq must be an object with a 'scales' object",
                        _FIX)  # fmt: skip
    for tensor, factors in awq.get("scales", {}).items():
        ok = isinstance(factors, list) and factors and all(
            isinstance(v, _NUMBER) and not isinstance(v, bool) for v in factors)  # fmt: skip
        arr = np.asarray(factors, np.float64) if ok else np.zeros(0)
        if not ok or not np.isfinite(arr).all() or arr.min() < FLOAT32_TINY or arr.max() > 1e30:
            raise PlanError(f"{source}: the AWQ factors of '{tensor}' must be a non-empty list "
                            "of finite positive numbers", _FIX)  # fmt: skip
    # the float-island rewrites (residual-branch factors, smoothing scales) are applied again
    for key, name, field in (("branch_scales", "branch", "factors"),
                             ("smoothing", "tensor", "scales")):  # fmt: skip
        rows = calibration.get(key, [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise PlanError(f"{source}: calibration.{key} must be a list of objects", _FIX)
        for row in rows:
            values = row.get(field)
            ok = isinstance(row.get(name), str) and isinstance(values, list) and values and all(
                isinstance(v, _NUMBER) and not isinstance(v, bool) for v in values)  # fmt: skip
            arr = np.asarray(values, np.float64) if ok else np.zeros(0)
            if not ok or not np.isfinite(arr).all() or arr.min() < FLOAT32_TINY or arr.max() > 1e30:
                raise PlanError(f"{source}: calibration.{key}: each row needs '{name}' and "
                                f"'{field}', a non-empty list of finite positive numbers", _FIX)  # fmt: skip
    for key in ("mixed_precision", "weights"):
        if not isinstance(calibration.get(key, {}), dict):
            raise PlanError(f"{source}: calibration.{key} is not an object", _FIX)


def _check_report(report: Mapping[str, Any], source: str) -> None:
    """plan.report is shown by `edgeq report`: layer rows and the diagnosis must be objects."""
    layers = report.get("layers", [])
    if not isinstance(layers, list) or not all(isinstance(r, dict) for r in layers):
        raise PlanError(f"{source}: report.layers must be a list of objects", _FIX)
    diagnosis = report.get("diagnosis") or {}
    rows = diagnosis.get("rows", []) if isinstance(diagnosis, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise PlanError(f"{source}: report.diagnosis must be an object with a list of rows", _FIX)


def check_array_keys(keys: list[str], n_tensors: int, source: str) -> None:
    """plan.npz holds only t<i>.scale / .zero_point / .values / .lut of existing tensors."""
    for key in keys:
        m = _ARRAY_KEY.fullmatch(key)
        if m is None or int(m.group(1)) >= n_tensors:
            raise PlanError(f"{source} holds an unexpected array '{key}'", _FIX)


def _int_range(arr: np.ndarray, lo: int, hi: int) -> tuple[int, int] | None:
    """(min, max) if `arr` holds integers outside [lo, hi] (or non-integers), else None."""
    if arr.size == 0:
        return None
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            return (0, 0) if not np.isfinite(arr).all() else (int(lo) - 1, int(hi))
    elif arr.dtype.kind not in "iu":
        return (int(lo) - 1, int(hi))
    a_min, a_max = int(arr.min()), int(arr.max())
    return (a_min, a_max) if a_min < lo or a_max > hi else None


def param_shape(values_shape: tuple[int, ...], axis: int | None, block: int | None) -> tuple[int, ...]:  # fmt: skip
    """The scale/zero-point shape for values of `values_shape` (per tensor/channel/block)."""
    if axis is None:
        return ()
    axis %= len(values_shape)
    if block is None:
        return (values_shape[axis],)
    shape = list(values_shape)
    shape[axis] = -(-values_shape[axis] // block)  # a partial last block has its own scale
    return tuple(shape)


def check_tensor(t: TensorQuant, where: str = "the plan") -> None:
    """The numbers of one tensor's quantization (see the module docstring)."""
    name = f"{where}: tensor '{t.name}'"
    if t.role not in ROLES:
        raise PlanError(f"{name} has role '{t.role}'", _FIX)
    if t.role == "float":
        if any(x is not None for x in (t.scale, t.zero_point, t.values)):
            raise PlanError(f"{name} is float but carries quantization arrays", _FIX)
        return
    if t.dtype not in QDTYPES:
        raise PlanError(f"{name} has dtype '{t.dtype}', not an integer type", _FIX)
    q = QDTYPES[t.dtype].with_narrow(t.narrow)
    if t.lut is not None:
        if t.scale is not None or t.zero_point is not None:
            raise PlanError(f"{name} has both a look-up table and a scale", _FIX)
        _check_lut(t, name, q.bits)
        return
    if t.scale is None or t.zero_point is None:
        raise PlanError(f"{name} is quantized but has no scale or zero point", _FIX)
    scale, zp = np.asarray(t.scale), np.asarray(t.zero_point)
    if scale.dtype.kind != "f":
        raise PlanError(f"{name}: scale has dtype {scale.dtype}, not float", _FIX)
    if scale.size == 0 or not np.isfinite(scale).all():
        raise PlanError(f"{name} has a non-finite scale (NaN or Inf)", _FIX)
    low = float(scale.min())
    if low <= 0:
        raise PlanError(f"{name} has a scale ≤ 0 ({low:g}); scales must be positive", _FIX)
    if low < FLOAT32_TINY or float(scale.max()) > 1e30:
        raise PlanError(f"{name} has a scale outside float32's normal range ({low:g})", _FIX)
    if zp.shape != scale.shape:
        raise PlanError(f"{name}: zero point shape {zp.shape} differs from scale shape "
                        f"{scale.shape}", _FIX)  # fmt: skip
    wide = QDTYPES[t.dtype]
    bad = _int_range(zp, wide.qmin, wide.qmax)
    if bad is not None:
        span = bad[0] if bad[0] == bad[1] else list(bad)
        raise PlanError(f"{name}: zero point {span} is outside {t.dtype}'s range "
                        f"[{wide.qmin}, {wide.qmax}] or not an integer", _FIX)  # fmt: skip
    if t.block is not None and (t.axis is None or t.block < 1):
        raise PlanError(f"{name}: block {t.block} needs an axis and must be positive", _FIX)
    if t.role == "activation":
        if t.values is not None:
            raise PlanError(f"{name} is an activation but carries stored values", _FIX)
        if t.axis is None and scale.size != 1:
            raise PlanError(f"{name} is per-tensor but has {scale.size} scales", _FIX)
        return
    if t.values is None:
        raise PlanError(f"{name} is a quantized {t.role} without its integer values", _FIX)
    values = np.asarray(t.values)
    bad = _int_range(values, q.qmin, q.qmax)
    if bad is not None:
        raise PlanError(f"{name}: integer values span {list(bad)}, outside {t.dtype}'s range "
                        f"[{q.qmin}, {q.qmax}] (they would wrap)", _FIX)  # fmt: skip
    if t.axis is not None and not -values.ndim <= t.axis < max(values.ndim, 1):
        raise PlanError(f"{name}: axis {t.axis} does not exist in shape {values.shape}", _FIX)
    want = param_shape(values.shape, t.axis, t.block)
    if scale.shape != want and not (t.axis is None and scale.size == 1):
        raise PlanError(f"{name}: scale shape {scale.shape} does not fit values of shape "
                        f"{values.shape} (axis {t.axis}, block {t.block}; expected {want})",
                        _FIX)  # fmt: skip


def _check_lut(t: TensorQuant, name: str, bits: int) -> None:
    """A palettized weight: finite tables of 2^bits entries, one per group along each weight
    dim (dividing it), and indices that exist in them."""
    if t.role != "weight" or t.values is None:
        raise PlanError(f"{name} has a look-up table but is not a weight with indices", _FIX)
    lut, idx = np.asarray(t.lut), np.asarray(t.values)
    if lut.dtype.kind != "f" or not np.isfinite(lut).all():
        raise PlanError(f"{name}: look-up table is not finite floats", _FIX)
    if (
        lut.ndim != idx.ndim + 1
        or lut.shape[-1] != 1 << bits
        or any(g < 1 or d % g for g, d in zip(lut.shape[:-1], idx.shape, strict=False))
    ):
        raise PlanError(f"{name}: look-up table shape {lut.shape} does not fit indices of shape "
                        f"{idx.shape} at {bits} bits", _FIX)  # fmt: skip
    bad = _int_range(idx, 0, (1 << bits) - 1)
    if bad is not None:
        raise PlanError(f"{name}: indices span {list(bad)}, outside the table's "
                        f"{1 << bits} entries", _FIX)  # fmt: skip


def check_numbers(plan: QuantPlan, where: str = "the plan") -> None:
    for t in plan.tensors.values():
        check_tensor(t, where)
    luts = [t.name for t in plan.tensors.values() if t.lut is not None]
    if luts:  # only targets with palettized weights read the table (others would read scales)
        from edgeq.targets import available_targets, load_target

        if plan.target not in available_targets() or not load_target(plan.target).quant.weight_lut:
            raise PlanError(f"{where}: tensor '{luts[0]}' has a look-up table, but target "
                            f"'{plan.target}' has no palettized weights", _FIX)  # fmt: skip


def check_against_graph(plan: QuantPlan, graph: Graph, fingerprint: str | None = None) -> None:
    """Every plan tensor exists in the prepared graph; stored values have its shapes; and
    (given the graph's `fingerprint`) the graph is the one the plan was made from."""
    names = set(graph.constants) | set(graph.input_names)
    for node in graph.nodes:
        names.update(node.outputs)
    for t in plan.tensors.values():
        if t.name not in names:
            raise PlanError(f"plan tensor '{t.name}' is not in this model's graph",
                            "use the plan made for this model, or calibrate it")  # fmt: skip
        if t.values is not None:
            const = graph.constants.get(t.name)
            shape = np.shape(t.values)
            if const is None or (shape != const.shape and const.size != 1):
                raise PlanError(f"plan tensor '{t.name}' has shape {shape}, the model's is "
                                f"{None if const is None else const.shape}",
                                "use the plan made for this model, or calibrate it")  # fmt: skip
    if fingerprint and plan.graph_fingerprint and plan.graph_fingerprint != fingerprint:
        raise PlanError("the plan was made for a different graph (its fingerprint differs from "
                        "this model's, prepared with the plan's input shapes)",
                        "calibrate this model, or pass --allow-model-mismatch to apply it anyway")  # fmt: skip


def check_model_file(plan: QuantPlan, model: str | Path, sha256: str) -> None:
    """The model file is the one the plan was made from (by SHA-256)."""
    recorded = (plan.model or {}).get("sha256")
    if not recorded:
        raise PlanError("the plan does not record its model's SHA-256, so it cannot be checked "
                        f"against '{model}'",
                        "re-create the plan with `edgeq calibrate`, or pass "
                        "--allow-model-mismatch")  # fmt: skip
    if recorded != sha256:
        made_for = (plan.model or {}).get("file", "?")
        raise PlanError(f"the plan was made for '{made_for}' (sha256 {recorded[:16]}…), not for "
                        f"'{model}' (sha256 {sha256[:16]}…)",
                        "calibrate this model, or pass --allow-model-mismatch to apply the "
                        "plan's numbers (and stored weights) anyway")  # fmt: skip


__all__ = [
    "PlanError",
    "check_against_graph",
    "check_array_keys",
    "check_json",
    "check_model_file",
    "check_numbers",
    "check_tensor",
    "param_shape",
]
