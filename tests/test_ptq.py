"""The PTQ engine on tiny hand-built graphs: exact integers, plan round trip, recipe errors,
mask safety, and the calibration engine's streaming statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from edgeq.errors import InputError
from edgeq.ir.interpreter import Interpreter
from edgeq.ir.onnx_io import model_to_graph
from edgeq.ir.passes import prepare
from edgeq.quant.calibrate import collect_statistics, stack_batches
from edgeq.quant.observers import make_observer
from edgeq.quant.plan import QuantPlan
from edgeq.quant.planner import RecipeError, finalize_plan, make_spec
from edgeq.quant.qtypes import choose_qparams, fake_quant, qdtype, quantize
from edgeq.quant.recipe import LayerConfig, Override, Recipe
from edgeq.quant.simulate import Simulator
from edgeq.quant.statistics import ChannelMagnitude, InputHessian
from edgeq.quant.weights import bias_safe_weight_scale, quantize_bias, weight_qparams
from edgeq.targets import load_target
from tests.conftest import F32, I64, make_model


def _plan(graph, feeds, target="onnx", recipe=None):  # type: ignore[no-untyped-def]
    spec = make_spec(
        graph, recipe or Recipe(base=LayerConfig(act_observer="minmax")), load_target(target)
    )
    observers = spec.observers()
    stats = collect_statistics(graph, {n: (n, o) for n, o in observers.items()},
                               stack_batches(feeds, 4))  # fmt: skip
    return finalize_plan(graph, spec, stats.states)


def _linear_graph(w: np.ndarray, b: np.ndarray):  # type: ignore[no-untyped-def]
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, name="fc")]
    model = make_model(nodes, [("x", F32, [1, w.shape[1]])], [("y", F32, [1, w.shape[0]])],
                       initializers={"w": w, "b": b})  # fmt: skip
    return prepare(model_to_graph(model))


# ---- exact integers --------------------------------------------------------------------------
def test_choose_qparams_exact() -> None:
    # uint8 asymmetric over [-1, 3]: scale = 4/255, zero point = round(0 - (-1)/(4/255)) = 64
    s, z = choose_qparams(-1.0, 3.0, qdtype("uint8"), symmetric=False)
    assert s == pytest.approx(4 / 255) and int(z) == 64
    # int8 symmetric narrow over [-0.5, 2]: scale = 2/127, zero point 0
    s, z = choose_qparams(-0.5, 2.0, qdtype("int8", narrow=True), symmetric=True)
    assert s == pytest.approx(2 / 127) and int(z) == 0
    # a range that excludes zero is widened to include it: [1, 2] -> [0, 2]
    s, z = choose_qparams(1.0, 2.0, qdtype("uint8"), symmetric=False)
    assert s == pytest.approx(2 / 255) and int(z) == 0


def test_rounding_modes_on_ties() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5], np.float32)
    q = qdtype("int8")
    # scale 1, zp 0: half-to-even gives 0,2,2,-0,-2; half-away gives 1,2,3,-1,-2
    np.testing.assert_array_equal(quantize(x, 1.0, 0, q, rounding="half_even"), [0, 2, 2, 0, -2])
    np.testing.assert_array_equal(quantize(x, 1.0, 0, q, rounding="half_away"), [1, 2, 3, -1, -2])


def test_weights_and_int32_bias_exact() -> None:
    # W = [[0.5, -1.0], [0.25, 0.125]], per-channel symmetric int8 narrow:
    #   channel 0 amax 1.0 -> scale 1/127 -> q = [round(63.5)=64 (half-even), -127]
    #   channel 1 amax 0.25 -> scale 0.25/127 -> q = [127, round(63.5)=64]
    w = np.array([[0.5, -1.0], [0.25, 0.125]], np.float32)
    b = np.array([0.1, -0.2], np.float32)
    graph = _linear_graph(w, b)
    feeds = [{"x": np.array([[2.0, -2.0]], np.float32)}, {"x": np.array([[0.0, 1.0]], np.float32)}]
    plan = _plan(graph, feeds)
    wq = plan.tensors["w"]
    np.testing.assert_array_equal(wq.values, [[64, -127], [127, 64]])
    np.testing.assert_allclose(wq.scale, [1 / 127, 0.25 / 127], rtol=1e-6)
    x = plan.tensors["x"]
    # x range [-2, 2] in uint8: scale 4/255, zero point 128 (round(127.5) half-even = 128)
    assert float(x.scale) == pytest.approx(4 / 255) and int(x.zero_point) == 128
    bq = plan.tensors["b"]
    # bias scale = s_x * s_w; q_b = round(b / (s_x * s_w))
    expected = np.round(b.astype(np.float64) / (4 / 255 * np.array([1 / 127, 0.25 / 127])))
    np.testing.assert_array_equal(bq.values, expected.astype(np.int32))
    assert bq.dtype == "int32" and bq.provenance == "derived:s_in*s_w"


def test_simulator_matches_integer_arithmetic() -> None:
    w = np.array([[0.5, -1.0], [0.25, 0.125]], np.float32)
    b = np.array([0.1, -0.2], np.float32)
    graph = _linear_graph(w, b)
    feeds = [{"x": np.array([[2.0, -2.0]], np.float32)}, {"x": np.array([[-1.0, 1.5]], np.float32)}]
    plan = _plan(graph, feeds)
    sim = Simulator(graph, plan)
    xq, wq, bq, yq = (plan.tensors[n] for n in ("x", "w", "b", "y"))
    for feed in feeds:
        # integer pipeline: int8 x int8 -> int32 accumulator + int32 bias, requantize
        qx = quantize(feed["x"], xq.scale, xq.zero_point, xq.qdtype).astype(np.int64)
        acc = (qx - int(xq.zero_point)) @ wq.values.astype(np.int64).T + bq.values
        real = acc * (float(xq.scale) * wq.scale.astype(np.float64))
        qy = np.clip(np.round(real / float(yq.scale)) + int(yq.zero_point), 0, 255)
        expected = (qy - int(yq.zero_point)) * float(yq.scale)
        np.testing.assert_allclose(sim(feed)["y"], expected, atol=1e-6)


def test_per_block_weights() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 8)).astype(np.float32)  # MatMul weight [K=64, N=8]
    q = qdtype("int4")
    scale, zp = weight_qparams(w, q, axis=0, block=32, symmetric=True)
    assert scale.shape == (2, 8)  # K/32 blocks x N
    np.testing.assert_allclose(scale[0], np.abs(w[:32]).max(axis=0) / 7, rtol=1e-6)
    np.testing.assert_allclose(scale[1], np.abs(w[32:]).max(axis=0) / 7, rtol=1e-6)
    err = np.abs(fake_quant(w, scale, zp, q, axis=0, block=32) - w)
    assert (err <= np.repeat(scale, 32, axis=0) / 2 + 1e-7).all()  # within half a step


def test_mse_weights_never_worse_than_minmax() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 64)).astype(np.float32)
    w[0, 0] = 12.0  # an outlier
    q = qdtype("int4")
    errs = {}
    for method in ("minmax", "mse"):
        s, z = weight_qparams(w, q, axis=0, block=None, symmetric=True, method=method)
        errs[method] = float(np.sum((fake_quant(w, s, z, q, axis=0) - w) ** 2))
    assert errs["mse"] < errs["minmax"]


def test_bias_overflow_raises_weight_scale() -> None:
    bias = np.array([1e6], np.float32)
    ws = bias_safe_weight_scale(bias, 1e-4, np.array([1e-6], np.float32))
    q = quantize_bias(bias, 1e-4 * ws)
    assert abs(int(q[0])) < 2**31 - 1 and ws[0] > 1e-6


# ---- plan persistence ------------------------------------------------------------------------
def test_plan_save_load_round_trip(tmp_path: Path) -> None:
    w = np.array([[0.5, -1.0], [0.25, 0.125]], np.float32)
    graph = _linear_graph(w, np.zeros(2, np.float32))
    plan = _plan(graph, [{"x": np.ones((1, 2), np.float32)}])
    plan.save(tmp_path / "p")
    again = QuantPlan.load(tmp_path / "p")
    assert again.plan_hash() == plan.plan_hash()
    for name, t in plan.tensors.items():
        u = again.tensors[name]
        assert (t.role, t.dtype, t.axis, t.block, t.provenance) == (
            u.role,
            u.dtype,
            u.axis,
            u.block,
            u.provenance,
        )
        for key in ("scale", "zero_point", "values"):
            a, b = getattr(t, key), getattr(u, key)
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a, b)
    plan.save(tmp_path / "p")  # overwriting an existing plan folder works
    assert QuantPlan.load(tmp_path / "p").plan_hash() == plan.plan_hash()


def test_plan_load_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a plan folder"):
        QuantPlan.load(tmp_path)


def test_algorithm_supplied_weight_values() -> None:
    w = np.array([[0.5, -1.0], [0.25, 0.125]], np.float32)
    graph = _linear_graph(w, np.zeros(2, np.float32))
    plan = _plan(graph, [{"x": np.ones((1, 2), np.float32)}])
    new = plan.with_weight_values("w", np.array([[63, -127], [127, 63]], np.int8), "algorithm:test")
    assert new.tensors["w"].provenance == "algorithm:test"
    assert plan.tensors["w"].values[0, 0] == 64  # the original plan is unchanged


# ---- recipe resolution -----------------------------------------------------------------------
def _matmul_graph():  # type: ignore[no-untyped-def]
    w = np.ones((32, 8), np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")]
    model = make_model(nodes, [("x", F32, [1, 32])], [("y", F32, [1, 8])], initializers={"w": w})
    return prepare(model_to_graph(model))


def test_impossible_recipes_fail_before_calibration() -> None:
    g = _matmul_graph()
    with pytest.raises(RecipeError, match=r"tflm.*4-bit"):
        make_spec(g, Recipe(base=LayerConfig(weight_bits=4)), load_target("tflm"))
    with pytest.raises(RecipeError, match="only quantized"):
        make_spec(g, Recipe(base=LayerConfig(act_bits=0)), load_target("qnn"))
    per_channel = Recipe(overrides=(Override("op:MatMul", LayerConfig(granularity="per_channel")),))
    with pytest.raises(RecipeError, match=r"MatMul node 'proj'.*per-channel.*Conv"):
        make_spec(g, per_channel, load_target("qnn"))
    block8 = Recipe(
        overrides=(
            Override(
                "name:^proj$", LayerConfig(weight_bits=4, granularity="per_block", act_bits=8)
            ),
        )
    )
    with pytest.raises(RecipeError, match="16-bit activations"):
        make_spec(g, block8, load_target("qnn"))
    with pytest.raises(RecipeError, match="keep layers in float"):
        make_spec(g, Recipe(keep_float=("op:MatMul",)), load_target("rpi"))
    with pytest.raises(RecipeError, match="16-bit"):
        make_spec(g, Recipe(base=LayerConfig(act_bits=16)), load_target("tflm"))


def test_target_rules_fall_back_with_reason() -> None:
    spec = make_spec(_matmul_graph(), Recipe(), load_target("qnn"))
    w = spec.tensors["w"]
    assert w.axis is None and "per-channel only on Conv" in w.reason
    spec4 = make_spec(_matmul_graph(), Recipe(base=LayerConfig(weight_bits=4)), load_target("qnn"))
    assert spec4.tensors["w"].block == 32 and spec4.tensors["x"].dtype == "uint16"  # W4A16


def test_recipe_toml_and_precedence(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(
        '[recipe]\nweight_bits = 8\nact_observer = "percentile"\n'
        '[[override]]\nmatch = "op:MatMul"\nweight_bits = 4\n'
        '[[override]]\nmatch = "name:^proj$"\nweight_bits = 8\n'
    )
    recipe = Recipe.load(path)
    assert recipe.config_for("proj", "MatMul")[0].weight_bits == 8  # name beats op
    assert recipe.config_for("other", "MatMul")[0].weight_bits == 4  # op beats global
    assert recipe.config_for("c", "Conv")[0].weight_bits == 8
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    path.write_text("[recipe]\nweight_bitz = 8\n")
    with pytest.raises(InputError, match="weight_bitz"):
        Recipe.load(path)


# ---- transformer safety ----------------------------------------------------------------------
def _masked_attention():  # type: ignore[no-untyped-def]
    # scores + (1 - mask) * float_min -> softmax, as HF BERT exports it
    nodes = [
        helper.make_node("Cast", ["mask"], ["maskf"], to=1),
        helper.make_node("Sub", ["one", "maskf"], ["inv"]),
        helper.make_node("Mul", ["inv", "fmin"], ["additive"]),
        helper.make_node("Add", ["scores", "additive"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
    ]
    model = make_model(
        nodes, [("scores", F32, [1, 8]), ("mask", I64, [1, 8])], [("probs", F32, [1, 8])],
        initializers={"one": np.array(1.0, np.float32), "fmin": np.array(np.finfo(np.float32).min, np.float32)},
    )  # fmt: skip
    return prepare(model_to_graph(model))


@pytest.mark.parametrize("target", ["onnx", "qnn"])
def test_attention_mask_never_sets_a_range(target: str) -> None:
    g = _masked_attention()
    rng = np.random.default_rng(0)
    mask = np.array([[1, 1, 1, 1, 1, 0, 0, 0]], np.int64)
    feeds = [
        {"scores": rng.uniform(-4, 4, (1, 8)).astype(np.float32), "mask": mask} for _ in range(8)
    ]
    plan = _plan(g, feeds, target)
    masked = plan.tensors["masked"]
    if target == "onnx":  # float activations allowed: the mask path and Softmax input stay float
        assert (
            plan.tensors["additive"].role == "float" and "mask" in plan.tensors["additive"].reason
        )
        assert masked.role == "float" and "kept float" in masked.reason
    else:  # integer-only: mask clamped to its fixed range, Softmax input at 16 bits
        assert plan.tensors["additive"].reason.startswith("additive attention mask")
        assert masked.dtype == "uint16" and "16 bits" in masked.reason
        lo = (masked.qdtype.qmin - int(masked.zero_point)) * float(masked.scale)
        assert -40 < lo < -4  # scores' range (floored 16 below the max), not float-min
    out = Simulator(g, plan)(feeds[0])["probs"]
    ref = Interpreter(g)(feeds[0])["probs"]
    assert np.abs(out - ref).max() < 0.02 and out[0, 5:].max() < 1e-3


def _post_norm_block():  # type: ignore[no-untyped-def]
    # BERT's post-norm block: LayerNorm output read by a MatMul and by the residual Add; the
    # norm's scale gives a few channels 30x the rest (the outlier features of trained models)
    rng = np.random.default_rng(3)
    gamma = np.ones(32, np.float32)
    gamma[[3, 17]] = 30.0
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], axis=-1, name="ln"),
        helper.make_node("MatMul", ["ln", "w"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "ln"], ["res"], name="residual"),
        helper.make_node(
            "LayerNormalization", ["res", "gamma2", "beta"], ["y"], axis=-1, name="ln2"
        ),
    ]
    model = make_model(
        nodes, [("x", F32, [1, 6, 32])], [("y", F32, [1, 6, 32])],
        initializers={"gamma": gamma, "beta": np.zeros(32, np.float32),
                      "gamma2": np.ones(32, np.float32),
                      "w": (rng.standard_normal((32, 32)) * 0.2).astype(np.float32)},
    )  # fmt: skip
    return model_to_graph(model)


@pytest.mark.parametrize("target", ["qnn", "rpi"])
def test_norm_output_read_by_matmul_is_16bit_where_a16w8_runs(target: str) -> None:
    from edgeq.pipeline import prepare_for_quantization

    g = prepare_for_quantization(_post_norm_block(), target=target)
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1, 6, 32)).astype(np.float32)} for _ in range(8)]
    # the tensor the MatMul (a 1x1 Conv on qnn) reads, behind the layout ops
    conv = next(n for n in g.nodes if n.op_type in ("MatMul", "Conv") and n.name.startswith("fc"))
    from dataclasses import replace

    profile = load_target(target)
    plans = {}
    for on in (True, False):  # the target's rule on, and off (everything else the same)
        prof = replace(
            profile,
            quant=replace(
                profile.quant, norm_outputs_16bit=on and profile.quant.norm_outputs_16bit
            ),
        )
        spec = make_spec(g, Recipe(base=LayerConfig(act_observer="minmax")), prof)
        stats = collect_statistics(g, {n: (n, o) for n, o in spec.observers().items()},
                                   stack_batches(feeds, 4))  # fmt: skip
        plans[on] = finalize_plan(g, spec, stats.states)
    read = plans[True].tensors[conv.inputs[0]]
    if target == "rpi":  # TFLite runs no int16 input into an int8-weight FULLY_CONNECTED here
        assert read.dtype != "int16"
        return
    assert read.dtype == "uint16" and "A16W8" in read.reason, read
    assert plans[False].tensors[conv.inputs[0]].dtype == "uint8"
    ref = [Interpreter(g)(f)["y"] for f in feeds]
    err = {on: np.mean([np.abs(Simulator(g, p)(f)["y"] - r).mean() for f, r in zip(feeds, ref, strict=True)])
           for on, p in plans.items()}  # fmt: skip
    assert err[True] < 0.7 * err[False], err


def test_integer_only_target_clamps_mask() -> None:
    spec = make_spec(_masked_attention(), Recipe(), load_target("rpi"))
    assert spec.tensors["additive"].fixed_range == (-64.0, 0.0)


# ---- streaming statistics --------------------------------------------------------------------
def test_statistics_accumulate_hessian_and_channel_magnitude() -> None:
    g = _matmul_graph()
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, 32)).astype(np.float32) for _ in range(10)]
    stats = {
        "x.minmax": ("x", make_observer("minmax")),
        "x.hessian": ("x", InputHessian(32)),
        "x.magnitude": ("x", ChannelMagnitude(32)),
    }
    result = collect_statistics(g, stats, stack_batches([{"x": x} for x in xs], 4))
    allx = np.concatenate(xs)
    np.testing.assert_allclose(
        InputHessian(32).finalize(result.states["x.hessian"]), allx.T @ allx / 10, rtol=1e-5
    )
    mag = ChannelMagnitude(32).finalize(result.states["x.magnitude"])
    np.testing.assert_allclose(mag["max_abs"], np.abs(allx).max(axis=0), rtol=1e-6)
    assert result.samples == 10 and result.batches == 3
    assert float(result.states["x.minmax"]["max"]) == pytest.approx(allx.max())


def test_same_shape_statistics_are_grouped_and_exact() -> None:
    # three Relu outputs of one shape share one vmapped update; each keeps its own state
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["n"]),
             helper.make_node("Relu", ["n"], ["b"]), helper.make_node("Add", ["a", "b"], ["y"])]  # fmt: skip
    g = prepare(model_to_graph(make_model(nodes, [("x", F32, [2, 3])], [("y", F32, [2, 3])])))
    obs = make_observer("minmax")
    xs = [np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5 for _ in range(3)]
    result = collect_statistics(
        g, {t: (t, obs) for t in ("a", "b", "y", "n")}, stack_batches([{"x": x} for x in xs], 2)
    )
    assert float(result.states["a"]["max"]) == 2.5 and float(result.states["b"]["max"]) == 2.5
    assert float(result.states["n"]["min"]) == -2.5 and float(result.states["y"]["min"]) == 0.5


@pytest.mark.parametrize("dirty", [None, np.nan, -np.inf, -1e9])
def test_batch_with_ignored_values_is_redone_with_filtering(dirty, caplog) -> None:  # type: ignore[no-untyped-def]
    # minmax (folded as a packed vector) and percentile (per tensor): a batch the plain
    # reductions cannot take is redone with the filtering updates, and the result equals
    # filtering every batch
    nodes = [helper.make_node("Neg", ["x"], ["n"]), helper.make_node("Neg", ["n"], ["y"])]
    g = prepare(model_to_graph(make_model(nodes, [("x", F32, [1, 8])], [("y", F32, [1, 8])])))
    rng = np.random.default_rng(5)
    xs = [rng.normal(size=(1, 8)).astype(np.float32) * (i + 1) for i in range(6)]
    if dirty is not None:
        xs[3][0, 2] = dirty
    mm, pc = make_observer("minmax"), make_observer("percentile", bins=64)
    stats = {"n": ("n", mm), "y.mm": ("y", mm), "y.pc": ("y", pc)}
    with caplog.at_level("INFO", logger="edgeq.quant.calibrate"):
        result = collect_statistics(g, stats, stack_batches([{"x": x} for x in xs], 2))
    assert ("filtering updates" in caplog.text) == (dirty is not None)
    for key, (tensor, obs) in stats.items():
        state = obs.init()
        for i in range(0, 6, 2):
            batch = np.stack(xs[i : i + 2])
            state = obs.update(state, -batch if tensor == "n" else batch)
        for name, value in state.items():
            np.testing.assert_array_equal(result.states[key][name], np.asarray(value), err_msg=key)
