"""A plan is validated before use: every number of a real plan passes, each impossible one is
refused naming the tensor, an exporter refuses a bad plan handed to it directly (the boundary
check), and a plan applied to another model file needs --allow-model-mismatch."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import helper, numpy_helper
from typer.testing import CliRunner

from edgeq.cli import app
from edgeq.exporters import ExportOptions, get_exporter
from edgeq.ir.onnx_io import load_model
from edgeq.pipeline import prepare_for_quantization
from edgeq.quant.plan import QuantPlan, TensorQuant
from edgeq.quant.plan_check import PlanError, check_numbers, check_tensor
from edgeq.targets import load_target
from tests.conftest import F32, make_model

CLI = CliRunner()


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plans")
    rng = np.random.default_rng(1)
    model = make_model([helper.make_node("Conv", ["x", "k", "b"], ["c"], pads=[1, 1, 1, 1]),
                        helper.make_node("Relu", ["c"], ["y"])],
                       [("x", F32, [1, 3, 8, 8])], [("y", F32, [1, 4, 8, 8])],
                       initializers={"k": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
                                     "b": rng.normal(0, 0.1, 4).astype(np.float32)})  # fmt: skip
    (root / "m.onnx").write_bytes(model.SerializeToString())
    (root / "calib").mkdir()
    for i in range(4):
        np.save(root / "calib" / f"s{i}.npy", rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32))
    result = CLI.invoke(app, ["calibrate", str(root / "m.onnx"), "--calib", str(root / "calib"),
                              "--report-samples", "0", "-o", str(root / "plan")])  # fmt: skip
    assert result.exit_code == 0, result.output
    k = numpy_helper.to_array(model.graph.initializer[0]) + np.float32(0.01)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(k, "k"))
    (root / "other").mkdir()
    (root / "other" / "m.onnx").write_bytes(model.SerializeToString())
    return {"root": root, "model": root / "m.onnx", "plan": root / "plan",
            "other": root / "other" / "m.onnx"}  # fmt: skip


def _tensor(plan: QuantPlan, role: str) -> TensorQuant:
    return next(t for t in plan.tensors.values() if t.role == role and t.is_quantized)


def test_a_real_plan_passes_and_each_impossible_number_is_named(made: dict[str, Path]) -> None:
    plan = QuantPlan.load(made["plan"])
    check_numbers(plan)
    act, weight, bias = (_tensor(plan, r) for r in ("activation", "weight", "bias"))
    bad = {
        "non-finite": replace(act, scale=np.array(np.nan, np.float32)),
        "Inf": replace(act, scale=np.array(np.inf, np.float32)),
        "≤ 0": replace(weight, scale=-weight.scale),  # type: ignore[operator]
        "normal range": replace(act, scale=np.array(1e-42, np.float32)),
        "outside uint8": replace(act, zero_point=np.array(300)),
        "not an integer": replace(act, zero_point=np.array(1.5)),
        "would wrap": replace(weight, values=weight.values.astype(np.int32) * 200),  # type: ignore[union-attr]
        "does not fit": replace(weight, scale=weight.scale[:2], zero_point=weight.zero_point[:2]),  # type: ignore[index]
        "axis 7": replace(weight, axis=7),
        "without its integer values": replace(bias, values=None),
        "int32's range": replace(bias, values=bias.values.astype(np.int64) * 2**40),  # type: ignore[union-attr]
    }
    for words, t in bad.items():
        with pytest.raises(PlanError, match=words.replace("(", r"\(")) as info:
            check_tensor(t)
        assert t.name in str(info.value)


@pytest.mark.parametrize("exporter,target", [("onnx_qdq", "onnx"), ("tflite", "rpi")])
def test_the_exporter_boundary_refuses_a_bad_plan(made: dict[str, Path], tmp_path: Path,
                                                 exporter: str, target: str) -> None:  # fmt: skip
    """Plans are checked on load; an API caller can still hand an exporter a plan built in
    memory: a NaN scale there is refused, not written."""
    plan = QuantPlan.load(made["plan"])
    act = _tensor(plan, "activation")
    tensors = dict(plan.tensors)
    tensors[act.name] = replace(act, scale=np.array(np.nan, np.float32))
    graph = prepare_for_quantization(load_model(made["model"]))
    with pytest.raises(PlanError, match="non-finite"):
        get_exporter(exporter).export(graph, replace(plan, tensors=tensors), load_target(target),
                                      tmp_path / "m.out", ExportOptions())  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_a_plan_for_another_model_needs_allow_model_mismatch(made: dict[str, Path],
                                                            tmp_path: Path) -> None:  # fmt: skip
    args = ["export", str(made["other"]), "--plan", str(made["plan"]), "-o", str(tmp_path / "o")]
    result = CLI.invoke(app, args)
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "made for 'm.onnx'" in line and str(made["other"]) in line and "sha256" in line
    assert not (tmp_path / "o").exists()
    # no evaluation data: the verdict is UNCHECKED (exit 1 unless --allow-loss)
    result = CLI.invoke(app, [*args, "--allow-model-mismatch", "--allow-loss"])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "o" / "plan" / "plan.json").read_text())
    assert written["model"]["plan_made_for"]["file"] == "m.onnx"  # the record says what was done


def test_a_plan_without_its_models_hash_is_refused(made: dict[str, Path], tmp_path: Path) -> None:
    plan = QuantPlan.load(made["plan"])
    replace(plan, model={k: v for k, v in plan.model.items() if k != "sha256"}).save(tmp_path / "p")
    result = CLI.invoke(app, ["export", str(made["model"]), "--plan", str(tmp_path / "p"),
                              "-o", str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code == 2 and "does not record its model's SHA-256" in result.output


def test_the_plan_and_model_of_a_devicetest_must_match(made: dict[str, Path], tmp_path: Path) -> None:  # fmt: skip
    exp = tmp_path / "exp"
    assert CLI.invoke(app, ["export", str(made["model"]), "--plan", str(made["plan"]),
                            "--allow-loss", "-o", str(exp)]).exit_code == 0  # fmt: skip
    result = CLI.invoke(app, ["devicetest", str(exp / "model.onnx"), "--model", str(made["other"]),
                              "--runs", "1", "--samples", "1"])  # fmt: skip
    assert result.exit_code == 2 and "sha256" in result.output, result.output


def _tampered(made: dict[str, Path], root: Path, edit: Any) -> Path:
    """A copy of the real plan with plan.json edited by `edit(meta)`."""
    import shutil

    shutil.copytree(made["plan"], root)
    meta = json.loads((root / "plan.json").read_text())
    edit(meta)
    (root / "plan.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("factors", [[float("nan")] * 4, [0.0] * 4, [-1.0] * 4, [], "x", [True]])
def test_awq_factors_in_a_plan_are_numbers_like_scales(made: dict[str, Path], tmp_path: Path,
                                                       factors: Any) -> None:  # fmt: skip
    """A --plan export folds the plan's AWQ factors into the graph again: NaN, zero or
    negative factors (a Relu site with a negative factor is a different function) are refused
    on load, before anything is built."""
    plan = _tampered(made, tmp_path / "p",
                     lambda m: m["calibration"].update(awq={"scales": {"c": factors}}))  # fmt: skip
    result = CLI.invoke(app, ["export", str(made["model"]), "--plan", str(plan), "--allow-loss",
                              "--allow-model-mismatch", "-o", str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code == 2 and "AWQ factors of 'c'" in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_awq_factors_must_fit_the_graph(tmp_path: Path) -> None:
    """Valid factors for a site this graph lacks, or of the wrong length, are a plan error
    (not an unexpected exception); and factors edited on the right site change the folded
    graph, so its fingerprint no longer matches: refused without --allow-model-mismatch."""
    rng = np.random.default_rng(2)
    model = make_model([helper.make_node("Conv", ["x", "k", "b"], ["c"], pads=[1, 1, 1, 1]),
                        helper.make_node("Relu", ["c"], ["r"]),
                        helper.make_node("Conv", ["r", "k2"], ["y"])],
                       [("x", F32, [1, 3, 8, 8])], [("y", F32, [1, 4, 8, 8])],
                       initializers={"k": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
                                     "b": rng.normal(0, 0.1, 4).astype(np.float32),
                                     "k2": rng.normal(0, 0.3, (4, 4, 1, 1)).astype(np.float32)})  # fmt: skip
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    (tmp_path / "calib").mkdir()
    for i in range(2):
        np.save(tmp_path / "calib" / f"s{i}.npy", rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32))
    made = {"plan": tmp_path / "plan"}
    assert CLI.invoke(app, ["calibrate", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib"),
                            "--report-samples", "0", "-o", str(made["plan"])]).exit_code == 0  # fmt: skip
    cases = {"not_a_site": ({"y": [1.0] * 4}, ["--allow-model-mismatch"], "not in this graph"),
             "short": ({"r": [1.0] * 3}, ["--allow-model-mismatch"], "records 3 factors"),
             "edited": ({"r": [2.0, 1.0, 0.5, 1.0]}, [], "fingerprint differs")}  # fmt: skip
    for name, (scales, flags, words) in cases.items():
        plan = _tampered(made, tmp_path / name,
                         lambda m, s=scales: m["calibration"].update(awq={"scales": s}))  # fmt: skip
        result = CLI.invoke(app, ["export", str(tmp_path / "m.onnx"), "--plan", str(plan),
                                  "--allow-loss", *flags, "-o", str(tmp_path / f"o_{name}")])  # fmt: skip
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and words in lines[-1], (name, result.output)
        assert "unexpected" not in result.output and not (tmp_path / f"o_{name}").exists()


@pytest.mark.parametrize("edit", [
    lambda m: m["calibration"].update(mixed_precision=[1]),
    lambda m: m["calibration"].update(weights="gptq"),
    lambda m: m["report"].update(layers=[1, 2]),
    lambda m: m["report"].update(diagnosis={"rows": "all"}),
    lambda m: m["report"].update(diagnosis=[1]),
    lambda m: m["calibration"].update(branch_scales=[{"branch": "x", "factors": [1.0, -2.0]}]),
    lambda m: m["calibration"].update(smoothing=[{"tensor": "x", "scales": "big"}]),
    lambda m: m["calibration"].update(smoothing={"x": [1.0]}),
], ids=["mixed_precision", "weights", "layers", "diagnosis_rows", "diagnosis_list",
        "branch_factors", "smoothing_scales", "smoothing_rows"])  # fmt: skip
def test_report_parts_of_a_plan_have_their_shape(made: dict[str, Path], tmp_path: Path,
                                                 edit: Any) -> None:  # fmt: skip
    plan = _tampered(made, tmp_path / "p", edit)
    result = CLI.invoke(app, ["report", str(plan)])
    assert result.exit_code == 2 and "re-create the plan" in result.output, result.output
    assert "unexpected" not in result.output


def test_a_look_up_table_only_on_a_target_that_reads_it(made: dict[str, Path], tmp_path: Path) -> None:  # fmt: skip
    """A table added to an affine weight of an onnx plan would be ignored by the exporter
    (which reads scales): refused on load, and at the exporter boundary."""
    plan = QuantPlan.load(made["plan"])
    weight = _tensor(plan, "weight")
    bits = weight.qdtype.bits
    shape = (*(1,) * np.ndim(weight.values), 1 << bits)
    lut = np.linspace(-1, 1, 1 << bits, dtype=np.float32).reshape(shape)
    with_scale = replace(weight, lut=lut)
    indices = (weight.values.astype(np.int64) - weight.qdtype.qmin).astype(np.int32)  # type: ignore[union-attr]
    only_lut = replace(weight, lut=lut, scale=None, zero_point=None, values=indices)
    with pytest.raises(PlanError, match="both a look-up table and a scale"):
        check_tensor(with_scale)
    check_tensor(only_lut)  # a well-formed table: the tensor alone is fine
    bad = replace(plan, tensors={**plan.tensors, weight.name: only_lut})
    with pytest.raises(PlanError, match="target 'onnx' has no palettized weights"):
        check_numbers(bad)
    bad.save(tmp_path / "p")
    result = CLI.invoke(app, ["report", str(tmp_path / "p")])
    assert result.exit_code == 2 and "no palettized weights" in result.output, result.output
