"""CLI: target names as a choice list (one canonical order everywhere), the per-target defaults
for `--help`, and `edgeq targets` (a table of what each target writes, runs on and defaults to).
Registered onto the main app by edgeq.cli."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeq.targets import available_targets, load_target, target_defaults

# `--target` choices, in the canonical order (edgeq.targets.TARGET_ORDER)
Target = Enum("Target", {name: name for name in available_targets()}, type=str)  # type: ignore[misc]


def target_names(values: Any) -> list[str]:
    """Plain target names from Target choices (or strings)."""
    items = values if isinstance(values, list | tuple) else [values]
    return [v.value if isinstance(v, Enum) else str(v) for v in items]


def defaults_epilog() -> str:
    """One line per target: what `--target T` does with no other flag (for `--help`)."""
    lines = ["Defaults per target (flags override them; `edgeq targets` has the full table):"]
    for name in available_targets():
        d = target_defaults(load_target(name))
        lines.append(f"{name}: --bits {d['bits']}, --act-bits {d['act_bits']}, "
                     f"--granularity {d['granularity']}, --observer {d['observer']}")  # fmt: skip
    # typer/rich keeps line breaks in an epilog only between paragraphs
    return "\n\n".join(lines)


def register(app: typer.Typer, console: Console, err_console: Console,
             fail: Callable[[Any], typer.Exit]) -> None:  # fmt: skip
    """Add `edgeq targets` to `app`."""

    @app.command()
    def targets() -> None:
        """Every target: the artifact it writes, its runtime, what runs on this machine, and the
        defaults `edgeq export --target T` uses (bits, activations, granularity, budget)."""
        table = Table(title="edgeq targets (defaults: what `edgeq export --target T` does "
                      "without --bits/--act-bits/--granularity/--observer)")  # fmt: skip
        for col in ("target", "artifact", "runtime", "defaults", "runs here"):
            table.add_column(col, overflow="fold")
        budgets = {}
        for name in available_targets():
            p = load_target(name)
            d = target_defaults(p)
            budgets[name] = d["max_loss"]
            defaults = (f"bits {d['bits']}; act-bits {d['act_bits']}; "
                        f"{d['granularity']}; observer {d['observer']}")  # fmt: skip
            table.add_row(*(escape(x) for x in (name, p.artifact, p.runtime, defaults,
                                                 str(p.raw.get("runs_here", "")))))  # fmt: skip
        console.print(table)
        if len(set(budgets.values())) == 1:
            console.print(f"default budgets (every target; --max-loss overrides): "
                          f"{next(iter(budgets.values()))}", highlight=False)  # fmt: skip
        else:
            for name, b in budgets.items():
                console.print(f"default budgets for {name}: {b}", highlight=False)
