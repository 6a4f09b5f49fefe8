"""CLI: `edgeq example` writes a real model with calibration and evaluation data (the README's
first-use path). Registered onto the main app by edgeq.cli."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgeq.errors import EdgeqError, InputError

Example = Enum("Example", {n: n for n in ("ppocr-rec", "ppocr-cls", "minilm")}, type=str)  # type: ignore[misc]


DEFAULT_EXAMPLE, DEFAULT_OUT = Example("ppocr-rec"), Path("work")


def register(app: typer.Typer, console: Console, err_console: Console,
             fail: Callable[[Any], typer.Exit]) -> None:  # fmt: skip
    """Add `edgeq example` to `app`."""

    @app.command()
    def example(
        name: Annotated[Example, typer.Argument(help="Which model and data.")] = DEFAULT_EXAMPLE,
        out: Annotated[Path, typer.Option("-o", "--out", help="Folder to write (new, empty, or "
                                          "written by an earlier `edgeq example`).")] = DEFAULT_OUT,
        calib_samples: Annotated[int, typer.Option(help="Calibration samples to write.")] = 64,
        eval_samples: Annotated[int, typer.Option(help="Evaluation samples (with labels) to write.")] = 32,
    ) -> None:  # fmt: skip
        """Write a real model file plus calibration and labelled evaluation data: ppocr-rec
        (text recognizer, rendered text lines), ppocr-cls (direction classifier), minilm
        (sentence embeddings, English sentences). Needs the model packages `make install`
        puts in the venv."""
        try:
            from edgeq.examples.quickstart import ExampleFolderError, next_commands, write_example
        except ImportError as exc:
            raise fail(InputError(f"the example data needs the 'examples' extra ({exc.name} is missing)",
                                  "run `make install` in the edgeq clone (or pip install 'edgeq[examples]')")) from None  # fmt: skip
        key = name.value if isinstance(name, Enum) else str(name)
        try:
            written = write_example(key, out, calib_samples, eval_samples)
        except ExampleFolderError as exc:
            raise fail(InputError(str(exc), "pass -o with a new or empty folder")) from None
        except ValueError as exc:
            raise fail(
                InputError(str(exc), "see `edgeq example --help` for names and counts")
            ) from None
        except FileNotFoundError as exc:
            raise fail(
                EdgeqError(
                    str(exc).split(";")[0], "run `make install` to install the model packages"
                )
            ) from None
        for path in written:
            console.print(f"wrote {path}", highlight=False)
        console.print("next:", highlight=False)
        for cmd in next_commands(key, out):
            console.print(f"  {cmd}", highlight=False)
