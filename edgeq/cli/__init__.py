"""The `edgeq` command line: the typer app (`app`) and one module per command group."""

from edgeq.cli.app import app

__all__ = ["app"]
