"""File helpers every layer uses (no edgeq imports beyond errors): content hashes, and reading
.npy/.npz files with their sizes checked against a limit before anything is allocated.

The limit (`max_bytes()`, default 4 GiB per array; the environment variable `EDGEQ_MAX_BYTES`
changes it, e.g. `EDGEQ_MAX_BYTES=16G`) bounds what one array, one external-data tensor or one
initializer may claim: a 100-byte .npy whose header claims 37 GiB is refused from its header,
never allocated. Pickled objects are never loaded.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgeq.errors import InputError

DEFAULT_MAX_BYTES = 4 << 30
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ArrayFileError(InputError):
    """An .npy/.npz file is corrupt, truncated, pickled or claims more than the size limit."""


def max_bytes() -> int:
    """The size limit for one array, from EDGEQ_MAX_BYTES (bytes, or with K/M/G/T)."""
    raw = os.environ.get("EDGEQ_MAX_BYTES", "").strip().upper().removesuffix("B")
    if not raw:
        return DEFAULT_MAX_BYTES
    unit = raw[-1] if raw[-1] in _UNITS else ""
    try:
        value = float(raw[: len(raw) - len(unit)]) * _UNITS[unit]
    except ValueError:
        raise InputError(f"EDGEQ_MAX_BYTES='{os.environ['EDGEQ_MAX_BYTES']}' is not a size",
                         "set it to bytes or a size like 8G") from None  # fmt: skip
    if not value > 0:
        raise InputError("EDGEQ_MAX_BYTES must be positive", "e.g. EDGEQ_MAX_BYTES=8G")
    return int(value)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_size(nbytes: int, what: str, limit: int | None = None) -> None:
    """Refuse `what` claiming more than the limit (before it is allocated)."""
    limit = max_bytes() if limit is None else limit
    if nbytes > limit:
        raise ArrayFileError(
            f"{what} claims {human_bytes(nbytes)}, over edgeq's limit of {human_bytes(limit)}",
            "if that is real, raise the limit with EDGEQ_MAX_BYTES=16G (for example)",
        )


def _read_npy(fh: IO[bytes], what: str, limit: int, size: int | None) -> np.ndarray:
    """The array at `fh` (`size`: bytes in the stream, to refuse a header claiming more)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as exc:  # numpy parses the header with ast/tokenize: anything can fail
        raise ArrayFileError(f"{what} is not a readable .npy array ({_line(exc)})",
                             "re-save it with numpy.save / numpy.savez") from None  # fmt: skip
    if dtype.hasobject or dtype.kind not in "biufc":
        raise ArrayFileError(f"{what} holds {dtype} data (objects are never unpickled)",
                             "save numeric arrays only")  # fmt: skip
    count = 1
    for d in shape:
        count *= int(d)
    nbytes = count * dtype.itemsize
    check_size(nbytes, f"{what} (shape {tuple(shape)}, {dtype})", limit)
    available = None if size is None else size - fh.tell()
    if available is not None and nbytes > available:
        raise ArrayFileError(f"{what} is truncated: its header claims {nbytes} bytes of data, the "
                             f"file holds {max(available, 0)}", "re-save or re-copy it")  # fmt: skip
    buf = bytearray(nbytes)
    view = memoryview(buf)
    got = 0
    while got < nbytes:
        n = fh.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    if got != nbytes:
        raise ArrayFileError(f"{what} is truncated ({got} of {nbytes} bytes)",
                             "re-save or re-copy it")  # fmt: skip
    arr = np.frombuffer(buf, dtype=dtype)
    return arr.reshape(shape, order="F" if fortran else "C")


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def load_npy(path: str | Path, what: str | None = None, limit: int | None = None) -> np.ndarray:
    """One .npy array, its header checked (size limit, no pickles, truncation) first."""
    path = Path(path)
    what = what or f"'{path}'"
    limit = max_bytes() if limit is None else limit
    try:
        with open(path, "rb") as fh:
            arr = _read_npy(fh, what, limit, os.fstat(fh.fileno()).st_size)
    except OSError as exc:
        raise ArrayFileError(f"cannot read {what} ({exc.strerror or exc})",
                             "check the path and permissions") from None  # fmt: skip
    return arr


def load_npz(path: str | Path, what: str | None = None, limit: int | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Every array of an .npz (as numpy.savez writes it), sizes checked from the zip directory
    and each header before reading; corrupt, truncated or pickled archives are one-line errors."""
    path = Path(path)
    what = what or f"'{path}'"
    limit = max_bytes() if limit is None else limit
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            total = sum(i.file_size for i in infos)
            check_size(total, what, limit)
            for info in infos:
                if not info.filename.endswith(".npy") or info.is_dir():
                    raise ArrayFileError(f"{what} holds '{info.filename}', which is not an .npy "
                                         "array", "save it with numpy.savez")  # fmt: skip
                name = info.filename[: -len(".npy")]
                if name in out:
                    raise ArrayFileError(f"{what} holds the array '{name}' twice",
                                         "save it again with numpy.savez")  # fmt: skip
                with zf.open(info) as fh:
                    arr = _read_npy(fh, f"array '{name}' in {what}", limit, info.file_size)
                    if fh.read(1):
                        raise ArrayFileError(f"array '{name}' in {what} has trailing data",
                                             "save it again with numpy.savez")  # fmt: skip
                out[name] = arr
    except ArrayFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError,
            RuntimeError, OverflowError) as exc:  # fmt: skip
        raise ArrayFileError(f"{what} is not a readable .npz archive ({_line(exc)}): corrupt or "
                             "truncated", "re-save it with numpy.savez") from None  # fmt: skip
    except OSError as exc:
        raise ArrayFileError(f"cannot read {what} ({exc.strerror or _line(exc)})",
                             "check the path and permissions") from None  # fmt: skip
    return out


def load_arrays(path: str | Path, what: str | None = None) -> np.ndarray | dict[str, np.ndarray]:
    """An .npy (one array) or .npz (named arrays) file, by its first bytes."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise ArrayFileError(f"cannot read {what or repr(str(path))} ({exc.strerror or exc})",
                             "check the path") from None  # fmt: skip
    if head.startswith(b"PK"):
        return load_npz(path, what)
    if head.startswith(b"\x93NUMPY"):
        return load_npy(path, what)
    raise ArrayFileError(f"{what or repr(str(path))} cannot be read: it is neither .npy nor .npz",
                         "save arrays with numpy.save / numpy.savez")  # fmt: skip


def nbytes_of(shape: Any, dtype: Any) -> int:
    """Bytes an array of `shape` and `dtype` needs (Python ints: no overflow)."""
    count = 1
    for d in shape:
        count *= int(d)
    return count * np.dtype(dtype).itemsize


__all__ = [
    "DEFAULT_MAX_BYTES",
    "ArrayFileError",
    "check_size",
    "file_sha256",
    "human_bytes",
    "load_arrays",
    "load_npy",
    "load_npz",
    "max_bytes",
    "nbytes_of",
]
