"""Real photographs for calibration and evaluation, read from the sample-image files that ship
inside two well-known wheels (installed with ``--no-deps``, never imported; see the Makefile's
``MODEL_PACKAGES``):

* ``scikit-image`` (``skimage/data``): astronaut, camera(man), chelsea (cat), coffee, rocket,
  motorcycles, Hubble deep field, retina, immunohistochemistry, coins, moon, textures...
* ``scikit-learn`` (``sklearn/datasets/images``): china (a temple), flower.

Splits are by photo, so no evaluation photo (or crop of one) is ever calibrated on:
``"eval"`` holds the people/animal/object photos a detector user would test with, ``"calib"``
the rest (including the cameraman, so a person detector sees a person while calibrating).
Each photo yields several deterministic views (full frame, crops, mirror) to reach a count.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from examples.text import Split

SKIMAGE_PIN = "scikit-image==0.26.0"
SKLEARN_PIN = "scikit-learn==1.9.1"
EVAL_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "china", "motorcycle_right")
CALIB_PHOTOS = (
    "camera", "motorcycle_left", "flower", "hubble_deep_field", "retina", "ihc", "coins",
    "moon", "brick", "grass", "gravel", "clock_motion", "cell", "color",
)  # fmt: skip


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def photo_files() -> dict[str, Path]:
    """Every sample photo found, by name (file stem)."""
    found: dict[str, Path] = {}
    for package, sub, pin in (("skimage", "data", SKIMAGE_PIN),
                              ("sklearn", "datasets/images", SKLEARN_PIN)):  # fmt: skip
        root = _package_dir(package)
        if root is None or not (root / sub).is_dir():
            raise FileNotFoundError(f"sample photos not found; pip install --no-deps {pin}")
        for f in sorted((root / sub).iterdir()):
            if f.suffix.lower() in (".png", ".jpg"):
                found[f.stem] = f
    return found


def load_photo(name: str) -> Image.Image:
    """An RGB photo (grayscale ones replicated to three channels)."""
    return Image.open(photo_files()[name]).convert("RGB")


def photo_views(image: Image.Image, count: int, seed: int) -> list[Image.Image]:
    """`count` deterministic views: the full frame, then random crops (50-90% of each side),
    every other one mirrored."""
    rng = np.random.default_rng(seed)
    views = [image]
    w, h = image.size
    while len(views) < count:
        fw, fh = rng.uniform(0.5, 0.9, size=2)
        cw, ch = int(w * fw), int(h * fh)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        view = image.crop((x0, y0, x0 + cw, y0 + ch))
        if len(views) % 2:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        views.append(view)
    return views


def photos(n: int, split: Split = "eval", seed: int = 0) -> list[tuple[str, Image.Image]]:
    """`n` (name, image) views of the split's photos, round-robin over the photos."""
    names = EVAL_PHOTOS if split == "eval" else CALIB_PHOTOS
    per = -(-n // len(names))
    views = {m: photo_views(load_photo(m), per, seed + i) for i, m in enumerate(names)}
    out = [(m, views[m][k]) for k in range(per) for m in names]
    return out[:n]
