"""Array sources: folders of .npy / .npz files, and in-memory or generated Python iterables."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.files import ArrayFileError, load_arrays

from .base import (
    CalibrationDataError,
    CalibrationSource,
    Feed,
    FolderSource,
    with_batch_dim,
)

logger = logging.getLogger(__name__)

Shape = tuple[int | str, ...]


def _load_array_file(path: Path) -> Any:
    """An .npy array or the arrays of an .npz, sizes checked before reading
    (`edgeq.files`: corrupt, truncated, pickled or oversized files are one-line errors)."""
    try:
        return load_arrays(path, f"calibration sample '{path.name}' in '{path.parent}'")
    except ArrayFileError as exc:
        raise CalibrationDataError(exc.problem, exc.fix) from None


class NpyFolder(FolderSource):
    """One `.npy` per sample for a single-input model; a missing leading batch 1 is added
    when `shape` (the model input's shape) is given, otherwise by `validate`."""

    kind = "npy"
    suffixes = (".npy",)

    def __init__(self, path: str | Path, input_name: str, shape: Shape | None = None) -> None:
        super().__init__(path)
        self.input_name = input_name
        self.shape = shape

    def load(self, name: str) -> Feed:
        arr = _load_array_file(self.file(name))
        if isinstance(arr, dict) and len(arr) == 1:
            arr = next(iter(arr.values()))
        if not isinstance(arr, np.ndarray):
            raise CalibrationDataError(
                f"calibration sample '{name}' in '{self.path}' is not a single array",
                "save one array per .npy file (use .npz files for several inputs)",
            )
        return {self.input_name: with_batch_dim(arr, self.shape)}


class NpzFolder(FolderSource):
    """One `.npz` per sample, its arrays named after the model inputs. A missing leading batch
    1 is added for inputs whose shape is given in `shapes`, otherwise by `validate`."""

    kind = "npz"
    suffixes = (".npz",)

    def __init__(self, path: str | Path, shapes: Mapping[str, Shape] | None = None) -> None:
        super().__init__(path)
        self.shapes = dict(shapes or {})

    def load(self, name: str) -> Feed:
        archive = _load_array_file(self.file(name))
        if not isinstance(archive, dict):
            raise CalibrationDataError(
                f"calibration sample '{name}' in '{self.path}' is not an .npz archive",
                "save it with numpy.savez(path, **{input_name: array})",
            )
        return {k: with_batch_dim(v, self.shapes.get(k)) for k, v in archive.items()}


class IterableSource(CalibrationSource):
    """Feed dicts from Python: a sequence (list, tuple), a callable returning a fresh iterator
    each call (re-iterable, streamed), or a one-shot iterable (streamed once).

    Names default to `sample_000000`, `sample_000001`, ... in iteration order. The length is
    known for sequences and when `names` is given; for a callable without names, `names()`
    runs it once to count (samples are dropped as they are counted); a one-shot iterator
    without names has no length: stream it with `batches(source, None, ...)`.
    """

    kind = "iterable"

    def __init__(
        self,
        samples: Iterable[Mapping[str, Any]] | Callable[[], Iterable[Mapping[str, Any]]],
        names: Sequence[str] | None = None,
    ) -> None:
        if isinstance(samples, (str, bytes, Mapping)):
            raise CalibrationDataError(
                f"IterableSource needs an iterable of feed dicts, got a {type(samples).__name__}",
                "pass a list of {input_name: array} dicts, a generator, or a callable",
            )
        self._sequence: Sequence[Mapping[str, Any]] | None = None
        self._factory: Callable[[], Iterable[Mapping[str, Any]]] | None = None
        self._once: Iterator[Mapping[str, Any]] | None = None
        self._consumed = False
        if isinstance(samples, Sequence):
            self._sequence = samples
        elif callable(samples) and not isinstance(samples, Iterable):
            self._factory = samples
        elif isinstance(samples, Iterable):
            self._once = iter(samples)
        else:
            raise CalibrationDataError(
                f"IterableSource needs an iterable of feed dicts, got a {type(samples).__name__}",
                "pass a list of {input_name: array} dicts, a generator, or a callable",
            )
        self._names = None if names is None else [str(n) for n in names]
        if self._names is not None and len(set(self._names)) != len(self._names):
            raise CalibrationDataError(
                "IterableSource names are not unique", "give every sample its own name"
            )
        if (
            self._sequence is not None
            and self._names is not None
            and len(self._names) != len(self._sequence)
        ):
            raise CalibrationDataError(
                f"IterableSource got {len(self._names)} names for {len(self._sequence)} samples",
                "pass one name per sample",
            )
        self._index: dict[str, int] | None = None

    # ---- names -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        if self._names is None:
            if self._sequence is not None:
                count = len(self._sequence)
            elif self._factory is not None:
                count = sum(1 for _ in self._factory())
                logger.info("IterableSource: counted %d samples by running the callable", count)
            else:
                raise CalibrationDataError(
                    "a one-shot iterable of calibration samples has no known length",
                    "pass names=[...], a list, or a callable returning a fresh iterator "
                    "(or stream everything with batches(source, None, ...))",
                )
            self._names = [_default_name(i) for i in range(count)]
        return list(self._names)

    def __len__(self) -> int:
        return len(self.names())

    def _position(self, name: str) -> int:
        if self._index is None:
            self._index = {n: i for i, n in enumerate(self.names())}
        if name not in self._index:
            raise CalibrationDataError(
                f"'{name}' is not a sample of this IterableSource", "use a name from names()"
            )
        return self._index[name]

    # ---- access ----------------------------------------------------------------------------
    def load(self, name: str) -> Feed:
        position = self._position(name)
        if self._sequence is not None:
            return _as_feed(self._sequence[position], name)
        for got_name, feed in self.iter_samples([name]):
            if got_name == name:
                return feed
        raise AssertionError("unreachable")  # iter_samples raises when the item is missing

    def iter_samples(self, names: Sequence[str] | None = None) -> Iterator[tuple[str, Feed]]:
        if names is None and self._names is None and self._sequence is None:
            yield from self._stream_all()
            return
        wanted = self.names() if names is None else list(names)
        if self._sequence is not None:
            for name in wanted:
                yield name, _as_feed(self._sequence[self._position(name)], name)
            return
        iterator: Iterator[Mapping[str, Any]] | None = None
        position = 0  # index of the next item `iterator` yields
        for name in wanted:
            target = self._position(name)
            if iterator is None or target < position:
                iterator, position = self._fresh_iterator(restart=iterator is not None), 0
            item: Mapping[str, Any] | None = None
            while position <= target:
                try:
                    item = next(iterator)
                except StopIteration:
                    raise CalibrationDataError(
                        f"IterableSource ended after {position} samples but "
                        f"{len(self.names())} names were given",
                        "pass as many names as the iterable yields samples",
                    ) from None
                position += 1
            yield name, _as_feed(item, name)

    def _stream_all(self) -> Iterator[tuple[str, Feed]]:
        for i, item in enumerate(self._fresh_iterator(restart=False)):
            name = _default_name(i)
            yield name, _as_feed(item, name)

    def _fresh_iterator(self, *, restart: bool) -> Iterator[Mapping[str, Any]]:
        if self._factory is not None:
            return iter(self._factory())
        if self._consumed or restart or self._once is None:
            raise CalibrationDataError(
                "this one-shot iterable of calibration samples was already consumed "
                "(or samples were asked for out of order)",
                "pass a list, or a callable that returns a fresh iterator each call",
            )
        self._consumed = True
        return self._once

    def __repr__(self) -> str:
        where = (
            "sequence"
            if self._sequence is not None
            else ("callable" if self._factory is not None else "one-shot iterator")
        )
        count = "?" if self._names is None and self._sequence is None else len(self)
        return f"IterableSource({where}, {count} samples)"


def _default_name(i: int) -> str:
    return f"sample_{i:06d}"


def _as_feed(item: Any, name: str) -> Feed:
    if not isinstance(item, Mapping):
        raise CalibrationDataError(
            f"calibration sample '{name}' is a {type(item).__name__}, not a feed dict",
            "yield {input_name: array} dicts",
        )
    return {str(k): np.asarray(v) for k, v in item.items()}
