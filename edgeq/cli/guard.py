"""One error path for every command: whatever a command raises becomes one line,
`error: <what> — <fix>`, and exit code 2 (the traceback only with `--verbose`); a signal
(SIGINT/SIGTERM/SIGHUP) cleans up and exits 128 + its number, never 0.

`install(app, err_console)` wraps every registered command's callback; `run_app` + `exit_now`
make the console script (`edgeq.cli.main`): after an interrupt it leaves without tearing the
interpreter down (native runtimes — XLA's thread pools, onnxruntime, LiteRT — torn down while one of their
threads is still inside a call is what crashed with SIGSEGV on Ctrl-C).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from edgeq import interrupts
from edgeq.errors import EdgeqError

try:  # typer ≥ 0.2x carries its own click
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover - older typer on click
    from click import exceptions as _click_errors  # type: ignore[no-redef]
UsageError = _click_errors.UsageError
# `edgeq` with no arguments shows the help (click ≥ 8.2 raises it as a usage error)
NoArgsIsHelp: type[BaseException] = getattr(_click_errors, "NoArgsIsHelpError", type(None))  # type: ignore[assignment]

log = logging.getLogger("edgeq.cli")
EXIT_ERROR = 2


def _first_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def describe(exc: BaseException) -> tuple[str, str]:
    """(what, fix) for an exception that is not an EdgeqError."""
    name = type(exc).__name__
    module = type(exc).__module__ or ""
    message = _first_line(str(exc)) or name
    if isinstance(exc, MemoryError):
        return "out of memory", "use smaller inputs, fewer samples or a machine with more memory"
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply to process", "check the model or file"
    if isinstance(exc, OSError):
        where = f" '{exc.filename}'" if getattr(exc, "filename", None) else ""
        return (f"{exc.strerror or message}{where}",
                "check the path, its permissions and the free disk space")  # fmt: skip
    if module.startswith("onnxruntime"):
        return f"onnxruntime failed: {message}", "check the model with onnx.checker"
    if module.startswith(("jax", "jaxlib")) or name == "XlaRuntimeError":
        if "RESOURCE_EXHAUSTED" in message or "out of memory" in message.lower():
            return f"out of memory in XLA: {message}", "use smaller input shapes"
        return f"JAX/XLA failed: {message}", "rerun with --verbose for details and report it"
    return (f"unexpected {name}: {message}",
            "this is a bug in edgeq: rerun with --verbose for the traceback and report it")  # fmt: skip


_state = {"verbose": False}


def set_verbose(verbose: bool) -> None:
    """Called by the app's callback on every invocation (`edgeq --verbose ...`)."""
    _state["verbose"] = bool(verbose)


def _verbose() -> bool:
    return _state["verbose"]


def error_exit(what: str, err_console: Console) -> typer.Exit:
    """Print `error: <what>` (after the traceback being handled, with --verbose); the Exit to
    raise. Call it inside an `except` block."""
    if _verbose() and sys.exc_info()[0] is not None:
        err_console.print(traceback.format_exc(), highlight=False, markup=False)
    err_console.print(f"[bold red]error:[/] {escape(what)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=EXIT_ERROR)


def guarded(fn: Callable[..., Any], err_console: Console) -> Callable[..., Any]:
    """`fn` with the one error path and signal handling around it."""

    def fail(what: str) -> typer.Exit:
        return error_exit(what, err_console)

    def interrupted(signum: int) -> typer.Exit:
        import signal

        err_console.print(f"[bold red]interrupted[/] ({signal.Signals(signum).name}): temporary "
                          "files removed, no partial output left", highlight=False)  # fmt: skip
        return typer.Exit(code=128 + signum)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with interrupts.handling_signals():
            try:
                result = fn(*args, **kwargs)
            except (typer.Exit, typer.Abort, typer.TyperException) as exc:
                if interrupts.pending() and getattr(exc, "exit_code", 1) == 0:
                    raise interrupted(interrupts.pending() or 2) from None
                raise
            except KeyboardInterrupt as exc:
                signum = getattr(exc, "signum", None) or interrupts.pending() or 2
                if _verbose():
                    err_console.print(traceback.format_exc(), highlight=False, markup=False)
                raise interrupted(signum) from None
            except EdgeqError as exc:
                if interrupts.pending():
                    raise interrupted(interrupts.pending() or 2) from None
                raise fail(str(exc)) from None
            except Exception as exc:
                if interrupts.pending():  # a swallowed interrupt came back as another error
                    raise interrupted(interrupts.pending() or 2) from None
                what, fix = describe(exc)
                raise fail(f"{what} — {fix}") from None
            if interrupts.pending():  # the interrupt was swallowed by a library: never exit 0
                raise interrupted(interrupts.pending() or 2)
            return result

    return run


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def usage_line(exc: Any) -> str:
    """A click usage error (an unknown option, a value not among the choices, a missing
    argument) as `error: <what> — <fix>`, not click's boxed usage text."""
    ctx = exc.ctx
    where = f"edgeq {ctx.info_name}" if ctx is not None and ctx.parent is not None else "edgeq"
    what = _first_line(exc.format_message()).replace("Value error, ", "")
    return f"{what} — see `{where} --help` for the options"


class OneLineUsage(TyperGroup):
    """The app's click group: usage errors of the group and of every command end as one
    `error:` line with exit 2, like every other error (`Typer(cls=OneLineUsage)`)."""

    err_console = Console(stderr=True)

    def _usage(self, exc: Exception) -> typer.Exit:
        if isinstance(exc, NoArgsIsHelp):  # `edgeq` alone: the help
            raise exc
        self.err_console.print(f"[bold red]error:[/] {escape(usage_line(exc))}", highlight=False,
                               soft_wrap=True)  # fmt: skip
        return typer.Exit(EXIT_ERROR)

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except UsageError as exc:
            raise self._usage(exc) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            raise self._usage(exc) from None


def install(app: typer.Typer, err_console: Console) -> None:
    """Wrap every command registered on `app` (call once, after all commands are added)."""
    for info in app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "_edgeq_guarded", False):
            info.callback = guarded(info.callback, err_console)
            info.callback._edgeq_guarded = True  # type: ignore[attr-defined]


def run_app(app: typer.Typer) -> int:
    """Run the app as the console script does; the exit code (interrupts: 128 + signal)."""
    try:
        with interrupts.handling_signals():  # start-up too, not only the command
            app()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:  # outside a command (start-up)
        code = 130
    interrupts.exit_on_signal()  # the shut-down: a signal now ends the process with 128+N
    if interrupts.pending():
        code = 128 + (interrupts.pending() or 2)
    return code


def exit_now(code: int) -> None:
    """Leave with `code`; after an interrupt without interpreter teardown (native runtimes may
    still be inside a call on another thread, and tearing them down then can crash)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if interrupts.pending() or code >= 128:
        os._exit(code)
    sys.exit(code)


__all__ = ["OneLineUsage", "describe", "error_exit", "exit_now", "guarded", "install", "run_app"]
