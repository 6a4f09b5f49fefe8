"""One calibration for many targets vs one export per target.

    python -m benchmarks.multi_target [--targets onnx,rpi,ane,mlx] [--repeat 1] [--calib 64 --eval 32]

Writes the default model and its data with `edgeq example ppocr-rec`, then times, each in fresh
`edgeq` processes (the CLI a user runs, its XLA compile cache on, a fresh cache per variant):

* separate: `edgeq export ... --target T` once per target (one after another);
* multi:    `edgeq export ... --target T1 --target T2 ...` (one calibration, one comparison).

Order alternates per repetition (separate/multi, then multi/separate) so a load change on a
shared machine hits both alike; wall time and CPU time (user + sys of the child processes) are
reported, CPU time being the steadier on a loaded machine. Also checks that every target's plan
from the multi-target run equals the one from its separate run (same tensors, scales, zero
points and integer weights), i.e. shared statistics change nothing.
Results: benchmarks/results/multi_target.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, md_table, write_results


def _edgeq(*args: str, env: dict[str, str]) -> tuple[float, float, int]:
    """(wall s, child CPU s, exit code) of one `edgeq` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "edgeq"), *args], env=env,
                          capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"edgeq {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return wall, cpu, proc.returncode


def same_plan(a: Path, b: Path) -> bool:
    from edgeq.quant.plan import QuantPlan

    pa, pb = QuantPlan.load(a), QuantPlan.load(b)
    if set(pa.tensors) != set(pb.tensors):
        return False
    for name, ta in pa.tensors.items():
        tb = pb.tensors[name]
        if (ta.dtype, ta.axis, ta.block, ta.provenance) != (
            tb.dtype,
            tb.axis,
            tb.block,
            tb.provenance,
        ):
            return False
        for key in ("scale", "zero_point", "values"):
            va, vb = getattr(ta, key), getattr(tb, key)
            if (va is None) != (vb is None) or (va is not None and not np.array_equal(va, vb)):
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", default="onnx,rpi,ane,mlx")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--calib", type=int, default=64)
    parser.add_argument("--eval", type=int, default=32)
    args = parser.parse_args()
    targets = args.targets.split(",")
    from edgeq.examples.quickstart import EXAMPLES, write_example

    work = Path(tempfile.mkdtemp(prefix="edgeq-bench-multi-"))
    write_example("ppocr-rec", work / "data", args.calib, args.eval)
    d = work / "data"
    common = [str(d / EXAMPLES["ppocr-rec"].model_file), "--calib", str(d / "calib"), "--eval",
              str(d / "eval"), *(a.replace("{dir}", str(d)) for a in EXAMPLES["ppocr-rec"].export_args),
              "--allow-loss"]  # fmt: skip
    runs: list[dict[str, Any]] = []
    plans_equal: dict[str, bool] = {}
    load = [os.getloadavg()[0]]
    for rep in range(args.repeat):
        order = ["separate", "multi"] if rep % 2 == 0 else ["multi", "separate"]
        for variant in order:
            env = {**os.environ, "EDGEQ_CACHE_DIR": str(work / f"xla-{variant}-{rep}")}
            out = work / f"{variant}-{rep}"
            if variant == "separate":
                wall = cpu = 0.0
                for t in targets:
                    w, c, _ = _edgeq("export", *common, "--target", t, "-o", str(out / t), env=env)
                    wall, cpu = wall + w, cpu + c
            else:
                wall, cpu, _ = _edgeq("export", *common, *[x for t in targets for x in ("--target", t)],
                                      "-o", str(out), env=env)  # fmt: skip
            runs.append(
                {
                    "repeat": rep,
                    "variant": variant,
                    "wall_s": round(wall, 1),
                    "cpu_s": round(cpu, 1),
                }
            )
            load.append(os.getloadavg()[0])
            print(runs[-1], flush=True)
        for t in targets:
            plans_equal[t] = plans_equal.get(t, True) and same_plan(
                work / f"separate-{rep}" / t / "plan", work / f"multi-{rep}" / t / "plan")  # fmt: skip
    summary = json.loads((work / "multi-0" / "export_report.json").read_text())
    sep = [r for r in runs if r["variant"] == "separate"]
    mul = [r for r in runs if r["variant"] == "multi"]
    ratio_wall = sum(r["wall_s"] for r in sep) / sum(r["wall_s"] for r in mul)
    ratio_cpu = sum(r["cpu_s"] for r in sep) / sum(r["cpu_s"] for r in mul)
    data = {"machine": machine(), "targets": targets, "calib": args.calib, "eval": args.eval,
            "runs": runs, "separate_over_multi_wall": round(ratio_wall, 2),
            "separate_over_multi_cpu": round(ratio_cpu, 2), "plans_equal": plans_equal,
            "load_average_1min": load, "comparison": summary["targets"]}  # fmt: skip
    md = (f"# One calibration, many targets\n\n`python -m benchmarks.multi_target --targets {args.targets} "
          f"--repeat {args.repeat}`; PP-OCRv4 rec, {args.calib} calibration lines, {args.eval} labelled "
          f"evaluation lines (`edgeq example ppocr-rec`); each variant in fresh `edgeq` processes.\n\n"
          + md_table(runs, ["repeat", "variant", "wall_s", "cpu_s"])
          + f"\nseparate / multi: wall {ratio_wall:.2f}x, CPU {ratio_cpu:.2f}x. "
          f"Plans identical to the separate runs': {plans_equal}. "
          f"1-min load average during the run: {', '.join(f'{x:.1f}' for x in load)}.\n\n"
          + md_table([{"target": r["target"], "verdict": r["verdict"], "size": f"{r['size_ratio']:.3f}x",
                       "metric": f"{r['metric']['name']} {r['metric']['quant']:.2f}" if r.get("metric") else ""}
                      for r in summary["targets"]], ["target", "verdict", "size", "metric"]))  # fmt: skip
    write_results("multi_target", data, md)
    print(md)


if __name__ == "__main__":
    main()
