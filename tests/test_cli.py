"""`edgeq inspect` and `edgeq run` on real models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from edgeq.cli import app

runner = CliRunner()


def test_inspect_json_dynamic_model(rec_model: Path) -> None:
    result = runner.invoke(app, ["inspect", str(rec_model), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["inputs"][0]["name"] == "x"
    assert data["macs"] is None  # shapes not fixed yet
    assert data["unfixed"] == {"x": ["p2o.DynamicDimension.0", "?", "p2o.DynamicDimension.1"]}
    assert data["op_histogram"]["BatchNormalization"] == 6
    assert data["parameters"] > 2_000_000


def test_inspect_fixed_shapes_folds_and_counts_macs(rec_model: Path) -> None:
    result = runner.invoke(
        app, ["inspect", str(rec_model), "--input-shape", "x=1,3,48,320", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["unfixed"] == {}
    assert data["outputs"][0]["shape"] == [1, 40, 6625]
    assert "BatchNormalization" not in data["op_histogram"]
    assert data["op_histogram"]["LayerNormalization"] == 5
    # MACs are dominated by convs and matmuls: a few hundred million for this model
    assert 1e8 < data["macs"] < 5e9
    # support is derived from the lowerings: LayerNorm runs on TFLite Micro as a float island
    # and HardSigmoid decomposed (issue #14), so PP-OCRv4 rec has nothing tflm refuses
    assert "tflm" not in data["unsupported_by_target"], data["unsupported_by_target"]


def test_inspect_table_output(vad_model: Path) -> None:
    result = runner.invoke(
        app,
        ["inspect", str(vad_model), "--input-shape", "input=1,576", "--input-shape",
         "state=2,1,128", "--input-value", "sr=16000"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "LSTM" in result.output and "MACs" in result.output
    assert "If" not in result.output.split("ops")[1].split("parameters")[0]
    assert "leave the accelerator on ane: LSTM" in result.output


def test_run_compares_with_onnxruntime(cls_model: Path, tmp_path: Path) -> None:
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, x=np.random.default_rng(1).standard_normal((1, 3, 48, 192)).astype(np.float32))
    result = runner.invoke(
        app, ["run", str(cls_model), "--input-shape", "x=1,3,48,192", "--inputs", str(feeds)]
    )
    assert result.exit_code == 0, result.output
    row = next(ln for ln in result.output.splitlines() if "save_infer_model" in ln)
    err = float(row.split("│")[-2])
    assert err < 1e-4


def test_ops_lists_registry() -> None:
    result = runner.invoke(app, ["ops"])
    assert result.exit_code == 0 and "Conv" in result.output and "LSTM" in result.output
