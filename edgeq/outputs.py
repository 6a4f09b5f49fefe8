"""Where edgeq writes: outputs that never destroy what edgeq did not create.

Every command that writes (`calibrate -o`, `export -o`, `bundle -o`, `devicetest --out`) goes
through `write_output`:

- the output is built in a hidden temp folder beside its destination and moved into place only
  when complete, so a failure or an interrupt leaves nothing half-written and nothing behind;
- a destination that exists must be an empty folder, or an earlier edgeq output of the same
  kind (recognized by its marker file, `.edgeq-output.json`, which lists the entries edgeq
  wrote), or the user passed `--force`. Even then only edgeq's own entries are replaced: the
  previous output's entries and the new output's names. A user's other files stay;
- odd destinations (an existing file where a folder goes, `-o .` in a non-empty folder, a
  read-only or missing place, a NUL byte) are refused by `check_output` before any work.

`atomic_output` is the low-level step for one artifact (a file, or a folder that does not exist
yet) inside a folder edgeq owns. `create_new_file` writes a secret: 0600 from the start,
never over an existing file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgeq import interrupts
from edgeq.errors import InputError

MARKER = ".edgeq-output.json"
_MARKER_FORMAT = "edgeq-output"


class OutputError(InputError):
    """An output destination edgeq refuses to write (it would destroy or mix with user files)."""


@dataclass(frozen=True)
class OutputKind:
    """What a command writes. `recognize(path)` (optional) names the entries of an earlier
    output of this kind at `path` (None: not one); without it the marker file decides."""

    name: str  # export | plan | bundle | devicetest
    label: str  # "an edgeq export folder"
    folder: bool = True
    marker: bool = True  # write .edgeq-output.json into the folder
    recognize: Callable[[Path], list[str] | None] | None = None


EXPORT = OutputKind("export", "an edgeq export folder")
PLAN = OutputKind("plan", "an edgeq plan folder")
DEVICETEST = OutputKind("devicetest", "an edgeq devicetest report folder")


def _fix(kind: OutputKind) -> str:
    return "pick a new folder name" if kind.folder else "pick a new file name"


def _plain_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    )


def read_marker(folder: Path) -> tuple[str, list[str]] | None:
    """(kind, entries) from an output folder's marker, or None when it has none or a bad one."""
    path = Path(folder) / MARKER
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > 1 << 20:
            return None
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _MARKER_FORMAT:
        return None
    kind, entries = data.get("kind"), data.get("entries")
    if not isinstance(kind, str) or not isinstance(entries, list):
        return None
    return kind, [e for e in entries if _plain_name(e)]


def owned_entries(folder: Path, kind: OutputKind) -> list[str] | None:
    """The entries edgeq wrote in `folder` if it is an earlier output of `kind`, else None."""
    if kind.recognize is not None:
        return kind.recognize(folder)
    found = read_marker(folder)
    if found is None or found[0] != kind.name:
        return None
    return sorted({*found[1], MARKER})


def _resolve(out: str | os.PathLike[str]) -> Path:
    text = os.fspath(out)
    if not text.strip():
        raise OutputError("the output path is empty", "pass -o NEW_FOLDER")
    if "\0" in text:
        raise OutputError(f"the output path {text!r} contains a NUL byte", "pass a plain path")
    try:
        return Path(text).expanduser().resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise OutputError(f"cannot resolve the output path '{text}' ({exc})",
                          "pass a plain path") from None  # fmt: skip


def _listing(names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:4])
    return shown + (f", … ({len(names)} entries)" if len(names) > 4 else "")


def check_output(out: str | os.PathLike[str], kind: OutputKind, force: bool = False) -> Path:
    """Refuse a destination edgeq must not write (before any work); return it resolved."""
    dest = _resolve(out)
    shown = f"'{os.fspath(out)}'" + (f" ({dest})" if str(dest) != os.fspath(out) else "")
    if dest.parent == dest:
        raise OutputError(f"{shown} is the file system root", _fix(kind))
    if os.path.lexists(dest):
        try:
            is_dir = dest.is_dir()
            names = os.listdir(dest) if is_dir else []
        except OSError as exc:
            raise OutputError(f"cannot read {shown} ({exc.strerror})", _fix(kind)) from None
        if kind.folder and not is_dir:
            raise OutputError(f"{shown} exists and is a file; -o names the folder to write",
                              f"{_fix(kind)} (or remove the file)")  # fmt: skip
        if not kind.folder and is_dir:
            raise OutputError(f"{shown} exists and is a folder", _fix(kind))
        if kind.folder and names and owned_entries(dest, kind) is None and not force:
            other = read_marker(dest)
            what = (f"holds an edgeq {other[0]} output, not {kind.label}" if other
                    else f"is not empty ({_listing(names)}) and is not {kind.label}")  # fmt: skip
            raise OutputError(f"{shown} {what}",
                              f"{_fix(kind)}, or pass --force to add edgeq's files to it "
                              "(only same-named files are replaced; nothing else is touched)")  # fmt: skip
        if not kind.folder and owned_entries(dest, kind) is None and not force:
            raise OutputError(f"{shown} exists and is not {kind.label}",
                              f"{_fix(kind)}, or pass --force to replace it")  # fmt: skip
    place = dest.parent
    while not os.path.lexists(place):
        place = place.parent
    if not place.is_dir():
        raise OutputError(f"cannot write {shown}: '{place}' is a file, not a folder",
                          _fix(kind))  # fmt: skip
    if not os.access(place, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {shown}: '{place}' is read-only for this user",
                          f"{_fix(kind)} in a writable place")  # fmt: skip
    return dest


def _cannot_write(out: str | os.PathLike[str], exc: OSError) -> OutputError:
    where = f" ('{exc.filename}')" if exc.filename else ""
    return OutputError(f"cannot write '{os.fspath(out)}': {exc.strerror or exc}{where}",
                       "pick a folder on a writable disk with free space")  # fmt: skip


@contextmanager
def _work_folder(dest: Path, out: str | os.PathLike[str]) -> Iterator[Path]:
    """A hidden temp folder beside `dest`, removed on the way out whatever happens."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.edgeq-", dir=dest.parent))
    except OSError as exc:
        raise _cannot_write(out, exc) from None
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_output(
    out: str | os.PathLike[str],
    kind: OutputKind,
    write: Callable[[Path], None],
    *,
    force: bool = False,
) -> Path:
    """`write(tmp)` creates the output at `tmp` (a fresh path in a temp folder beside `out`);
    then it is moved to `out` following the rules above. Returns `out`."""
    dest = check_output(out, kind, force)
    with _work_folder(dest, out) as work:
        tmp = work / dest.name
        write(tmp)
        if kind.folder and not tmp.is_dir():
            raise OutputError(f"nothing was written for '{os.fspath(out)}'")
        if not kind.folder and not tmp.is_file():
            raise OutputError(f"nothing was written for '{os.fspath(out)}'")
        if kind.folder and kind.marker:
            entries = sorted({*os.listdir(tmp), MARKER})
            marker = {"format": _MARKER_FORMAT, "kind": kind.name, "entries": entries}
            (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        interrupts.raise_if_pending()
        try:
            with interrupts.deferred():  # a few renames: never cut in half by a signal
                _commit(tmp, dest, kind, force, work)
        except OSError as exc:
            raise _cannot_write(out, exc) from None
    return Path(out)


def _commit(tmp: Path, dest: Path, kind: OutputKind, force: bool, work: Path) -> None:
    if not os.path.lexists(dest):
        try:
            os.rename(tmp, dest)  # atomic; fails if `dest` appeared meanwhile (then merge)
            return
        except OSError:
            if not os.path.lexists(dest):
                raise
    if not kind.folder:
        if owned_entries(dest, kind) is None and not force:
            raise OutputError(f"'{dest}' appeared while writing", "run again")
        os.replace(tmp, dest)
        return
    owned = owned_entries(dest, kind)
    if owned is None and os.listdir(dest) and not force:
        raise OutputError(f"'{dest}' was filled by something else while writing", "run again")
    new = sorted(os.listdir(tmp))
    trash = work / ".replaced"
    trash.mkdir()
    moved: list[str] = []
    placed: list[str] = []
    try:
        for name in sorted({*(owned or []), *new}):
            if os.path.lexists(dest / name):
                os.rename(dest / name, trash / name)
                moved.append(name)
        for name in new:
            os.rename(tmp / name, dest / name)
            placed.append(name)
    except BaseException:  # undo: the folder is left as it was, never a mix of old and new
        for name in placed:
            os.rename(dest / name, tmp / name)
        for name in moved:
            os.rename(trash / name, dest / name)
        raise


def atomic_output(out: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """One artifact at `out` (a file, or a folder that does not exist yet): `write(tmp)` fills a
    temp path beside it, which is renamed into place. An existing file is replaced; an existing
    folder is never replaced (a user's folder could hold anything)."""
    out = Path(out)
    if out.is_dir() and not out.is_symlink():
        raise OutputError(f"'{out}' is an existing folder", "write the artifact to a new path")
    with _work_folder(out.absolute(), out) as work:
        tmp = work / out.name
        write(tmp)
        if not tmp.exists():
            raise OutputError(f"nothing was written for '{out}'")
        interrupts.raise_if_pending()
        if os.path.isdir(out) and not os.path.islink(out):
            raise OutputError(f"'{out}' appeared as a folder while writing", "run again")
        os.replace(tmp, out)
    return out


def create_new_file(path: str | os.PathLike[str], payload: bytes, mode: int = 0o600) -> Path:
    """Write a new file with `mode` from its creation (0600: a secret is never readable by
    others, not even for a moment); an existing file (or link) is never overwritten."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


__all__ = [
    "DEVICETEST",
    "EXPORT",
    "MARKER",
    "PLAN",
    "OutputError",
    "OutputKind",
    "atomic_output",
    "check_output",
    "create_new_file",
    "owned_entries",
    "read_marker",
    "write_output",
]
