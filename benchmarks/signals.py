"""Interrupting real exports (issue #17): `edgeq export` of the PP-OCR cls model to rpi, sent
SIGINT, SIGTERM or SIGHUP at a random moment; counts exit codes, crashes (SIGSEGV), hangs, and
what was left behind (temp folders beside `-o` or in TMPDIR, partial outputs).

    python -m benchmarks.signals [--runs 30] [--seed 0] [--launcher "python -m edgeq"]

Writes benchmarks/results/signals.{json,md} (`--name` changes the file name, e.g. to compare
another build through `--launcher`). A run the signal reached after the command finished is
counted apart ("finished first"). The compile cache is private to the run and warm after an
uninterrupted first export (as for a user's second export); the signal comes at a uniform
moment of the second export's length.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, md_table, write_results
from benchmarks.fuzz import real_model

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _calib(folder: Path) -> Path:
    from examples.models import CASES

    folder.mkdir(parents=True, exist_ok=True)
    for i, feed in enumerate(CASES["ppocr-cls"].make_feeds(8, "calib")):
        np.save(folder / f"l{i}.npy", feed["x"])
    return folder


def _default_signals() -> None:
    """Children start with the default dispositions (this run may itself be under nohup)."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_DFL)


def _one(launcher: list[str], calib: Path, work: Path, delay: float | None,
         sig: signal.Signals) -> dict[str, Any]:  # fmt: skip
    out_parent, tmpdir = work / "out", work / "tmp"
    out_parent.mkdir(parents=True)
    tmpdir.mkdir()
    cmd = [*launcher, "export", str(real_model()), "--input-shape", "x=1,3,48,192", "--calib",
           str(calib), "--calib-samples", "8", "--target", "rpi", "-o", str(out_parent / "exp")]  # fmt: skip
    env = dict(os.environ, TMPDIR=str(tmpdir))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=_default_signals)  # fmt: skip
    sent = False
    try:
        proc.wait(delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
        sent = True
    try:
        _, err = proc.communicate(timeout=120)
        hang = False
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        hang = True
    left = sorted(p.name for p in out_parent.iterdir())
    return {
        "signal": sig.name if sent else None, "delay_s": None if delay is None else round(delay, 2),
        "seconds": round(time.perf_counter() - t0, 2), "returncode": proc.returncode, "hang": hang,
        "output_written": "exp" in left, "temp_beside_out": [n for n in left if n != "exp"],
        "temp_in_tmpdir": sorted(p.name for p in tmpdir.iterdir()),
        "last_line": (err.decode(errors="replace").strip().splitlines() or [""])[-1][:200],
    }  # fmt: skip


def verdict(r: dict[str, Any]) -> str:
    if r["hang"]:
        return "hang"
    if r["signal"] is None:
        return "finished first"
    code = r["returncode"]
    if code is not None and code < 0:
        return (
            "crash (SIGSEGV)"
            if code == -signal.SIGSEGV
            else f"killed by {signal.Signals(-code).name}"
        )
    if r["temp_beside_out"] or r["temp_in_tmpdir"]:
        return "left temp files"
    if code == 0:
        return "exit 0 after signal"
    expected = 128 + signal.Signals[r["signal"]]
    return "clean" if code == expected else f"exit {code}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--launcher", default=f"{sys.executable} -m edgeq")
    ap.add_argument("--name", default="signals")
    args = ap.parse_args()
    launcher = shlex.split(args.launcher)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="edgeq-signals-"))
    try:
        calib = _calib(work / "calib")
        os.environ["EDGEQ_CACHE_DIR"] = str(work / "xla-cache")  # warm after the first run
        for label in ("warm-up", "base"):  # uninterrupted: the second gives the length
            base = _one(launcher, calib, work / label, None, signal.SIGINT)
            assert base["returncode"] == 0, base
        duration = base["seconds"]
        rows = []
        for i in range(args.runs):
            sig = rng.choice(SIGNALS)
            row = _one(launcher, calib, work / f"run{i}", rng.uniform(0.3, duration), sig)
            row["verdict"] = verdict(row)
            rows.append(row)
            print(i, row["verdict"], row["signal"], row["delay_s"], row["returncode"],
                  file=sys.stderr, flush=True)  # fmt: skip
            shutil.rmtree(work / f"run{i}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    counts = Counter(r["verdict"] for r in rows)
    res = {"launcher": args.launcher, "runs": len(rows), "seed": args.seed,
           "uninterrupted_s": duration, "verdicts": dict(counts), "rows": rows,
           "machine": machine(), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}  # fmt: skip
    command = f"python -m benchmarks.signals --runs {args.runs} --seed {args.seed}"
    md = (f"# Interrupting `edgeq export` (issue #17)\n\n`{command}` with launcher "
          f"`{args.launcher}`; an uninterrupted export took {duration} s; {res['machine']}, "
          f"{res['date']}\n\n"
          + md_table([{"verdict": k, "runs": v} for k, v in counts.most_common()], ["verdict", "runs"])
          + "\n`clean`: exit 128+signal, no temp folder beside -o or in TMPDIR, no partial output.\n\n"
          + md_table(rows, ["signal", "delay_s", "returncode", "verdict", "output_written",
                            "last_line"]))  # fmt: skip
    _, path = write_results(args.name, res, md)
    print(f"{dict(counts)} -> {path}")


if __name__ == "__main__":
    main()
