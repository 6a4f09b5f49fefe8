"""`open_source`: pick the calibration source for a `--calib` path by what it holds."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeq.ir.graph import ValueInfo

from .base import (
    IMAGE_SUFFIXES,
    CalibrationDataError,
    CalibrationSource,
    sample_files,
)
from .images import ImageFolder, PreprocessSpec
from .labels import LABELS_FILE
from .sources import IterableSource, NpyFolder, NpzFolder
from .text import TextSource, roles_for_inputs
from .validate import require_static

logger = logging.getLogger(__name__)

_KIND_OF_SUFFIX = {".npy": "npy", ".npz": "npz", ".txt": "text"} | {
    s: "image" for s in IMAGE_SUFFIXES
}
_KIND_LABEL = {"npy": ".npy", "npz": ".npz", "image": "image", "text": ".txt"}
_EXPECTED = "one kind of sample file: .npy, .npz, images (png/jpg/jpeg/bmp/webp) or .txt"


def _describe(groups: Mapping[str, list[Path]]) -> str:
    parts = []
    for kind, files in groups.items():
        label = _KIND_LABEL.get(kind, "other")
        examples = ", ".join(p.name for p in files[:2]) + (", ..." if len(files) > 2 else "")
        parts.append(f"{len(files)} {label} file{'s' if len(files) != 1 else ''} ({examples})")
    return "; ".join(parts)


def folder_kind(folder: Path) -> str:
    """`npy`, `npz`, `image` or `text`: the one kind of sample file in `folder`.

    Hidden files and subfolders are ignored, and so are files of other types (logged); an
    empty folder, or one that mixes kinds, is an error naming what was found.
    """
    groups: dict[str, list[Path]] = {}
    for path in sample_files(folder):
        groups.setdefault(_KIND_OF_SUFFIX.get(path.suffix.lower(), "other"), []).append(path)
    # the labels file beside the samples (calibration/labels.py) is expected, not a stray file
    other = [p for p in groups.pop("other", []) if p.name != LABELS_FILE]
    if not groups:
        found = _describe({"other": other}) if other else "nothing"
        raise CalibrationDataError(
            f"calibration folder '{folder}' holds no sample files (found {found})",
            f"fill it with {_EXPECTED}",
        )
    if len(groups) > 1:
        raise CalibrationDataError(
            f"calibration folder '{folder}' mixes kinds of samples: {_describe(groups)}",
            f"keep {_EXPECTED}, per folder",
        )
    if other:
        logger.warning("calibration folder %s: ignoring %s", folder, _describe({"other": other}))
    return next(iter(groups))


def _single_input(graph_inputs: Sequence[ValueInfo], what: str, fix: str) -> ValueInfo:
    if len(graph_inputs) != 1:
        raise CalibrationDataError(
            f"{what} feed a single-input model, but this one has {len(graph_inputs)} inputs "
            f"({', '.join(v.name for v in graph_inputs)})",
            fix,
        )
    return graph_inputs[0]


def _image_source(folder: Path, graph_inputs: Sequence[ValueInfo], preprocess: Any) -> ImageFolder:
    info = _single_input(
        graph_inputs, "image folders", "use .npz samples (one array per input) instead"
    )
    if preprocess is None:
        raise CalibrationDataError(
            f"calibration folder '{folder}' holds images but no preprocess spec was given",
            "pass --preprocess spec.toml (height, width, resize, color, scale, mean, std, layout)",
        )
    spec = PreprocessSpec.coerce(preprocess)
    if tuple(info.shape or ()) != spec.input_shape:
        raise CalibrationDataError(
            f"preprocess spec makes images of shape {spec.input_shape} ({spec.layout}), but "
            f"model input '{info.name}' has shape {info.shape}",
            "set height, width, color and layout in the spec to match the model input",
        )
    return ImageFolder(folder, spec, info.name)


def _text_source(
    path: Path, graph_inputs: Sequence[ValueInfo], tokenizer: str | Path | None
) -> TextSource:
    if tokenizer is None:
        raise CalibrationDataError(
            f"calibration path '{path}' holds text but no tokenizer was given",
            "pass --tokenizer path/to/tokenizer.json",
        )
    roles = roles_for_inputs([v.name for v in graph_inputs])
    shapes = {tuple(v.shape or ()) for v in graph_inputs}
    shape = next(iter(shapes))
    if len(shapes) != 1 or len(shape) != 2 or shape[0] != 1:
        raise CalibrationDataError(
            f"text models need inputs of one shape [1, seq_len], got "
            f"{', '.join(f'{v.name} {v.shape}' for v in graph_inputs)}",
            "fix them with --input-shape NAME=1,SEQ_LEN for every input",
        )
    return TextSource(path, tokenizer, int(shape[1]), roles)


def open_source(
    path: str | Path | CalibrationSource | Iterable[Any] | Callable[[], Iterable[Any]],
    graph_inputs: Sequence[ValueInfo],
    *,
    preprocess: PreprocessSpec | Mapping[str, Any] | str | Path | None = None,
    tokenizer: str | Path | None = None,
) -> CalibrationSource:
    """The calibration source for `path`, chosen by what it holds.

    * a folder of `.npy` (single-input models), `.npz`, images (needs `preprocess`) or `.txt`
      files (needs `tokenizer`), or a single `.txt` file;
    * a `CalibrationSource` (returned as is), or a Python iterable / callable of feed dicts
      (an `IterableSource`).

    `graph_inputs` are the prepared model's inputs (fixed shapes).
    """
    if isinstance(path, CalibrationSource):
        return path
    if not isinstance(path, (str, Path)):
        return IterableSource(path)
    require_static(graph_inputs)
    path = Path(path)
    if not path.exists():
        raise CalibrationDataError(
            f"calibration path '{path}' does not exist",
            "pass a folder of .npy, .npz or image files, or a .txt file",
        )
    if path.is_file():
        if path.suffix.lower() != ".txt":
            raise CalibrationDataError(
                f"calibration path '{path}' is a single {path.suffix or 'extensionless'} file",
                "pass a folder with one sample per file, or a .txt file with one text per line",
            )
        kind = "text"
    else:
        kind = folder_kind(path)
    if kind != "image" and preprocess is not None:
        logger.warning("calibration data in %s is %s, ignoring the preprocess spec", path, kind)
    if kind != "text" and tokenizer is not None:
        logger.warning("calibration data in %s is %s, ignoring the tokenizer", path, kind)
    source: CalibrationSource
    if kind == "npy":
        info = _single_input(
            graph_inputs, "folders of .npy files", "save .npz samples (one array per input)"
        )
        source = NpyFolder(path, info.name, info.shape)
    elif kind == "npz":
        source = NpzFolder(path, {v.name: v.shape for v in graph_inputs if v.shape is not None})
    elif kind == "image":
        source = _image_source(path, graph_inputs, preprocess)
    else:
        source = _text_source(path, graph_inputs, tokenizer)
    logger.info("calibration data: %r", source)
    return source
