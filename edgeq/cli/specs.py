"""Parsing of user input specs: `--input-shape x=1,3,48,320` and `--input-value sr=16000`."""

from __future__ import annotations

from collections.abc import Iterable

from edgeq.errors import InputError


def parse_input_shapes(specs: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """`["x=1,3,48,320"]` → `{"x": (1, 3, 48, 320)}`; one spec per input."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition("=")
        if not sep or not name:
            raise InputError(
                f"--input-shape '{spec}' is not NAME=D1,D2,...", "e.g. --input-shape x=1,3,48,320"
            )
        try:
            parsed = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
        except ValueError:
            raise InputError(
                f"--input-shape '{spec}': dims must be integers", "e.g. --input-shape x=1,3,48,320"
            ) from None
        if not parsed or any(d <= 0 for d in parsed):
            raise InputError(f"--input-shape '{spec}': dims must be positive integers")
        if name in shapes:
            raise InputError(f"--input-shape given twice for '{name}'", "give one per input")
        shapes[name] = parsed
    return shapes


def parse_input_values(specs: Iterable[str]) -> dict[str, float | int]:
    """`["sr=16000"]` → `{"sr": 16000}` (scalar inputs bound to constants)."""
    values: dict[str, float | int] = {}
    for spec in specs:
        name, sep, raw = spec.partition("=")
        if not sep or not name or not raw:
            raise InputError(
                f"--input-value '{spec}' is not NAME=VALUE", "e.g. --input-value sr=16000"
            )
        try:
            values[name] = int(raw)
        except ValueError:
            try:
                values[name] = float(raw)
            except ValueError:
                raise InputError(f"--input-value '{spec}': value must be a number") from None
    return values
