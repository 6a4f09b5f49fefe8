"""Issue #18 benchmark: calibration on an accelerator against the CPU of the same machine.

    python -m benchmarks.accelerator [--cases rec:64,rec:1024,det:1024] [--platforms cpu,cuda]
                                     [--devices 1] [--name accelerator]
    python -m benchmarks.accelerator --cases minilm:136 --bits 4 --minilm-dir DIR --name gptq_gpu

Each run is `edgeq calibrate` in a fresh process with an empty compile cache (cold), on a
folder of .npy samples rendered once beforehand (PP-OCRv4 rec: rendered text lines; det:
rendered pages at 640x640), `--target onnx`, default recipe, 8 held-out report samples.
`minilm` (issue #18's 4-bit case, with `--bits 4`: GPTQ + mixed precision) reads the folder
`edgeq example minilm -o DIR` writes (minilm.onnx, calib.txt, eval.txt, tokenizer.json) and
calibrates on its sentences (calib then eval lines) through the tokenizer; the plan's own
4-bit phase table (layerwise forward / Hessian / solve, mixed precision) and the number of XLA
compiles are recorded too.
Measured: wall time of the whole process (start-up, imports and device start-up included), the
plan's own phase table (load and prepare, compile, stream, plan, report), peak host RSS. Plans
of the same case on different platforms are compared tensor by tensor (relative scale
difference) and by the output SQNR of their simulators. Machine, versions and results go to
benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import md_table, write_results

CASE_MODELS = {"rec": "ppocr-rec", "det": "ppocr-det", "cls": "ppocr-cls", "minilm": "minilm"}
MINILM_SHAPES = ["input_ids=1,128", "attention_mask=1,128", "token_type_ids=1,128"]


def render_text(n: int, source: Path, folder: Path) -> Path:
    """n calibration sentences (+ 8 for the report) from `source`'s calib.txt then eval.txt."""
    lines = [x for f in ("calib.txt", "eval.txt")
             for x in (source / f).read_text().splitlines() if x.strip()]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "calib.txt"
    path.write_text("\n".join(lines[: n + 8]) + "\n")
    return path


def render(model: str, n: int, folder: Path) -> Path:
    """n calibration samples of an example model as x_00000.npy files (+ 8 more for the report)."""
    from examples.models import CASES

    case = CASES[CASE_MODELS[model]]
    folder.mkdir(parents=True, exist_ok=True)
    total = n + 8
    done = len(list(folder.glob("*.npy")))
    if done < total:
        if model == "det":  # a page holds 14 lines: more pages than the split has lines for
            from examples.ocr import det_pages, det_preprocess  # come from several seeds

            feeds = (det_preprocess(p.image) for seed in range(-(-total // 64))
                     for p in det_pages(64, seed=seed, split="calib"))  # fmt: skip
        else:
            feeds = (f["x"] for f in case.make_feeds(total, "calib"))
        for i, x in enumerate(itertools.islice(feeds, total)):
            np.save(folder / f"x_{i:05d}.npy", np.asarray(x, np.float32)[0])
    return folder


def child(args: argparse.Namespace) -> None:
    """One `edgeq calibrate` in this process; prints a JSON line with its own measurements."""
    import jax.monitoring
    from typer.testing import CliRunner

    from edgeq.cli import app

    jax_times: dict[str, float] = {}
    jax_counts: dict[str, int] = {}

    def listen(event: str, seconds: float, **_: Any) -> None:
        key = event.rsplit("/", 1)[-1]
        jax_times[key] = jax_times.get(key, 0.0) + seconds
        jax_counts[key] = jax_counts.get(key, 0) + 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    t0 = time.perf_counter()
    argv = ["calibrate", args.model_path, "--calib", args.calib, "--target", "onnx",
            "--calib-samples", str(args.samples), "--report-samples", "8", "-o", args.out]  # fmt: skip
    if args.tokenizer:
        argv += ["--tokenizer", args.tokenizer]
    argv += [f"--input-shape={s}" for s in args.shape.split(";")]
    if args.bits:
        argv += ["--bits", str(args.bits)]
    if args.devices:
        argv += ["--devices", str(args.devices)]
    result = CliRunner().invoke(app, argv)
    seconds = time.perf_counter() - t0
    rss = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            rss = int(line.split()[1]) / 1024
    jax_times = {k: round(v, 2) for k, v in jax_times.items() if v >= 0.05}
    print("EDGEQ-CHILD " + json.dumps({"exit": result.exit_code, "seconds": seconds,
                                       "peak_rss_mb": rss, "output": result.output[-2000:],
                                       "jax": jax_times,
                                       "backend_compiles": jax_counts.get("backend_compile_duration", 0)}))  # fmt: skip


def run_case(model: str, samples: int, platform_: str, devices: int, data: Path, out: Path,
             bits: int = 0, minilm_dir: Path | None = None, cache: Path | None = None,
             ) -> dict[str, Any]:  # fmt: skip
    extra: list[str] = []
    if model == "minilm":
        assert minilm_dir is not None, "--minilm-dir"
        model_path, shape = minilm_dir / "minilm.onnx", ";".join(MINILM_SHAPES)
        extra = ["--tokenizer", str(minilm_dir / "tokenizer.json")]
    else:
        from examples.models import CASES

        case = CASES[CASE_MODELS[model]]
        model_path, shape = case.model_path(), "x=" + ",".join(map(str, case.input_shapes["x"]))
    if bits:
        extra += ["--bits", str(bits)]
    # an accelerator run keeps JAX's CPU backend too (edgeq folds constants there)
    jax_platforms = platform_ if platform_ == "cpu" else f"{platform_},cpu"
    env = {**os.environ, "JAX_PLATFORMS": jax_platforms,
           "EDGEQ_CACHE_DIR": str(cache) if cache is not None else "off"}  # fmt: skip
    cmd = [sys.executable, "-m", "benchmarks.accelerator", "--child", "--model-path",
           str(model_path), "--calib", str(data), "--samples", str(samples),
           "--shape", shape, "--out", str(out), "--devices", str(devices), *extra]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    line = next((x for x in proc.stdout.splitlines() if x.startswith("EDGEQ-CHILD ")), None)
    row: dict[str, Any] = {"model": model, "samples": samples, "platform": platform_,
                           "cache": "warm" if cache is not None else "off",
                           "wall_s": round(wall, 2)}  # fmt: skip
    if line is None:
        row["error"] = (proc.stderr or proc.stdout)[-3000:]
        return row
    info = json.loads(line.removeprefix("EDGEQ-CHILD "))
    row.update(exit=info["exit"], in_process_s=round(info["seconds"], 2),
               peak_rss_mb=round(info["peak_rss_mb"]), jax_seconds=info.get("jax", {}),
               backend_compiles=info.get("backend_compiles"))  # fmt: skip
    if info["exit"] != 0:
        row["error"] = info["output"]
        return row
    plan = json.loads((out / "plan.json").read_text())
    cal = plan["calibration"]
    row["phases"] = cal.get("phases", {})
    row["devices"] = cal.get("devices", {})
    if bits:
        mixed = cal.get("mixed_precision", {})
        row["weights_seconds"] = cal.get("weights", {}).get("seconds", {})
        row["mixed_precision"] = {k: mixed.get(k) for k in ("seconds", "evaluations", "bpw",
                                                            "candidates", "chosen")}  # fmt: skip
        row["eight_bit"] = [x["weight"] for x in mixed.get("eight_bit", [])]
    outs = [r for r in plan.get("report", {}).get("layers", []) if r.get("output")]
    row["output_sqnr_db"] = round(float(np.mean([r["sqnr_db"] for r in outs])), 3) if outs else None
    return row


def compare_plans(a: Path, b: Path) -> dict[str, Any]:
    """Largest relative scale difference between two plans of the same graph, and where."""
    from edgeq.quant.plan import QuantPlan

    pa, pb = QuantPlan.load(a), QuantPlan.load(b)
    diffs = []
    for name, t in pa.tensors.items():
        u = pb.tensors.get(name)
        if u is None or t.scale is None or u.scale is None:
            continue
        sa, sb = np.asarray(t.scale, np.float64), np.asarray(u.scale, np.float64)
        rel = float(np.max(np.abs(sa - sb) / np.maximum(np.abs(sa), 1e-30)))
        diffs.append((rel, name, t.role))
    diffs.sort(reverse=True)
    within = sum(1 for d in diffs if d[0] <= 1e-5)
    return {"tensors": len(diffs), "within_1e-5": within,
            "max_rel_scale_diff": diffs[0][0] if diffs else 0.0,
            "worst": [{"tensor": n, "role": r, "rel": d} for d, n, r in diffs[:8]]}  # fmt: skip


def simulator_parity(model: str, plan_dir: Path, data: Path, n: int = 8) -> dict[str, Any]:
    """The same plan simulated on the CPU and on the default accelerator, same samples: how many
    elements of each quantized activation land on a different integer step, and the outputs'
    largest difference in steps."""
    import jax

    from edgeq.pipeline import graph_for_plan
    from edgeq.quant.plan import QuantPlan
    from edgeq.quant.simulate import Simulator
    from examples.models import CASES

    plan = QuantPlan.load(plan_dir)
    graph = graph_for_plan(CASES[CASE_MODELS[model]].model_path(), plan)
    acts = [t for t in plan.tensors.values() if t.role == "activation" and t.is_quantized
            and t.name not in graph.input_names and t.name not in graph.output_names]  # fmt: skip
    files = sorted(data.glob("*.npy"))[-n:]
    feeds = [{"x": np.load(f)[None]} for f in files]
    results = {}
    for where in ("cpu", jax.default_backend()):
        with jax.default_device(jax.devices(where)[0]):
            sim = Simulator(graph, plan, taps=[t.name for t in acts])
            results[where] = [sim(f) for f in feeds]
    a, b = results["cpu"], results[jax.default_backend()]
    flipped = total = 0
    worst: list[tuple[float, str]] = []
    for t in acts:
        step = float(np.min(t.scale))
        diff = np.concatenate(
            [np.abs(x[t.name] - y[t.name]).ravel() for x, y in zip(a, b, strict=True)]
        )
        k = int(np.sum(diff > 0.5 * step))
        flipped += k
        total += diff.size
        worst.append((k / diff.size, t.name))
    worst.sort(reverse=True)
    out_diff = {o: float(max(np.max(np.abs(x[o] - y[o])) for x, y in zip(a, b, strict=True)))
                for o in graph.output_names}  # fmt: skip
    return {"samples": len(feeds), "activation_elements": total,
            "elements_on_another_step": flipped, "fraction": flipped / max(total, 1),
            "worst_tensors": [{"tensor": n, "fraction": f} for f, n in worst[:5]],
            "output_max_abs_diff": out_diff}  # fmt: skip


def machine_info() -> dict[str, Any]:
    import jax
    import jaxlib

    info: dict[str, Any] = {"python": platform.python_version(), "cpu_cores": os.cpu_count(),
                            "jax": jax.__version__, "jaxlib": jaxlib.__version__}  # fmt: skip
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)  # fmt: skip
        info["gpu"] = gpu.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["gpu"] = None
    return info


def markdown(data: dict[str, Any]) -> str:
    rows = []
    for r in data["runs"]:
        ph = r.get("phases", {})
        rows.append({
            "model": r["model"], "samples": r["samples"], "platform": r["platform"],
            "compile cache": r.get("cache", "off"),
            "devices": r.get("devices", {}).get("count", ""),
            "wall s": r["wall_s"], "compile s": ph.get("compile statistics step", ""),
            "stream s": ph.get("stream calibration data", ""),
            "prepare s": ph.get("load and prepare", ""), "report s": ph.get("per-layer report", ""),
            "weights s": ph.get("weight algorithms", ""), "XLA compiles": r.get("backend_compiles", ""),
            "peak RSS MB": r.get("peak_rss_mb", ""), "output SQNR dB": r.get("output_sqnr_db", ""),
            "error": (r.get("error") or "")[:80].replace("\n", " "),
        })  # fmt: skip
    cols = ["model", "samples", "platform", "compile cache", "devices", "wall s", "compile s",
            "stream s", "prepare s", "weights s", "report s", "XLA compiles", "peak RSS MB",
            "output SQNR dB", "error"]  # fmt: skip
    text = ["# Calibration on an accelerator vs the CPU of the same machine", "",
            f"machine: {json.dumps(data['machine'])}", "",
            "`python -m benchmarks.accelerator " + " ".join(data["argv"]) + "`; each row one "
            "`edgeq calibrate` in a fresh process (compile cache off, or `--warm`: a first run fills a "
            "persistent cache and the second, measured, reads it); wall includes start-up.", "",
            md_table(rows, cols)]  # fmt: skip
    if data["comparisons"]:
        text += ["", "## Plans compared across platforms", ""]
        for c in data["comparisons"]:
            text.append(f"- {c['case']}: {c['within_1e-5']}/{c['tensors']} scales within 1e-5 "
                        f"relative; max {c['max_rel_scale_diff']:.3g} ({c['worst'][0]['tensor'] if c['worst'] else '-'})")  # fmt: skip
    return "\n".join(text) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--model-path")
    ap.add_argument("--calib")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--shape", help="NAME=D1,D2,...; several separated by ';'")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument(
        "--bits", type=int, default=0, help="4: the 4-bit path (GPTQ + mixed precision)"
    )
    ap.add_argument("--minilm-dir", default=None, help="folder `edgeq example minilm -o` wrote")
    ap.add_argument("--out")
    ap.add_argument("--devices", type=int, default=0)
    ap.add_argument("--cases", default="rec:64,rec:1024")
    ap.add_argument("--platforms", default="cpu,cuda")
    ap.add_argument("--name", default="accelerator")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--warm", action="store_true",
                    help="run each case twice on one persistent compile cache; the second is warm")  # fmt: skip
    ap.add_argument(
        "--sim-parity", default=None, help="MODEL:PLAN_DIR:DATA_DIR (CPU vs accelerator)"
    )
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.sim_parity:
        model, plan_dir, data_dir = args.sim_parity.split(":")
        print(json.dumps(simulator_parity(model, Path(plan_dir), Path(data_dir)), indent=1))
        return
    cases = [(m, int(n)) for m, n in (c.split(":") for c in args.cases.split(","))]
    platforms = args.platforms.split(",")
    work = Path(args.data_dir or tempfile.mkdtemp(prefix="edgeq-accel-"))
    runs, comparisons = [], []
    minilm_dir = Path(args.minilm_dir) if args.minilm_dir else None
    for model, n in cases:
        most = max(n for m, n in cases if m == model)
        if model == "minilm":
            assert minilm_dir is not None, "the minilm case needs --minilm-dir"
            data = render_text(most, minilm_dir, work / f"{model}-data")
        else:
            data = render(model, most, work / f"{model}-data")
        plans = {}
        for plat in platforms:
            out = work / f"{model}-{n}-{plat}"
            if args.warm:  # a first run fills a compile cache; the second is measured
                cache = work / f"cache-{model}-{n}-{plat}"
                first = run_case(model, n, plat, args.devices, data, out, args.bits, minilm_dir,
                                 cache)  # fmt: skip
                first["cache"] = "filling"
                print(json.dumps(first), flush=True)
                runs.append(first)
                row = run_case(model, n, plat, args.devices, data, out, args.bits, minilm_dir,
                               cache)  # fmt: skip
            else:
                row = run_case(model, n, plat, args.devices, data, out, args.bits, minilm_dir)
            print(json.dumps(row), flush=True)
            runs.append(row)
            if "error" not in row:
                plans[plat] = out
        names = list(plans)
        for other in names[1:]:
            c = compare_plans(plans[names[0]], plans[other])
            c["case"] = f"{model}:{n} {names[0]} vs {other}"
            print(json.dumps(c), flush=True)
            comparisons.append(c)
    data = {"machine": machine_info(), "argv": sys.argv[1:], "runs": runs,
            "comparisons": comparisons}  # fmt: skip
    paths = write_results(args.name, data, markdown(data))
    print(markdown(data))
    print("wrote", *paths)


if __name__ == "__main__":
    main()
