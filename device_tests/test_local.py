"""`--device local`: the runner script in a subprocess on this machine (the ssh code path)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeq.cli import app
from edgeq.device_tests.devicetest import REPORT_JSON, run_devicetest
from edgeq.device_tests.remote_runner import main as runner_main
from edgeq.errors import EdgeqError
from edgeq.ir.interpreter import Interpreter
from edgeq.ir.onnx_io import load_model

pytestmark = pytest.mark.local


def test_float_onnx_outputs_match_the_interpreter(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    art = shutil.copy(artifacts["conv_onnx"], tmp_path / "model.onnx")
    feed = {"x": np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    np.savez(tmp_path / "sample.npz", **feed)
    res = run_devicetest(art, "local", inputs=tmp_path / "sample.npz", runs=5, warmup=1,
                         model=artifacts["conv_onnx"])  # fmt: skip
    want = Interpreter(load_model(artifacts["conv_onnx"]))(feed)["y"]
    np.testing.assert_allclose(res.outputs[0]["y"], want, rtol=1e-4, atol=1e-5)
    assert res.passed and res.report["status"] == "passed"
    lat = res.report["latency"]
    assert lat["runs"] == 5 and 0 < lat["p50_ms"] <= lat["p90_ms"]
    saved = json.loads((tmp_path / "devicetest" / REPORT_JSON).read_text())
    assert saved["status"] == "passed" and saved["inputs"]["source"].endswith("sample.npz")


def test_int8_nhwc_tflite_is_quantized_and_transposed(artifacts: dict[str, Path],
                                                      tmp_path: Path) -> None:  # fmt: skip
    """relu.tflite is int8 NHWC; the model is float NCHW. The runner quantizes the NCHW feed
    into NHWC int8 and back, so the output is relu(x) up to one step (0.05) where in range."""
    res = run_devicetest(artifacts["relu_tflite"], "local", runs=3, warmup=1, samples=2,
                         model=artifacts["relu_onnx"], out=tmp_path / "r")  # fmt: skip
    assert res.report["runner"]["runtime"] in ("ai_edge_litert", "tflite_runtime")
    assert "random" in res.report["inputs"]["source"]
    rng = np.random.default_rng(0)  # the random inputs devicetest made (seed 0)
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    hi = (127 + 3) * 0.05  # largest value the int8 grid holds
    want = np.clip(np.maximum(x, 0), 0, hi)
    assert res.outputs[0]["y"].shape == (1, 3, 4, 4)
    assert np.max(np.abs(res.outputs[0]["y"] - want)) <= 0.05 / 2 + 1e-6


def test_budget_miss_exits_non_zero_with_a_failed_report(artifacts: dict[str, Path],
                                                         tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["devicetest", str(artifacts["conv_onnx"]), "--runs", "3",
                                      "--max-latency-ms", "0.000001", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert json.loads((out / REPORT_JSON).read_text())["status"] == "failed"


def test_missing_runtime_or_artifact_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"\0" * 16)
    with pytest.raises(EdgeqError, match=r"cannot tell|no runner"):
        run_devicetest(bad, "local", runs=1, out=tmp_path / "rep")
    assert json.loads((tmp_path / "rep" / REPORT_JSON).read_text())["status"] == "failed"
    result = CliRunner().invoke(app, ["devicetest", str(tmp_path / "nope.onnx")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "devicetest").exists()


def test_runner_reports_bad_jobs_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    (tmp_path / "job.json").write_text(json.dumps({"artifact": "missing.tflite",
                                                   "inputs": "i.npz", "samples": []}))  # fmt: skip
    assert runner_main([str(tmp_path / "job.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edgeq-runner: error: artifact 'missing.tflite' is not on the device"]


def test_quantized_export_folder_passes_parity(tmp_path: Path, artifacts: dict[str, Path]) -> None:
    """An `edgeq export` folder (onnx QDQ): devicetest finds plan/ and the model beside it."""
    pytest.importorskip("edgeq.exporters.onnx.qdq")
    from edgeq.export import export_model

    model = shutil.copy(artifacts["conv_onnx"], tmp_path / "conv.onnx")
    rng = np.random.default_rng(1)
    calib = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
    exp = export_model(model, "onnx", tmp_path / "exp", calib=calib, samples=8, eval_samples=2,
                       runs=2)  # fmt: skip
    res = run_devicetest(exp.artifact, "local", runs=3, warmup=1, samples=2)
    row = res.report["outputs"]["y"]
    assert res.report["target"] == "onnx" and res.report["plan"].endswith("plan")
    assert row["vs_simulator"]["within_one_step"] >= res.report["budgets"]["min_within_step"]
    assert res.passed
