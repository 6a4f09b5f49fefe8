"""Signals: SIGINT, SIGTERM and SIGHUP during the write phase remove every temp folder (beside
`-o` and in TMPDIR) and exit 130/143/129, never 0, even when a library swallows the
interrupt. Real processes (the `edgeq` console script's code path), not CliRunner: the exit
status and the files left behind are what a user sees."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from tests.conftest import F32, make_model

# Runs `edgeq calibrate` in a child; `write` of the plan folder pauses in the middle (half the
# files written, in its temp folder) until the parent signals. SWALLOW=1 makes the pause eat
# the interrupt the way a library callback can, and carry on.
DRIVER = r"""
import os, sys, time
from pathlib import Path
import edgeq.quant.plan as plan_module
from edgeq.cli import main

original = plan_module.write_output
def write_output(out, kind, write, **kw):
    def half_then_pause(tmp):
        write(tmp)  # the plan files are in the temp folder beside -o
        Path(os.environ["READY"]).write_text("ready")
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            if os.environ.get("SWALLOW") != "1":
                raise  # else: eaten, as a library callback can; writing goes on
    return original(out, kind, half_then_pause, **kw)
plan_module.write_output = write_output
sys.argv = ["edgeq", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sig")
    rng = np.random.default_rng(0)
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", F32, [1, 4])],
                       [("y", F32, [1, 4])])  # fmt: skip
    (root / "m.onnx").write_bytes(model.SerializeToString())
    (root / "data").mkdir()
    for i in range(2):
        np.save(root / "data" / f"s{i}.npy", rng.normal(0, 1, (1, 4)).astype(np.float32))
    return root / "m.onnx", root / "data"


def _default_signals() -> None:  # this test may itself run under nohup
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)


def _start(tiny: tuple[Path, Path], work: Path, swallow: bool) -> tuple[subprocess.Popen[bytes], Path]:  # fmt: skip
    model, data = tiny
    (work / "tmp").mkdir(parents=True)
    ready = work / "ready"
    env = dict(os.environ, TMPDIR=str(work / "tmp"), READY=str(ready),
               SWALLOW="1" if swallow else "0")  # fmt: skip
    args = [sys.executable, "-c", DRIVER, "calibrate", str(model), "--calib", str(data),
            "--report-samples", "0", "-o", str(work / "out" / "plan")]  # fmt: skip
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_signals)  # fmt: skip
    return proc, ready


def test_signals_clean_up_and_exit_nonzero(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    # three children at once; SIGTERM's is swallowed by "a library" and must still not exit 0
    runs = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        work = tmp_path / sig.name
        runs[sig] = (*_start(tiny, work, swallow=sig == signal.SIGTERM), work)
    deadline = time.monotonic() + 120
    for sig, (proc, ready, work) in runs.items():
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the child never reached the write phase"
            time.sleep(0.05)
        # the plan is half-written in a temp folder beside -o: now interrupt
        assert next(p.name for p in (work / "out").iterdir()).startswith(".plan.edgeq-")
        proc.send_signal(sig)
    for sig, (proc, _, work) in runs.items():
        _, err = proc.communicate(timeout=60)
        text = err.decode(errors="replace")
        assert proc.returncode == 128 + sig, (sig, proc.returncode, text)
        assert "Traceback" not in text and "interrupted" in text, text
        assert os.listdir(work / "out") == [], sig  # no plan, no temp folder beside it
        assert os.listdir(work / "tmp") == [], sig  # nothing left in TMPDIR


def test_an_ignored_sighup_stays_ignored() -> None:
    """`nohup edgeq export ...`: the user asked to survive the terminal closing."""
    from edgeq.interrupts import handling_signals

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with handling_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
