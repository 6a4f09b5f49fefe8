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


SHARED_SCALE_OPS = (
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Concat", "MaxPool",
    "GlobalMaxPool", "Slice", "Split", "Gather", "Pad", "Resize", "DepthToSpace", "SpaceToDepth",
    "Expand", "Tile",
)  # fmt: skip


@dataclass(frozen=True)
class QuantRules:
    """What a target's runtime can run, as data. The planner enforces it before calibration."""

    act8: str | None = "int8"  # dtype used for 8-bit activations (None: not supported)
    act16: str | None = None  # dtype for 16-bit activations (None: not supported)
    default_act_bits: int = 8  # 0: float activations (weight-only) by default
    # the default under --bits 4 where it differs (None: default_act_bits); onnx: 0, weight-only
    # 4-bit as onnxruntime's own (MatMulNBits reads float activations)
    default_act_bits_4bit: int | None = None
    float_activations: bool = True  # tensors may stay float (weight-only, keep_float, masks)
    w8: str | None = "int8"
    w4: str | None = None
    weight_symmetric: bool = True  # default
    # blocked 4-bit weights: symmetric or not by default where it differs from weight_symmetric
    # (None: the same). A zero point per block costs 4 bits per block (0.125 bits per weight at
    # block 32) and keeps the grid on the block's [min, max] instead of ±max|w|: at 4 bits
    # that halves the unused codes of a one-sided block.
    weight_symmetric_block4: bool | None = None
    weight_asymmetric_allowed: bool = False
    narrow_weights: bool = True  # int8 weights in [-127, 127]
    default_granularity: str = "per_channel"
    default_granularity_4bit: str = "per_block"
    # the 4-bit default where activations are quantized, if it differs (None: the same); onnx:
    # per_channel, the only 4-bit weights onnxruntime's integer kernels take
    default_granularity_4bit_integer: str | None = None
    default_block_size: int = 32
    per_channel_ops: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Gather", "LSTM")
    per_block_ops: tuple[str, ...] = ()
    block_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)
    # an input dim that is not a multiple of the block: "ceil" (a partial last block),
    # "divisor" (the largest divisor of the dim not above the block), "none" (per-channel)
    partial_blocks: str = "none"
    # the artifact stores a partial last block padded to the full block (MLX, MatMulNBits)
    pad_partial_blocks: bool = True
    # the artifact stores every quantized weight as rows of groups of one of these sizes, each row
    # padded to a multiple of its group (MLX: 128/64/32, the fewest stored bits): the size
    # estimate counts the padding and a scale (and bias) per group, per-channel weights too
    row_groups: tuple[int, ...] = ()
    # ops whose per-channel 4-bit weights mixed precision may put in 4-bit blocks (its middle
    # step; None: every op the target runs blocked)
    block_step_ops: tuple[str, ...] | None = None
    # how the artifact stores weight scales ("float16": plans round scales to float16 so the
    # artifact holds them exactly); affine_bias: it stores −scale·zero_point too (MLX)
    weight_scale_dtype: str = "float32"
    # blocked weights' scales where they differ (None: weight_scale_dtype); onnx: float16,
    # its blocked weights are decoded by folded float ops, its per-channel ones feed the
    # integer kernels, which take float32 scales
    block_scale_dtype: str | None = None
    affine_bias: bool = False
    weight_lut: bool = False  # palettized (look-up table) weights (Core ML iOS18)
    float_weight_bits: int = 32  # how the artifact stores a weight left float
    # bits of the zero point an artifact stores per channel of a symmetric weight without blocks
    # (onnx: an int8 zero point 0, which onnxruntime's QGemm fusion wants)
    symmetric_zero_point_bits: int = 0
    block_requires_act_bits: int = 0  # e.g. QNN: 4-bit blockwise only with 16-bit activations
    rounding: str = "half_even"
    min_range: float = 0.0
    integer_only: bool = False  # every op's constants quantized too (TFLite full-integer)
    mixed_precision: bool = False  # 8- and 16-bit activations may mix tensor by tensor
    # where transformer safety keeps tensors at high precision: "int16" (targets that run
    # 16-bit integer kernels) or "float" (targets whose 16-bit paths are float anyway, e.g.
    # onnxruntime CPU: float keeps the integer MatMuls fusable and is more accurate)
    high_precision: str = "int16"
    fuse_bias_add: bool = False  # MatMul + Add(const) is one op with an int32 bias
    # the residual sum into a LayerNorm stays float where the runtime's LayerNorm is a float
    # island anyway (TFLite): one float ADD of the two dequantized branches instead of an
    # 8-bit requantization of the sum onto a grid as coarse as its outlier channels
    float_residual: bool = False
    # LayerNorm outputs read by MatMuls/Convs (and the layout ops between) at 16 bits: the
    # runtime runs 16-bit activations with 8-bit weights (QNN HTP A16W8)
    norm_outputs_16bit: bool = False
    shared_scale_ops: tuple[str, ...] = SHARED_SCALE_OPS
    fixed: dict[str, dict[str, tuple[float, int]]] = field(default_factory=dict)

    def act_bits_default(self, weight_bits: int | None) -> int:
        """Activation bits when the user names none, for the model's weight bits."""
        if weight_bits == 4 and self.default_act_bits_4bit is not None:
            return self.default_act_bits_4bit
        return self.default_act_bits

    def granularity_default(self, weight_bits: int | None, act_bits: int) -> str:
        """Weight granularity when the user names none, for a layer's weight and activation bits."""
        if weight_bits != 4:
            return self.default_granularity
        if act_bits and self.default_granularity_4bit_integer:
            return self.default_granularity_4bit_integer
        return self.default_granularity_4bit

    def scale_dtype(self, block: int | None) -> str:
        """How the artifact stores the scales of a weight with (or without) blocks."""
        return (
            (self.block_scale_dtype or self.weight_scale_dtype)
            if block
            else self.weight_scale_dtype
        )

    @staticmethod
    def from_dict(data: dict[str, Any], where: str) -> QuantRules:
        names = set(QuantRules.__dataclass_fields__)
        unknown = set(data) - names
        if unknown:
            raise InputError(f"target profile {where}: unknown [quant] key(s) {sorted(unknown)}")
        values = dict(data)
        for key in (
            "per_channel_ops",
            "per_block_ops",
            "block_sizes",
            "shared_scale_ops",
            "block_step_ops",
            "row_groups",
        ):
            if key in values:
                values[key] = tuple(values[key])
        values["fixed"] = {
            op: {dt: (float(sz[0]), int(sz[1])) for dt, sz in table.items()}
            for op, table in data.get("fixed", {}).items()
        }
        return QuantRules(**values)

    def act_dtype(self, bits: int) -> str | None:
        return {8: self.act8, 16: self.act16}.get(bits)

    def weight_dtype(self, bits: int) -> str | None:
        return {8: self.w8, 4: self.w4}.get(bits)


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    artifact: str
    runtime: str
    exporter: str
    ops: OpSupport = field(default_factory=OpSupport)
    quant: QuantRules = field(default_factory=QuantRules)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> TargetProfile:
        known = {"name", "description", "artifact", "runtime", "exporter", "ops", "quant"}
        ops = data.get("ops", {})
        bad_ops = set(ops) - {"supported", "unsupported", "fallback"}
        if bad_ops:
            raise InputError(
                f"target profile '{data.get('name')}': unknown [ops] keys {sorted(bad_ops)}"
            )
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
            quant=QuantRules.from_dict(data.get("quant", {}), data["name"]),
            raw={k: v for k, v in data.items() if k not in known},
        )


# the one order targets are listed in everywhere (CLI choices, help, tables, reports):
# generic CPU runtimes first, then phones and boards, then Apple
TARGET_ORDER = ("onnx", "qnn", "rpi", "tflm", "ane", "mlx")


def ordered_targets(names: list[str] | tuple[str, ...]) -> list[str]:
    """`names` in the canonical order (profiles added later come after, by name)."""
    rank = {n: i for i, n in enumerate(TARGET_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def available_targets() -> list[str]:
    files = resources.files(__name__).iterdir()
    return ordered_targets(
        [f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml")]
    )


def target_defaults(profile: TargetProfile) -> dict[str, str]:
    """What `edgeq export --target T` does with no other flag, in the flags' own words."""
    q = profile.quant
    act = "0 (float)" if q.default_act_bits == 0 else str(q.default_act_bits)
    act4 = q.act_bits_default(4)
    if act4 != q.default_act_bits:
        act += f"; with --bits 4: {'0 (float)' if act4 == 0 else act4}"
    gran = q.granularity_default(4, act4)
    gran4 = gran + (f" {q.default_block_size}" if gran == "per_block" else "")
    if q.default_granularity_4bit_integer and act4 == 0:
        gran4 += f"; {q.default_granularity_4bit_integer} with --act-bits 8"
    budgets = (profile.raw.get("budgets") or {}).get("max_loss", [])
    return {
        "bits": "8" + (f" (4: {q.w4}, {gran4})" if q.w4 else " (4 refused)"),
        "act_bits": act + (f" (16: {q.act16})" if q.act16 else ""),
        "granularity": q.default_granularity
        + (f" {q.default_block_size}" if q.default_granularity == "per_block" else ""),
        "observer": "minmax",
        "max_loss": ", ".join(budgets),
    }


@cache
def load_target(name: str) -> TargetProfile:
    names = available_targets()
    if name not in names:
        raise InputError(f"unknown target '{name}'", f"targets: {', '.join(names)}")
    text = resources.files(__name__).joinpath(f"{name}.toml").read_text()
    return TargetProfile.from_dict(tomllib.loads(text))
