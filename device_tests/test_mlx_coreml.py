"""devicetest on edgeq's own artifact kinds: an MLX folder (run with MLX through edgeq's MLX
runtime, locally and over the loopback ssh) and a Core ML .mlpackage off macOS (run by edgeq's
numpy MIL evaluator and labelled as such, with no device latency)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeq.cli import app
from edgeq.device_tests import remote_runner
from edgeq.device_tests.conftest import SshServer, write_conv_onnx
from edgeq.device_tests.devicetest import REPORT_JSON, REPORT_MD, run_devicetest
from edgeq.device_tests.remote_runner import COREML_EVAL_RUNTIME

pytestmark = pytest.mark.local


def _export(tmp: Path, target: str) -> Path:
    """A tiny conv model exported with `edgeq export`'s code path; returns the artifact."""
    from edgeq.export import export_model

    model = write_conv_onnx(tmp / "conv.onnx", seed=4)
    rng = np.random.default_rng(2)
    calib = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
    exp = export_model(model, target, tmp / target, calib=calib, samples=8, eval_samples=2,
                       runs=1)  # fmt: skip
    return exp.artifact


@pytest.fixture(scope="module")
def mlx_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mlx.core")
    return _export(tmp_path_factory.mktemp("mlx"), "mlx")


def _check_parity(report: dict[str, object]) -> None:
    outputs = report["outputs"]
    assert isinstance(outputs, dict) and set(outputs) == {"y"}
    row = outputs["y"]
    budgets = report["budgets"]
    assert isinstance(budgets, dict)
    assert row["vs_simulator"]["within_one_step"] >= budgets["min_within_step"]
    assert row["vs_float"]["cosine"] > 0.99
    assert report["status"] == "passed"


def test_mlx_folder_runs_locally_with_parity(mlx_artifact: Path, tmp_path: Path) -> None:
    assert mlx_artifact.is_dir() and remote_runner.is_mlx_artifact(mlx_artifact)
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["devicetest", str(mlx_artifact), "--runs", "3", "--warmup",
                                   "1", "--samples", "2", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((out / REPORT_JSON).read_text())
    assert report["runner"]["runtime"] == "mlx" and "cpu" in report["runner"]["mlx_device"]
    assert report["target"] == "mlx" and report["plan"].endswith("plan")
    assert report["latency"]["runs"] == 3 and report["latency"]["p50_ms"] > 0
    assert report["artifact"]["bytes"] > 0
    _check_parity(report)
    assert "mlx" in res.output and "within 1 step of simulator" in res.output


def test_mlx_outputs_equal_the_exporters_runner(mlx_artifact: Path, tmp_path: Path) -> None:
    """The device runner's MLX outputs are the exporter's own runner's, for the same feeds."""
    from edgeq.exporters import get_exporter

    rng = np.random.default_rng(9)
    feed = {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
    np.savez(tmp_path / "one.npz", **feed)
    res = run_devicetest(mlx_artifact, "local", inputs=tmp_path / "one.npz", runs=1, warmup=0,
                         out=tmp_path / "rep")  # fmt: skip
    want = get_exporter("mlx").open(mlx_artifact)(feed)["y"]
    np.testing.assert_allclose(res.outputs[0]["y"], want, rtol=1e-5, atol=1e-6)


def test_mlx_without_edgeq_on_the_device_says_how_to_install(mlx_artifact: Path,
                                                           tmp_path: Path) -> None:  # fmt: skip
    """The runner under a python where `import edgeq` fails: one line naming the fix."""
    work = tmp_path / "dev"
    work.mkdir()
    shutil.copytree(mlx_artifact, work / "model")
    shutil.copy(remote_runner.__file__, work / "remote_runner.py")
    np.savez(work / "inputs.npz", s0_0=np.zeros((1, 3, 8, 8), np.float32))
    (work / "job.json").write_text(json.dumps({"artifact": "model", "inputs": "inputs.npz",
                                               "samples": [{"x": "s0_0"}]}))  # fmt: skip
    block_edgeq = (
        "import sys, runpy\n"
        "class NoEdgeq:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'edgeq' or name.startswith('edgeq.'):\n"
        "            raise ImportError('No module named ' + repr(name))\n"
        "sys.meta_path.insert(0, NoEdgeq())\n"
        "sys.argv = ['remote_runner.py', 'job.json']\n"
        "runpy.run_path('remote_runner.py', run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", block_edgeq], cwd=work, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeq-runner: error: an MLX artifact")
    assert "pip install 'edgeq[mlx]'" in lines[0]
    assert not (work / "result.json").exists()


def test_coreml_off_macos_runs_the_labelled_evaluator(tmp_path: Path) -> None:
    if sys.platform == "darwin":
        pytest.skip("on macOS the runner uses Core ML itself")
    pytest.importorskip("coremltools")
    art = _export(tmp_path, "ane")
    assert art.suffix == ".mlpackage"
    res = run_devicetest(art, "local", runs=2, warmup=0, samples=2, max_latency_ms=1e-9,
                         out=tmp_path / "rep")  # fmt: skip
    report = res.report
    assert report["runtime"] == report["runner"]["runtime"] == COREML_EVAL_RUNTIME
    assert report["latency"] is None and report["stand_in_latency"]["runs"] == 2
    assert not any("latency" in c["check"] for c in report["checks"])  # no device latency
    assert any("not a device latency" in n for n in report["notes"])
    _check_parity(report)
    md = (tmp_path / "rep" / REPORT_MD).read_text()
    assert "not a device latency" in md and "latency over" not in md


@pytest.mark.ssh
def test_mlx_folder_over_ssh(sshd: SshServer, mlx_artifact: Path, tmp_path: Path) -> None:
    """The folder travels as a tar stream; the remote python (this .venv's) has edgeq + MLX."""
    res = run_devicetest(mlx_artifact, sshd.device, runs=2, warmup=0, samples=2,
                         out=tmp_path / "rep", options=sshd.options())  # fmt: skip
    assert res.report["device"] == sshd.device and res.report["runner"]["runtime"] == "mlx"
    _check_parity(res.report)
    local = run_devicetest(mlx_artifact, "local", runs=1, warmup=0, samples=2,
                           out=tmp_path / "local")  # fmt: skip
    np.testing.assert_array_equal(res.outputs[1]["y"], local.outputs[1]["y"])
