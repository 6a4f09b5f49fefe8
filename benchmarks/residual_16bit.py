"""Issue #15: MiniLM on rpi with the transformer residual stream at int16 (`residual_16bit` in
targets/rpi.toml) against all-int8, in one run: cosine to float (task metric), parity of the
LiteRT artifact with the simulator (XNNPACK and reference kernels), interleaved latency on
LiteRT with XNNPACK, and how many ops XNNPACK does not take (16x8 kernels leave it).
Writes benchmarks/results/residual_16bit.{json,md}.

    .venv/bin/python -m benchmarks.residual_16bit [--calib 32] [--eval 48] [--rounds 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import interleaved_ms, machine, md_table, write_results
from edgeq.exporters import ExportOptions, get_exporter
from edgeq.ir.interpreter import Interpreter
from edgeq.pipeline import calibrate_model
from edgeq.quant.recipe import Recipe
from edgeq.quant.simulate import Simulator
from edgeq.targets import load_target
from edgeq.verify import output_step, within_step
from examples.models import CASES
from examples.tasks import TASKS


def _variant(flag: bool, calib: list[dict], feeds: list[dict], work: Path) -> dict[str, Any]:
    profile = load_target("rpi")
    profile.raw["residual_16bit"] = flag  # the cached profile the planner reads
    c = CASES["minilm"]
    run = calibrate_model(c.model_path(work), calib, "rpi", Recipe(), input_shapes=c.input_shapes,
                          input_values=c.input_values, report_samples=0)  # fmt: skip
    exporter = get_exporter(profile.exporter)
    path = work / f"minilm-rpi-r16-{int(flag)}{exporter.suffix}"
    exporter.export(run.graph, run.plan, profile, path, ExportOptions())
    sim = Simulator(run.graph, run.plan)
    sims = [sim(f) for f in feeds]
    int16 = sum(
        1 for t in run.plan.tensors.values() if t.role == "activation" and t.dtype == "int16"
    )
    out: dict[str, Any] = {"variant": "int16 residual" if flag else "int8 (all)",
                           "int16 tensors": int16, "size_kb": round(path.stat().st_size / 1024)}  # fmt: skip
    runners = {}
    for xnn in (True, False):
        runner = exporter.open(path, use_xnnpack=xnn)
        outs = [runner(f) for f in feeds]
        worst = 1.0
        for name in run.graph.output_names:
            ss = [np.asarray(s[name]) for s in sims]
            step, _ = output_step(run.plan, name, ss)
            got = np.concatenate([np.asarray(o[name]).ravel() for o in outs])
            want = np.concatenate([s.ravel() for s in ss])
            worst = min(worst, within_step(got, want, step))
        kernels = "xnnpack" if xnn else "reference"
        out[f"within 1 step ({kernels})"] = round(worst, 4)
        if xnn:
            out["outputs"] = outs
            out["sims"] = sims
            runners[out["variant"]] = lambda r=runner: r(feeds[0])
    out["graph"] = run.graph
    out["runner"] = runners
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calib", type=int, default=32)
    parser.add_argument("--eval", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeq-r16-"))
    task, c = TASKS["minilm"], CASES["minilm"]
    calib = c.make_feeds(args.calib, "calib")
    feeds, labels = task.data(args.eval)
    rows = [_variant(flag, calib, feeds, work) for flag in (False, True)]
    ref = Interpreter(rows[0]["graph"])
    float_out = [ref(f) for f in feeds]
    runners = {k: v for r in rows for k, v in r["runner"].items()}
    ms = interleaved_ms(runners, args.rounds)
    base = ms[rows[0]["variant"]]
    for r in rows:
        outs, sims = r.pop("outputs"), r.pop("sims")
        r["cosine"] = round(task.score(outs, labels, float_out)["cosine"], 4)
        r["simulator cosine"] = round(task.score(sims, labels, float_out)["cosine"], 4)
        r["artifact vs simulator cosine"] = round(task.score(outs, labels, sims)["cosine"], 4)
        r["ms (xnnpack)"] = round(ms[r["variant"]], 2)
        r["latency vs int8"] = round(ms[r["variant"]] / base, 2)
        del r["graph"], r["runner"]
    cols = ["variant", "cosine", "simulator cosine", "artifact vs simulator cosine", "within 1 step (xnnpack)", "within 1 step (reference)",
            "ms (xnnpack)", "latency vs int8", "int16 tensors", "size_kb"]  # fmt: skip
    md = ("# MiniLM on rpi: residual stream at int16 vs all-int8 (issue #15)\n\n"
          f"{machine()}; {args.calib} calibration samples, {args.eval} eval sentences; latency "
          f"is the median of {args.rounds} interleaved single-sentence runs on LiteRT with XNNPACK "
          "on a shared, loaded machine (read the ratio).\n\n"
          f"Command: `python -m benchmarks.residual_16bit --calib {args.calib} --eval {args.eval}`"
          "\n\n" + md_table(rows, cols))  # fmt: skip
    write_results("residual_16bit", {"machine": machine(), "rows": rows}, md)
    print(md)


if __name__ == "__main__":
    main()
