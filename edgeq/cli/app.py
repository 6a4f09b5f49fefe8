"""The `edgeq` command line (typer + rich). Library code never prints; this module does."""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from edgeq import __version__
from edgeq.cli import guard
from edgeq.cli.targets import Target, defaults_epilog, target_names
from edgeq.errors import EdgeqError, InputError

app = typer.Typer(
    cls=guard.OneLineUsage,  # usage errors too are one `error:` line
    add_completion=False,
    no_args_is_help=True,
    help="edgeq: quantize a float model once, deploy it to every edge runtime.",
)
console = Console()
err_console = Console(stderr=True)
ONNX, QNN = Target("onnx"), Target("qnn")

InputShapes = Annotated[
    list[str] | None,
    typer.Option("--input-shape", help="Fix an input's shape: NAME=D1,D2,... (one per input)."),
]
InputValues = Annotated[
    list[str] | None,
    typer.Option("--input-value", help="Bind a scalar input to a constant: NAME=VALUE."),
]


# recipe options shared by `calibrate` and `export`
Bits = Annotated[int | None, typer.Option("--bits", help="Weight bits (8 or 4).")]
ActBits = Annotated[
    int | None, typer.Option("--act-bits", help="Activation bits (8, 16; 0 = float).")
]
Granularity = Annotated[str | None, typer.Option(help="per_tensor, per_channel or per_block.")]
BlockSize = Annotated[int | None, typer.Option(help="Block size for per_block weights.")]
ObserverName = Annotated[
    str | None,
    typer.Option(help="Activation observer (minmax, ema_minmax, percentile, mse, entropy)."),
]
Diagnose = Annotated[
    bool,
    typer.Option("--diagnose", help="Find the tensor whose quantization breaks the output: each "
                 "tensor's own contribution and why (shown by `edgeq report`)."),
]  # fmt: skip
Refine = Annotated[
    int | None,
    typer.Option(help="Refine the N most noise-sensitive activation ranges against the output "
                 "(slower, more accurate)."),
]  # fmt: skip
Devices = Annotated[
    int | None,
    typer.Option("--devices", help="Split calibration batches over the first N of JAX's "
                 "devices (GPUs/TPUs when JAX has them; default: all)."),
]  # fmt: skip
MaxLoss = Annotated[
    str | None,
    typer.Option("--max-loss", help="Quality budget METRIC=NUMBER vs float (e.g. cosine=0.99, "
                 "sqnr=25, cer=1.0); 4-bit plans keep layers at 8 bits until cosine/sqnr pass."),
]  # fmt: skip
Bpw = Annotated[
    float | None,
    typer.Option("--bpw", help="Size budget for 4-bit plans: average bits per weight, scales "
                 "and zero points included (mixed precision stays within it)."),
]  # fmt: skip
Method = Annotated[
    str | None,
    typer.Option("--method", help="Weight algorithm: gptq (4-bit default) or rtn."),
]
WeightFormat = Annotated[
    str | None,
    typer.Option("--weight-format", help="ane: affine (scale + zero point, default) or lut "
                 "(palettized, iOS18)."),
]  # fmt: skip
RecipeFile = Annotated[
    Path | None, typer.Option("--recipe", help="Recipe TOML (flags override it).")
]
Force = Annotated[
    bool,
    typer.Option("--force", help="Write into an existing folder that is not an earlier edgeq "
                 "output of this kind (only edgeq's files are replaced; nothing else is touched)."),
]  # fmt: skip


def _fail(exc: EdgeqError) -> typer.Exit:
    return guard.error_exit(str(exc), err_console)


def _human(n: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g}{suffix}{unit}"
        n /= 1000
    return f"{n:.3g}P{unit}"


@contextmanager
def _progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A transient rich progress bar; yields `progress(stage, done, total)`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=True) as bar:  # fmt: skip
        task = bar.add_task("compiling + calibrating", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        yield progress


def _load_prepared(model: Path, input_shape: list[str] | None, input_value: list[str] | None, *,
                   require_static: bool):  # type: ignore[no-untyped-def]  # fmt: skip
    from edgeq.cli.specs import parse_input_shapes, parse_input_values
    from edgeq.ir.onnx_io import load_model
    from edgeq.ir.passes import (
        fix_input_shapes,
        inputs_to_constants,
        prepare,
        require_static_inputs,
    )

    graph = load_model(model)
    shapes = parse_input_shapes(input_shape or [])
    values = parse_input_values(input_value or [])
    if values:
        graph = inputs_to_constants(graph, values)
    if shapes:
        graph = fix_input_shapes(graph, shapes)
    if all(v.is_static for v in graph.inputs):
        return prepare(graph), True
    if require_static:
        require_static_inputs(graph)
    return graph, False


@app.command()
def inspect(
    model: Annotated[Path, typer.Argument(help="The .onnx model.")],
    input_shape: InputShapes = None,
    input_value: InputValues = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Inputs/outputs, op histogram, parameters, MACs, unfixed dims, unsupported ops."""
    from edgeq.summary import summarize

    try:
        graph, prepared = _load_prepared(model, input_shape, input_value, require_static=False)
        summary = summarize(graph)
    except EdgeqError as exc:
        raise _fail(exc) from None
    if as_json:
        console.print_json(json.dumps(asdict(summary), default=str))
        return
    io = Table(title=f"{model.name} (opset {summary.opset})", show_lines=False)
    for col in ("", "name", "dtype", "shape"):
        io.add_column(col)
    for kind, items in (("input", summary.inputs), ("output", summary.outputs)):
        for t in items:
            shape = "?" if t.shape is None else "x".join(str(d) for d in t.shape)
            io.add_row(kind, t.name, t.dtype, shape)
    console.print(io)
    hist = Table(title="ops" + (" (after folding)" if prepared else ""))
    hist.add_column("op")
    hist.add_column("count", justify="right")
    for op, count in summary.op_histogram.items():
        hist.add_row(op, str(count))
    console.print(hist)
    console.print(
        f"parameters: {_human(summary.parameters)} ({_human(summary.parameter_bytes, 'B')}); "
        + (f"MACs: {_human(summary.macs)}" if summary.macs is not None else "MACs: unknown")
    )
    for name, dims in summary.unfixed.items():
        console.print(
            f"[yellow]unfixed:[/] input '{name}' dims {dims}; fix with --input-shape {name}=..."
        )
    if summary.unsupported_by_edgeq:
        console.print("[red]ops edgeq cannot run:[/] " + ", ".join(summary.unsupported_by_edgeq))
    for target, ops in summary.unsupported_by_target.items():
        console.print(f"[red]not supported on {target}:[/] {', '.join(ops)}")
    for target, ops in summary.fallback_by_target.items():
        console.print(f"[yellow]leave the accelerator on {target}:[/] {', '.join(ops)}")


@app.command()
def run(
    model: Annotated[Path, typer.Argument(help="The .onnx model.")],
    input_shape: InputShapes = None,
    input_value: InputValues = None,
    inputs: Annotated[
        Path | None, typer.Option(help=".npz with one array per model input (random if absent).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for random inputs.")] = 0,
    compare: Annotated[bool, typer.Option(help="Compare with onnxruntime float32.")] = True,
) -> None:
    """Run the model with edgeq's JAX interpreter (fixed shapes) and compare with onnxruntime."""
    from edgeq.cli.specs import parse_input_values
    from edgeq.ir.interpreter import Interpreter

    try:
        graph, _ = _load_prepared(model, input_shape, input_value, require_static=True)
        rng = np.random.default_rng(seed)
        if inputs is not None:
            if not inputs.is_file():
                raise InputError(f"--inputs file '{inputs}' does not exist")
            from edgeq.files import load_npz

            feeds = load_npz(inputs, f"--inputs '{inputs}'")
        else:
            from edgeq.files import check_size, nbytes_of

            check_size(sum(nbytes_of(v.shape, v.dtype) for v in graph.inputs), "random inputs")
            feeds = {
                v.name: rng.standard_normal(v.shape).astype(v.dtype)  # type: ignore[arg-type]
                if np.issubdtype(v.dtype, np.floating)
                else np.zeros(v.shape, v.dtype)  # type: ignore[arg-type]
                for v in graph.inputs
            }
        interp = Interpreter(graph)
        t0 = time.perf_counter()
        outputs = interp(feeds)
        elapsed = time.perf_counter() - t0
    except EdgeqError as exc:
        raise _fail(exc) from None
    table = Table(title=f"{model.name}: JAX interpreter (first call {elapsed:.2f}s incl. compile)")
    for col in ("output", "shape", "min", "max"):
        table.add_column(col)
    if compare:
        table.add_column("rel. max err vs onnxruntime", justify="right")
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 4  # its errors come back as one line, not as a log dump too
        sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        ort_feeds = dict(feeds)
        ort_feeds.update({k: np.asarray(v, dtype=_ort_dtype(sess, k)) for k, v in
                          parse_input_values(input_value or []).items()})  # fmt: skip
        names = [o.name for o in sess.get_outputs()]
        ref = dict(zip(names, sess.run(None, ort_feeds), strict=True))
    for name, value in outputs.items():
        row = [name, "x".join(map(str, value.shape)), f"{value.min():.4g}", f"{value.max():.4g}"]
        if compare:
            r = ref[name]
            err = float(np.abs(value - r).max() / max(float(np.abs(r).max()), 1e-12))
            row.append(f"{err:.2e}")
        table.add_row(*row)
    console.print(table)


def _ort_dtype(sess, name: str) -> np.dtype:  # type: ignore[no-untyped-def]
    types = {"tensor(int64)": np.int64, "tensor(float)": np.float32, "tensor(int32)": np.int32}
    for i in sess.get_inputs():
        if i.name == name:
            return np.dtype(types.get(i.type, np.float32))
    return np.dtype(np.float32)


@app.command()
def calibrate(
    model: Annotated[Path, typer.Argument(help="The .onnx model.")],
    calib: Annotated[
        str,
        typer.Option(
            "--calib",
            help="Calibration data: folder of .npy/.npz/images, or a .txt with --tokenizer.",
        ),
    ],
    target: Annotated[Target, typer.Option("--target", help="Target profile.")] = ONNX,
    out: Annotated[Path, typer.Option("-o", "--out", help="Plan folder to write.")] = Path("plan"),
    bits: Bits = None,
    act_bits: ActBits = None,
    granularity: Granularity = None,
    block_size: BlockSize = None,
    observer: ObserverName = None,
    refine: Refine = None,
    max_loss: MaxLoss = None,
    bpw: Bpw = None,
    method: Method = None,
    weight_format: WeightFormat = None,
    recipe_file: RecipeFile = None,
    input_shape: InputShapes = None,
    input_value: InputValues = None,
    preprocess: Annotated[
        Path | None, typer.Option(help="Image preprocessing spec (TOML/JSON).")
    ] = None,
    tokenizer: Annotated[
        Path | None, typer.Option(help="tokenizer.json for text calibration data.")
    ] = None,
    calib_samples: Annotated[
        int, typer.Option(help="Calibration samples to use (deterministic subset).")
    ] = 256,
    seed: Annotated[int, typer.Option(help="Seed for the subset.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Samples per compiled step.")] = 8,
    eval_samples: Annotated[
        int,
        typer.Option(
            help="Evaluation samples held out of --calib for the per-layer SQNR "
            "report (at most a quarter of the data; 0: none)."
        ),
    ] = 8,
    devices: Devices = None,
    force: Force = False,
    diagnose: Diagnose = False,
    report_samples: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Calibrate MODEL once for a target and write the QuantPlan (plan.json + plan.npz)."""
    from edgeq.cli.specs import parse_input_shapes, parse_input_values
    from edgeq.outputs import PLAN, check_output
    from edgeq.pipeline import calibrate_model
    from edgeq.quant.recipe import Recipe, recipe_from_cli

    try:
        check_output(out, PLAN, force)  # before any work
        base = Recipe.load(recipe_file) if recipe_file else None
        recipe = recipe_from_cli(bits, act_bits, granularity, block_size, observer, base, refine,
                                 max_loss=max_loss, bpw=bpw, method=method,
                                 weight_format=weight_format)  # fmt: skip
        target_name = target_names(target)[0]
        with _progress_bar() as progress:
            run_ = calibrate_model(
                model, calib, target_name, recipe,
                input_shapes=parse_input_shapes(input_shape or []),
                input_values=parse_input_values(input_value or []),
                samples=calib_samples, seed=seed, batch_size=batch_size,
                eval_samples=eval_samples if report_samples is None else report_samples,
                preprocess=preprocess, tokenizer=tokenizer, progress=progress,
                devices=devices, diagnose=diagnose,
            )  # fmt: skip
        run_.plan.save(out, force=force)
    except EdgeqError as exc:
        raise _fail(exc) from None
    plan = run_.plan
    counts: dict[str, int] = {}
    for t in plan.tensors.values():
        key = f"{t.role} {t.dtype}" + (f" {t.granularity}" if t.role == "weight" else "")
        counts[key] = counts.get(key, 0) + 1
    table = Table(title=f"plan for {model.name} → {target_name}  ({out})")
    table.add_column("tensors")
    table.add_column("count", justify="right")
    for key, n in sorted(counts.items()):
        table.add_row(key, str(n))
    console.print(table)
    cal = plan.calibration
    dev = cal.get("devices", {})
    console.print(f"calibrated on {cal['samples']} samples in {cal['seconds']:.1f}s "
                  f"({cal['observed_tensors']} observed tensors, {dev.get('count', 1)} "
                  f"{dev.get('platform', 'cpu')} device(s))")  # fmt: skip
    _print_outputs(plan)


def _print_outputs(plan) -> None:  # type: ignore[no-untyped-def]
    rows = [r for r in plan.report.get("layers", []) if r.get("output")]
    for r in rows:
        console.print(f"output {r['tensor']}: SQNR {r['sqnr_db']:.1f} dB vs float "
                      f"({plan.report['samples']} {'held-out' if plan.report.get('held_out') else 'calibration'} samples)")  # fmt: skip
    if rows and not plan.report.get("held_out"):
        console.print("[yellow]note:[/] the calibration data is too small to hold samples out "
                      "(fewer than 4): the report uses calibration samples", highlight=False)  # fmt: skip


@app.command()
def report(
    plan_dir: Annotated[Path, typer.Argument(help="A plan folder written by `edgeq calibrate`.")],
    top: Annotated[int, typer.Option(help="Rows to show (worst layers first).")] = 25,
) -> None:
    """Per-layer SQNR of a plan against float, worst layers first."""
    from edgeq.quant.plan import QuantPlan

    try:
        plan = QuantPlan.load(plan_dir)
    except EdgeqError as exc:
        raise _fail(exc) from None
    rows = plan.report.get("layers", [])
    console.print(f"target [bold]{plan.target}[/], model {plan.model.get('file', '?')}, "
                  f"{plan.calibration.get('samples', '?')} calibration samples, plan {plan.plan_hash()[:12]}")  # fmt: skip
    from edgeq.cli.diagnosis import render_diagnosis

    render_diagnosis(console, plan.report.get("diagnosis"), top)
    if not rows:
        console.print("[yellow]this plan has no SQNR report (calibrated with --eval-samples 0)[/]")
        return
    table = Table(
        title=f"per-layer SQNR vs float (errors propagated), worst {min(top, len(rows))} of {len(rows)}"
    )
    for col in ("#", "tensor", "op", "SQNR dB", "dtype", "scale", "zp", "provenance"):
        table.add_column(col, overflow="fold")
    for i, r in enumerate(rows[:top], 1):
        t = plan.tensors.get(r["tensor"])
        scale = (
            f"{float(t.scale):.3g}"
            if t is not None and t.scale is not None and t.scale.ndim == 0
            else ""
        )
        zp = (
            str(int(t.zero_point))
            if t is not None and t.zero_point is not None and t.zero_point.ndim == 0
            else ""
        )
        table.add_row(str(i), r["tensor"], r["op"], f"{r['sqnr_db']:.1f}", t.dtype if t else "",
                      scale, zp, t.provenance if t else "")  # fmt: skip
    console.print(table)
    _print_outputs(plan)


@app.command(epilog=defaults_epilog())
def export(
    model: Annotated[Path, typer.Argument(help="The .onnx model.")],
    target: Annotated[
        list[Target] | None,
        typer.Option(
            "--target",
            help="Target profile; repeat it to export several targets "
            "from one calibration (one comparison report).",
        ),
    ] = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")] = Path("out"),
    calib: Annotated[
        str | None,
        typer.Option(
            "--calib",
            help="Calibration data (evaluation samples are held out of it unless --eval is given).",
        ),
    ] = None,
    eval_data: Annotated[
        str | None,
        typer.Option(
            "--eval",
            help="Evaluation data (same kinds as --calib); a "
            "labels.json beside its samples gives the task metric labels.",
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Labels file (.json {sample: label} or name<TAB>label); "
            "default: labels.json in the evaluation folder."
        ),
    ] = None,
    plan_dir: Annotated[
        Path | None, typer.Option("--plan", help="Use a plan from `edgeq calibrate`.")
    ] = None,
    bits: Bits = None,
    act_bits: ActBits = None,
    granularity: Granularity = None,
    block_size: BlockSize = None,
    observer: ObserverName = None,
    refine: Refine = None,
    bpw: Bpw = None,
    method: Method = None,
    weight_format: WeightFormat = None,
    recipe_file: RecipeFile = None,
    input_shape: InputShapes = None,
    input_value: InputValues = None,
    preprocess: Annotated[
        Path | None,
        typer.Option(help="Image preprocessing spec (TOML/JSON; README lists the keys)."),
    ] = None,
    tokenizer: Annotated[Path | None, typer.Option(help="tokenizer.json for text data.")] = None,
    calib_samples: Annotated[int, typer.Option(help="Calibration samples.")] = 256,
    eval_samples: Annotated[
        int, typer.Option(help="Evaluation samples (held out of --calib: at most a quarter).")
    ] = 32,
    diagnose: Diagnose = False,
    seed: Annotated[int, typer.Option(help="Seed for the subsets.")] = 0,
    task: Annotated[
        str, typer.Option(help="Task metric: auto, ctc, classify, embed, mask, detect, generic.")
    ] = "auto",
    charset: Annotated[
        Path | None,
        typer.Option(
            help="ctc: character list, one per line (default: the model's `character` metadata)."
        ),
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            help="User metric module:function (outputs, labels) -> "
            "number, higher is better; leads the report."
        ),
    ] = None,
    max_loss: Annotated[
        list[str] | None,
        typer.Option(
            help="Budget METRIC=NUMBER (cer=1.0, top1=1.0, cosine=0.99, ...; repeatable) "
            "for the verdict; default: the target's. A cosine/sqnr budget also steers 4-bit "
            "mixed precision (layers stay at 8 bits until it passes)."
        ),
    ] = None,
    allow_loss: Annotated[
        bool,
        typer.Option(help="Exit 0 even when the verdict is FAIL (the artifact is always written)."),
    ] = False,
    allow_fallback: Annotated[
        bool, typer.Option(help="qnn: write the model even if some nodes would leave the HTP.")
    ] = False,
    runs: Annotated[
        int, typer.Option(help="At most this many timed runs for the latency comparison.")
    ] = 20,
    latency_seconds: Annotated[
        float, typer.Option(help="Time budget for the latency comparison, per target.")
    ] = 3.0,
    force: Force = False,
    allow_model_mismatch: Annotated[bool, typer.Option(
        help="Apply a --plan made for another model file (same shapes) instead of refusing it.",
    )] = False,
) -> None:  # fmt: skip
    """Quantize MODEL for one or more targets (or use --plan), write each artifact, check it on
    its runtime against float and the simulator, and end with a verdict: PASS/FAIL of the task
    metric against the loss budget (exit 1 on FAIL unless --allow-loss)."""
    from edgeq.cli.specs import parse_input_shapes, parse_input_values
    from edgeq.export import export_model
    from edgeq.exporters import ExportOptions
    from edgeq.quant.recipe import Recipe, recipe_from_cli

    names = target_names(target or [ONNX])
    try:
        base = Recipe.load(recipe_file) if recipe_file else None
        recipe = recipe_from_cli(bits, act_bits, granularity, block_size, observer, base, refine,
                                 max_loss=_search_loss(max_loss or []), bpw=bpw, method=method,
                                 weight_format=weight_format)  # fmt: skip
        with _progress_bar() as progress:
            result = export_model(
                model, names if len(names) > 1 else names[0], out, plan_dir=plan_dir,
                calib=calib, eval_data=eval_data, labels=labels, recipe=recipe,
                input_shapes=parse_input_shapes(input_shape or []),
                input_values=parse_input_values(input_value or []),
                samples=calib_samples, seed=seed, eval_samples=eval_samples,
                preprocess=preprocess, tokenizer=tokenizer, task=task, charset=charset,
                metrics=metric or (), max_loss=max_loss or (),
                options=ExportOptions(allow_fallback=allow_fallback), runs=runs,
                latency_seconds=latency_seconds, progress=progress,
                force=force, allow_model_mismatch=allow_model_mismatch, diagnose=diagnose,
            )  # fmt: skip
    except EdgeqError as exc:
        raise _fail(exc) from None
    results = getattr(result, "results", None) or {names[0]: result}
    for res in results.values():
        _print_export_report(res.report, res.artifact)
    if len(results) > 1:
        _print_comparison(result.report, out)
    else:
        console.print(f"report: {out / 'export_report.html'}", highlight=False)
    failed = [t for t, r in results.items() if not r.passed]
    for t, res in results.items():
        v = res.report["verdict"]
        color = {"PASS": "green", "FAIL": "red"}.get(v["status"], "yellow")
        prefix = f"{t}: " if len(results) > 1 else ""
        console.print(f"[bold {color}]{prefix}{_esc(v['line'])}[/]", highlight=False)
        for step in v.get("next_steps", []):
            console.print(f"  try: {_esc(step)}", highlight=False)
    if failed and allow_loss:
        console.print("[yellow]--allow-loss: exit 0 although the verdict is not PASS[/]")
    elif failed:
        raise typer.Exit(code=1)


def _search_loss(budgets: list[str]) -> str | None:
    """The --max-loss budget the 4-bit mixed-precision search steers by: the first one it can
    measure itself (cosine, sqnr), else the first (the search then keeps its default rule)."""
    from edgeq.algorithms.mixed_precision import OUTPUT_METRICS

    for b in budgets:
        if b.split("=", 1)[0].strip().lower() in OUTPUT_METRICS:
            return b
    return budgets[0] if budgets else None


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _print_export_report(rep: dict, artifact: Path) -> None:  # type: ignore[type-arg]
    a = rep["artifact"]
    console.print(f"wrote {artifact} ({a['bytes'] / 1e6:.2f} MB, {a['size_ratio']:.3f}x float; "
                  f"plan {rep.get('recipe', {}).get('label', '')})", highlight=False)  # fmt: skip
    ev = rep["evaluation"]
    if ev.get("note"):
        console.print(f"[yellow]note:[/] {_esc(ev['note'])}", highlight=False)
    task = rep.get("task") or {}
    if task.get("metrics"):
        sim = {(m["name"], m["against"]): m for m in task.get("simulator_metrics", [])}
        kind = "held-out" if ev.get("held_out") else "calibration"
        table = Table(
            title=f"{rep['target']}: task '{task['name']}' on {ev['samples']} {kind} samples"
        )
        for col in ("metric", "float", "simulator", "artifact"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        from edgeq.export import _fmt_metric

        for m in task["metrics"]:
            s = sim.get((m["name"], m["against"]))
            table.add_row(m["title"], _fmt_metric(m, "float"),
                          _fmt_metric(s, "quant") if s else "—", _fmt_metric(m, "quant"))  # fmt: skip
        console.print(table)
    if "outputs" in rep:
        for name, row in rep["outputs"].items():
            vs = row.get("vs_simulator", {})
            real = " (real tokens)" if row["vs_float"].get("padding_excluded") else ""
            console.print(f"  output {name}: {vs.get('within_one_step', float('nan')):.2%} within "
                          f"1 step of the simulator, SQNR vs float{real} {row['vs_float']['sqnr_db']:.1f} dB",
                          highlight=False)  # fmt: skip
    lat = rep.get("latency")
    if lat and "skipped" in lat:
        console.print(f"  latency: {lat['skipped']}", highlight=False)
    elif lat:
        console.print(f"  latency ({lat['runtime']}, {lat['runs']} runs): {lat['quantized']['p50_ms']:.2f} ms "
                      f"vs float {lat['float']['p50_ms']:.2f} ms ({lat['speedup']:.2f}x)", highlight=False)  # fmt: skip
    w = rep.get("weights", {})
    if "bits_per_weight" in w:
        mixed = w.get("mixed_precision", {})
        kept = mixed.get("eight_bit", [])
        console.print(f"  weights: {w['bits_per_weight']:.2f} bits per weight (scales included, from "
                      f"the artifact); {len(kept)} layer(s) kept at 8 bits"
                      + (f", {len(mixed['blocked'])} in 4-bit blocks" if mixed.get("blocked") else "")
                      if mixed else
                      f"  weights: {w['bits_per_weight']:.2f} bits per weight (scales included, from the artifact)")  # fmt: skip
        for row in kept[:8]:
            console.print(
                f"    8-bit {row['node'] or row['weight']}: {row['reason']}", highlight=False
            )
        for row in mixed.get("blocked", [])[:8]:
            console.print(f"    4-bit blocks {row['node'] or row['weight']}: {row['reason']}",
                          highlight=False)  # fmt: skip
    for note in a.get("notes", [])[:5]:
        console.print(f"  [yellow]note:[/] {_esc(note)}", highlight=False)
    if len(a.get("notes", [])) > 5:
        console.print(f"  ({len(a['notes']) - 5} more notes in export_report.md)")


def _print_comparison(summary: dict, out: Path) -> None:  # type: ignore[type-arg]
    from edgeq.export import _fmt_metric

    table = Table(title=f"{summary['model']['file']}: one calibration, {len(summary['targets'])} targets "
                        f"({summary['seconds']:.0f} s)")  # fmt: skip
    for col in (
        "target",
        "plan",
        "size vs float",
        "task metric (artifact / float)",
        "latency vs float",
        "verdict",
    ):
        table.add_column(col)
    for r in summary["targets"]:
        m = r["metric"]
        metric = f"{m['name']} {_fmt_metric(m, 'quant')} / {_fmt_metric(m, 'float')}" if m else "—"
        lat = f"{r['speedup']:.2f}x" if r.get("speedup") else "not measured"
        color = "green" if r["verdict"] == "PASS" else "red"
        table.add_row(r["target"], r["plan"], f"{r['size_ratio']:.3f}x", metric, lat,
                      f"[{color}]{r['verdict']}[/]")  # fmt: skip
    console.print(table)
    console.print(f"comparison report: {out / 'export_report.html'}", highlight=False)


@app.command()
def check(
    model: Annotated[Path, typer.Argument(help="An .onnx model (QDQ or float).")],
    target: Annotated[
        Target, typer.Option("--target", help="Target to check against (qnn).")
    ] = QNN,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    input_shape: InputShapes = None,
    input_value: InputValues = None,
) -> None:
    """List every node that would leave the accelerator (qnn) or that an export for the
    target would refuse, and why (exit 1 if any)."""
    from edgeq.ir.onnx_io import parse_model_bytes
    from edgeq.targets import load_target

    target = target_names(target)[0]
    try:
        profile = load_target(target)
        if target != "qnn":
            _check_lowerings(model, target, input_shape, input_value, as_json)
            return
        if not model.is_file():
            raise InputError(f"'{model}' does not exist", "pass the path of an .onnx file")
        proto = parse_model_bytes(model.read_bytes(), str(model), check=False)
        from edgeq.exporters.onnx.qnn_check import blocking, check_qnn

        found = check_qnn(proto, profile)
    except EdgeqError as exc:
        raise _fail(exc) from None
    if as_json:
        console.print_json(json.dumps([v.as_dict() for v in found]))
    elif not found:
        console.print(f"{model.name}: every node can run on the QNN HTP")
    else:
        table = Table(title=f"{model.name}: nodes that would leave the QNN HTP")
        for col in ("node", "op", "why", "severity"):
            table.add_column(col)
        for v in found:
            table.add_row(v.node, v.op, v.reason, v.severity)
        console.print(table)
    if blocking(found):
        raise typer.Exit(code=1)


def _check_lowerings(model: Path, target: str, input_shape: list[str] | None,
                     input_value: list[str] | None, as_json: bool) -> None:  # fmt: skip
    """Non-qnn targets: the nodes of the prepared graph the target's lowerings cannot run."""
    from edgeq.support import refusals

    graph, _ = _load_prepared(model, input_shape, input_value, require_static=False)
    found = refusals(graph, target)
    if as_json:
        console.print_json(json.dumps(found))
    elif not found:
        console.print(f"{model.name}: every node has a lowering for target {target}")
    else:
        console.print(f"[red]{model.name}: {len(found)} node(s) target {target} cannot run:[/]")
        for line in found:
            console.print(f"  {line}")
    if found:
        raise typer.Exit(code=1)


@app.command()
def ops() -> None:
    """List the ONNX ops edgeq's JAX interpreter supports."""
    from edgeq.ir.ops import supported_ops

    console.print(", ".join(supported_ops()))


@app.command()
def version() -> None:
    """Print the edgeq version."""
    console.print(__version__)


def _show_version(value: bool) -> None:
    if value:
        console.print(f"edgeq {__version__}")
        raise typer.Exit()


class _QuietThirdParty(logging.Filter):
    """Without --verbose: edgeq's warnings and everyone's errors reach the terminal; library
    and runtime chatter (coremltools' "Failed to load _MLModelProxy", LiteRT's INFO line) stays
    in the log (each export keeps it in export.log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        return record.name.startswith("edgeq") and record.levelno >= logging.WARNING


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show the log on stderr: edgeq's steps and what libraries and "
        "runtimes print (kept in export.log otherwise), and tracebacks.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", help="Print the edgeq version and exit.", callback=_show_version,
        is_eager=True)] = False,
) -> None:  # fmt: skip
    """Compiled programs are cached in ~/.cache/edgeq/xla (EDGEQ_CACHE_DIR=DIR moves it,
    EDGEQ_CACHE_DIR=off turns it off): a second run of the same model skips XLA compile."""
    guard.set_verbose(verbose)
    handler = logging.StreamHandler(sys.stderr)
    if not verbose:
        handler.addFilter(_QuietThirdParty())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler._edgeq_cli = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "_edgeq_cli", False)]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    from edgeq.compile_cache import enable_compilation_cache

    enable_compilation_cache()


# Commands that live in their own modules (each defines `register(app)`).
for _module in (
    "edgeq.cli.bundle",
    "edgeq.cli.devicetest",
    "edgeq.cli.targets",
    "edgeq.cli.example",
):
    importlib.import_module(_module).register(app, console, err_console, _fail)

# every command: one-line errors (exit 2), signals clean up and exit 128+N (edgeq.cli.guard)
guard.install(app, err_console)

if __name__ == "__main__":
    guard.exit_now(guard.run_app(app))
