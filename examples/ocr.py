"""Rendered text images, RapidOCR pre/post-processing and metrics for the PP-OCR example models.

Models come from the ``rapidocr-onnxruntime==1.4.4`` wheel (installed with ``--no-deps``; this
module never imports it, it only reads its ``.onnx`` files):

* det ``ch_PP-OCRv4_det_infer.onnx``: input ``x`` [1, 3, 640, 640], output probability map
  [1, 1, 640, 640].
* rec ``ch_PP-OCRv4_rec_infer.onnx``: input ``x`` [1, 3, 48, 320], output softmax [1, 40, 6625]
  (blank + the 6623 characters of the ``character`` metadata + space).
* cls ``ch_ppocr_mobile_v2.0_cls_infer.onnx``: input ``x`` [1, 3, 48, 192], output softmax
  [1, 2] over labels ("0", "180").

Pre-processing mirrors RapidOCR 1.4.4 (``ch_ppocr_{det,rec,cls}``): images are BGR (RapidOCR
reads with OpenCV), resized with bilinear interpolation as ``cv2.resize`` does (half-pixel
centres, no anti-aliasing; re-implemented here in numpy, equal up to rounding), scaled to
[-1, 1] for rec and cls, and normalised with RapidOCR's det ``mean``/``std`` (0.5, 0.5, 0.5 in
its ``config.yaml``) for det. Fixed shapes differ from RapidOCR only where it would grow the
tensor: a rec line wider than 320/48 is squeezed into 320 columns (RapidOCR widens the batch),
and det takes the page at 640x640 (RapidOCR scales the short side to 736).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from PIL import Image, ImageDraw

from edgeq import metrics

from .fonts import LoadedFont, load_font
from .text import Split, text_lines

ModelName = Literal["det", "rec", "cls"]

RAPIDOCR_PIN = "rapidocr-onnxruntime==1.4.4"
RAPIDOCR_MODEL_FILES: dict[str, str] = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}

REC_SHAPE = (3, 48, 320)  # C, H, W (RapidOCR rec_img_shape)
CLS_SHAPE = (3, 48, 192)  # C, H, W (RapidOCR cls_image_shape)
DET_SIZE = 640
# RapidOCR 1.4.4 config.yaml, Det: mean/std. (PaddleOCR's own det uses the ImageNet values below.)
DET_MEAN = (0.5, 0.5, 0.5)
DET_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLS_LABELS = ("0", "180")
CTC_BLANK = metrics.CTC_BLANK

LINE_HEIGHT = 48
LINE_FONT_SIZES = (28, 36)  # inclusive range drawn per line when font_size is None
PAGE_FONT_SIZES = (18, 30)
LINE_MARGINS = (1, 4)  # inclusive range of blank pixels left and right of the ink

ImageLike = Image.Image | np.ndarray


# ---------------------------------------------------------------- model files


def _package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it (RapidOCR imports cv2)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def rapidocr_model_path(name: ModelName) -> Path:
    """Path of a PP-OCR model file shipped in the ``rapidocr_onnxruntime`` wheel."""
    if name not in RAPIDOCR_MODEL_FILES:
        raise ValueError(f"name must be one of {sorted(RAPIDOCR_MODEL_FILES)}, got {name!r}")
    package = _package_dir("rapidocr_onnxruntime")
    path = None if package is None else package / "models" / RAPIDOCR_MODEL_FILES[name]
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"RapidOCR {name} model not found ({RAPIDOCR_MODEL_FILES[name]}); "
            f"install it with: pip install --no-deps {RAPIDOCR_PIN}"
        )
    return path


@cache
def rec_charset(model_path: Path | None = None) -> tuple[str, ...]:
    """CTC alphabet of the rec model, as RapidOCR builds it.

    ``"blank"`` at index 0, the ``character`` metadata split with ``str.splitlines`` (as
    RapidOCR's ``get_character_list``), then a space appended at the end.
    """
    path = model_path or rapidocr_model_path("rec")
    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if "character" not in meta:
        raise KeyError(f"{path} has no 'character' metadata")
    return metrics.charset_from_lines(meta["character"].splitlines(), None)


# ---------------------------------------------------------------- image helpers


def to_bgr_uint8(img: ImageLike) -> np.ndarray:
    """HxWx3 uint8 BGR array (RapidOCR's layout) from a PIL image or an RGB/gray array."""
    if isinstance(img, Image.Image):
        arr = np.asarray(img.convert("RGB"))
    else:
        arr = np.asarray(img)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected HxWx3 uint8, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr[:, :, ::-1])


_COEF_BITS = 11  # OpenCV INTER_RESIZE_COEF_BITS
_COEF_ONE = 1 << _COEF_BITS


def _linear_taps(
    src: int, dst: int, *, clamp_weights: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and 11-bit fixed-point weights of ``cv2.INTER_LINEAR`` along one axis.

    OpenCV zeroes the fraction of clamped taps horizontally but not vertically.
    """
    pos = ((np.arange(dst) + 0.5) * (1.0 / (dst / src)) - 0.5).astype(np.float32)
    lo = np.floor(pos).astype(np.int64)
    frac = (pos - lo).astype(np.float32)
    if clamp_weights:
        frac[(lo < 0) | (lo >= src - 1)] = 0.0
    hi = np.clip(lo + 1, 0, src - 1)
    lo = np.clip(lo, 0, src - 1)
    w_hi = np.rint(frac * _COEF_ONE).astype(np.int64)
    w_lo = np.rint((np.float32(1.0) - frac) * _COEF_ONE).astype(np.int64)
    return lo, hi, w_lo, w_hi


def resize_linear(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of an HxWxC uint8 array, bit-exact with ``cv2.resize(arr, (w, h))``.

    Reproduces OpenCV's fixed-point ``INTER_LINEAR`` path for 8-bit images (checked against
    opencv-python-headless 5.0 on x86-64): half-pixel centres, no anti-aliasing.
    """
    if arr.shape[:2] == (height, width):
        return arr.copy()
    y0, y1, b0, b1 = _linear_taps(arr.shape[0], height, clamp_weights=False)
    x0, x1, a0, a1 = _linear_taps(arr.shape[1], width, clamp_weights=True)
    src = arr.astype(np.int64)
    rows = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]
    top = (b0[:, None, None] * (rows[y0] >> 4)) >> 16
    bottom = (b1[:, None, None] * (rows[y1] >> 4)) >> 16
    return np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8)


def resize_norm_pad(img: ImageLike, shape: tuple[int, int, int]) -> np.ndarray:
    """RapidOCR rec/cls ``resize_norm_img``: keep aspect at height H, cap width at W,
    scale to [-1, 1] ((x / 255 - 0.5) / 0.5), pad on the right with zeros. Returns [1, C, H, W].
    """
    channels, height, width = shape
    bgr = to_bgr_uint8(img)
    h, w = bgr.shape[:2]
    resized_w = min(width, math.ceil(height * w / float(h)))
    resized = resize_linear(bgr, resized_w, height).astype(np.float32)
    resized = (resized.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    out = np.zeros((1, channels, height, width), dtype=np.float32)
    out[0, :, :, :resized_w] = resized
    return out


def rec_preprocess(img: ImageLike) -> np.ndarray:
    """PP-OCRv4 rec input [1, 3, 48, 320] float32 from a text-line image."""
    return resize_norm_pad(img, REC_SHAPE)


def cls_preprocess(img: ImageLike) -> np.ndarray:
    """PP-OCR mobile v2 cls input [1, 3, 48, 192] float32 from a text-line image."""
    return resize_norm_pad(img, CLS_SHAPE)


def det_preprocess(
    img: ImageLike,
    size: int = DET_SIZE,
    mean: Sequence[float] = DET_MEAN,
    std: Sequence[float] = DET_STD,
) -> np.ndarray:
    """PP-OCRv4 det input [1, 3, size, size] float32: BGR, (x / 255 - mean) / std, NCHW."""
    if size % 32:
        raise ValueError(f"det size must be a multiple of 32, got {size}")
    bgr = resize_linear(to_bgr_uint8(img), size, size).astype(np.float32)
    norm = (bgr / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(norm.transpose(2, 0, 1)[None], dtype=np.float32)


# ---------------------------------------------------------------- decoding and metrics


def ctc_greedy_decode(probs: np.ndarray, charset: Sequence[str] | None = None) -> str:
    """Greedy CTC decode of rec output [T, C] or [1, T, C] with the rec model's alphabet
    (`edgeq.metrics.ctc_greedy_decode`, which the export report uses too)."""
    return str(metrics.ctc_greedy_decode(probs, rec_charset() if charset is None else charset))


edit_distance = metrics.edit_distance


def character_error_rate(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Total edit distance over total reference characters (references must not be empty)."""
    if len(preds) == len(refs) and sum(len(r) for r in refs) == 0:
        raise ValueError("references are empty")
    return metrics.character_error_rate(preds, refs)


def cls_accuracy(probs: Sequence[np.ndarray], labels: Sequence[int]) -> float:
    """Fraction of cls outputs ([1, 2] or [2]) whose argmax equals the label."""
    if len(probs) != len(labels) or not labels:
        raise ValueError("need as many outputs as labels, at least one")
    hits = sum(
        int(np.asarray(p).reshape(-1).argmax() == y) for p, y in zip(probs, labels, strict=True)
    )
    return hits / len(labels)


# ---------------------------------------------------------------- rendering


@dataclass(frozen=True)
class LineSample:
    """A rendered text line with its ground truth."""

    text: str
    image: Image.Image
    font: str


@dataclass(frozen=True)
class ClsSample:
    """A text line, upright (label 0) or rotated by 180 degrees (label 1)."""

    text: str
    image: Image.Image
    label: int
    font: str


@dataclass(frozen=True)
class TextPage:
    """A rendered page with the ink boxes (x0, y0, x1, y1) of its lines."""

    image: Image.Image
    lines: tuple[str, ...]
    boxes: tuple[tuple[int, int, int, int], ...]
    font: str


def _rng(seed: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, *salt])


def _pick(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def render_text_line(
    text: str,
    height: int = LINE_HEIGHT,
    font_size: int | None = None,
    seed: int = 0,
    font: str | None = None,
) -> Image.Image:
    """Black-ish text on a near-white background, cropped like a detected text line.

    The seed varies the font size (28-36 px unless given), margins, vertical offset, paper and
    ink gray levels. ``image.info`` holds ``"text"`` and ``"font"`` (the font actually used).
    """
    if not text:
        raise ValueError("text must not be empty")
    rng = _rng(seed)
    size = font_size if font_size is not None else _pick(rng, LINE_FONT_SIZES)
    loaded = load_font(size, font)
    paper, ink = _pick(rng, (228, 255)), _pick(rng, (0, 60))
    left_margin, right_margin = _pick(rng, LINE_MARGINS), _pick(rng, LINE_MARGINS)
    ascent, descent = loaded.font.getmetrics()
    x0, _, x1, _ = loaded.font.getbbox(text)
    free = height - (ascent + descent)
    top = int(np.clip(free // 2 + _pick(rng, (-3, 3)), min(free, 0), max(free, 0)))
    image = Image.new("RGB", (x1 - x0 + left_margin + right_margin, height), (paper,) * 3)
    ImageDraw.Draw(image).text((left_margin - x0, top), text, fill=(ink,) * 3, font=loaded.font)
    image.info.update(text=text, font=loaded.name)
    return image


def rec_samples(
    n: int, seed: int = 0, *, split: Split = "eval", font: str | None = None
) -> list[LineSample]:
    """``n`` rendered lines of the given text split (rec inputs with their transcripts)."""
    texts = text_lines(n, seed, split=split)
    images = [
        render_text_line(t, seed=seed * 1_000_003 + i, font=font) for i, t in enumerate(texts)
    ]
    return [LineSample(t, im, im.info["font"]) for t, im in zip(texts, images, strict=True)]


def cls_samples(
    n: int, seed: int = 0, *, split: Split = "eval", font: str | None = None
) -> list[ClsSample]:
    """``n`` lines alternating upright (label 0, even index) and rotated 180 (label 1)."""
    out = []
    for i, sample in enumerate(rec_samples(n, seed, split=split, font=font)):
        label = i % 2
        image = sample.image.transpose(Image.Transpose.ROTATE_180) if label else sample.image
        out.append(ClsSample(sample.text, image, label, sample.font))
    return out


def _fit_font(text: str, size: int, max_width: int, font: str | None) -> LoadedFont | None:
    while size >= PAGE_FONT_SIZES[0] - 6:
        loaded = load_font(size, font)
        x0, _, x1, _ = loaded.font.getbbox(text)
        if x1 - x0 <= max_width:
            return loaded
        size -= 2
    return None


def layout_text_page(
    lines: Sequence[str], size: int = DET_SIZE, seed: int = 0, font: str | None = None
) -> TextPage:
    """Lay lines out top to bottom on a ``size`` x ``size`` near-white page.

    Lines that do not fit (too wide at the smallest size, or past the bottom) are skipped.
    """
    rng = _rng(seed, 1)
    margin = max(8, size // 40)
    paper = _pick(rng, (230, 255))
    image = Image.new("RGB", (size, size), (paper,) * 3)
    draw = ImageDraw.Draw(image)
    y = margin + _pick(rng, (0, 2 * margin))
    placed: list[str] = []
    boxes: list[tuple[int, int, int, int]] = []
    font_used = load_font(PAGE_FONT_SIZES[1], font).name
    for text in lines:
        loaded = _fit_font(text, _pick(rng, PAGE_FONT_SIZES), size - 2 * margin, font)
        if loaded is None:
            continue
        x0, y0, x1, y1 = loaded.font.getbbox(text)
        if y + (y1 - y0) > size - margin:
            break
        x = margin + _pick(rng, (0, max(0, size - 2 * margin - (x1 - x0))))
        ink = _pick(rng, (0, 60))
        draw.text((x - x0, y - y0), text, fill=(ink,) * 3, font=loaded.font)
        boxes.append((x, y, x + x1 - x0, y + y1 - y0))
        placed.append(text)
        y += (y1 - y0) + _pick(rng, (10, 30))
    image.info.update(font=font_used)
    return TextPage(image, tuple(placed), tuple(boxes), font_used)


def render_text_page(
    lines: Sequence[str], size: int = DET_SIZE, seed: int = 0, font: str | None = None
) -> Image.Image:
    """The page image of :func:`layout_text_page`; ``info`` has ``"boxes"`` and ``"font"``."""
    page = layout_text_page(lines, size, seed, font)
    page.image.info.update(boxes=page.boxes, lines=page.lines)
    return page.image


def det_pages(
    n: int,
    seed: int = 0,
    *,
    split: Split = "eval",
    lines_per_page: int = 14,
    font: str | None = None,
) -> list[TextPage]:
    """``n`` pages of ``lines_per_page`` text lines from the given split."""
    texts = text_lines(n * lines_per_page, seed, split=split)
    return [
        layout_text_page(
            texts[i * lines_per_page : (i + 1) * lines_per_page],
            seed=seed * 1_000_003 + i,
            font=font,
        )
        for i in range(n)
    ]


def box_mask(boxes: Sequence[tuple[int, int, int, int]], size: int = DET_SIZE) -> np.ndarray:
    """Boolean [size, size] mask, True inside any box."""
    mask = np.zeros((size, size), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(y0, 0) : min(y1, size), max(x0, 0) : min(x1, size)] = True
    return mask


def det_box_contrast(
    prob_map: np.ndarray, boxes: Sequence[tuple[int, int, int, int]]
) -> tuple[float, float]:
    """Mean det probability inside the text boxes and outside them."""
    prob = np.asarray(prob_map, dtype=np.float32).reshape(prob_map.shape[-2:])
    mask = box_mask(boxes, prob.shape[0])
    return float(prob[mask].mean()), float(prob[~mask].mean())
