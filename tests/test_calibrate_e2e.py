"""End-to-end calibration on real models through the CLI and the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeq import Interpreter
from edgeq.cli import app
from edgeq.pipeline import calibrate_model
from edgeq.quant.plan import QuantPlan
from edgeq.quant.recipe import Recipe
from edgeq.quant.simulate import Simulator
from examples.models import CASES, minilm_feeds
from examples.text import english_sentences

runner = CliRunner()


@pytest.mark.slow
def test_cli_calibrate_and_report_cls(cls_calib: Path, cls_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan"
    result = runner.invoke(app, ["calibrate", str(cls_model), "--calib", str(cls_calib),
                                 "--target", "qnn", "--input-shape", "x=1,3,48,192",
                                 "--calib-samples", "16", "--report-samples", "4", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    plan = QuantPlan.load(out)
    assert plan.target == "qnn" and plan.calibration["samples"] == 16
    assert plan.report["held_out"] and plan.report["samples"] == 4
    weights = [t for t in plan.tensors.values() if t.role == "weight"]
    # QNN takes per-channel weights only on Conv: the classifier head MatMul was rewritten as a
    # 1x1 Conv for it, so every weight is per-channel on axis 0
    convs = [t for t in weights if t.values.ndim == 4]
    assert convs and all(t.axis == 0 for t in convs)
    assert not [t for t in weights if t.values.ndim == 2]  # no MatMul weight left per-tensor
    acts = [t for t in plan.tensors.values() if t.role == "activation"]
    # uint8 everywhere but the Softmax input (transformer safety: 16 bits where QNN allows it)
    assert all(
        t.dtype == "uint8" or ("Softmax input" in t.reason and t.dtype == "uint16") for t in acts
    )
    softmax_out = [t for t in acts if t.provenance == "fixed"]
    assert softmax_out and all(
        float(t.scale) == 1 / 256 and int(t.zero_point) == 0 for t in softmax_out
    )
    report = runner.invoke(app, ["report", str(out), "--top", "5"])
    assert report.exit_code == 0 and "SQNR" in report.output
    # the simulated model still classifies text direction like the float one
    case = CASES["ppocr-cls"]
    from edgeq.pipeline import graph_for_plan

    graph = graph_for_plan(cls_model, plan)
    sim, ref = Simulator(graph, plan), Interpreter(graph)
    feeds = case.make_feeds(40, "eval")
    agree = np.mean([sim(f)[graph.output_names[0]].argmax() == ref(f)[graph.output_names[0]].argmax()
                     for f in feeds])  # fmt: skip
    assert agree >= 0.9


def test_cli_calibrate_rejects_nan_sample_and_writes_nothing(cls_calib: Path, cls_model: Path,
                                                             tmp_path: Path) -> None:  # fmt: skip
    bad = tmp_path / "bad"
    bad.mkdir()
    for i, f in enumerate(sorted(cls_calib.glob("*.npy"))[:3]):
        x = np.load(f)
        if i == 1:
            x[0, 1, 2, 3] = np.nan
        np.save(bad / f.name, x)
    out = tmp_path / "plan"
    result = runner.invoke(app, ["calibrate", str(cls_model), "--calib", str(bad), "--input-shape",
                                 "x=1,3,48,192", "--report-samples", "0", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 2
    assert "line_001.npy" in result.output and "NaN" in result.output
    assert not out.exists()


def test_cli_impossible_recipe_fails_before_calibration(cls_model: Path, tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()  # no data at all: the recipe must fail first
    result = runner.invoke(app, ["calibrate", str(cls_model), "--calib", str(empty), "--target",
                                 "tflm", "--bits", "4", "--input-shape", "x=1,3,48,192"])  # fmt: skip
    assert result.exit_code == 2 and "tflm" in result.output and "4-bit" in result.output


@pytest.mark.slow
def test_minilm_w8a8_keeps_embeddings(tmp_path: Path) -> None:
    case = CASES["minilm"]
    path = case.model_path(tmp_path)
    run = calibrate_model(path, case.make_feeds(16, "calib"), "onnx", Recipe(),
                          input_shapes=case.input_shapes, report_samples=0)  # fmt: skip
    assert run.plan.calibration["padding_ignored_via"] == "attention_mask"
    additive = [t for t in run.plan.tensors.values() if "additive attention mask" in t.reason]
    assert additive and all(t.role == "float" for t in additive)
    assert run.plan.tensors["embeddings.word_embeddings.weight"].is_quantized
    feeds = minilm_feeds(english_sentences(12, split="eval"))
    ref, sim = Interpreter(run.graph), Simulator(run.graph, run.plan)
    a = np.concatenate([ref(f)["sentence_embedding"] for f in feeds])
    b = np.concatenate([sim(f)["sentence_embedding"] for f in feeds])
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.mean() >= 0.98, cos


def test_mask_path_range_covers_every_mask_on_integer_only_targets(tmp_path: Path) -> None:
    """Mean pooling's token count (ReduceSum of the mask) is quantized on qnn; calibrating on
    short sentences must not clip longer ones: the mask path sees all-real and one-real masks."""
    from onnx import TensorProto, helper

    from edgeq.pipeline import calibrate_model
    from tests.conftest import make_model

    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "ax"], ["m3"]),
        helper.make_node("Mul", ["x", "m3"], ["xm"]),
        helper.make_node("ReduceSum", ["xm", "ax1"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["m", "ax1"], ["count"], keepdims=1),
        helper.make_node("Div", ["total", "count"], ["y"]),
    ]
    model = make_model(nodes, [("x", TensorProto.FLOAT, [1, 16, 4]),
                               ("attention_mask", TensorProto.INT64, [1, 16])],
                       [("y", TensorProto.FLOAT, [1, 4])],
                       initializers={"ax": np.array([-1], np.int64), "ax1": np.array([1], np.int64)})  # fmt: skip
    path = tmp_path / "pool.onnx"
    path.write_bytes(model.SerializeToString())
    rng = np.random.default_rng(0)
    short = np.array([[1] * 3 + [0] * 13], np.int64)  # every calibration "sentence" has 3 tokens
    feeds = [{"x": rng.normal(size=(1, 16, 4)).astype(np.float32), "attention_mask": short}
             for _ in range(6)]  # fmt: skip
    run = calibrate_model(path, feeds, "qnn", samples=6, report_samples=0)
    count = run.plan.get("count")
    assert count is not None and count.is_quantized
    top = (count.qdtype.qmax - int(count.zero_point)) * float(count.scale)
    assert top >= 16 - 1e-3  # a 16-token input is representable, not clipped at 3
    full = {"x": feeds[0]["x"], "attention_mask": np.ones((1, 16), np.int64)}
    got = np.asarray(Simulator(run.graph, run.plan)(full)["y"])
    want = np.asarray(Interpreter(run.graph)(full)["y"])
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max() + 0.05
