"""Target profiles as data: one TOML file per target (ane, mlx, qnn, onnx, rpi, tflm).

A profile says what the target's runtime can run and how (ops, dtypes, granularity, layout);
the planner and exporters read it. Adding a target is a profile file plus an exporter module.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from edgeq.errors import InputError

_UNKNOWN_KEYS_OK = frozenset({"notes"})


@dataclass(frozen=True)
class OpSupport:
    """Ops the target runs: `supported` (["*"] = any standard op) minus `unsupported`;
    `fallback` ops run but leave the accelerator (e.g. LSTM on the ANE)."""

    supported: tuple[str, ...] = ("*",)
    unsupported: tuple[str, ...] = ()
    fallback: tuple[str, ...] = ()

    def runs(self, op_type: str) -> bool:
        if op_type in self.unsupported:
            return False
        return "*" in self.supported or op_type in self.supported


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    artifact: str
    runtime: str
    exporter: str
    ops: OpSupport = field(default_factory=OpSupport)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> TargetProfile:
        known = {"name", "description", "artifact", "runtime", "exporter", "ops"}
        ops = data.get("ops", {})
        bad_ops = set(ops) - {"supported", "unsupported", "fallback"}
        if bad_ops:
            raise InputError(f"target profile '{data.get('name')}': unknown [ops] keys {sorted(bad_ops)}")
        return TargetProfile(
            name=data["name"],
            description=data.get("description", ""),
            artifact=data.get("artifact", ""),
            runtime=data.get("runtime", ""),
            exporter=data.get("exporter", ""),
            ops=OpSupport(
                supported=tuple(ops.get("supported", ["*"])),
                unsupported=tuple(ops.get("unsupported", [])),
                fallback=tuple(ops.get("fallback", [])),
            ),
            raw={k: v for k, v in data.items() if k not in known},
        )


def available_targets() -> list[str]:
    files = resources.files(__name__).iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


@cache
def load_target(name: str) -> TargetProfile:
    names = available_targets()
    if name not in names:
        raise InputError(f"unknown target '{name}'", f"targets: {', '.join(names)}")
    text = resources.files(__name__).joinpath(f"{name}.toml").read_text()
    return TargetProfile.from_dict(tomllib.loads(text))
