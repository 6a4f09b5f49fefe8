"""QuantPlan: every quantization parameter of a model, as data. The single source of truth.

Saved as a folder: `plan.json` (readable: per tensor dtype/axis/block/provenance/reason, the
recipe, the target, calibration facts, the report) and `plan.npz` (scales, zero points and
integer weight values). Reloads identically; `plan_hash` identifies it in artifacts.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.errors import InputError
from edgeq.files import check_size, load_npz
from edgeq.ir.graph import Graph
from edgeq.outputs import PLAN, write_output
from edgeq.quant.qtypes import QDType, dequantize, fake_quant, qdtype

PLAN_VERSION = 1
ROLES = ("activation", "weight", "bias", "float")


@dataclass(frozen=True)
class TensorQuant:
    """How one tensor is quantized (or why it stays float)."""

    name: str
    role: str  # activation | weight | bias | float
    dtype: str  # a QDType name, or "float32"
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    axis: int | None = None  # per-channel axis, or the blocked axis when block is set
    block: int | None = None
    narrow: bool = False
    symmetric: bool = False
    values: np.ndarray | None = None  # integer values of weights/biases (LUT: indices)
    # palettized weights: the look-up table, shape [*groups per weight dim, 2^bits] (groups of
    # `block` channels along `axis`, or one table: every group dim 1); scale/zero point unused
    lut: np.ndarray | None = None
    provenance: str = ""  # observer:mse, fixed:Softmax, shared:<tensor>, weight:minmax, ...
    reason: str = ""  # why float, fixed, shared or a fallback
    node: str = ""  # producing node (activations) or consuming node (weights, biases)

    @property
    def is_quantized(self) -> bool:
        return self.role != "float" and (self.scale is not None or self.lut is not None)

    @property
    def qdtype(self) -> QDType:
        return qdtype(self.dtype, self.narrow)

    @property
    def granularity(self) -> str:
        if self.axis is None:
            return "per_tensor"
        return "per_block" if self.block else "per_channel"

    def fake_quant(self, x: Any, rounding: str = "half_even") -> Any:
        assert self.scale is not None and self.zero_point is not None
        return fake_quant(x, self.scale, self.zero_point, self.qdtype, self.axis, self.block,
                          rounding)  # type: ignore[arg-type]  # fmt: skip

    def dequantized(self) -> np.ndarray:
        """Float values of a stored integer tensor (weights, biases; LUT: table look-up)."""
        if self.lut is not None:
            assert self.values is not None
            return lut_decode(self.values, self.lut)
        assert self.values is not None and self.scale is not None and self.zero_point is not None
        return dequantize(self.values, self.scale, self.zero_point, self.axis, self.block)

    def meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "role": self.role, "dtype": self.dtype}
        for key in ("axis", "block", "provenance", "reason", "node"):
            value = getattr(self, key)
            if value not in (None, ""):
                out[key] = value
        if self.narrow:
            out["narrow"] = True
        if self.symmetric:
            out["symmetric"] = True
        if self.scale is not None and np.ndim(self.scale) == 0:
            out["scale"] = float(self.scale)
            out["zero_point"] = int(np.asarray(self.zero_point))
        return out


@dataclass
class QuantPlan:
    target: str
    tensors: dict[str, TensorQuant]
    recipe: dict[str, Any] = field(default_factory=dict)
    graph_fingerprint: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    rounding: str = "half_even"
    calibration: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    version: int = PLAN_VERSION

    # ---- queries ---------------------------------------------------------------------------
    def get(self, name: str) -> TensorQuant | None:
        return self.tensors.get(name)

    def quantized(self, role: str | None = None) -> list[TensorQuant]:
        return [
            t for t in self.tensors.values() if t.is_quantized and (role is None or t.role == role)
        ]

    def with_weight_values(self, name: str, values: np.ndarray, provenance: str) -> QuantPlan:
        """A plan whose weight `name` takes integer values from an algorithm (GPTQ, AdaRound...)."""
        t = self.tensors[name]
        if t.role != "weight" or values.shape != (t.values.shape if t.values is not None else ()):
            raise InputError(f"'{name}' is not a weight of this shape in the plan")
        tensors = dict(self.tensors)
        tensors[name] = replace(t, values=values, provenance=provenance)
        return replace(self, tensors=tensors)

    # ---- persistence -----------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        return {
            "format": "edgeq-quant-plan",
            "version": self.version,
            "target": self.target,
            "rounding": self.rounding,
            "graph_fingerprint": self.graph_fingerprint,
            "model": self.model,
            "recipe": self.recipe,
            "calibration": self.calibration,
            "report": self.report,
            "tensors": [t.meta() for t in self.tensors.values()],
        }

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i, t in enumerate(self.tensors.values()):
            for key in ("scale", "zero_point", "values", "lut"):
                value = getattr(t, key)
                if value is not None:
                    out[f"t{i}.{key}"] = np.asarray(value)
        return out

    def save(self, folder: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write plan.json + plan.npz as one output folder (`edgeq.outputs`: built beside it,
        moved into place; an existing folder must be an earlier plan, or `force`)."""

        def write(tmp: Path) -> None:
            tmp.mkdir()
            (tmp / "plan.json").write_text(
                json.dumps(self.to_json_dict(), indent=1, default=json_default)
            )
            np.savez(tmp / "plan.npz", **self.arrays())

        return write_output(folder, PLAN, write, force=force)

    @staticmethod
    def load(folder: str | os.PathLike[str]) -> QuantPlan:
        """Read a plan folder, checking schema and numbers (`edgeq.quant.plan_check`): a
        malformed, truncated or tampered plan is a one-line PlanError, never a wrong artifact."""
        from edgeq.quant import plan_check as check

        folder = Path(folder)
        meta_path, npz_path = folder / "plan.json", folder / "plan.npz"
        if not meta_path.is_file() or not npz_path.is_file():
            raise InputError(
                f"'{folder}' is not a plan folder (needs plan.json and plan.npz)",
                "create one with `edgeq calibrate MODEL --calib DATA -o PLAN_DIR`",
            )
        try:
            check_size(meta_path.stat().st_size, f"'{meta_path}'", 1 << 30)
            meta = json.loads(meta_path.read_bytes())
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
            raise check.PlanError(f"'{meta_path}' is not valid JSON: {_first_line(exc)}",
                                  "re-create the plan with `edgeq calibrate`") from None  # fmt: skip
        check.check_json(meta, f"'{meta_path}'")
        if meta["version"] != PLAN_VERSION:
            raise check.PlanError(f"'{folder}' holds an edgeq plan of version {meta['version']}, "
                                  f"not {PLAN_VERSION}", "re-create it with this edgeq")  # fmt: skip
        arrays = load_npz(npz_path, f"'{npz_path}'")
        check.check_array_keys(list(arrays), len(meta["tensors"]), f"'{npz_path}'")
        tensors: dict[str, TensorQuant] = {}
        for i, t in enumerate(meta["tensors"]):
            t = dict(t)
            t.pop("scale", None)
            t.pop("zero_point", None)
            tensors[t["name"]] = TensorQuant(
                **t,
                scale=arrays.get(f"t{i}.scale"),
                zero_point=arrays.get(f"t{i}.zero_point"),
                values=arrays.get(f"t{i}.values"),
                lut=arrays.get(f"t{i}.lut"),
            )
        plan = QuantPlan(
            target=meta["target"],
            tensors=tensors,
            recipe=meta.get("recipe", {}),
            graph_fingerprint=meta.get("graph_fingerprint", ""),
            model=meta.get("model", {}),
            rounding=meta.get("rounding", "half_even"),
            calibration=meta.get("calibration", {}),
            report=meta.get("report", {}),
        )
        check.check_numbers(plan, f"plan '{folder}'")
        if plan.recipe:
            from edgeq.quant.recipe import Recipe

            try:
                Recipe.from_dict(plan.recipe)
            except InputError as exc:
                raise check.PlanError(f"'{meta_path}': {exc}", check._FIX) from None
            except (TypeError, ValueError, AttributeError, KeyError) as exc:
                raise check.PlanError(f"'{meta_path}': the recipe is malformed "
                                      f"({_first_line(exc)})", check._FIX) from None  # fmt: skip
        return plan

    def plan_hash(self) -> str:
        h = hashlib.sha256(
            json.dumps(self.to_json_dict(), sort_keys=True, default=json_default).encode()
        )
        for key, value in sorted(self.arrays().items()):
            h.update(key.encode())
            h.update(np.ascontiguousarray(value).tobytes())
        return h.hexdigest()


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def lut_decode(indices: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Palettized weights: every index looked up in its group's table. `lut` has one dim per
    weight dim (the number of groups along it, dividing it) plus the table."""
    idx = np.asarray(indices, np.int64)
    table = np.asarray(lut, np.float32)
    for axis in range(idx.ndim):
        table = np.repeat(table, idx.shape[axis] // table.shape[axis], axis=axis)
    return np.take_along_axis(table, idx[..., None], axis=-1)[..., 0]


def json_default(value: Any) -> Any:
    """`json.dumps(..., default=json_default)`: numpy scalars/arrays and paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def graph_fingerprint(graph: Graph) -> str:
    """A hash of the prepared graph's structure and constants (plans are bound to it)."""
    h = hashlib.sha256()
    for v in graph.inputs:
        h.update(f"in:{v.name}:{v.dtype}:{v.shape}".encode())
    for node in graph.nodes:
        attrs = {
            k: v for k, v in node.attrs.items() if not isinstance(v, Graph | list | np.ndarray)
        }
        h.update(f"{node.op_type}:{node.inputs}:{node.outputs}:{sorted(attrs.items())}".encode())
    for name in sorted(graph.constants):
        arr = np.ascontiguousarray(graph.constants[name])
        h.update(f"c:{name}:{arr.dtype}:{arr.shape}".encode())
        h.update(hashlib.sha256(arr.tobytes()).digest())
    return h.hexdigest()
