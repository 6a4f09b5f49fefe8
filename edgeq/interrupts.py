"""Signals as exceptions: SIGINT, SIGTERM and SIGHUP raise `Interrupted` in the main thread, so
every `finally` and context manager (temp folders beside `-o`, temp folders in TMPDIR) cleans
up, and the command exits 128 + the signal number (130, 143, 129), never 0.

The first signal raises; a second one while cleaning up is only recorded (cleanup finishes).
A signal the process ignores when the handlers are installed (SIGHUP under `nohup`) stays
ignored.
`pending()` stays true once a signal arrived, so a signal that some library swallowed (an
exception raised inside a JAX callback comes back as a different error, or not at all) is still
seen: writers check it before moving an output into place, and the CLI checks it on exit.
The CLI installs the handlers (`handling_signals`); library code only calls `raise_if_pending`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = tuple(
    s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None
)
_received: list[int] = []
_deferring: list[bool] = []


class Interrupted(KeyboardInterrupt):
    """A signal asked edgeq to stop. A KeyboardInterrupt, so `except Exception` never eats it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def pending() -> int | None:
    """The first signal received since the handlers were installed, or None."""
    return _received[0] if _received else None


def raise_if_pending() -> None:
    """Raise `Interrupted` if a signal arrived (call before committing an output)."""
    if _received:
        raise Interrupted(_received[0])


def _handler(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    if len(_received) == 1 and not _deferring:
        raise Interrupted(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """A short step that must not be cut in half (moving an output's entries into place): a
    signal arriving inside only records itself, and is raised when the step is done."""
    _deferring.append(True)
    try:
        yield
    finally:
        _deferring.pop()
    raise_if_pending()


@contextmanager
def handling_signals() -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM/SIGHUP raise `Interrupted` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(SIGNALS[0]) is not _handler:
        _received.clear()  # a fresh run (nested blocks share the record)
    # a signal the user set to be ignored stays ignored (`nohup edgeq export ...`)
    wanted = [s for s in SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]
    previous = {s: signal.signal(s, _handler) for s in wanted}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def exit_on_signal() -> None:
    """From now on a signal ends the process at once with 128 + its number (for the shut-down
    after a finished command: nothing is left to clean up, and nothing may exit 0 after it)."""
    import os

    def leave(signum: int, frame: FrameType | None) -> None:
        os._exit(128 + signum)

    for s in SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, leave)


__all__ = [
    "SIGNALS",
    "Interrupted",
    "deferred",
    "exit_on_signal",
    "handling_signals",
    "pending",
    "raise_if_pending",
]
