"""adb: command construction always; a real phone only when adb and a device are present.

The real run needs the Android build of TFLite's benchmark_model: set EDGEQ_ADB_BENCHMARK_MODEL
to its path (latency only), or have a python with ai-edge-litert on the phone (Termux) and set
EDGEQ_ADB_PYTHON to it (full parity run with the shipped runner)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgeq.device_tests.devicetest import parse_benchmark_output, run_devicetest
from edgeq.device_tests.transports import AdbTransport, DeviceError, DeviceOptions, parse_device

pytestmark = pytest.mark.adb


def _adb_device() -> str | None:
    if shutil.which("adb") is None:
        return None
    try:
        out = subprocess.run(["adb", "devices"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = [ln.split() for ln in out.splitlines()[1:] if ln.strip()]
    return next((r[0] for r in rows if len(r) > 1 and r[1] == "device"), None)


def test_benchmark_model_log_is_parsed() -> None:
    # the Stat line benchmark_model prints for the timed run, in microseconds
    log = ("count=5 first=1500 curr=1200 min=1100 max=1500 avg=1250 std=140\n"
           "Inference timings in us: Init: 3000, First inference: 1500, Warmup (avg): 1300, "
           "Inference (avg): 1250\n")  # fmt: skip
    lat = parse_benchmark_output("benchmark_model", log)
    assert lat == {"runs": 5, "min_ms": 1.1, "max_ms": 1.5, "mean_ms": 1.25}
    lat = parse_benchmark_output("onnxruntime_perf_test",
                                 "Average inference time cost: 2.5 ms\nP50 Latency: 0.0024 s\n"
                                 "P90 Latency: 0.003 s\n")  # fmt: skip
    assert lat["p50_ms"] == pytest.approx(2.4) and lat["p90_ms"] == pytest.approx(3.0)
    with pytest.raises(DeviceError):
        parse_benchmark_output("benchmark_model", "segmentation fault")


def test_adb_without_a_device_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb binary at all
    t = AdbTransport(parse_device("adb"), DeviceOptions())
    with pytest.raises(DeviceError, match="'adb' is not installed"):
        t.open()


def test_adb_device_for_real(artifacts: dict[str, Path], tmp_path: Path) -> None:
    serial = _adb_device()
    if serial is None:
        pytest.skip("no adb on PATH or no authorized Android device (`adb devices`)")
    bench, python = os.environ.get("EDGEQ_ADB_BENCHMARK_MODEL"), os.environ.get("EDGEQ_ADB_PYTHON")
    if python:
        opts = DeviceOptions(remote_python=python)
        res = run_devicetest(artifacts["relu_tflite"], f"adb:{serial}", runs=10,
                             model=artifacts["relu_onnx"], out=tmp_path, options=opts)  # fmt: skip
        assert res.report["outputs"]["y"]["vs_float"]["cosine"] > 0.99
    elif bench:
        opts = DeviceOptions(adb_runner=Path(bench), adb_runner_kind="benchmark_model")
        res = run_devicetest(artifacts["relu_tflite"], f"adb:{serial}", runs=10, out=tmp_path,
                             options=opts)  # fmt: skip
        assert res.report["latency"]["mean_ms"] > 0
    else:
        pytest.skip("set EDGEQ_ADB_BENCHMARK_MODEL or EDGEQ_ADB_PYTHON for the on-phone run")
