"""The calibration source interface, its error type, and helpers shared by the file sources."""

from __future__ import annotations

import abc
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from edgeq.errors import InputError

Feed = dict[str, np.ndarray]
T = TypeVar("T")
R = TypeVar("R")

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

    def iter_samples(self, names: Sequence[str] | None = None) -> Iterator[tuple[str, Feed]]:
        """Stream `(name, feed)` in order, decoding a few files ahead on worker threads (file
        decoding is most of a calibration step on an accelerator: 5 ms a text-line image)."""
        todo = self.names() if names is None else list(names)
        yield from zip(todo, ordered_map(self.load, todo), strict=True)

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


def load_workers() -> int:
    """Threads that decode samples ahead: a few per machine, none where one core is all."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(8, cores or 1) if (cores or 1) > 1 else 0


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int | None = None
) -> Iterator[R]:
    """`map(fn, items)` with up to `workers` calls running ahead on threads: results in order,
    at most 2 x workers of them held, an exception raised where its item comes in the order."""
    workers = load_workers() if workers is None else workers
    if workers < 1:
        yield from map(fn, items)
        return
    it = iter(items)
    with ThreadPoolExecutor(workers, thread_name_prefix="edgeq-load") as pool:
        pending: deque[Future[R]] = deque(
            pool.submit(fn, x) for _, x in zip(range(2 * workers), it, strict=False)
        )
        try:
            while pending:
                result = pending.popleft().result()
                for x in it:
                    pending.append(pool.submit(fn, x))
                    break
                yield result
        finally:
            for f in pending:
                f.cancel()
