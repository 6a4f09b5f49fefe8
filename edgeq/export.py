"""`edgeq export` as one call: plan (calibrate, or load `--plan`) → artifact → checked on its
runtime against float and the simulator → export report.

Output folder (`edgeq.outputs`: built beside it and moved into place, nothing is left on
failure; an existing folder must be an earlier export, or `force`):

    out/model.<ext>            the artifact (file, or folder for .mlpackage / MLX)
    out/plan/                  the QuantPlan it was made from
    out/export_report.json     size, accuracy vs float and vs the simulator, latency vs float
    out/export_report.md       the same as a readable table
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq import __version__
from edgeq.errors import InputError
from edgeq.exporters import (
    Artifact,
    ExportOptions,
    Runner,
    get_exporter,
    median_latency_ms,
)
from edgeq.ir.graph import Graph
from edgeq.ir.interpreter import Interpreter
from edgeq.outputs import EXPORT, check_output, write_output
from edgeq.quant.plan import QuantPlan, json_default
from edgeq.quant.recipe import Recipe
from edgeq.quant.simulate import Simulator
from edgeq.targets import load_target
from edgeq.verify import compare
from edgeq.weight_report import weight_markdown, weight_report

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


@dataclass
class ExportResult:
    out: Path
    artifact: Path
    report: dict[str, Any]


def evaluate_artifact(
    graph: Graph,
    plan: QuantPlan | None,
    runner: Runner,
    feeds: Sequence[Mapping[str, np.ndarray]],
) -> dict[str, dict[str, Any]]:
    """Run `feeds` through float (JAX), the simulator and the artifact; compare per output."""
    ref = Interpreter(graph)
    sim = Simulator(graph, plan) if plan is not None else None
    art_out = [runner(f) for f in feeds]
    ref_out = [ref(f) for f in feeds]
    sim_out = [sim(f) for f in feeds] if sim is not None else None
    return compare(art_out, sim_out, ref_out, plan, graph.output_names)


def export_model(
    model: str | Path,
    target: str,
    out: str | Path,
    *,
    plan_dir: str | Path | None = None,
    calib: Any = None,
    recipe: Recipe | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    input_values: Mapping[str, Any] | None = None,
    samples: int = 256,
    seed: int = 0,
    batch_size: int = 8,
    eval_samples: int = 8,
    preprocess: Any = None,
    tokenizer: str | Path | None = None,
    options: ExportOptions | None = None,
    runs: int = 20,
    progress: Progress | None = None,
    force: bool = False,
    allow_model_mismatch: bool = False,
    diagnose: bool = False,
) -> ExportResult:
    """`force`: write into an existing folder that is not an earlier export (only edgeq's
    files are replaced there; see `edgeq.outputs`). `allow_model_mismatch`: apply a `plan_dir`
    made for another model file (same graph shapes) instead of refusing it."""
    from edgeq.pipeline import calibrate_model, graph_for_plan

    check_output(out, EXPORT, force)  # refuse a bad -o before any work
    _check_counts(runs=(runs, 1), samples=(samples, 1), eval_samples=(eval_samples, 0),
                  batch_size=(batch_size, 1))  # fmt: skip
    options = options or ExportOptions()
    profile = load_target(target)
    exporter = get_exporter(profile.exporter)
    model = Path(model)
    eval_feeds: list[dict[str, np.ndarray]] = []
    held_out = True
    if plan_dir is not None:
        plan = QuantPlan.load(plan_dir)
        if plan.target != target:
            raise InputError(
                f"the plan in '{plan_dir}' was made for target '{plan.target}', not '{target}'",
                f"use --target {plan.target}, or calibrate again with --target {target}",
            )
        graph = graph_for_plan(model, plan)
        plan = bind_plan(plan, model, graph, allow_model_mismatch)
        held_out = False  # evaluation samples may overlap the plan's calibration samples
        if calib is not None:
            eval_feeds = _load_feeds(calib, graph, eval_samples, seed, preprocess, tokenizer)
    else:
        if calib is None:
            raise InputError("export needs calibration data or a plan",
                             "pass --calib DATA (or --plan PLAN_DIR from `edgeq calibrate`)")  # fmt: skip
        run = calibrate_model(
            model, calib, target, recipe, input_shapes=input_shapes, input_values=input_values,
            samples=samples, seed=seed, batch_size=batch_size, report_samples=eval_samples,
            preprocess=preprocess, tokenizer=tokenizer, progress=progress, diagnose=diagnose,
        )  # fmt: skip
        graph, plan = run.graph, run.plan
        if run.report_names:
            from edgeq.calibration import open_source, validate

            source = open_source(calib, graph.inputs, preprocess=preprocess, tokenizer=tokenizer)
            eval_feeds = [validate(source.load(n), graph.inputs, n) for n in run.report_names]
        held_out = bool(plan.report.get("held_out"))
    out = Path(out)
    name = "model" + exporter.suffix
    report: dict[str, Any] = {}
    if progress:
        progress("export", 0, 1)

    def write(tmp: Path) -> None:
        tmp.mkdir()
        artifact = exporter.export(graph, plan, profile, tmp / name, options)
        plan.save(tmp / "plan")
        with tempfile.TemporaryDirectory(prefix="edgeq-float-") as fdir:
            baseline = exporter.export(graph, None, profile, Path(fdir) / name, options)
            report.update(_report(graph, plan, artifact, baseline, exporter, eval_feeds, runs,
                                  progress))  # fmt: skip
        report["artifact"]["file"] = name
        report["model"] = {"file": model.name, "input_shapes": plan.model.get("input_shapes", {})}
        report["evaluation"]["held_out"] = held_out
        (tmp / "export_report.json").write_text(json.dumps(report, indent=1, default=json_default))
        (tmp / "export_report.md").write_text(report_markdown(report))

    write_output(out, EXPORT, write, force=force)
    return ExportResult(out, out / name, report)


def _check_counts(**counts: tuple[int, int]) -> None:
    for name, (value, least) in counts.items():
        if value < least:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} is {value}; it must be at least {least}",
                             f"pass {flag} {max(least, 1)} or more")  # fmt: skip


def bind_plan(plan: QuantPlan, model: Path, graph: Graph, allow_model_mismatch: bool) -> QuantPlan:
    """`plan` checked against the model file and its prepared graph (SHA-256, shapes,
    fingerprint). With `allow_model_mismatch` a plan made for another file of the same shapes
    is applied, and the plan written with the artifact records both models."""
    from dataclasses import replace

    from edgeq.files import file_sha256
    from edgeq.quant.plan import graph_fingerprint
    from edgeq.quant.plan_check import check_against_graph, check_model_file

    sha = file_sha256(model)
    if not allow_model_mismatch:
        check_model_file(plan, model, sha)
        check_against_graph(plan, graph, graph_fingerprint(graph))
        return plan
    check_against_graph(plan, graph)
    if (plan.model or {}).get("sha256") == sha:
        return plan
    info = {**plan.model, "file": model.name, "sha256": sha,
            "plan_made_for": {k: plan.model.get(k) for k in ("file", "sha256")}}  # fmt: skip
    log.warning("applying a plan made for %s to %s (--allow-model-mismatch)",
                plan.model.get("file"), model)  # fmt: skip
    return replace(plan, model=info, graph_fingerprint=graph_fingerprint(graph))


def _load_feeds(calib: Any, graph: Graph, n: int, seed: int, preprocess: Any,
                tokenizer: Any) -> list[dict[str, np.ndarray]]:  # fmt: skip
    from edgeq.calibration import open_source, subset, validate

    source = open_source(calib, graph.inputs, preprocess=preprocess, tokenizer=tokenizer)
    names = subset(source, min(n, len(source)), seed)
    return [validate(source.load(x), graph.inputs, x) for x in names]


def _report(graph: Graph, plan: QuantPlan, artifact: Artifact, baseline: Artifact, exporter: Any,
            feeds: list[dict[str, np.ndarray]], runs: int,
            progress: Progress | None) -> dict[str, Any]:  # fmt: skip
    report: dict[str, Any] = {
        "format": "edgeq-export-report",
        "edgeq_version": __version__,
        "target": artifact.target,
        "plan_hash": plan.plan_hash(),
        "artifact": {
            "format": artifact.format,
            "bytes": artifact.size_bytes,
            "float_bytes": baseline.size_bytes,
            "size_ratio": artifact.size_bytes / max(baseline.size_bytes, 1),
            "notes": artifact.notes,
            "checks": artifact.checks,
        },
        "evaluation": {"samples": len(feeds)},
        "weights": weight_report(exporter, artifact.path, graph, plan),
    }
    if not feeds:
        report["evaluation"]["skipped"] = "no evaluation data (pass --calib with --plan)"
        return report
    if progress:
        progress("verify", 0, 2)
    runner = exporter.open(artifact.path)
    float_runner = exporter.open(baseline.path)
    report["outputs"] = evaluate_artifact(graph, plan, runner, feeds)
    float_cmp = evaluate_artifact(graph, None, float_runner, feeds)
    for name, row in report["outputs"].items():
        row["float_artifact_vs_float"] = float_cmp[name]["vs_float"]
    if progress:
        progress("latency", 1, 2)
    q = median_latency_ms(runner, feeds[0], runs)
    f = median_latency_ms(float_runner, feeds[0], runs)
    report["latency"] = {"runtime": _runtime_name(artifact), "runs": runs, "quantized": q,
                         "float": f, "speedup": f["p50_ms"] / max(q["p50_ms"], 1e-9)}  # fmt: skip
    return report


def _runtime_name(artifact: Artifact) -> str:
    return {"onnx": "onnxruntime CPU", "tflite": "LiteRT", "mlx": "MLX CPU",
            "mlpackage": "numpy MIL evaluator (Linux)"}.get(artifact.format, artifact.format)  # fmt: skip


def report_markdown(report: Mapping[str, Any]) -> str:
    a = report["artifact"]
    lines = [
        f"# edgeq export: {report.get('model', {}).get('file', '?')} → {report['target']}",
        "",
        f"artifact `{a.get('file', '')}` ({a['format']}): {a['bytes'] / 1e6:.2f} MB, "
        f"{a['size_ratio']:.3f}x the float {a['format']} ({a['float_bytes'] / 1e6:.2f} MB); "
        f"plan {report['plan_hash'][:12]}; edgeq {report['edgeq_version']}",
        "",
    ]
    ev = report["evaluation"]
    if "outputs" in report:
        kind = "held-out" if ev.get("held_out") else "calibration"
        lines += [f"accuracy on {ev['samples']} {kind} samples:", "",
                  "| output | within 1 step of simulator | step | SQNR vs float (dB) | cosine vs float | simulator SQNR (dB) |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for name, row in report["outputs"].items():
            vs = row.get("vs_simulator", {})
            sim = row.get("simulator_vs_float", {})
            lines.append(
                f"| {name} | {vs.get('within_one_step', float('nan')) * 100:.2f}% | "
                f"{vs.get('step', float('nan')):.3g} ({vs.get('step_source', '')}) | "
                f"{row['vs_float']['sqnr_db']:.1f} | {row['vs_float']['cosine']:.5f} | "
                f"{sim.get('sqnr_db', float('nan')):.1f} |"
            )
    else:
        lines.append(f"accuracy: {ev.get('skipped', 'not measured')}")
    if "latency" in report:
        lat = report["latency"]
        lines += ["", f"latency on {lat['runtime']} (median of {lat['runs']} runs): quantized "
                  f"{lat['quantized']['p50_ms']:.2f} ms, float {lat['float']['p50_ms']:.2f} ms, "
                  f"speedup {lat['speedup']:.2f}x"]  # fmt: skip
    lines += weight_markdown(report.get("weights", {}))
    if a["notes"]:
        lines += ["", "notes:", *[f"- {n}" for n in a["notes"]]]
    return "\n".join(lines) + "\n"


__all__ = [
    "ExportResult",
    "evaluate_artifact",
    "export_model",
    "report_markdown",
]
