"""`edgeq export` as one call: plan (calibrate, or load `--plan`) → artifact → checked on its
runtime against float and the simulator → task metric → verdict → reports.

One target (`export_model(model, "onnx", out)`) writes:

    out/model.<ext>            the artifact (file, or folder for .mlpackage / MLX)
    out/plan/                  the QuantPlan it was made from
    out/export_report.json     verdict, task metric, per-layer error, size, parity, latency
    out/export_report.md       the same as a readable table
    out/export_report.html     one self-contained page with charts
    out/export.log             what the libraries logged (and native runtimes printed)

Several targets (`export_model(model, ["onnx", "rpi"], out)`) calibrate once (statistics are
shared by every target whose prepared graph is the same, see `edgeq.multi_target`), plan and
export per target into `out/<target>/` (each laid out as above), and write one comparison
`out/export_report.{json,md,html}`.

Everything is written to a temp folder and renamed into place: a failed export leaves nothing.
A FAIL verdict is not a failure of the export: the artifact is written (to inspect it) and the
verdict says what lost accuracy; the CLI exits 1 on it unless `--allow-loss`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeq import __version__
from edgeq.budget import LossBudget, parse_budget, register_metric
from edgeq.errors import InputError
from edgeq.evaluation import (
    activation_rows,
    evaluate_layers,
    native_output_to_log,
    run_artifact,
    timed_latency,
    value_histograms,
    weight_errors,
)
from edgeq.exporters import Artifact, ExportOptions, Runner, get_exporter
from edgeq.ir.graph import Graph
from edgeq.ir.interpreter import Interpreter
from edgeq.metrics import TaskContext, evaluate_task, guess_task, load_metric_hook
from edgeq.outputs import EXPORT, check_output, write_output
from edgeq.quant.padding import find_token_mask
from edgeq.quant.plan import QuantPlan, json_default
from edgeq.quant.recipe import Recipe
from edgeq.quant.simulate import Simulator
from edgeq.targets import load_target, ordered_targets
from edgeq.verdict import Verdict, check_measurable, judge
from edgeq.verify import compare
from edgeq.weight_report import weight_markdown, weight_report

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
REPORT_JSON, REPORT_MD, REPORT_HTML, LOG_FILE = (
    "export_report.json", "export_report.md", "export_report.html", "export.log",
)  # fmt: skip
FLOAT_CHECK_SAMPLES = 4  # float artifact vs float: a sanity check of the exporter's float path


@dataclass
class ExportResult:
    """One target's export: where it is, its report (also in export_report.json), verdict."""

    out: Path
    artifact: Path
    report: dict[str, Any]
    verdict: Verdict | None = None

    @property
    def passed(self) -> bool:
        return self.verdict is not None and self.verdict.passed

    @property
    def html(self) -> Path:
        return self.out / REPORT_HTML


@dataclass
class MultiExportResult:
    """Several targets from one calibration: one ExportResult per target plus the comparison."""

    out: Path
    results: dict[str, ExportResult]
    report: dict[str, Any]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results.values())

    @property
    def html(self) -> Path:
        return self.out / REPORT_HTML


@dataclass
class _Evaluation:
    """What every target of one export evaluates on."""

    feeds: list[dict[str, np.ndarray]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    labels: list[Any] | None = None
    held_out: bool = False
    source: str = ""
    note: str = ""
    missing_labels: int = 0


def evaluate_artifact(
    graph: Graph,
    plan: QuantPlan | None,
    runner: Runner,
    feeds: Sequence[Mapping[str, np.ndarray]],
    output_dtype: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Run `feeds` through float (JAX), the simulator and the artifact; compare per output
    (`output_dtype`: the target profile's, see `edgeq.verify.compare`)."""
    ref = Interpreter(graph)
    sim = Simulator(graph, plan) if plan is not None else None
    art_out = [runner(f) for f in feeds]
    ref_out = [ref(f) for f in feeds]
    sim_out = [sim(f) for f in feeds] if sim is not None else None
    return compare(art_out, sim_out, ref_out, plan, graph.output_names, output_dtype)


def export_model(
    model: str | Path,
    target: str | Sequence[str],
    out: str | Path,
    *,
    plan_dir: str | Path | None = None,
    calib: Any = None,
    eval_data: Any = None,
    labels: str | Path | None = None,
    recipe: Recipe | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    input_values: Mapping[str, Any] | None = None,
    samples: int = 256,
    seed: int = 0,
    batch_size: int = 8,
    eval_samples: int = 32,
    preprocess: Any = None,
    tokenizer: str | Path | None = None,
    options: ExportOptions | None = None,
    task: str = "auto",
    charset: str | Path | None = None,
    metrics: Sequence[str | Callable[..., Any]] = (),
    max_loss: Sequence[str | LossBudget] = (),
    runs: int = 20,
    latency_seconds: float = 3.0,
    html: bool = True,
    progress: Progress | None = None,
    force: bool = False,
    allow_model_mismatch: bool = False,
    diagnose: bool = False,
) -> Any:
    """Export `model` for `target` (a name, or several names: one calibration for all).

    Mirrors `edgeq export`: `calib` (a path `--calib` accepts, or a list of feed dicts) is
    split into calibration and held-out evaluation samples unless `eval_data` is given;
    `labels` (default: a labels.json in the evaluation folder) feed the task metric; `task`
    picks it (auto, ctc, classify, embed, mask, detect, generic); `metrics` adds user metrics
    (`"module:function"` or callables); `max_loss` (`"cer=1.0"`) overrides the target's default
    budget. Returns an ExportResult (one target) or a MultiExportResult (a list of targets);
    a FAIL verdict does not raise. `force`: write into an existing folder that is not an
    earlier export (only edgeq's files are replaced there; see `edgeq.outputs`).
    `allow_model_mismatch`: apply a `plan_dir` made for another model file (same graph shapes)
    instead of refusing it. `diagnose`: each tensor's own contribution to the output error in
    the plan's report."""
    from edgeq.ir.onnx_io import load_model
    from edgeq.pipeline import calibrate_model, graph_for_plan, prepare_for_quantization

    check_output(out, EXPORT, force)  # refuse a bad -o before any work
    _check_counts(runs=(runs, 1), samples=(samples, 1), eval_samples=(eval_samples, 0),
                  batch_size=(batch_size, 1))  # fmt: skip

    many = not isinstance(target, str)
    targets = _target_list(target)
    options = options or ExportOptions()
    profiles = {t: load_target(t) for t in targets}
    exporters = {t: get_exporter(profiles[t].exporter) for t in targets}  # missing extras: now
    model = Path(model)
    budgets = [b if isinstance(b, LossBudget) else parse_budget(b) for b in max_loss]
    hooks = [m if callable(m) else load_metric_hook(m) for m in metrics]
    for fn in hooks:
        register_metric(getattr(fn, "metric_name", None) or fn.__name__,
                        "max_increase" if getattr(fn, "lower_is_better", False) else "max_drop")  # fmt: skip
    tick = progress or (lambda stage, done, total: None)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    # ---- graphs and plans ------------------------------------------------------------------
    graphs: dict[str, Graph] = {}
    plans: dict[str, QuantPlan] = {}
    evaluation = _Evaluation()
    shared = None
    if plan_dir is not None:
        if many and len(targets) > 1:
            raise InputError("--plan holds one target's plan, not several",
                             "export several targets with --calib (one calibration for all)")  # fmt: skip
        plan = QuantPlan.load(plan_dir)
        t = targets[0]
        if plan.target != t:
            raise InputError(
                f"the plan in '{plan_dir}' was made for target '{plan.target}', not '{t}'",
                f"use --target {plan.target}, or calibrate again with --target {t}",
            )
        tick("preparing the model", 0, 1)
        graphs[t] = graph_for_plan(model, plan)
        plans[t] = plan = bind_plan(plan, model, graphs[t], allow_model_mismatch)
        data = eval_data if eval_data is not None else calib
        if data is not None:
            evaluation = _external_eval(data, graphs[t], eval_samples, seed, preprocess, tokenizer,
                                        eval_data is not None)  # fmt: skip
        else:
            evaluation.note = "no evaluation data (pass --eval or --calib with --plan)"
    else:
        if calib is None:
            raise InputError("export needs calibration data or a plan",
                             "pass --calib DATA (or --plan PLAN_DIR from `edgeq calibrate`)")  # fmt: skip
        from edgeq.multi_target import SharedStatistics
        from edgeq.quant.planner import make_spec

        tick("preparing the model", 0, len(targets))
        base = load_model(model)
        shared = SharedStatistics()
        for i, t in enumerate(targets):
            graphs[t] = prepare_for_quantization(base.copy(), input_shapes, input_values, t, recipe)
            # an impossible recipe fails here, for every target, before any data is read
            shared.want(
                graphs[t], make_spec(graphs[t], recipe or Recipe(), profiles[t]).observers(), t
            )
            tick("preparing the model", i + 1, len(targets))
        first = graphs[targets[0]]
        lead_task = _task_for(task, first, charset, labels, eval_data, calib)
        check_measurable(budgets, lead_task[0], lead_task[1], [_hook_name(f) for f in hooks])
        t0 = time.perf_counter()
        for t in targets:
            stage = f"{t}: " if many else ""

            def step(stage_name: str, done: int, total: int, _p: str = stage) -> None:
                tick(_p + stage_name, done, total)

            run = calibrate_model(
                model, calib, t, recipe, input_shapes=input_shapes, input_values=input_values,
                samples=samples, seed=seed, batch_size=batch_size,
                eval_samples=0 if eval_data is not None else eval_samples,
                preprocess=preprocess, tokenizer=tokenizer, progress=step, layer_report=False,
                graph=graphs[t], shared=shared, diagnose=diagnose,
            )  # fmt: skip
            plans[t] = run.plan
            graphs[t] = run.graph  # as calibrated (AWQ folds, float-island rewrites)
            if not evaluation.feeds and eval_data is None:
                evaluation = _held_out_eval(
                    calib, run, graphs[t], preprocess, tokenizer, eval_samples
                )
        timings["calibrate_s"] = time.perf_counter() - t0
        if eval_data is not None:
            evaluation = _external_eval(eval_data, first, eval_samples, seed, preprocess,
                                        tokenizer, True)  # fmt: skip
    _attach_labels(evaluation, labels, eval_data if eval_data is not None else calib)
    first = graphs[targets[0]]
    task_name, labelled = _task_for(task, first, charset, labels, eval_data, calib,
                                    evaluation.labels)  # fmt: skip
    if plan_dir is not None:
        check_measurable(budgets, task_name, labelled, [_hook_name(f) for f in hooks])

    # ---- per target: export, evaluate, judge ----------------------------------------------
    out = Path(out)
    results: dict[str, ExportResult] = {}
    references = _shared_references(graphs, plans)

    def write(tmp: Path) -> None:
        tmp.mkdir()
        with _log_to_file() as records:
            for t in targets:
                folder = tmp / t if many else tmp
                folder.mkdir(exist_ok=True)
                t0 = time.perf_counter()
                rep, verdict = _export_one(
                    model, t, graphs[t], plans[t], exporters[t], profiles[t], folder, options,
                    evaluation, task_name, charset, hooks, budgets, runs, latency_seconds,
                    (lambda s, d, n, _t=t: tick(f"{_t}: {s}" if many else s, d, n)), references[t],
                )  # fmt: skip
                rep["timing"] = {"export_and_check_s": round(time.perf_counter() - t0, 2)}
                if shared is not None:
                    rep["timing"]["shared_calibration"] = {
                        "passes": shared.passes_run, "targets_per_pass": shared.groups(),
                        "seconds": round(shared.seconds, 2)}  # fmt: skip
                _write_reports(folder, rep, html)
                results[t] = ExportResult(out / t if many else out, Path(rep["artifact"]["file"]),
                                          rep, verdict)  # fmt: skip
            if many:
                summary = comparison_report(model, {t: r.report for t, r in results.items()},
                                            time.perf_counter() - t_start, timings)  # fmt: skip
                (tmp / REPORT_JSON).write_text(json.dumps(summary, indent=1, default=json_default))
                (tmp / REPORT_MD).write_text(comparison_markdown(summary))
                if html:
                    from edgeq.html_report import comparison_html

                    (tmp / REPORT_HTML).write_text(comparison_html(summary, {
                        t: r.report for t, r in results.items()}))  # fmt: skip
                results["__summary__"] = ExportResult(out, out, summary)
        (tmp / LOG_FILE).write_text("\n".join(records) + "\n")

    write_output(out, EXPORT, write, force=force)
    summary_result = results.pop("__summary__", None)
    for t, r in results.items():
        r.artifact = (out / t if many else out) / r.report["artifact"]["file"]
    if many:
        assert summary_result is not None
        return MultiExportResult(out, results, summary_result.report)
    return results[targets[0]]


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


def _shared_references(
    graphs: Mapping[str, Graph], plans: Mapping[str, QuantPlan]
) -> dict[str, Callable[[], Any]]:
    """Per target, a maker of the tapped float forward for its per-layer report: one compiled
    interpreter per prepared graph, tapping what every plan on that graph quantizes."""
    from edgeq.evaluation import quantized_activations
    from edgeq.quant.plan import graph_fingerprint

    fps = {t: graph_fingerprint(g) for t, g in graphs.items()}
    taps: dict[str, set[str]] = {}
    for t, fp in fps.items():
        taps.setdefault(fp, set()).update(quantized_activations(graphs[t], plans[t]))
    made: dict[str, Interpreter] = {}

    def maker(t: str) -> Callable[[], Any]:
        def make() -> Interpreter:
            fp = fps[t]
            if fp not in made:
                made[fp] = Interpreter(graphs[t], taps=sorted(taps[fp]))
            return made[fp]

        return make

    return {t: maker(t) for t in graphs}


def _target_list(target: str | Sequence[str]) -> list[str]:
    targets = [target] if isinstance(target, str) else list(dict.fromkeys(target))
    if not targets:
        raise InputError("no target given", "pass --target (e.g. --target onnx)")
    return ordered_targets(targets)


def _hook_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "metric_name", None) or fn.__name__


def _context(graph: Graph, charset: str | Path | None,
             feeds: Sequence[Mapping[str, np.ndarray]] | None = None,
             mask_handling: bool = True) -> TaskContext:  # fmt: skip
    """What the task metrics read besides the outputs; with `feeds` (the evaluation samples) of
    a token model, their attention masks, so metrics exclude padded positions."""
    producers = graph.producers()
    mask = find_token_mask(graph) if feeds is not None and mask_handling else None
    return TaskContext(
        output_names=tuple(graph.output_names), metadata=dict(graph.metadata),
        charset_file=Path(charset) if charset else None,
        producers={o: producers[o].op_type for o in graph.output_names if o in producers},
        output_shapes={v.name: tuple(v.shape) if v.shape is not None else None  # type: ignore[misc]
                       for v in graph.outputs},
        token_masks=[np.asarray(f[mask]) for f in feeds] if mask and feeds is not None else None,
    )  # fmt: skip


def _task_for(task: str, graph: Graph, charset: Any, labels: Any, eval_data: Any, calib: Any,
              label_values: list[Any] | None = None) -> tuple[str, bool]:  # fmt: skip
    """(task name, whether labels exist) — decided from the graph before any data is run."""
    from edgeq.calibration.labels import find_labels

    labelled = label_values is not None or labels is not None or find_labels(
        eval_data if eval_data is not None else calib) is not None  # fmt: skip
    if task != "auto":
        return task, labelled
    return guess_task(_context(graph, charset), label_values), labelled


def _held_out_eval(calib: Any, run: Any, graph: Graph, preprocess: Any, tokenizer: Any,
                   eval_samples: int) -> _Evaluation:  # fmt: skip
    from edgeq.calibration import open_source, validate

    ev = _Evaluation(source="held out of --calib", held_out=run.held_out)
    if not run.report_names:
        ev.note = "no evaluation samples (--eval-samples 0)" if not eval_samples else ""
        return ev
    source = open_source(calib, graph.inputs, preprocess=preprocess, tokenizer=tokenizer)
    ev.names = list(run.report_names)
    ev.feeds = [validate(source.load(n), graph.inputs, n) for n in ev.names]
    if not run.held_out:
        ev.source = "calibration samples"
        ev.note = (f"the calibration data ({len(source)} samples) is too small to hold any out: "
                   f"evaluated on {len(ev.names)} calibration samples (add samples, or pass --eval)")  # fmt: skip
    return ev


def _external_eval(data: Any, graph: Graph, n: int, seed: int, preprocess: Any, tokenizer: Any,
                   held_out: bool) -> _Evaluation:  # fmt: skip
    from edgeq.calibration import open_source, subset, validate

    source = open_source(data, graph.inputs, preprocess=preprocess, tokenizer=tokenizer)
    names = subset(source, min(n, len(source)), seed) if n else []
    ev = _Evaluation(names=names, held_out=held_out,
                     source="--eval data" if held_out else "--calib data (may overlap the plan's calibration)")  # fmt: skip
    ev.feeds = [validate(source.load(x), graph.inputs, x) for x in names]
    if not held_out:
        ev.note = "evaluated on --calib samples, which may overlap the plan's calibration samples"
    return ev


def _attach_labels(ev: _Evaluation, labels: Any, data: Any) -> None:
    from edgeq.calibration.labels import find_labels, labels_for, read_labels

    if labels is not None and not ev.names:  # never ignore a file the user named
        raise InputError(f"--labels '{labels}' given, but there is no evaluation data to label",
                         "pass --eval DATA (or --calib DATA with --plan)")  # fmt: skip
    path = Path(labels) if labels is not None else find_labels(data)
    if path is None or not ev.names:
        return
    ev.labels, ev.missing_labels = labels_for(ev.names, read_labels(path))


@contextmanager
def _log_to_file() -> Iterator[list[str]]:
    """Collect every log record (INFO and up; edgeq's DEBUG too) during the export."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.INFO or record.name.startswith("edgeq"):
                records.append(f"{record.levelname:7s} {record.name}: {record.getMessage()}")

    handler = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _export_one(model: Path, target: str, graph: Graph, plan: QuantPlan, exporter: Any,
                profile: Any, folder: Path, options: ExportOptions, ev: _Evaluation,
                task_name: str, charset: Any, hooks: Sequence[Callable[..., Any]],
                budgets: Sequence[LossBudget], runs: int, latency_seconds: float,
                progress: Progress, reference: Callable[[], Any]) -> tuple[dict[str, Any], Verdict]:  # fmt: skip
    name = "model" + exporter.suffix
    progress("writing the artifact", 0, 1)
    with native_output_to_log(f"{target} exporter"):
        artifact = exporter.export(graph, plan, profile, folder / name, options)
    plan.save(folder / "plan")
    report: dict[str, Any] = {
        "format": "edgeq-export-report",
        "edgeq_version": __version__,
        "target": target,
        "plan_hash": plan.plan_hash(),
        "model": {"file": model.name, "path": str(model.resolve()),
                  "input_shapes": plan.model.get("input_shapes", {})},
        "recipe": _plan_summary(plan),
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="edgeq-float-") as fdir:
        with native_output_to_log(f"{target} float exporter"):
            baseline = exporter.export(graph, None, profile, Path(fdir) / name, options)
        report["artifact"] = {
            "file": name, "format": artifact.format, "bytes": artifact.size_bytes,
            "float_bytes": baseline.size_bytes,
            "size_ratio": artifact.size_bytes / max(baseline.size_bytes, 1),
            "notes": artifact.notes, "checks": artifact.checks,
        }  # fmt: skip
        report["weights"] = weight_report(exporter, artifact.path, graph, plan)
        report["evaluation"] = {"samples": len(ev.feeds), "held_out": ev.held_out,
                                "source": ev.source, "labels": ev.labels is not None,
                                **({"missing_labels": ev.missing_labels} if ev.missing_labels else {}),
                                **({"note": ev.note} if ev.note else {})}  # fmt: skip
        layers = weight_errors(graph, plan)
        if ev.feeds:
            _evaluate(report, graph, plan, artifact, baseline, exporter, ev, task_name, charset,
                      hooks, runs, latency_seconds, progress, layers, reference(),
                      profile.raw.get("output_dtype"))  # fmt: skip
        else:
            report["evaluation"]["skipped"] = ev.note or "no evaluation data"
            report["layers"] = layers
            report["histograms"] = value_histograms(
                graph, plan, [r["tensor"] for r in layers[:3]], {}
            )
    where = _where(ev)
    verdict = judge([_metric(m) for m in report.get("task", {}).get("metrics", [])], budgets,
                    profile, where)  # fmt: skip
    report["verdict"] = verdict.as_dict()
    if verdict.status == "FAIL":
        from edgeq.verdict import next_steps

        report["verdict"]["next_steps"] = next_steps(plan, profile)
    return report, verdict


def _metric(row: Mapping[str, Any]) -> Any:
    from edgeq.metrics import MetricValue

    nan = float("nan")
    return MetricValue(row["name"], row["title"],
                       row["float"] if row["float"] is not None else (float("inf") if row["unit"] == "dB" else nan),
                       row["quant"] if row["quant"] is not None else nan, row["against"],
                       row["unit"], row["samples"], row["kind"])  # fmt: skip


def _where(ev: _Evaluation) -> str:
    if not ev.feeds:
        return "no evaluation data"
    kind = "held-out" if ev.held_out else "calibration"
    against = "against labels" if ev.labels is not None else "against float (no labels)"
    return f"{len(ev.feeds)} {kind} samples, {against}"


def _plan_summary(plan: QuantPlan) -> dict[str, Any]:
    """What the plan does, in a few numbers: weight and activation dtypes and counts."""
    counts: dict[str, int] = {}
    for t in plan.tensors.values():
        if t.is_quantized and t.role in ("weight", "activation"):
            key = f"{t.role} {t.dtype}" + (f" {t.granularity}" if t.role == "weight" else "")
            counts[key] = counts.get(key, 0) + 1
    w = sorted({t.qdtype.bits for t in plan.quantized("weight")})
    a = sorted({t.qdtype.bits for t in plan.quantized("activation")})
    label = f"W{'/'.join(map(str, w)) or 'f'}A{'/'.join(map(str, a)) or 'f'}"
    return {"label": label, "tensors": counts, "recipe": plan.recipe}


def _evaluate(report: dict[str, Any], graph: Graph, plan: QuantPlan, artifact: Artifact,
              baseline: Artifact, exporter: Any, ev: _Evaluation, task_name: str, charset: Any,
              hooks: Sequence[Callable[..., Any]], runs: int, latency_seconds: float,
              progress: Progress, weight_rows: list[dict[str, Any]], reference: Any,
              output_dtype: str | None = None) -> None:  # fmt: skip
    progress("simulating the plan (per-layer error)", 0, 1)
    layers = evaluate_layers(graph, plan, ev.feeds, reference)
    act_rows = activation_rows(plan, layers.rows)
    report["layers"] = sorted([*act_rows, *weight_rows], key=lambda r: r["sqnr_db"])
    worst = [r["tensor"] for r in act_rows if not r.get("output")][:3] + \
        [r["tensor"] for r in weight_rows][:3]  # fmt: skip
    report["histograms"] = value_histograms(graph, plan, worst, layers.first_values)
    runtime = _runtime_name(artifact)
    with native_output_to_log(f"opening {runtime}"):
        runner = exporter.open(artifact.path)
        float_runner = exporter.open(baseline.path)
    art_out = run_artifact(runner, ev.feeds, f"running the artifact on {runtime}", progress)
    n_float = min(FLOAT_CHECK_SAMPLES, len(ev.feeds))
    float_art = run_artifact(float_runner, ev.feeds[:n_float], "running the float artifact",
                             progress)  # fmt: skip
    ctx = _context(graph, charset, ev.feeds, bool(plan.recipe.get("mask_handling", True)))
    report["outputs"] = compare(art_out, layers.simulated, layers.reference, plan,
                                graph.output_names, output_dtype, ctx.token_masks)  # fmt: skip
    float_cmp = compare(float_art, None, layers.reference[:n_float], None, graph.output_names,
                        token_masks=ctx.token_masks)  # fmt: skip
    for name, row in report["outputs"].items():
        row["float_artifact_vs_float"] = float_cmp[name]["vs_float"]
    progress("computing the task metric", 0, 1)
    used, rows = evaluate_task(task_name, art_out, layers.reference, ev.labels, ctx, hooks)
    _, sim_rows = evaluate_task(
        task_name, layers.simulated, layers.reference, ev.labels, ctx, hooks
    )
    report["task"] = {"name": used, "metrics": [r.as_dict() for r in rows],
                      "simulator_metrics": [r.as_dict() for r in sim_rows]}  # fmt: skip
    stand_in = getattr(runner, "stand_in", None)
    if stand_in:
        report["latency"] = {"runtime": runtime, "skipped": f"not measured: {stand_in}"}
        return
    progress(f"timing on {runtime} (≤ {latency_seconds:g} s)", 0, 1)
    with native_output_to_log("latency"):
        lat = timed_latency({"quantized": runner, "float": float_runner}, ev.feeds[0],
                            latency_seconds, max(runs, 1))  # fmt: skip
    q, f = lat["quantized"], lat["float"]
    report["latency"] = {"runtime": runtime, "runs": q["runs"], "budget_s": latency_seconds,
                         "quantized": q, "float": f,
                         "speedup": f["p50_ms"] / max(q["p50_ms"], 1e-9)}  # fmt: skip


def _runtime_name(artifact: Artifact) -> str:
    return {"onnx": "onnxruntime CPU", "tflite": "LiteRT", "mlx": "MLX CPU",
            "mlpackage": "numpy MIL evaluator (Linux)"}.get(artifact.format, artifact.format)  # fmt: skip


def _write_reports(folder: Path, report: dict[str, Any], html: bool) -> None:
    (folder / REPORT_JSON).write_text(json.dumps(report, indent=1, default=json_default))
    (folder / REPORT_MD).write_text(report_markdown(report))
    if html:
        from edgeq.html_report import export_html

        (folder / REPORT_HTML).write_text(export_html(report))


def _fmt_metric(m: Mapping[str, Any], key: str) -> str:
    v = m.get(key)
    if v is None:
        return "—"
    return f"{v:.2f}%" if m["unit"] == "%" else (f"{v:.1f} dB" if m["unit"] == "dB" else f"{v:.4f}")


def report_markdown(report: Mapping[str, Any]) -> str:
    a = report["artifact"]
    v = report.get("verdict", {})
    lines = [
        f"# edgeq export: {report.get('model', {}).get('file', '?')} → {report['target']}",
        "",
        f"**{v.get('line', 'no verdict')}**",
        "",
        *(["What to try next:", "", *(f"- {s}" for s in v["next_steps"]), ""]
          if v.get("next_steps") else []),
        f"artifact `{a.get('file', '')}` ({a['format']}, plan {report.get('recipe', {}).get('label', '')}): "
        f"{a['bytes'] / 1e6:.2f} MB, {a['size_ratio']:.3f}x the float {a['format']} "
        f"({a['float_bytes'] / 1e6:.2f} MB); plan {report['plan_hash'][:12]}; edgeq {report['edgeq_version']}",
        "",
    ]  # fmt: skip
    ev = report["evaluation"]
    if ev.get("note"):
        lines += [f"> {ev['note']}", ""]
    task = report.get("task")
    if task and task.get("metrics"):
        sim = {(m["name"], m["against"]): m for m in task.get("simulator_metrics", [])}
        lines += [f"task `{task['name']}` on {ev['samples']} {'held-out' if ev.get('held_out') else 'calibration'} samples:", "",
                  "| metric | float | simulator | artifact |", "|---|---|---|---|"]  # fmt: skip
        for m in task["metrics"]:
            s = sim.get((m["name"], m["against"]), {})
            lines.append(f"| {m['title']} | {_fmt_metric(m, 'float')} | "
                         f"{_fmt_metric(s, 'quant') if s else '—'} | {_fmt_metric(m, 'quant')} |")  # fmt: skip
        lines.append("")
    if "outputs" in report:
        lines += ["| output | within 1 step of simulator | step | SQNR vs float (dB) | cosine vs float | simulator SQNR (dB) |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for name, row in report["outputs"].items():
            vs = row.get("vs_simulator", {})
            sim_row = row.get("simulator_vs_float", {})
            lines.append(
                f"| {name} | {vs.get('within_one_step', float('nan')) * 100:.2f}% | "
                f"{vs.get('step', float('nan')):.3g} ({vs.get('step_source', '')}) | "
                f"{row['vs_float']['sqnr_db']:.1f} | {row['vs_float']['cosine']:.5f} | "
                f"{sim_row.get('sqnr_db', float('nan')):.1f} |"
            )
        if any(r["vs_float"].get("padding_excluded") for r in report["outputs"].values()):
            lines += [
                "",
                "(errors against float over real tokens: padded token positions excluded)",
            ]
    else:
        lines.append(f"accuracy: {ev.get('skipped', 'not measured')}")
    layers = report.get("layers", [])
    if layers:
        lines += ["", "worst quantized tensors (SQNR vs float; activations propagated, weights on their own):", "",
                  "| tensor | role | bits | SQNR (dB) |", "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r['tensor']} | {r.get('role', '')} | {r.get('bits', '')} | {r['sqnr_db']:.1f} |"
                  for r in layers[:10]]  # fmt: skip
    if "latency" in report:
        lat = report["latency"]
        if "skipped" in lat:
            lines += ["", f"latency on {lat['runtime']}: {lat['skipped']}"]
        else:
            lines += ["", f"latency on {lat['runtime']} (median of {lat['runs']} interleaved runs): "
                      f"quantized {lat['quantized']['p50_ms']:.2f} ms, float "
                      f"{lat['float']['p50_ms']:.2f} ms, speedup {lat['speedup']:.2f}x"]  # fmt: skip
    lines += weight_markdown(report.get("weights", {}))
    if a["notes"]:
        lines += ["", "notes:", *[f"- {n}" for n in a["notes"]]]
    return "\n".join(lines) + "\n"


def comparison_report(model: Path, reports: Mapping[str, Mapping[str, Any]], seconds: float,
                      timings: Mapping[str, float]) -> dict[str, Any]:  # fmt: skip
    """One row per target: size, lead task metric, verdict, latency."""
    rows = []
    for t, r in reports.items():
        lead = (r.get("task", {}).get("metrics") or [None])[0]
        lat = r.get("latency", {})
        rows.append({
            "target": t, "artifact": f"{t}/{r['artifact']['file']}", "format": r["artifact"]["format"],
            "plan": r.get("recipe", {}).get("label", ""),
            "bytes": r["artifact"]["bytes"], "size_ratio": r["artifact"]["size_ratio"],
            "metric": lead, "verdict": r["verdict"]["status"], "verdict_line": r["verdict"]["line"],
            "latency_ms": lat.get("quantized", {}).get("p50_ms"),
            "float_latency_ms": lat.get("float", {}).get("p50_ms"),
            "speedup": lat.get("speedup"), "runtime": lat.get("runtime"),
            "latency_note": lat.get("skipped"),
        })  # fmt: skip
    return {"format": "edgeq-export-comparison", "edgeq_version": __version__,
            "model": {"file": model.name, "path": str(model.resolve())},
            "targets": rows, "seconds": round(seconds, 2),
            "calibrate_s": round(timings.get("calibrate_s", 0.0), 2),
            "verdict": "PASS" if all(r["verdict"] == "PASS" for r in rows) else "FAIL"}  # fmt: skip


def comparison_markdown(summary: Mapping[str, Any]) -> str:
    lines = [f"# edgeq export: {summary['model']['file']} → {', '.join(r['target'] for r in summary['targets'])}",
             "", f"**{summary['verdict']}** (one calibration for every target; {summary['seconds']:.0f} s)", "",
             "| target | plan | size vs float | task metric (artifact / float) | verdict | latency vs float |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in summary["targets"]:
        m = r["metric"]
        metric = f"{m['name']} {_fmt_metric(m, 'quant')} / {_fmt_metric(m, 'float')}" if m else "—"
        lat = (f"{r['latency_ms']:.2f} vs {r['float_latency_ms']:.2f} ms ({r['runtime']})"
               if r["latency_ms"] is not None else (r["latency_note"] or "—"))  # fmt: skip
        lines.append(f"| {r['target']} | {r['plan']} | {r['size_ratio']:.3f}x | {metric} | "
                     f"{r['verdict']} | {lat} |")  # fmt: skip
    return "\n".join(lines) + "\n"


__all__ = [
    "ExportResult",
    "MultiExportResult",
    "comparison_report",
    "evaluate_artifact",
    "export_model",
    "report_markdown",
]
