"""`edgeq devicetest`: ship an artifact + the standalone runner + sample inputs to a device, run
it there, pull outputs and timings back, compare with the simulator and with float, check the
target's budgets, and write a report (atomically; a failed run writes a "failed" report only).
"""

from __future__ import annotations

import io
import json
import logging
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeq import __version__
from edgeq.errors import EdgeqError, InputError
from edgeq.outputs import DEVICETEST, check_output, write_output
from edgeq.quant.plan import json_default

from . import remote_runner
from .transports import (
    AdbTransport,
    DeviceError,
    DeviceOptions,
    Transport,
    XcodeTransport,
    open_transport,
    parse_device,
)

log = logging.getLogger(__name__)

RUNNER = Path(remote_runner.__file__)
DEFAULT_MIN_WITHIN_STEP = 0.99
REPORT_JSON = "devicetest_report.json"
REPORT_MD = "devicetest_report.md"


@dataclass
class Context:
    """What the artifact was made from, when known: the prepared graph and the plan."""

    graph: Any = None  # edgeq.ir.graph.Graph
    plan: Any = None  # edgeq.quant.plan.QuantPlan
    model: Path | None = None
    plan_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class DeviceTestResult:
    report: dict[str, Any]
    outputs: list[dict[str, np.ndarray]]
    passed: bool
    report_path: Path | None = None


# ---------------------------------------------------------------- context
def find_context(artifact: Path, model: Path | None, plan_dir: Path | None,
                 allow_model_mismatch: bool = False) -> Context:  # fmt: skip
    """Graph and plan for `artifact`: from --model/--plan, or from the export folder it is in
    (plan/plan.json names the model file; it is looked up beside the folder)."""
    from edgeq.quant.plan import QuantPlan

    ctx = Context()
    folder = artifact.parent
    if plan_dir is None and (folder / "plan" / "plan.json").is_file():
        plan_dir = folder / "plan"
        ctx.notes.append(f"plan found in the export folder: {plan_dir}")
    if plan_dir is not None:
        ctx.plan = QuantPlan.load(plan_dir)
        ctx.plan_dir = Path(plan_dir)
        if model is None:
            model = _model_from_plan(ctx.plan, folder)
    if model is None:
        return ctx
    model = Path(model)
    if not model.is_file():
        raise InputError(f"--model '{model}' does not exist", "pass the float .onnx model")
    ctx.model = model
    if ctx.plan is not None:
        from edgeq.export import bind_plan
        from edgeq.pipeline import graph_for_plan

        ctx.graph = graph_for_plan(model, ctx.plan)
        ctx.plan = bind_plan(ctx.plan, model, ctx.graph, allow_model_mismatch)
    else:
        from edgeq.ir.onnx_io import load_model
        from edgeq.pipeline import prepare_for_quantization

        ctx.graph = prepare_for_quantization(load_model(model))
    return ctx


def _model_from_plan(plan: Any, folder: Path) -> Path:
    from edgeq.files import file_sha256

    info = plan.model or {}
    name = info.get("file")
    fix = "pass --model MODEL.onnx (the float model the plan was made from)"
    if not name:
        raise InputError("the plan does not name its model file", fix)
    recorded = [Path(info["path"])] if info.get("path") else []  # absolute, since edgeq 0.1
    for cand in (*recorded, folder / name, folder.parent / name, Path.cwd() / name):
        if cand.is_file():
            if info.get("sha256") and file_sha256(cand) != info["sha256"]:
                raise InputError(f"'{cand}' is not the model the plan was made from (sha256)", fix)
            return cand
    where = f"at '{info['path']}' nor " if info.get("path") else ""
    raise InputError(f"the plan's model '{name}' is neither {where}beside '{folder}'", fix)


# ---------------------------------------------------------------- io mapping and feeds
def _perm_to(src: Sequence[int], dst: Sequence[int]) -> list[int] | None:
    """None if the shapes match; the channels-last permutation if it maps `src` to `dst`."""
    src, dst = [int(d) for d in src], [int(d) for d in dst]
    if src == dst:
        return None
    r = len(src)
    for perm in ([0, *range(2, r), 1], [0, r - 1, *range(1, r - 1)]):
        if r >= 3 and [src[p] for p in perm] == dst:
            return perm
    raise InputError(f"artifact shape {dst} does not match the model's {src} (nor as NHWC)",
                     "export the artifact from this model (or pass the right --model)")  # fmt: skip


def io_mapping(graph: Any, desc: Mapping[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    """Graph I/O -> artifact I/O: names (by name, else by position) and layout permutations."""
    if graph is None:
        return {}
    result: dict[str, list[dict[str, Any]]] = {"inputs": [], "outputs": []}
    for key, values in (("inputs", graph.inputs), ("outputs", graph.outputs)):
        art = list((desc or {}).get(key, []))
        if art and len(art) != len(values):
            raise InputError(f"the artifact has {len(art)} {key}, the model {len(values)}",
                             "pass the model this artifact was exported from")  # fmt: skip
        by_name = {a["name"]: a for a in art}
        for i, v in enumerate(values):
            name = v if isinstance(v, str) else v.name
            a = by_name.get(name) or (art[i] if art else None)
            gshape = graph.info(name).shape if isinstance(v, str) else v.shape
            perm = None
            ashape = a.get("shape") if a is not None else None
            known = gshape is not None and all(isinstance(d, int) for d in gshape)
            if ashape is not None and known:
                if key == "inputs":
                    perm = _perm_to(gshape, ashape)
                else:
                    fwd = _perm_to(gshape, ashape)
                    perm = None if fwd is None else [int(j) for j in np.argsort(fwd)]
            result[key].append({"name": name, "artifact_name": a["name"] if a else name,
                                "perm": perm})  # fmt: skip
    return result


def describe_artifact(artifact: Path) -> dict[str, Any] | None:
    """The artifact's I/O read on this machine (None when no local runtime can open it)."""
    try:
        if artifact.suffix == ".mlpackage":
            import coremltools as ct

            spec = ct.models.MLModel(str(artifact), skip_model_load=True).get_spec()
            return {"runtime": "coremltools",
                    "inputs": [remote_runner._coreml_feature(f) for f in spec.description.input],
                    "outputs": [remote_runner._coreml_feature(f)
                                for f in spec.description.output]}  # fmt: skip
        return remote_runner.describe(artifact)
    except Exception as exc:  # no local runtime: the device's runner maps by name
        log.info("could not read %s here: %s", artifact, exc)
        return None


def make_feeds(ctx: Context, desc: Mapping[str, Any] | None, inputs: Path | None,
               samples: int, seed: int) -> tuple[list[dict[str, np.ndarray]], str]:  # fmt: skip
    """Feeds in the graph's layout (or the artifact's, without a model), and where they came from."""
    from edgeq.ir.graph import ValueInfo

    if ctx.graph is not None:
        infos = list(ctx.graph.inputs)
    elif desc is not None:
        infos = [ValueInfo(d["name"], np.dtype(d["dtype"]), tuple(int(s) for s in d["shape"]))
                 for d in desc["inputs"]]  # fmt: skip
    else:
        raise InputError("cannot tell this artifact's inputs here",
                         "pass --model MODEL.onnx (or an export folder's artifact)")  # fmt: skip
    if inputs is not None:
        return _load_inputs(Path(inputs), infos, samples), f"{inputs}"
    from edgeq.files import check_size, nbytes_of

    per_sample = sum(nbytes_of(v.shape, np.float32 if v.dtype.kind == "f" else v.dtype)
                     for v in infos)  # fmt: skip
    check_size(samples * per_sample, f"--samples {samples} random input samples")
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(samples):
        feed = {}
        for v in infos:
            shape = tuple(int(d) for d in v.shape)
            if np.issubdtype(v.dtype, np.floating):
                feed[v.name] = rng.standard_normal(shape).astype(np.float32)
            elif v.dtype == np.bool_:
                feed[v.name] = rng.integers(0, 2, shape).astype(np.bool_)
            else:
                feed[v.name] = rng.integers(0, 2, shape).astype(v.dtype)
        feeds.append(feed)
    return feeds, f"random (standard normal floats, integers in {{0, 1}}, seed {seed})"


def _load_inputs(path: Path, infos: list[Any], samples: int) -> list[dict[str, np.ndarray]]:
    from edgeq.calibration import open_source, validate
    from edgeq.files import load_npy, load_npz

    if path.is_file() and path.suffix == ".npz":
        return [validate(load_npz(path, f"--inputs '{path}'"), infos, path.name)]
    if path.is_file() and path.suffix == ".npy" and len(infos) == 1:
        return [validate({infos[0].name: load_npy(path, f"--inputs '{path}'")}, infos, path.name)]
    source = open_source(path, infos)
    names = source.names()[:samples]
    if not names:
        raise InputError(f"--inputs '{path}' holds no samples", "pass a folder of .npz/.npy files")
    return [validate(source.load(n), infos, n) for n in names]


# ---------------------------------------------------------------- the run
def _job(artifact_name: str, feeds: list[dict[str, np.ndarray]], io_map: Mapping[str, Any],
         rounding: str, runs: int, warmup: int, pause_s: float,
         extra: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:  # fmt: skip
    arrays: dict[str, np.ndarray] = {}
    sample_keys = []
    for i, feed in enumerate(feeds):
        keys = {}
        for j, (name, value) in enumerate(feed.items()):
            keys[name] = f"s{i}_{j}"
            arrays[keys[name]] = np.asarray(value)
        sample_keys.append(keys)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    job = {"artifact": artifact_name, "runtime": "auto", "inputs": "inputs.npz",
           "samples": sample_keys, "io": dict(io_map), "rounding": rounding, "runs": runs,
           "warmup": warmup, "outputs": "outputs.npz", "result": "result.json",
           "pause_s": pause_s, **extra}  # fmt: skip
    return job, buf.getvalue()


def run_runner(transport: Transport, artifact: Path, job: dict[str, Any], inputs_npz: bytes,
               timeout: float | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:  # fmt: skip
    """Push runner + artifact + inputs, run, pull the result. The transport must be open."""
    with tempfile.TemporaryDirectory(prefix="edgeq-devicetest-host.") as tmp:
        stage = Path(tmp)
        (stage / "job.json").write_text(json.dumps(job))
        (stage / "inputs.npz").write_bytes(inputs_npz)
        transport.push(RUNNER, "remote_runner.py")
        transport.push(stage / "job.json", "job.json")
        transport.push(stage / "inputs.npz", "inputs.npz")
        transport.push(artifact, artifact.name)
        if isinstance(transport, XcodeTransport) and artifact.suffix == ".mlpackage":
            job = {**job, "artifact": transport.compile(artifact.name),
                   "spec_artifact": artifact.name}  # fmt: skip
            (stage / "job.json").write_text(json.dumps(job))
            transport.push(stage / "job.json", "job.json")
        res = transport.exec([transport.python, "remote_runner.py", "job.json"], timeout)
        if res.returncode != 0:
            msg = [ln for ln in res.stderr.splitlines() if ln.startswith("edgeq-runner: error:")]
            why = (msg[-1].removeprefix("edgeq-runner: error: ") if msg
                   else _describe_exit(res.returncode, res.stderr))  # fmt: skip
            raise DeviceError(f"the runner on {transport.spec} failed: {why}",
                              "check the device is up and run again; --device local runs the "
                              "same runner on this machine")  # fmt: skip
        try:
            transport.pull("result.json", stage / "result.json")
            transport.pull("outputs.npz", stage / "outputs.npz")
            result = json.loads((stage / "result.json").read_text())
            with np.load(stage / "outputs.npz", allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise DeviceError(f"the runner on {transport.spec} left no readable result ({exc})",
                              "run again; check the device's free space") from exc  # fmt: skip
        if result.get("status") != "ok":
            raise DeviceError(f"the runner on {transport.spec} did not finish")
    return result, arrays


def _describe_exit(code: int, stderr: str) -> str:
    tail = " | ".join([ln for ln in stderr.strip().splitlines() if ln.strip()][-3:])
    if code < 0:
        return f"killed by signal {-code}" + (f" ({tail})" if tail else "")
    if code == 255:
        return ("it ended without a result: the runner was killed or the connection dropped "
                "(ssh exit 255)" + (f": {tail}" if tail else ""))  # fmt: skip
    if code in (137, 143):
        return f"runner killed (exit {code})" + (f": {tail}" if tail else "")
    return f"exit {code}" + (f": {tail}" if tail else ": no message")


def run_adb_benchmark(transport: AdbTransport, artifact: Path, runs: int, warmup: int,
                      timeout: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Latency only, with a native runner the user names (benchmark_model / perf_test)."""
    opts = transport.options
    if opts.adb_runner is None:
        raise InputError(f"--adb-runner-kind {opts.adb_runner_kind} needs --adb-runner BINARY",
                         "pass the Android build of the tool (e.g. benchmark_model)")  # fmt: skip
    binary = Path(opts.adb_runner)
    transport.push(binary, binary.name)
    transport.make_executable(binary.name)
    transport.push(artifact, artifact.name)
    argv = adb_benchmark_argv(opts.adb_runner_kind, binary.name, artifact.name, runs, warmup,
                              opts.runner_args)  # fmt: skip
    res = transport.exec(argv, timeout)
    if res.returncode != 0:
        raise DeviceError(f"{binary.name} failed on {transport.spec}: "
                          f"{_describe_exit(res.returncode, res.stderr + res.stdout)}")  # fmt: skip
    return parse_benchmark_output(opts.adb_runner_kind, res.stdout + "\n" + res.stderr)


def adb_benchmark_argv(kind: str, binary: str, artifact: str, runs: int, warmup: int,
                       extra: Sequence[str] = ()) -> list[str]:  # fmt: skip
    if kind == "benchmark_model":
        return [f"./{binary}", f"--graph={artifact}", f"--num_runs={runs}",
                f"--warmup_runs={warmup}", *extra]  # fmt: skip
    if kind == "onnxruntime_perf_test":
        return [f"./{binary}", "-m", "times", "-r", str(runs), "-e", "cpu", *extra, artifact]
    raise InputError(f"unknown --adb-runner-kind '{kind}'",
                     "use python, benchmark_model or onnxruntime_perf_test")  # fmt: skip


_NUM = r"([0-9.]+(?:[eE][-+]?[0-9]+)?)"


def parse_benchmark_output(kind: str, text: str) -> dict[str, Any]:
    """Latency (ms) from benchmark_model's or onnxruntime_perf_test's log."""
    lat: dict[str, Any] = {}
    if kind == "benchmark_model":
        stats = re.findall(
            rf"count=(\d+) first=\d+ curr=\d+ min={_NUM} max={_NUM} avg={_NUM}", text
        )
        if stats:  # the last stats line is the timed run, in microseconds
            count, mn, mx, avg = stats[-1]
            lat = {"runs": int(count), "min_ms": float(mn) / 1e3, "max_ms": float(mx) / 1e3,
                   "mean_ms": float(avg) / 1e3}  # fmt: skip
        m = re.search(rf"Inference \(avg\): {_NUM}", text)
        if m and "mean_ms" not in lat:
            lat["mean_ms"] = float(m.group(1)) / 1e3
    elif kind == "onnxruntime_perf_test":
        for pct in ("50", "90", "95", "99"):
            m = re.search(rf"P{pct} Latency: {_NUM} s", text)
            if m:
                lat[f"p{pct}_ms"] = float(m.group(1)) * 1e3
        m = re.search(rf"Average inference time cost:\s*{_NUM} ms", text)
        if m:
            lat["mean_ms"] = float(m.group(1))
    if not lat:
        raise DeviceError(f"no latency in the {kind} output", "run the tool by hand to see its log")
    return lat


# ---------------------------------------------------------------- budgets and report
def _budgets(ctx: Context, min_within_step: float | None,
             max_latency_ms: float | None) -> dict[str, Any]:  # fmt: skip
    budgets: dict[str, Any] = {}
    if ctx.plan is not None:
        from edgeq.targets import load_target

        raw = dict(load_target(ctx.plan.target).raw.get("budgets", {}))
        budgets["min_within_step"] = float(raw.get("min_within_step", DEFAULT_MIN_WITHIN_STEP))
        if raw.get("max_latency_ms") is not None:
            budgets["max_latency_ms"] = float(raw["max_latency_ms"])
    if min_within_step is not None:
        budgets["min_within_step"] = float(min_within_step)
    if max_latency_ms is not None:
        budgets["max_latency_ms"] = float(max_latency_ms)
    return budgets


def _checks(report: Mapping[str, Any], budgets: Mapping[str, Any]) -> list[dict[str, Any]]:
    checks = []
    outputs = report.get("outputs") or {}
    if "min_within_step" in budgets and outputs:
        for name, row in outputs.items():
            vs = row.get("vs_simulator")
            if vs is None:
                continue
            checks.append({"check": f"{name}: within one step of the simulator",
                           "value": vs["within_one_step"], "limit": budgets["min_within_step"],
                           "passed": vs["within_one_step"] >= budgets["min_within_step"]})  # fmt: skip
    p50 = (report.get("latency") or {}).get("p50_ms", (report.get("latency") or {}).get("mean_ms"))
    if "max_latency_ms" in budgets and report.get("stand_in_latency") is None:
        checks.append({"check": "latency p50 (ms)", "value": p50,
                       "limit": budgets["max_latency_ms"],
                       "passed": p50 is not None and p50 <= budgets["max_latency_ms"]})  # fmt: skip
    return checks


def run_devicetest(
    artifact: str | Path,
    device: str,
    *,
    inputs: str | Path | None = None,
    runs: int = 50,
    warmup: int = 5,
    samples: int = 4,
    model: str | Path | None = None,
    plan: str | Path | None = None,
    out: str | Path | None = None,
    options: DeviceOptions | None = None,
    seed: int = 0,
    min_within_step: float | None = None,
    max_latency_ms: float | None = None,
    compute_plan: bool = True,
    pause_s: float = 0.0,
    force: bool = False,
    allow_model_mismatch: bool = False,
) -> DeviceTestResult:
    """Run `artifact` on `device`; compare, check budgets, write the report into `out`
    (default: `<artifact folder>/devicetest/`). Raises DeviceError when the device run fails
    (after writing a report with "status": "failed")."""
    artifact = Path(artifact)
    if not artifact.exists():
        raise InputError(f"artifact '{artifact}' does not exist", "pass a file from `edgeq export`")
    if runs < 1 or warmup < 0 or samples < 1:
        raise InputError("--runs and --samples must be at least 1", "e.g. --runs 50")
    spec = parse_device(device)
    options = options or DeviceOptions()
    out_dir = Path(out) if out is not None else artifact.parent / "devicetest"
    check_output(out_dir, DEVICETEST, force)  # a folder we may not write is refused first
    report: dict[str, Any] = {
        "format": "edgeq-devicetest-report", "edgeq_version": __version__, "status": "failed",
        "device": str(spec), "transport": spec.kind,
        "artifact": {"file": artifact.name, "bytes": _size(artifact)},
    }  # fmt: skip
    try:
        ctx = find_context(artifact, Path(model) if model else None, Path(plan) if plan else None,
                           allow_model_mismatch)  # fmt: skip
        report.update({"model": str(ctx.model) if ctx.model else None,
                       "plan": str(ctx.plan_dir) if ctx.plan_dir else None,
                       "target": ctx.plan.target if ctx.plan is not None else None,
                       "notes": list(ctx.notes)})  # fmt: skip
        budgets = _budgets(ctx, min_within_step, max_latency_ms)
        report["budgets"] = budgets
        transport = open_transport(spec, options)
        outputs: list[dict[str, np.ndarray]] = []
        if isinstance(transport, AdbTransport) and options.adb_runner_kind != "python":
            with transport:
                report["latency"] = run_adb_benchmark(transport, artifact, runs, warmup)
            report["runner"] = {"runtime": options.adb_runner_kind}
            report["outputs"] = None
            report["notes"].append(f"{options.adb_runner_kind} reports latency only: outputs "
                                   "were not compared (use --adb-runner-kind python for parity)")  # fmt: skip
        else:
            desc = describe_artifact(artifact)
            io_map = io_mapping(ctx.graph, desc)
            feeds, source = make_feeds(ctx, desc, Path(inputs) if inputs else None, samples, seed)
            report["inputs"] = {"source": source, "samples": len(feeds)}
            rounding = ctx.plan.rounding if ctx.plan is not None else "half_away"
            extra = {"compute_plan": bool(compute_plan and spec.kind == "xcode")}
            job, npz = _job(artifact.name, feeds, io_map, rounding, runs, warmup, pause_s, extra)
            with transport:
                result, arrays = run_runner(transport, artifact, job, npz)
            names = result["outputs"]
            outputs = [{n: arrays[f"s{i}_{j}"] for j, n in enumerate(names)}
                       for i in range(len(feeds))]  # fmt: skip
            report["runner"] = {k: result.get(k) for k in ("runtime", "runtime_version", "python",
                                                           "platform", "machine", "timed")}  # fmt: skip
            report["runtime"] = result.get("runtime")
            if "mlx_device" in result:
                report["runner"]["mlx_device"] = result["mlx_device"]
            if result.get("device_latency", True):
                report["latency"] = result["latency"]
            else:  # a stand-in ran (numpy MIL evaluator): its timings are not a device latency
                report["latency"] = None
                report["stand_in_latency"] = result["latency"]
                report["notes"].append(
                    f"runtime is {result.get('runtime')}: outputs are checked, but its timings "
                    "(stand_in_latency) are not a device latency; run on a Mac "
                    "(--device xcode or xcode+ssh://user@mac) for Core ML latency"
                )
                if "max_latency_ms" in budgets:
                    report["notes"].append("latency budget not checked: no device latency")
            if "compute_plan" in result:
                report["compute_plan"] = result["compute_plan"]
            report["outputs"] = _compare(ctx, feeds, outputs)
        report["checks"] = _checks(report, budgets)
        passed = all(c["passed"] for c in report["checks"])
        report["status"] = "passed" if passed else "failed"
        if not passed:
            report["error"] = "budget missed: " + "; ".join(
                c["check"] for c in report["checks"] if not c["passed"]
            )
    except EdgeqError as exc:
        report["status"] = "failed"
        report["error"] = str(exc)
        write_report(out_dir, report, force)
        raise
    path = write_report(out_dir, report, force)
    return DeviceTestResult(report, outputs, passed, path)


def _compare(ctx: Context, feeds: list[dict[str, np.ndarray]],
             outputs: list[dict[str, np.ndarray]]) -> dict[str, Any] | None:  # fmt: skip
    if ctx.graph is None:
        return None
    from edgeq.ir.interpreter import Interpreter
    from edgeq.quant.simulate import Simulator
    from edgeq.targets import load_target
    from edgeq.verify import compare

    ref = Interpreter(ctx.graph)
    sim = Simulator(ctx.graph, ctx.plan) if ctx.plan is not None else None
    ref_out = [ref(f) for f in feeds]
    sim_out = [sim(f) for f in feeds] if sim is not None else None
    output_dtype = load_target(ctx.plan.target).raw.get("output_dtype") if ctx.plan else None
    return compare(outputs, sim_out, ref_out, ctx.plan, ctx.graph.output_names, output_dtype)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_report(out_dir: Path, report: Mapping[str, Any], force: bool = False) -> Path:
    """devicetest_report.json + .md as one output folder (`edgeq.outputs`: moved into place
    complete; an existing folder must be an earlier devicetest report folder, or `force`)."""

    def write(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / REPORT_MD).write_text(report_markdown(report))
        (tmp / REPORT_JSON).write_text(json.dumps(report, indent=1, default=json_default))

    write_output(out_dir, DEVICETEST, write, force=force)
    return out_dir / REPORT_JSON


def report_markdown(report: Mapping[str, Any]) -> str:
    a = report.get("artifact", {})
    lines = [f"# edgeq devicetest: {a.get('file', '?')} on {report.get('device', '?')}", "",
             f"status: **{report.get('status', '?')}**"]  # fmt: skip
    if report.get("error"):
        lines.append(f"error: {report['error']}")
    run = report.get("runner") or {}
    if run:
        lines += ["", f"runtime: {run.get('runtime')} {run.get('runtime_version') or ''} on "
                  f"{run.get('platform') or '?'} (python {run.get('python') or '?'})"]  # fmt: skip
    if report.get("inputs"):
        lines.append(f"inputs: {report['inputs']['samples']} sample(s), "
                     f"{report['inputs']['source']}")  # fmt: skip
    lat = report.get("latency") or {}
    if lat:

        def ms(key: str) -> str:
            return f"{lat[key]:.3f}" if lat.get(key) is not None else "n/a"

        lines += ["", f"latency over {lat.get('runs', '?')} runs: p50 {ms('p50_ms')} ms, "
                  f"p90 {ms('p90_ms')} ms, mean {ms('mean_ms')} ms"]  # fmt: skip
    stand_in = report.get("stand_in_latency") or {}
    if stand_in:
        lines += ["", "latency: none (no device runtime ran); the stand-in took "
                  f"p50 {stand_in.get('p50_ms', float('nan')):.3f} ms over "
                  f"{stand_in.get('runs', '?')} runs on this machine (not a device latency)"]  # fmt: skip
    outputs = report.get("outputs")
    if outputs:
        lines += ["", "| output | within 1 step of simulator | max steps | SQNR vs float (dB) | "
                  "cosine vs float |", "|---|---|---|---|---|"]  # fmt: skip
        for name, row in outputs.items():
            vs = row.get("vs_simulator") or {}
            within = vs.get("within_one_step")
            lines.append(f"| {name} | {'n/a' if within is None else f'{within * 100:.2f}%'} | "
                         f"{vs.get('max_steps', float('nan')):.2f} | "
                         f"{row['vs_float']['sqnr_db']:.1f} | {row['vs_float']['cosine']:.5f} |")  # fmt: skip
    elif "outputs" in report:
        lines += ["", "outputs: not compared"]
    checks = report.get("checks") or []
    if checks:
        lines += ["", "budgets:"]
        for c in checks:
            mark = "pass" if c["passed"] else "MISS"
            lines.append(f"- {mark}: {c['check']} = {c['value']} (limit {c['limit']})")
    cp = report.get("compute_plan")
    if cp and "device_counts" in cp:
        lines += ["", "compute plan (ops per device): "
                  + ", ".join(f"{k} {v}" for k, v in cp["device_counts"].items())]  # fmt: skip
    for note in report.get("notes") or []:
        lines.append(f"- note: {note}")
    return "\n".join(lines) + "\n"


__all__ = [
    "DeviceTestResult",
    "adb_benchmark_argv",
    "find_context",
    "io_mapping",
    "parse_benchmark_output",
    "report_markdown",
    "run_devicetest",
    "run_runner",
    "write_report",
]
