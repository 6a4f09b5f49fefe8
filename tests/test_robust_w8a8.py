"""Issue #15: float-exact graph algorithms (CLE, smoothing), bias correction, the rare-value
range cut, the mixed-Concat rule, and the diagnosis that names a planted bad tensor."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import helper

from edgeq.algorithms import get_algorithm
from edgeq.algorithms.bias_correction import correct_bias, output_shift
from edgeq.algorithms.equalize import cross_layer_equalization
from edgeq.algorithms.rare_values import FRACTIONS, clip_rare_values, cut_rare_values
from edgeq.algorithms.smoothing import smooth_layernorm_outputs
from edgeq.errors import InputError
from edgeq.ir.interpreter import Interpreter
from edgeq.ir.onnx_io import model_to_graph
from edgeq.ir.passes import prepare
from edgeq.quant.calibrate import stack_batches
from edgeq.quant.diagnose import diagnose
from edgeq.quant.planner import make_spec
from edgeq.quant.qtypes import choose_qparams, qdtype
from edgeq.quant.recipe import LayerConfig, Recipe
from edgeq.quant.simulate import Simulator
from edgeq.targets import load_target
from tests.conftest import F32, make_model
from tests.test_ptq import _plan

RNG = np.random.default_rng(15)


def _conv_stack(depthwise: bool, act: str):  # type: ignore[no-untyped-def]
    """x → Conv(4→6) → act → Conv (6→5, or depthwise 6→6) → y, channel ranges 100x apart."""
    w1 = RNG.standard_normal((6, 4, 3, 3)).astype(np.float32) * np.geomspace(0.05, 5, 6)[
        :, None, None, None
    ].astype(np.float32)
    b1 = RNG.standard_normal(6).astype(np.float32)
    w2 = (
        RNG.standard_normal((6, 1, 3, 3)) if depthwise else RNG.standard_normal((5, 6, 1, 1))
    ).astype(np.float32)
    out_c = 6 if depthwise else 5
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1], name="c1")]
    mid = "h"
    if act:
        nodes.append(
            helper.make_node(
                act, ["h"], ["a"], name="act", **({"alpha": 0.1} if act == "LeakyRelu" else {})
            )
        )
        mid = "a"
    nodes.append(helper.make_node("Conv", [mid, "w2"], ["y"], name="c2", group=6 if depthwise else 1,
                                  pads=[1, 1, 1, 1] if depthwise else [0, 0, 0, 0]))  # fmt: skip
    model = make_model(nodes, [("x", F32, [1, 4, 8, 8])], [("y", F32, [1, out_c, 8, 8])],
                       initializers={"w1": w1, "b1": b1, "w2": w2})  # fmt: skip
    return prepare(model_to_graph(model))


def test_cle_leaves_the_float_function_unchanged() -> None:
    x = {"x": RNG.standard_normal((1, 4, 8, 8)).astype(np.float32)}
    for depthwise, act in ((False, "Relu"), (True, "Relu"), (False, "LeakyRelu"), (False, "")):
        g = _conv_stack(depthwise, act)
        before = Interpreter(g)(x)["y"]
        g2, facts = cross_layer_equalization(g)
        assert facts["pairs"] == 1
        np.testing.assert_allclose(Interpreter(g2)(x)["y"], before, rtol=2e-5, atol=2e-5)
        w1 = np.abs(g.constants["w1"]).reshape(6, -1).max(axis=1)
        w1n = np.abs(g2.constants["w1"]).reshape(6, -1).max(axis=1)
        assert w1n.max() / w1n.min() < 0.5 * w1.max() / w1.min()  # ranges actually evened out
    assert get_algorithm("cle", "graph").run is cross_layer_equalization


def test_cle_skips_a_non_homogeneous_op() -> None:
    g = _conv_stack(False, "Sigmoid")  # sigmoid(x / s) != sigmoid(x) / s: must not touch it
    assert cross_layer_equalization(g)[1]["pairs"] == 0


def test_bias_correction_removes_the_mean_output_shift() -> None:
    # a hand-built Gemm layer y = x Wᵀ + b on inputs with a nonzero mean (post-ReLU features)
    w = RNG.standard_normal((8, 16)).astype(np.float32)
    b = RNG.standard_normal(8).astype(np.float32)
    x = np.abs(RNG.standard_normal((512, 16))).astype(np.float32) + 1.0
    s, _ = choose_qparams(-np.abs(w).max(), np.abs(w).max(), qdtype("int4"), True)
    wq = (np.clip(np.round(w / s), -8, 7) * s).astype(np.float32)  # coarse: a visible shift
    y = x @ w.T + b
    shift = (x @ wq.T + b - y).mean(axis=0)
    assert np.abs(shift).max() > 0.05
    b2 = correct_bias(b, w, wq, x.mean(axis=0), kind="gemm")
    np.testing.assert_allclose((x @ wq.T + b2 - y).mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(
        output_shift(w, wq, x.mean(axis=0), "gemm"), shift, rtol=1e-4, atol=1e-5
    )
    # the conv form with 1x1 kernels is the same computation
    np.testing.assert_allclose(output_shift(w[:, :, None, None], wq[:, :, None, None], x.mean(axis=0)),
                               shift, rtol=1e-4, atol=1e-5)  # fmt: skip


def test_smoothing_is_exact_before_quantization() -> None:
    d, n = 16, 12
    gamma = (RNG.standard_normal(d) * np.where(np.arange(d) == 3, 40.0, 1.0)).astype(
        np.float32
    )  # an outlier channel
    beta = RNG.standard_normal(d).astype(np.float32)
    wa, wb = (RNG.standard_normal((d, n)).astype(np.float32) for _ in range(2))
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "be"], ["ln"], axis=-1, name="ln"),
             helper.make_node("MatMul", ["ln", "wa"], ["ya"], name="ma"),
             helper.make_node("MatMul", ["ln", "wb"], ["yb"], name="mb")]  # fmt: skip
    model = make_model(nodes, [("x", F32, [1, 5, d])], [("ya", F32, [1, 5, n]), ("yb", F32, [1, 5, n])],
                       initializers={"g": gamma, "be": beta, "wa": wa, "wb": wb})  # fmt: skip
    g = prepare(model_to_graph(model))
    feed = {"x": RNG.standard_normal((1, 5, d)).astype(np.float32)}
    ref = Interpreter(g, taps=["ln"])(feed)
    absmax = np.abs(ref["ln"]).reshape(-1, d).max(axis=0)
    g2, facts = smooth_layernorm_outputs(g, {"ln": absmax})
    assert facts["layernorms"] == 1
    got = Interpreter(g2, taps=["ln"])(feed)
    for k in ("ya", "yb"):
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-4)
    smoothed = np.abs(got["ln"]).reshape(-1, d).max(axis=0)
    assert smoothed.max() / np.median(smoothed) < absmax.max() / np.median(absmax)


def test_rare_values_cut_the_range_and_keep_common_ones() -> None:
    # 1e6 values; 10 (1e-5) beyond 0.75 of the max: the cut goes to the first fraction that
    # holds more than 1e-4 of them
    above = np.array([10, 10, 10, 50, 5000, 9000, 9e4, 2e5, 4e5, 6e5], np.float32)
    state = {
        "above": above,
        "below": np.zeros(len(FRACTIONS), np.float32),
        "valid": np.float32(1e6),
    }
    ((lo, hi),) = clip_rare_values({"t": (0.0, 100.0)}, {"t": state}).values()
    assert lo == 0.0 and np.isclose(hi, 100.0 * FRACTIONS[3])  # 50 ≤ 100 allowed, 5000 is not
    # nothing rare: the range stays
    busy = {
        **state,
        "above": np.full(len(FRACTIONS), 5e3, np.float32),
        "below": np.full(len(FRACTIONS), 5e3, np.float32),
    }
    assert clip_rare_values({"t": (-1.0, 100.0)}, {"t": busy})["t"] == (-1.0, 100.0)


def test_rare_value_pass_on_a_graph() -> None:
    g = prepare(model_to_graph(make_model([helper.make_node("Relu", ["x"], ["y"]),
                                           helper.make_node("Neg", ["y"], ["z"])],
                                          [("x", F32, [1, 4096])], [("z", F32, [1, 4096])])))  # fmt: skip
    feeds = [{"x": np.abs(RNG.standard_normal((1, 4096))).astype(np.float32)} for _ in range(8)]
    feeds[0]["x"][0, 0] = 60.0  # one rare value sets min-max
    states = {"y": {"min": np.float32(0.0), "max": np.float32(60.0)}}
    out, facts = cut_rare_values(g, states, ["y"], stack_batches(feeds, 4))
    assert facts["cut"] == 1 and 3.0 < float(out["y"]["max"]) < 15.0


def _detector_head():  # type: ignore[no-untyped-def]
    """YOLO-style: box coordinates (0..300) concatenated with sigmoid scores."""
    nodes = [helper.make_node("Conv", ["x", "wb"], ["box"], name="box_conv"),
             helper.make_node("Conv", ["x", "wl"], ["logit"], name="score_conv"),
             helper.make_node("Sigmoid", ["logit"], ["score"], name="sig"),
             helper.make_node("Concat", ["box", "score"], ["y"], axis=1, name="cat")]  # fmt: skip
    init = {"wb": np.full((1, 1, 1, 1), 40.0, np.float32), "wl": np.ones((1, 1, 1, 1), np.float32)}
    model = make_model(
        nodes, [("x", F32, [1, 1, 4, 4])], [("y", F32, [1, 2, 4, 4])], initializers=init
    )
    return prepare(model_to_graph(model))


def test_concat_of_fixed_scores_and_boxes_keeps_the_boxes() -> None:
    g = _detector_head()
    feeds = [{"x": (RNG.uniform(0, 7.5, (1, 1, 4, 4))).astype(np.float32)} for _ in range(8)]
    for target, dtype in (
        ("rpi", "int16"),
        ("qnn", "uint16"),
        ("onnx", "float32"),
        ("tflm", "int8"),
    ):
        spec = make_spec(g, Recipe(), load_target(target))
        assert spec.tensors["box"].fixed is None  # the sigmoid's 1/256 is not forced on boxes
        assert spec.tensors["y"].dtype == dtype
        plan = _plan(g, feeds, target, Recipe(base=LayerConfig(act_observer="minmax")))
        ref, sim = Interpreter(g), Simulator(g, plan)
        x = feeds[0]
        err = np.abs(sim(x)["y"] - ref(x)["y"])
        assert err[0, 0].max() < 2.0  # boxes span 0..300: no clipping at 1.0
        if target != "tflm":
            assert err[0, 1].max() < 0.01  # scores keep their 1/256 resolution


def test_diagnosis_names_a_planted_bad_range() -> None:
    g = _conv_stack(False, "Relu")
    feeds = [{"x": RNG.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(4)]
    plan = _plan(g, feeds, "onnx", Recipe(base=LayerConfig(act_observer="minmax")))
    clean = diagnose(g, plan, feeds[:2])
    t = plan.tensors["a"]
    bad = replace(t, scale=np.asarray(float(t.scale) * 0.05, np.float32))  # clips most of "a"
    planted = replace(plan, tensors={**plan.tensors, "a": bad})
    d = diagnose(g, planted, feeds[:2])
    assert d.culprit is not None and d.culprit["tensor"] == "a"
    codes = {c["code"] for c in d.culprit["causes"]}
    assert (
        d.culprit["own_sqnr_db"] < 10
        and "clipping" in codes
        and d.culprit["clipped_fraction"] > 0.1
    )
    assert clean.rows[0]["own_sqnr_db"] > 25
    assert d.to_dict()["culprit"] == "a"


def test_diagnosis_ignores_attention_mask_fill() -> None:
    """An additive mask puts float-min on padded keys: those values are no signal (calibration
    ignores them), and squaring them made every energy of the scores inf and its SQNR NaN
    (with a RuntimeWarning). The diagnosis measures the real scores and still reports the
    fill in the observed range."""
    import warnings

    from tests.test_ptq import _masked_attention

    g = _masked_attention()
    mask = np.array([[1, 1, 1, 1, 1, 0, 0, 0]], np.int64)
    feeds = [{"scores": RNG.uniform(-4, 4, (1, 8)).astype(np.float32), "mask": mask}
             for _ in range(4)]  # fmt: skip
    plan = _plan(g, feeds, "qnn", Recipe(base=LayerConfig(act_observer="minmax")))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        d = diagnose(g, plan, feeds[:2])
    row = next(r for r in d.rows if r["tensor"] == "masked")
    assert np.isfinite(row["local_sqnr_db"]) and row["local_sqnr_db"] > 30, row
    # 3 of every 8 scores are fill: not counted as clipped (they were: 0.375 and more)
    assert row["clipped_fraction"] < 0.2 and row["observed"][0] < -1e30, row


def _ctc_head(path):  # type: ignore[no-untyped-def]
    """A recognizer's CTC head: features [1, T, 16] → MatMul (16 → 16384 classes) → bias Add
    → Softmax (QNN keeps the bias Add apart: its MatMul output is quantized too).
    Feature k of each time step picks class 16383 - k with a logit near 15; every other class
    sits near 0 (σ ≈ 1.5). One winner per row of 16384 is a 6e-5 share of the logits: the
    rare-value cut (99.99th percentile) would clip exactly the winners."""
    d, classes = 16, 16384
    w = (RNG.standard_normal((d, classes)) * 0.3).astype(np.float32)
    w[np.arange(d), classes - 1 - np.arange(d)] = 3.0  # winners at high indices: ties go low
    b = (RNG.standard_normal(classes) * 0.1).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["acc"], name="head"),
             helper.make_node("Add", ["acc", "b"], ["logits"], name="bias"),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax")]  # fmt: skip
    model = make_model(nodes, [("x", F32, [1, 8, d])], [("probs", F32, [1, 8, classes])],
                       initializers={"w": w, "b": b})  # fmt: skip
    onnx.save(model, path)


def _ctc_feeds(n: int) -> list[dict[str, np.ndarray]]:
    feeds = []
    for _ in range(n):
        x = RNG.standard_normal((1, 8, 16)).astype(np.float32) * 0.3
        x[0, np.arange(8), RNG.integers(0, 16, 8)] = 5.0
        feeds.append({"x": x})
    return feeds


@pytest.mark.parametrize("target", ["rpi", "qnn"])
def test_softmax_input_keeps_its_winning_logits(tmp_path, target: str) -> None:  # type: ignore[no-untyped-def]
    # integer-only targets quantize the Softmax input (onnx keeps it float); the default
    # rare-value cut must not clip its top, or every winner saturates at one level and the
    # argmax falls to a runner-up. Checked on the runtime (LiteRT / onnxruntime).
    from edgeq.exporters import ExportOptions, get_exporter
    from edgeq.pipeline import calibrate_model

    _ctc_head(tmp_path / "head.onnx")
    run = calibrate_model(tmp_path / "head.onnx", _ctc_feeds(16), target, Recipe(),
                          report_samples=0)  # fmt: skip
    evals = _ctc_feeds(8)
    ref = Interpreter(run.graph)
    profile = load_target(target)
    exporter = get_exporter(profile.exporter)
    art = exporter.export(run.graph, run.plan, profile, tmp_path / f"head{exporter.suffix}",
                          ExportOptions())  # fmt: skip
    runner = exporter.open(art.path)
    agree = [np.mean(np.argmax(runner(f)["probs"], -1) == np.argmax(ref(f)["probs"], -1))
             for f in evals]  # fmt: skip
    assert np.mean(agree) >= 0.95
    logits = run.plan.tensors["logits"]
    hi = (logits.qdtype.qmax - int(logits.zero_point)) * float(logits.scale)  # type: ignore[arg-type]
    peak = max(float(Interpreter(run.graph, taps=["logits"])(f)["logits"].max()) for f in evals)
    assert hi >= 0.9 * peak  # the winners' level is representable
    assert "range top kept" in logits.reason  # and the plan says why
    acc = run.plan.tensors.get("acc")  # rpi: fused with the bias (int32); qnn: a Conv's bias
    assert acc is None or acc.role == "float" or "range top kept" in acc.reason


def test_diagnosis_names_a_clipped_softmax_top(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # the clipped winners are 1/16384 of the logits: their own (local) SQNR looks fine, yet
    # they decide the Softmax; the diagnosis must measure them and say so
    _ctc_head(tmp_path / "head.onnx")
    from edgeq.ir.onnx_io import load_model

    g = prepare(load_model(tmp_path / "head.onnx"))
    feeds = _ctc_feeds(4)
    plan = _plan(g, feeds, "rpi", Recipe(base=LayerConfig(act_observer="minmax")))
    t = plan.tensors["logits"]
    cut = replace(t, scale=np.asarray(float(t.scale) * 0.4, np.float32))  # top at ~40% of max
    d = diagnose(g, replace(plan, tensors={**plan.tensors, "logits": cut}), feeds[:2])
    row = next(r for r in d.rows if r["tensor"] == "logits")
    assert row["measured"] == "exact"
    assert "top_clipped" in {c["code"] for c in row["causes"]}
    assert d.culprit is not None and d.culprit["tensor"] == "logits"
    clean = diagnose(g, plan, feeds[:2])
    row = next(r for r in clean.rows if r["tensor"] == "logits")
    assert "top_clipped" not in {c["code"] for c in row["causes"]}


def _rare_value_model(tmp_path, signal: bool):  # type: ignore[no-untyped-def]
    """x [1, 20000] → Relu → MatMul (→ 8 outputs), with one rare large value per sample.
    `signal`: the rare value sits anywhere, on a bulk of tiny values, and carries the output
    (cutting it off loses the output); otherwise it sits where the weights are zero, on a
    bulk of ordinary values (the range it sets starves the bulk of levels)."""
    n = 20000
    w = RNG.standard_normal((n, 8)).astype(np.float32)
    if not signal:
        w[0] = 0.0
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="relu"),
             helper.make_node("MatMul", ["h", "w"], ["y"], name="mm")]  # fmt: skip
    model = make_model(nodes, [("x", F32, [1, n])], [("y", F32, [1, 8])], initializers={"w": w})
    path = tmp_path / ("signal.onnx" if signal else "waste.onnx")
    onnx.save(model, path)
    rng = np.random.default_rng(3)

    def feed() -> dict[str, np.ndarray]:
        x = np.abs(rng.standard_normal((1, n))) * (0.01 if signal else 1.0)
        x[0, rng.integers(n) if signal else 0] = rng.uniform(30, 60) if signal else 1000.0
        return {"x": x.astype(np.float32)}

    return path, feed


@pytest.mark.parametrize("signal", [True, False])
def test_rare_value_cut_is_chosen_by_the_output_it_leaves(tmp_path, signal: bool) -> None:
    from edgeq.pipeline import calibrate_model
    from edgeq.quant.simulate import layer_sqnr

    path, feed = _rare_value_model(tmp_path, signal)
    calib, fresh = [feed() for _ in range(32)], [feed() for _ in range(16)]

    def run(tail):  # type: ignore[no-untyped-def]
        return calibrate_model(path, calib, "onnx", Recipe(rare_values_tail=tail), samples=32,
                               eval_samples=0)  # fmt: skip

    auto, fixed = run("auto"), run(1e-4)
    facts = auto.plan.calibration["rare_values"]
    sqnr = facts["output_sqnr_db"]
    assert (
        set(sqnr) == {"None", "0.0001", "0.001"} and "16 calibration samples" in facts["chosen_by"]
    )

    def held_out(r) -> float:  # type: ignore[no-untyped-def]
        return next(x["sqnr_db"] for x in layer_sqnr(r.graph, r.plan, fresh) if x["output"])

    if signal:  # the rare values are the output: no cut
        assert facts["tail"] is None and sqnr["None"] > sqnr["0.0001"] + 10
        assert held_out(auto) > held_out(fixed) + 10
    else:  # the rare value only wastes levels: the usual cut stays
        assert facts["tail"] == 1e-4 and sqnr["0.0001"] > sqnr["None"] + 5
        assert held_out(auto) == held_out(fixed)


def test_rare_value_tail_in_a_recipe() -> None:
    r = Recipe.from_dict({"rare_values_tail": 1e-3})
    assert r.rare_values_tail == 1e-3 and Recipe.from_dict(r.to_dict()) == r
    assert Recipe().rare_values_tail == 1e-4  # "auto" is opt-in (see the recipe field)
    assert Recipe.from_dict({"rare_values_tail": "auto"}).rare_values_tail == "auto"
    for bad in ("often", 0.5, 0):
        with pytest.raises(InputError, match="rare_values_tail"):
            Recipe.from_dict({"rare_values_tail": bad})


def test_next_steps_after_a_fail_name_only_what_the_target_runs() -> None:
    from edgeq.verdict import next_steps

    g = _conv_stack(False, "Relu")
    feeds = [{"x": RNG.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(4)]
    for target, sixteen in (("rpi", True), ("qnn", True), ("tflm", False)):
        plan = _plan(g, feeds, target, Recipe())
        steps = next_steps(plan, load_target(target))
        assert any("--diagnose" in s for s in steps) and any("rare_values_tail" in s for s in steps)
        assert any("--act-bits 16" in s for s in steps) == sixteen, (target, steps)
        assert not any("--max-loss" in s for s in steps)  # 8-bit weights: nothing to steer
        # a plan that already chose its cut by output error is not told to do it again
        auto = replace(plan, recipe={**plan.recipe, "rare_values_tail": "auto"})
        assert not any("rare_values_tail" in s for s in next_steps(auto, load_target(target)))
