"""The `edgeq` command line: the typer app (`app`) and one module per command group."""

from edgeq.cli.app import app
from edgeq.cli.guard import exit_now, run_app


def main() -> None:
    """The `edgeq` console script (one error path, signals handled: `edgeq.cli.guard`)."""
    exit_now(run_app(app))


__all__ = ["app", "main"]
