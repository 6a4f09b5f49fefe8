"""CLI: `edgeq devicetest` (on-device smoke tests). Registered onto the main app by edgeq.cli."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgeq.errors import EdgeqError


def register(app: typer.Typer, console: Console, err_console: Console,
             fail: Callable[[Any], typer.Exit]) -> None:  # fmt: skip
    """Add this module's commands to `app`."""

    @app.command()
    def devicetest(
        artifact: Annotated[Path, typer.Argument(help="The artifact (e.g. out/model.tflite).")],
        device: Annotated[str, typer.Option(
            help="local | ssh://user@host:port | adb or adb:SERIAL | xcode | xcode+ssh://user@mac",
        )] = "local",
        inputs: Annotated[Path | None, typer.Option(
            help="Folder of .npz/.npy samples (or one .npz); random inputs if absent.")] = None,
        runs: Annotated[int, typer.Option(help="Timed runs (after warm-up).")] = 50,
        warmup: Annotated[int, typer.Option(help="Warm-up runs.")] = 5,
        eval_samples: Annotated[int, typer.Option(
            help="Evaluation samples compared with the simulator and float.")] = 4,
        samples: Annotated[int | None, typer.Option(hidden=True)] = None,
        model: Annotated[Path | None, typer.Option(
            help="The float .onnx (default: the model named by the export folder's plan).")] = None,
        plan: Annotated[Path | None, typer.Option(
            help="The plan folder (default: plan/ beside the artifact).")] = None,
        out: Annotated[Path | None, typer.Option(
            help="Report folder (default: devicetest/ beside the artifact).")] = None,
        remote_python: Annotated[str | None, typer.Option(
            help="Python on the device (default python3; local: this interpreter).")] = None,
        identity: Annotated[Path | None, typer.Option(help="ssh private key (ssh -i).")] = None,
        ssh_option: Annotated[list[str] | None, typer.Option(
            help="Extra ssh -o KEY=VALUE (repeatable).")] = None,
        timeout: Annotated[float, typer.Option(help="Seconds for one device command.")] = 600.0,
        adb_runner: Annotated[Path | None, typer.Option(
            help="adb: native runner binary to push (benchmark_model, onnxruntime_perf_test).")] = None,
        adb_runner_kind: Annotated[str, typer.Option(
            help="adb: python | benchmark_model | onnxruntime_perf_test.")] = "python",
        runner_arg: Annotated[list[str] | None, typer.Option(
            help="adb: extra argument for the runner binary (repeatable).")] = None,
        min_within_step: Annotated[float | None, typer.Option(
            help="Budget: fraction within one step of the simulator (default: target's).")] = None,
        max_latency_ms: Annotated[float | None, typer.Option(
            help="Budget: p50 latency in ms.")] = None,
        seed: Annotated[int, typer.Option(help="Seed for random inputs.")] = 0,
        debug_pause: Annotated[float, typer.Option(hidden=True)] = 0.0,
        force: Annotated[bool, typer.Option(
            "--force", help="Write the report into an existing folder that is not an earlier "
            "devicetest report folder (only the report files are replaced).")] = False,
        allow_model_mismatch: Annotated[bool, typer.Option(
            help="Use a --plan made for another model file (same shapes) instead of refusing it.",
        )] = False,
    ) -> None:  # fmt: skip
        """Run an artifact on a device: p50/p90 latency, parity with the simulator and float,
        the target's budgets; writes devicetest_report.json/.md; exit 1 on a missed budget."""
        from edgeq.device_tests.devicetest import run_devicetest
        from edgeq.device_tests.transports import DeviceOptions

        options = DeviceOptions(
            remote_python=remote_python, identity=identity, ssh_options=tuple(ssh_option or ()),
            timeout_s=timeout, adb_runner=adb_runner, adb_runner_kind=adb_runner_kind,
            runner_args=tuple(runner_arg or ()),
        )  # fmt: skip
        from edgeq.evaluation import native_output_to_log

        try:
            with native_output_to_log("devicetest"):  # LiteRT's INFO line: into the log
                result = run_devicetest(
                    artifact, device, inputs=inputs, runs=runs, warmup=warmup,
                    samples=eval_samples if samples is None else samples,
                    model=model, plan=plan, out=out, options=options, seed=seed,
                    min_within_step=min_within_step, max_latency_ms=max_latency_ms,
                    pause_s=debug_pause, force=force, allow_model_mismatch=allow_model_mismatch,
                )  # fmt: skip
        except EdgeqError as exc:
            raise fail(exc) from None
        report = result.report
        lat = report.get("latency") or {}
        parts = [f"{k[:-3]} {lat[k]:.3f} ms" for k in ("p50_ms", "p90_ms", "mean_ms") if k in lat]
        stand_in = report.get("stand_in_latency") or {}
        if stand_in:
            parts = ["- no device latency (the stand-in took p50 "
                     f"{stand_in.get('p50_ms', float('nan')):.3f} ms here)"]  # fmt: skip
        runner = report.get("runner") or {}
        where = f" ({runner['mlx_device']})" if runner.get("mlx_device") else ""
        console.print(f"{report['device']}: {runner.get('runtime')}{where} "
                      + ", ".join(parts), highlight=False)  # fmt: skip
        for name, row in (report.get("outputs") or {}).items():
            vs = row.get("vs_simulator")
            sim = f"{vs['within_one_step'] * 100:.2f}% within 1 step of simulator, " if vs else ""
            console.print(f"  {name}: {sim}cosine vs float {row['vs_float']['cosine']:.5f}",
                          highlight=False)  # fmt: skip
        if report.get("inputs"):
            console.print(f"  inputs: {report['inputs']['source']}", highlight=False)
        for check in report.get("checks", []):
            mark = "[green]pass[/]" if check["passed"] else "[bold red]MISS[/]"
            console.print(f"  {mark} {check['check']}: {check['value']} (limit {check['limit']})")
        console.print(f"report: {result.report_path}", highlight=False)
        if not result.passed:
            err_console.print(f"[bold red]devicetest failed:[/] {report.get('error')}")
            raise typer.Exit(code=1)
