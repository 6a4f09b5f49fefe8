"""The calibration source interface, its error type, and helpers shared by the file sources."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from edgeq.errors import InputError

Feed = dict[str, np.ndarray]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class CalibrationDataError(InputError):
    """A calibration sample or data folder is unusable (missing, mixed, malformed, not finite)."""


class CalibrationSource(abc.ABC):
    """Named calibration samples; each sample is a feed dict for a batch-1 model.

    `names()` is deterministic (sorted file names for file sources), `load(name)` returns one
    feed whose arrays have the model input's full shape (leading batch dim 1 included), and
    `iter_samples(names)` streams `(name, feed)` pairs one at a time.
    """

    kind: str = "source"

    @abc.abstractmethod
    def names(self) -> list[str]:
        """Sample names in the source's canonical (deterministic) order."""

    @abc.abstractmethod
    def load(self, name: str) -> Feed:
        """One sample as a feed dict (model input name -> array)."""

    def __len__(self) -> int:
        return len(self.names())

    def iter_samples(self, names: Sequence[str] | None = None) -> Iterator[tuple[str, Feed]]:
        """Stream `(name, feed)` for `names` (all samples when None), loading one at a time."""
        for name in self.names() if names is None else names:
            yield name, self.load(name)


class FolderSource(CalibrationSource):
    """A folder with one sample per file whose suffix is one of `suffixes` (case-insensitive)."""

    suffixes: tuple[str, ...] = ()

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise CalibrationDataError(
                f"calibration folder '{self.path}' does not exist or is not a folder",
                "pass a folder that holds one sample file per calibration sample",
            )
        self._names = [p.name for p in sample_files(self.path) if p.suffix.lower() in self.suffixes]
        if not self._names:
            raise CalibrationDataError(
                f"calibration folder '{self.path}' has no {'/'.join(self.suffixes)} files",
                "add samples or point --calib at the folder that holds them",
            )

    def names(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def file(self, name: str) -> Path:
        """The file of sample `name`; unknown names are an error."""
        path = self.path / name
        if Path(name).name != name or path.suffix.lower() not in self.suffixes:
            raise CalibrationDataError(
                f"'{name}' is not a sample of calibration folder '{self.path}'",
                "use a name from source.names()",
            )
        if not path.is_file():
            raise CalibrationDataError(
                f"calibration sample '{name}' is missing from '{self.path}'",
                "was the folder changed after it was opened? re-open it",
            )
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.path}', {len(self)} samples)"


def sample_files(folder: Path) -> list[Path]:
    """Regular, non-hidden files directly in `folder`, sorted by name (no recursion)."""
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def with_batch_dim(arr: np.ndarray, shape: Sequence[int | str] | None) -> np.ndarray:
    """`arr` with a leading axis of 1 added when it equals `shape` without its leading 1."""
    if shape is not None and len(shape) >= 1 and shape[0] == 1 and arr.ndim == len(shape) - 1:
        tail = tuple(shape[1:])
        if all(isinstance(d, str) or d == n for d, n in zip(tail, arr.shape, strict=True)):
            return arr[None]
    return arr
