"""ssh, for real: against the loopback sshd of conftest.py, with this machine's python as the
"remote" python. HOME on the ssh side is a sandbox holding a canary file."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeq.cli import app
from edgeq.device_tests.conftest import INJECTION_NAME, SshServer
from edgeq.device_tests.devicetest import REPORT_JSON, run_devicetest
from edgeq.device_tests.transports import DeviceError, DeviceOptions, open_transport
from edgeq.ir.interpreter import Interpreter
from edgeq.ir.onnx_io import load_model

pytestmark = pytest.mark.ssh


def _workdirs() -> set[str]:
    return set(glob.glob("/tmp/edgeq-devicetest.*"))


def test_sandbox_home_is_in_effect(sshd: SshServer) -> None:
    with open_transport(sshd.device, sshd.options()) as t:
        res = t.exec(["sh", "-c", "echo ~"])
    assert res.returncode == 0 and res.stdout.strip() == str(sshd.home)


def test_hostile_name_is_pushed_and_run_verbatim(sshd: SshServer, tmp_path: Path) -> None:
    local = tmp_path / INJECTION_NAME
    local.write_bytes(b"edgeq payload\n")
    before = _workdirs()
    with open_transport(sshd.device, sshd.options()) as t:
        t.push(local, INJECTION_NAME)
        listing = t.exec(["ls", "-A"])
        content = t.exec(["cat", INJECTION_NAME])
        t.pull(INJECTION_NAME, tmp_path / "back")
        workdir = t.workdir
    assert listing.stdout.splitlines() == [INJECTION_NAME]
    assert content.stdout == "edgeq payload\n"
    assert (tmp_path / "back").read_bytes() == b"edgeq payload\n"
    assert sshd.canary.read_text() == "still here\n"  # `rm -rf ~` never ran
    assert workdir is not None and not os.path.exists(workdir)  # remote temp dir removed
    assert _workdirs() == before


def test_devicetest_over_ssh_matches_local(sshd: SshServer, artifacts: dict[str, Path],
                                           tmp_path: Path) -> None:  # fmt: skip
    art = Path(shutil.copy(artifacts["conv_onnx"], tmp_path / f"{INJECTION_NAME}.onnx"))
    feed = {"x": np.random.default_rng(5).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    np.savez(tmp_path / "one.npz", **feed)
    before = _workdirs()
    res = CliRunner().invoke(app, ["devicetest", str(art), *sshd.cli_args(), "--runs", "5",
                                   "--inputs", str(tmp_path / "one.npz"),
                                   "--model", str(artifacts["conv_onnx"])])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "devicetest" / REPORT_JSON).read_text())
    assert report["status"] == "passed" and report["device"] == sshd.device
    assert report["latency"]["runs"] == 5
    want = Interpreter(load_model(artifacts["conv_onnx"]))(feed)["y"]
    assert report["outputs"]["y"]["vs_float"]["cosine"] > 0.99999
    assert report["outputs"]["y"]["vs_float"]["max_abs"] < 1e-4 * max(
        1.0, float(np.abs(want).max())
    )
    assert sshd.canary.exists() and _workdirs() == before


def test_int8_tflite_over_ssh(sshd: SshServer, artifacts: dict[str, Path], tmp_path: Path) -> None:
    res = run_devicetest(artifacts["relu_tflite"], sshd.device, runs=3, samples=2,
                         model=artifacts["relu_onnx"], out=tmp_path, options=sshd.options())  # fmt: skip
    assert res.report["runner"]["runtime"] in ("ai_edge_litert", "tflite_runtime")
    assert res.report["outputs"]["y"]["vs_float"]["cosine"] > 0.99
    assert res.outputs[0]["y"].shape == (1, 3, 4, 4)


def _kill_runner_when_started(artifact_name: str, stop: threading.Event,
                              killed: dict[str, Any], parent: bool = False) -> None:  # fmt: skip
    """Find the runner of this test's job (its job.json names `artifact_name`) and SIGKILL it
    (or, with `parent`, the sshd session process serving it: the device vanishes)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not stop.is_set():
        for pid_file in glob.glob("/tmp/edgeq-devicetest.*/runner.pid"):
            work = Path(pid_file).parent
            try:
                job = json.loads((work / "job.json").read_text())
                pid = int(Path(pid_file).read_text())
            except (OSError, ValueError):
                continue
            if job.get("artifact") != artifact_name:
                continue
            if parent:
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                os.kill(ppid, signal.SIGKILL)
                killed["parent"] = ppid
            os.kill(pid, signal.SIGKILL)
            killed["pid"] = pid
            return
        time.sleep(0.05)


def test_runner_killed_mid_run_fails_cleanly(sshd: SshServer, artifacts: dict[str, Path],
                                             tmp_path: Path) -> None:  # fmt: skip
    art = Path(shutil.copy(artifacts["conv_onnx"], tmp_path / "killed-runner.onnx"))
    out = tmp_path / "rep"
    stop, killed = threading.Event(), {}
    killer = threading.Thread(target=_kill_runner_when_started,
                              args=(art.name, stop, killed))  # fmt: skip
    killer.start()
    try:
        res = CliRunner().invoke(app, ["devicetest", str(art), *sshd.cli_args(), "--runs", "3",
                                       "--model", str(artifacts["conv_onnx"]), "--out", str(out),
                                       "--debug-pause", "20"])  # fmt: skip
    finally:
        stop.set()
        killer.join()
    assert "pid" in killed
    assert res.exit_code == 2, res.output
    assert "failed" in res.output
    report = json.loads((out / REPORT_JSON).read_text())
    assert report["status"] == "failed" and "runner" in report["error"]
    assert "latency" not in report


def test_device_vanishing_mid_run_fails_cleanly(sshd: SshServer, artifacts: dict[str, Path],
                                                tmp_path: Path) -> None:  # fmt: skip
    art = Path(shutil.copy(artifacts["conv_onnx"], tmp_path / "vanishing.onnx"))
    stop, killed = threading.Event(), {}
    killer = threading.Thread(target=_kill_runner_when_started,
                              args=(art.name, stop, killed, True))  # fmt: skip
    killer.start()
    try:
        with pytest.raises(DeviceError, match="failed"):
            run_devicetest(art, sshd.device, runs=3, model=artifacts["conv_onnx"],
                           out=tmp_path / "rep", options=sshd.options(), pause_s=20)  # fmt: skip
    finally:
        stop.set()
        killer.join()
    assert "parent" in killed
    report = json.loads((tmp_path / "rep" / REPORT_JSON).read_text())
    assert report["status"] == "failed"


def test_unreachable_host_is_a_clear_error(sshd: SshServer, artifacts: dict[str, Path],
                                           tmp_path: Path) -> None:  # fmt: skip
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = DeviceOptions(remote_python="python3", identity=sshd.key, connect_timeout_s=3,
                         ssh_options=(f"UserKnownHostsFile={sshd.known_hosts}",))  # fmt: skip
    with pytest.raises(DeviceError, match="connecting on ssh://") as err:
        run_devicetest(artifacts["conv_onnx"], f"ssh://{sshd.user}@127.0.0.1:{port}",
                       runs=1, out=tmp_path / "rep", options=opts)  # fmt: skip
    assert "refused" in str(err.value)
    assert json.loads((tmp_path / "rep" / REPORT_JSON).read_text())["status"] == "failed"
