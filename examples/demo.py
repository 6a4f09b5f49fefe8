"""`make demo`: the README's first-use path on the default model, then the JAX-vs-onnxruntime
table for every example model.

It runs the commands the README teaches, as a user would type them:

    edgeq example ppocr-rec -o WORK
    edgeq export WORK/rec.onnx --calib WORK/calib --eval WORK/eval --preprocess WORK/preprocess.toml \
        --input-shape x=1,3,48,320 --eval-samples 256 --target onnx --target qnn --target rpi \
        --target ane --target mlx -o WORK/out --allow-loss

i.e. one calibration for five targets, each artifact checked on its runtime, with the task
metric (CER against the labels), a PASS/FAIL verdict per target and one comparison report
(`WORK/out/export_report.html`). `--allow-loss` lets the demo go on past a FAIL; the verdicts
are printed as they are.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from benchmarks.common import median_ms
from edgeq import Interpreter, load_model, prepare
from edgeq.summary import summarize
from examples.models import CASES

console = Console()
DEMO_TARGETS = ("onnx", "qnn", "rpi", "ane", "mlx")


def edgeq_cli() -> str:
    """The `edgeq` script of this environment."""
    script = Path(sys.executable).parent / "edgeq"
    return str(script) if script.exists() else shutil.which("edgeq") or "edgeq"


def first_use(work: Path, targets: tuple[str, ...] = DEMO_TARGETS) -> int:
    """The README path on the default model; returns the export's exit code."""
    cmds = [
        [edgeq_cli(), "example", "ppocr-rec", "-o", str(work)],
        [edgeq_cli(), "export", str(work / "rec.onnx"), "--calib", str(work / "calib"),
         "--eval", str(work / "eval"), "--preprocess", str(work / "preprocess.toml"),
         "--input-shape", "x=1,3,48,320", "--eval-samples", "256", *[x for t in targets for x in ("--target", t)],
         "-o", str(work / "out"), "--allow-loss"],
    ]  # fmt: skip
    code = 0
    for cmd in cmds:
        console.print(f"[bold]$ {' '.join(['edgeq', *cmd[1:]])}[/]", highlight=False)
        t0 = time.perf_counter()
        code = subprocess.run(cmd).returncode
        console.print(f"[dim]({time.perf_counter() - t0:.0f} s, exit {code})[/]")
        if code:
            return code
    return code


def parity_table(work: Path) -> Table:
    table = Table(title="edgeq JAX interpreter vs onnxruntime float32 (real inputs, this CPU)")
    for col in ("model", "ops", "params", "MACs", "rel. max err", "JAX ms", "ORT ms", "compile s"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, case in CASES.items():
        path = case.model_path(work)
        graph = prepare(load_model(path), case.input_shapes, case.input_values)
        summary = summarize(graph, targets=[])
        interp = Interpreter(graph)
        t0 = time.perf_counter()
        interp.compile()
        compile_s = time.perf_counter() - t0
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        consts = {k: np.array(v, np.int64) for k, v in case.input_values.items()}
        worst = 0.0
        feeds = case.make_feeds(2, "eval")
        for feed in feeds:
            ours = interp(feed)
            ref = sess.run(graph.output_names, {**feed, **consts})
            for o, r in zip(graph.output_names, ref, strict=True):
                worst = max(worst, float(np.abs(ours[o] - r).max() / max(np.abs(r).max(), 1e-12)))
        jax_ms = median_ms(lambda f=feeds[0], run=interp: run(f), 10)
        ort_ms = median_ms(lambda f=feeds[0], s=sess, c=consts: s.run(None, {**f, **c}), 10)
        table.add_row(
            name, str(len(graph.nodes)), f"{summary.parameters / 1e6:.2f}M",
            f"{(summary.macs or 0) / 1e6:.0f}M", f"{worst:.1e}", f"{jax_ms:.1f}", f"{ort_ms:.1f}",
            f"{compile_s:.1f}",
        )  # fmt: skip
    return table


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="edgeq-demo-")) / "work"
    code = first_use(work)
    if code:
        raise SystemExit(code)
    console.print(f"reports: {work / 'out' / 'export_report.html'} (and one per target)")
    models = Path(tempfile.gettempdir()) / "edgeq-models"
    models.mkdir(parents=True, exist_ok=True)
    with console.status("all example models: JAX vs onnxruntime..."):
        console.print(parity_table(models))


if __name__ == "__main__":
    main()
