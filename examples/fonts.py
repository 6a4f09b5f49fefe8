"""Fonts for rendering text images, available on a fresh machine with only PyPI packages.

Preference order: DejaVu Sans TrueType files found by name (``ImageFont.truetype`` searches the
system font folders), then Pillow's built-in scalable font (``ImageFont.load_default(size=...)``,
Pillow >= 10.1 with FreeType, which ships inside the wheel). Rendering is deterministic for a
given font; callers record :attr:`LoadedFont.name` next to their results.

``EDGEQ_EXAMPLES_FONT`` (environment) or the ``font`` argument picks one explicitly:
``"auto"`` (default), ``"pillow-default"``, or a TrueType file name/path.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cache

from PIL import ImageFont

log = logging.getLogger(__name__)

PILLOW_DEFAULT = "pillow-default"
AUTO = "auto"
FONT_ENV_VAR = "EDGEQ_EXAMPLES_FONT"
PREFERRED_TTF: tuple[str, ...] = ("DejaVuSans.ttf",)


@dataclass(frozen=True)
class LoadedFont:
    """A font at one size, with the name to record next to results."""

    font: ImageFont.FreeTypeFont
    name: str  # e.g. "DejaVuSans.ttf" or "pillow-default:Aileron-Regular"
    size: int


def requested_font(font: str | None = None) -> str:
    """The font choice in effect: the argument, else ``$EDGEQ_EXAMPLES_FONT``, else ``auto``."""
    return font or os.environ.get(FONT_ENV_VAR) or AUTO


def _pillow_default(size: int) -> LoadedFont:
    loaded = ImageFont.load_default(size=size)
    if not isinstance(loaded, ImageFont.FreeTypeFont):
        raise RuntimeError(
            "Pillow's built-in scalable font needs Pillow >= 10.1 built with FreeType"
        )
    family, style = loaded.getname()
    return LoadedFont(loaded, f"{PILLOW_DEFAULT}:{family}-{style}", size)


def _truetype(name: str, size: int) -> LoadedFont | None:
    try:
        loaded = ImageFont.truetype(name, size)
    except OSError:
        return None
    return LoadedFont(loaded, os.path.basename(name), size)


def load_font(size: int, font: str | None = None) -> LoadedFont:
    """Load a font at ``size`` pixels (see module docstring for the choice order)."""
    return _load_font(size, requested_font(font))


@cache
def _load_font(size: int, choice: str) -> LoadedFont:
    if choice == PILLOW_DEFAULT:
        return _pillow_default(size)
    if choice != AUTO:
        loaded = _truetype(choice, size)
        if loaded is None:
            raise FileNotFoundError(f"font {choice!r} not found")
        return loaded
    for name in PREFERRED_TTF:
        loaded = _truetype(name, size)
        if loaded is not None:
            return loaded
    log.debug("no preferred TrueType font found; using Pillow's built-in font")
    return _pillow_default(size)


def font_name(font: str | None = None, size: int = 32) -> str:
    """The name of the font that :func:`load_font` resolves to."""
    return load_font(size, font).name
