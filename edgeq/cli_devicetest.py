"""CLI: `edgeq devicetest` (on-device smoke tests). Registered onto the main app by edgeq.cli."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console


def register(app: typer.Typer, console: Console, err_console: Console,
             fail: Callable[[Any], typer.Exit]) -> None:  # fmt: skip
    """Add this module's commands to `app`."""
