"""`edgeq report`: the diagnosis table (data from `edgeq.quant.diagnose`, stored in the plan)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table


def render_diagnosis(console: Console, diagnosis: Mapping[str, Any] | None, top: int) -> None:
    if not diagnosis:
        console.print("[dim]no diagnosis in this plan: calibrate (or export) with --diagnose to "
                      "find the tensor whose quantization breaks the output[/]")  # fmt: skip
        return
    rows = diagnosis.get("rows", [])
    shown = rows[: min(top, 12)]
    table = Table(title="which tensor breaks the output: output SQNR with only that tensor "
                  f"quantized (everything else float), {diagnosis.get('samples')} samples")  # fmt: skip
    for col in ("#", "tensor", "op", "own SQNR dB", "dtype", "range / values", "why"):
        table.add_column(col, overflow="fold")
    for i, r in enumerate(shown, 1):
        own = r["own_sqnr_db"]
        own_s = f"{own:.1f}" if own is not None else f"({r['local_sqnr_db']:.1f} local)"
        span = ""
        if "range" in r:
            span = f"[{r['range'][0]:.3g}, {r['range'][1]:.3g}] / [{r['observed'][0]:.3g}, {r['observed'][1]:.3g}]"
        why = "; ".join(c["text"] for c in r["causes"])
        table.add_row(str(i), r["tensor"], r["op"], own_s, r["dtype"], span, why)
    console.print(table)
    if rows:
        r = rows[0]
        console.print(f"[bold]culprit:[/] {r['tensor']} ({r['op']}): {r['causes'][0]['text']}")
