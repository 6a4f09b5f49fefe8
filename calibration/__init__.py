"""Calibration data sources for `--calib PATH`: folders of .npy / .npz / images, text files
with a tokenizer, or Python iterables; deterministic sub-sampling; validation against the
model's inputs; and streaming in stacked batches ([B, *input_shape], batch-1 samples).

Typical use::

    source = open_source(calib_path, graph.inputs, preprocess=spec_path, tokenizer=tok_path)
    names = subset(source, n=256, seed=0)
    for batch_names, feeds in batches(source, names, graph.inputs, batch_size=16):
        ...  # feeds[input] has shape [len(batch_names), *input_shape]
"""

from .base import CalibrationDataError, CalibrationSource, Feed
from .detect import folder_kind, open_source
from .images import ImageFolder, PreprocessSpec, preprocess_image
from .sampling import disjoint, subset
from .sources import IterableSource, NpyFolder, NpzFolder
from .text import TextSource
from .validate import batches, require_static, validate

__all__ = [
    "CalibrationDataError",
    "CalibrationSource",
    "Feed",
    "ImageFolder",
    "IterableSource",
    "NpyFolder",
    "NpzFolder",
    "PreprocessSpec",
    "TextSource",
    "batches",
    "disjoint",
    "folder_kind",
    "open_source",
    "preprocess_image",
    "require_static",
    "subset",
    "validate",
]
