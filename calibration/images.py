"""Image folders: decode with Pillow, resize (bilinear), normalize, lay out as one model input.

A `PreprocessSpec` describes the pipeline, in this order:

1. decode, apply the EXIF orientation, convert to RGB (or L for ``color = "gray"``);
2. resize with Pillow's bilinear filter:
   * ``stretch``: to exactly ``width`` x ``height``;
   * ``keep_ratio_pad``: height fixed, width ``min(width, ceil(height * w / h))``, then padded
     on the right (PP-OCR rec/cls ``resize_norm_img``);
   * ``letterbox``: scaled to fit inside ``width`` x ``height`` and centred;
3. reorder channels (``bgr`` reverses RGB), ``x * scale``, then ``(x - mean) / std`` per output
   channel (``mean[0]`` applies to the first channel of the output, B for ``bgr``);
4. fill the padding with ``pad_value`` (a value of the normalized output, 0.0 as PP-OCR does);
5. lay out as [1, C, H, W] (``nchw``) or [1, H, W, C] (``nhwc``), float32.

Pillow's bilinear filter widens its support when shrinking (antialiasing), so downscaled pixels
differ from ``cv2.resize(..., INTER_LINEAR)``; that is fine for calibration statistics.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .base import IMAGE_SUFFIXES, CalibrationDataError, Feed, FolderSource

ResizeMode = Literal["stretch", "keep_ratio_pad", "letterbox"]
ColorOrder = Literal["rgb", "bgr", "gray"]
Layout = Literal["nchw", "nhwc"]

_RESIZE = ("stretch", "keep_ratio_pad", "letterbox")
_COLOR = ("rgb", "bgr", "gray")
_LAYOUT = ("nchw", "nhwc")
_DTYPE = ("float32",)


def _fail(problem: str) -> CalibrationDataError:
    return CalibrationDataError(
        f"preprocess spec: {problem}", "fix the preprocess file (see edgeq.calibration.images)"
    )


def _floats(value: Any, key: str, channels: int) -> tuple[float, ...]:
    values = [value] if isinstance(value, (int, float)) else value
    if (
        isinstance(values, (str, bytes))
        or not isinstance(values, Sequence)
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    ):
        raise _fail(f"{key} must be a number or a list of {channels} numbers, got {value!r}")
    if len(values) == 1:
        values = list(values) * channels
    if len(values) != channels:
        raise _fail(f"{key} needs 1 or {channels} values (one per channel), got {len(values)}")
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in out):
        raise _fail(f"{key} must be finite, got {value!r}")
    return out


@dataclass(frozen=True)
class PreprocessSpec:
    """How to turn an image file into a model input; see the module docstring."""

    height: int
    width: int
    resize: ResizeMode = "stretch"
    color: ColorOrder = "rgb"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)  # one value per channel, or one for all
    std: tuple[float, ...] = (1.0,)
    layout: Layout = "nchw"
    dtype: Literal["float32"] = "float32"
    pad_value: float = 0.0

    def __post_init__(self) -> None:
        for key in ("height", "width"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _fail(f"{key} must be a positive integer, got {value!r}")
        for key, allowed in (
            ("resize", _RESIZE),
            ("color", _COLOR),
            ("layout", _LAYOUT),
            ("dtype", _DTYPE),
        ):
            if getattr(self, key) not in allowed:
                raise _fail(
                    f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}"
                )
        for key in ("scale", "pad_value"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _fail(f"{key} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise _fail(f"{key} must be finite, got {value!r}")
            object.__setattr__(self, key, float(value))
        if self.scale <= 0:
            raise _fail(f"scale must be positive, got {self.scale}")
        object.__setattr__(self, "mean", _floats(self.mean, "mean", self.channels))
        object.__setattr__(self, "std", _floats(self.std, "std", self.channels))
        if any(s <= 0 for s in self.std):
            raise _fail(f"std must be positive, got {list(self.std)}")

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """The model input shape this spec produces, batch 1 included."""
        if self.layout == "nchw":
            return (1, self.channels, self.height, self.width)
        return (1, self.height, self.width, self.channels)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise _fail(
                f"unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
            )
        missing = sorted({"height", "width"} - set(data))
        if missing:
            raise _fail(f"missing required key(s) {', '.join(missing)}")
        return cls(**dict(data))

    @classmethod
    def from_file(cls, path: str | Path) -> PreprocessSpec:
        """Load a spec from a .toml or .json file holding the fields at top level."""
        path = Path(path)
        if not path.is_file():
            raise CalibrationDataError(
                f"preprocess file '{path}' does not exist", "pass a .toml or .json spec file"
            )
        try:
            if path.suffix.lower() == ".toml":
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            elif path.suffix.lower() == ".json":
                data = json.loads(path.read_text(encoding="utf-8"))
            else:
                raise CalibrationDataError(
                    f"preprocess file '{path}' is neither .toml nor .json",
                    "write the spec as TOML or JSON",
                )
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CalibrationDataError(
                f"preprocess file '{path}' cannot be parsed: {exc}", "fix its syntax"
            ) from exc
        if not isinstance(data, dict):
            raise _fail(f"'{path}' must hold a table/object of fields")
        return cls.from_dict(data)

    @classmethod
    def coerce(cls, spec: PreprocessSpec | Mapping[str, Any] | str | Path) -> PreprocessSpec:
        """A spec from a spec, a dict, or a path to a .toml/.json file."""
        if isinstance(spec, PreprocessSpec):
            return spec
        if isinstance(spec, Mapping):
            return cls.from_dict(spec)
        return cls.from_file(spec)


def _pil() -> Any:
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise CalibrationDataError(
            "image calibration data needs Pillow, which is not installed", "pip install pillow"
        ) from exc
    return Image, ImageOps


def preprocess_image(image: Any, spec: PreprocessSpec) -> np.ndarray:
    """A PIL image as a model input of shape `spec.input_shape`, float32."""
    Image, _ = _pil()
    image = image.convert("L" if spec.color == "gray" else "RGB")
    w, h = image.size
    if w < 1 or h < 1:
        raise ValueError(f"image has no pixels ({w}x{h})")
    if spec.resize == "stretch":
        new_w, new_h, left, top = spec.width, spec.height, 0, 0
    elif spec.resize == "keep_ratio_pad":
        new_w, new_h = min(spec.width, math.ceil(spec.height * w / h)), spec.height
        left = top = 0
    else:  # letterbox
        ratio = min(spec.width / w, spec.height / h)
        new_w = min(spec.width, max(1, round(w * ratio)))
        new_h = min(spec.height, max(1, round(h * ratio)))
        left, top = (spec.width - new_w) // 2, (spec.height - new_h) // 2
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32).reshape(new_h, new_w, spec.channels)
    if spec.color == "bgr":
        pixels = pixels[:, :, ::-1]
    mean = np.asarray(spec.mean, np.float32)
    std = np.asarray(spec.std, np.float32)
    normalized = (pixels * np.float32(spec.scale) - mean) / std
    out = np.full((spec.height, spec.width, spec.channels), spec.pad_value, np.float32)
    out[top : top + new_h, left : left + new_w] = normalized
    if spec.layout == "nchw":
        out = out.transpose(2, 0, 1)
    return np.ascontiguousarray(out[None], dtype=np.float32)


class ImageFolder(FolderSource):
    """One image per sample (.png .jpg .jpeg .bmp .webp), preprocessed by `spec`."""

    kind = "image"
    suffixes = IMAGE_SUFFIXES

    def __init__(self, path: str | Path, spec: PreprocessSpec, input_name: str) -> None:
        super().__init__(path)
        self.spec = PreprocessSpec.coerce(spec)
        self.input_name = input_name

    def load(self, name: str) -> Feed:
        Image, ImageOps = _pil()
        path = self.file(name)
        try:
            with Image.open(path) as image:
                image.load()
                oriented = ImageOps.exif_transpose(image)
                array = preprocess_image(oriented, self.spec)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise CalibrationDataError(
                f"calibration image '{name}' in '{self.path}' cannot be decoded: {exc}",
                "re-save it as PNG or JPEG, or drop it",
            ) from exc
        return {self.input_name: array}
