"""Recipes: what the user asks for, as a frozen dataclass (loadable from TOML).

Fields left as None take the target profile's default. Overrides match a node by name regex
(`name:...`) or by op type (`op:Conv`); precedence is single and documented:
node name > op type > global. `keep_float` lists node matchers whose outputs stay float.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from edgeq.errors import InputError

Granularity = Literal["per_tensor", "per_channel", "per_block"]
GRANULARITIES = ("per_tensor", "per_channel", "per_block")
RECIPE_VERSION = 1
LUT_BITS = (2, 3, 4, 6, 8)
_VALUE_FIX = "pass a supported value (see `edgeq calibrate --help`) or correct the recipe file"


class _Validated:
    """`__post_init__` runs `_validate`; a message without a fix gets the recipe's general one
    (every error is one `error: what — fix` line)."""

    def _validate(self) -> None:
        raise NotImplementedError

    def __post_init__(self) -> None:
        try:
            self._validate()
        except InputError as exc:
            if exc.fix:
                raise
            raise InputError(exc.problem, _VALUE_FIX) from None


@dataclass(frozen=True)
class LayerConfig(_Validated):
    """The per-node settable part of a recipe; None means "inherit"."""

    weight_bits: int | None = None
    act_bits: int | None = None  # 0 means float (weight-only)
    granularity: Granularity | None = None
    block_size: int | None = None
    weight_symmetric: bool | None = None
    act_symmetric: bool | None = None
    act_observer: str | None = None
    weight_method: str | None = None  # the grid's scale search: "minmax" | "mse"
    # how weights become integers: a registered weights algorithm ("rtn", "gptq"; default
    # gptq at 4 bits where the layer has an input Hessian, rtn otherwise)
    method: str | None = None
    awq: bool | None = None  # activation-aware input-channel scaling, where it folds exactly
    weight_format: str | None = None  # "affine" (scale, zero point) | "lut" (palettized)

    def _validate(self) -> None:
        lut = self.weight_format == "lut"
        if self.weight_bits not in (None, 4, 8, 16) and not (lut and self.weight_bits in LUT_BITS):
            raise InputError(f"weight_bits must be 4, 8 or 16 (lut: {', '.join(map(str, LUT_BITS))}), "
                             f"got {self.weight_bits}")  # fmt: skip
        if self.weight_format not in (None, "affine", "lut"):
            raise InputError(f"weight_format must be affine or lut, got '{self.weight_format}'")
        if self.method is not None and not re.fullmatch(r"[a-z][a-z0-9_]*", self.method):
            raise InputError(f"method '{self.method}' is not an algorithm name", "e.g. rtn or gptq")
        if self.act_bits not in (None, 0, 8, 16):
            raise InputError(f"act_bits must be 8, 16 or 0 (float), got {self.act_bits}")
        if self.granularity not in (None, *GRANULARITIES):
            raise InputError(
                f"granularity must be one of {GRANULARITIES}, got '{self.granularity}'"
            )
        if self.block_size is not None and (self.block_size <= 0 or self.block_size % 2):
            raise InputError(f"block_size must be a positive even number, got {self.block_size}")
        if self.weight_method not in (None, "minmax", "mse"):
            raise InputError(f"weight_method must be minmax or mse, got '{self.weight_method}'")

    def merged(self, over: LayerConfig) -> LayerConfig:
        """self with every non-None field of `over` applied."""
        changes = {f.name: getattr(over, f.name) for f in fields(over)}
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def set_fields(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }


@dataclass(frozen=True)
class Override:
    match: str  # "name:<regex>" or "op:<OpType>"
    config: LayerConfig

    def __post_init__(self) -> None:
        kind, _, pattern = self.match.partition(":")
        if kind not in ("name", "op") or not pattern:
            raise InputError(
                f"override match '{self.match}' must be 'name:<regex>' or 'op:<OpType>'"
            )
        if kind == "name":
            try:
                re.compile(pattern)
            except re.error as exc:
                raise InputError(f"override regex '{pattern}' is invalid: {exc}") from None

    @property
    def kind(self) -> str:
        return self.match.partition(":")[0]

    def matches(self, node_name: str, op_type: str) -> bool:
        kind, _, pattern = self.match.partition(":")
        if kind == "op":
            return op_type == pattern
        return re.search(pattern, node_name) is not None


@dataclass(frozen=True)
class Recipe(_Validated):
    """Global settings, overrides, and nodes kept in float."""

    base: LayerConfig = field(default_factory=LayerConfig)
    overrides: tuple[Override, ...] = ()
    keep_float: tuple[str, ...] = ()  # matchers like overrides: "name:<regex>" / "op:<Type>"
    mask_handling: bool = True  # additive attention masks and padding never set a range
    norm_inputs_16bit: bool = True  # LayerNorm/Softmax inputs at 16 bits where the target can
    # per-channel scales on residual branches where the residual sum runs in float (TFLite)
    branch_scales: bool = True
    # SmoothQuant on LayerNorm outputs read by MatMuls where the LayerNorm runs in float (TFLite)
    smoothing: bool = True
    refine_top: int = 0  # output-aware range refinement of the N most sensitive activations
    refine_samples: int = 16
    rare_values: bool = True  # min-max ranges set by rare values are cut (default observer)
    rare_values_samples: int = 8
    # the share of values a cut range may leave outside (1e-4: a 99.99th percentile). "auto"
    # picks the cut (none, 1e-4, 1e-3) whose simulated outputs are closest to float on 16
    # calibration samples: it fixes the PicoDet layout detector (region F1 72.6 -> 79.3, float
    # 78.9) but costs both OCR recognizers CER (0.65 -> 1.12%, 0.30 -> 0.73%), so it is opt-in
    rare_values_tail: str | float = 1e-4
    # mixed precision (4-bit plans): "auto" keeps at 8 bits the layers whose measured 4-bit
    # error dominates, within the budgets below; "off" keeps every planned layer at its bits
    mixed_precision: str = "auto"
    max_loss: str | None = None  # output-quality budget METRIC=NUMBER (edgeq.budget)
    bpw: float | None = None  # size budget: average bits per weight, scales included
    algorithm_samples: int = 128  # calibration samples for GPTQ/AWQ/sensitivities
    gptq_damp: float = 0.01
    gptq_act_order: bool = True
    gptq_static_groups: bool = False
    version: int = RECIPE_VERSION

    def _validate(self) -> None:
        for m in self.keep_float:
            Override(m, LayerConfig())  # validates the matcher
        if self.mixed_precision not in ("auto", "off"):
            raise InputError(f"mixed_precision must be auto or off, got '{self.mixed_precision}'")
        if self.bpw is not None and not 1.0 <= self.bpw <= 32.0:
            raise InputError(f"--bpw {self.bpw} is not an average bits per weight",
                             "e.g. --bpw 4.5 (between 1 and 32)")  # fmt: skip
        _tail(self.rare_values_tail)
        if self.algorithm_samples < 1 or not 0.0 <= self.gptq_damp < 1.0:
            raise InputError("algorithm_samples must be ≥ 1 and gptq_damp in [0, 1)")

    def config_for(self, node_name: str, op_type: str) -> tuple[LayerConfig, str]:
        """Effective config for a node and where it came from (precedence name > op > global)."""
        config, source = self.base, "global"
        for kind in ("op", "name"):
            for o in self.overrides:
                if o.kind == kind and o.matches(node_name, op_type):
                    config, source = config.merged(o.config), f"override {o.match}"
        return config, source

    def keeps_float(self, node_name: str, op_type: str) -> str | None:
        for m in self.keep_float:
            if Override(m, LayerConfig()).matches(node_name, op_type):
                return m
        return None

    # ---- (de)serialization ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "recipe": self.base.set_fields(),
            "keep_float": list(self.keep_float),
            "mask_handling": self.mask_handling,
            "norm_inputs_16bit": self.norm_inputs_16bit,
            "branch_scales": self.branch_scales,
            "smoothing": self.smoothing,
            "refine_top": self.refine_top,
            "refine_samples": self.refine_samples,
            "rare_values": self.rare_values,
            "rare_values_samples": self.rare_values_samples,
            "rare_values_tail": self.rare_values_tail,
            **{k: getattr(self, k) for k in _ALGORITHM_KEYS if getattr(self, k) is not None},
            "override": [{"match": o.match, **o.config.set_fields()} for o in self.overrides],
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Recipe:
        known = {"version", "recipe", "keep_float", "mask_handling", "override", "refine_top",
                 "refine_samples", "norm_inputs_16bit", "branch_scales", "smoothing", "rare_values",
                 "rare_values_samples", "rare_values_tail",
                 *_ALGORITHM_KEYS}  # fmt: skip
        unknown = set(data) - known
        if unknown:
            raise InputError(f"recipe: unknown key(s) {sorted(unknown)}", f"known: {sorted(known)}")
        if data.get("version", RECIPE_VERSION) != RECIPE_VERSION:
            raise InputError(f"recipe version {data['version']} is not {RECIPE_VERSION}")
        base = _layer_config(data.get("recipe", {}), "[recipe]")
        overrides = []
        for i, o in enumerate(data.get("override", [])):
            o = dict(o)
            if "match" not in o:
                raise InputError(f"recipe: [[override]] #{i + 1} has no 'match'")
            match = o.pop("match")
            overrides.append(Override(match, _layer_config(o, f"[[override]] {match}")))
        return Recipe(
            base=base,
            overrides=tuple(overrides),
            keep_float=tuple(data.get("keep_float", ())),
            mask_handling=bool(data.get("mask_handling", True)),
            norm_inputs_16bit=bool(data.get("norm_inputs_16bit", True)),
            branch_scales=bool(data.get("branch_scales", True)),
            smoothing=bool(data.get("smoothing", True)),
            refine_top=int(data.get("refine_top", 0)),
            refine_samples=int(data.get("refine_samples", 16)),
            rare_values=bool(data.get("rare_values", True)),
            rare_values_samples=int(data.get("rare_values_samples", 8)),
            rare_values_tail=_tail(data.get("rare_values_tail", 1e-4)),
            **{k: data[k] for k in _ALGORITHM_KEYS if k in data},
        )

    @staticmethod
    def load(path: str | Path) -> Recipe:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"recipe file '{path}' does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"recipe '{path}' is not valid TOML: {exc}") from None
        return Recipe.from_dict(data)


_ALGORITHM_KEYS = (
    "mixed_precision",
    "max_loss",
    "bpw",
    "algorithm_samples",
    "gptq_damp",
    "gptq_act_order",
    "gptq_static_groups",
)


def _tail(value: Any) -> str | float:
    """A recipe's rare_values_tail: "auto" or a share of values in (0, 0.1)."""
    if value == "auto":
        return "auto"
    try:
        tail = float(value)
    except (TypeError, ValueError):
        tail = -1.0
    if not 0.0 < tail < 0.1:
        raise InputError(f"rare_values_tail must be auto or a share of values in (0, 0.1), got {value!r}",
                         'e.g. rare_values_tail = 1e-4 (a 99.99th percentile) or "auto"')  # fmt: skip
    return tail


def _layer_config(data: dict[str, Any], where: str) -> LayerConfig:
    names = {f.name for f in fields(LayerConfig)}
    unknown = set(data) - names
    if unknown:
        raise InputError(
            f"recipe {where}: unknown key(s) {sorted(unknown)}", f"known: {sorted(names)}"
        )
    return LayerConfig(**data)


def recipe_from_cli(
    bits: int | None = None,
    act_bits: int | None = None,
    granularity: str | None = None,
    block_size: int | None = None,
    observer: str | None = None,
    base: Recipe | None = None,
    refine: int | None = None,
    *,
    max_loss: str | None = None,
    bpw: float | None = None,
    method: str | None = None,
    weight_format: str | None = None,
) -> Recipe:
    """A recipe from CLI flags, applied over an optional recipe file."""
    recipe = base or Recipe()
    if refine is not None:
        recipe = replace(recipe, refine_top=refine)
    if max_loss is not None:
        recipe = replace(recipe, max_loss=max_loss)
    if bpw is not None:
        recipe = replace(recipe, bpw=bpw)
    flags = LayerConfig(
        weight_bits=bits, act_bits=act_bits, granularity=granularity,  # type: ignore[arg-type]
        block_size=block_size, act_observer=observer, method=method, weight_format=weight_format,
    )  # fmt: skip
    return replace(recipe, base=recipe.base.merged(flags))


__all__ = ["LayerConfig", "Override", "Recipe", "asdict", "recipe_from_cli"]
