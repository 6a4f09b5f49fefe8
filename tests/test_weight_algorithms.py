"""4-bit weight algorithms: GPTQ against the paper's algorithm and RTN, grids with partial last
blocks decoded from real artifacts, palettized (LUT) weights in Core ML, recipe selection and
provenance, and the mixed-precision budgets (--max-loss, --bpw) changing the chosen bits, with
bits per weight recomputed from the artifact's own tensors."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgeq.algorithms.gptq import GPTQConfig, output_error, solve_padded
from edgeq.algorithms.grids import Grid, MatrixView, round_to_grid
from edgeq.exporters import ExportOptions, get_exporter
from edgeq.exporters.onnx.qdq import OrtRunner, weight_storage
from edgeq.ir.onnx_io import model_to_graph
from edgeq.ir.passes import prepare
from edgeq.pipeline import calibrate_model
from edgeq.quant.planner import make_spec
from edgeq.quant.recipe import LayerConfig, Override, Recipe, recipe_from_cli
from edgeq.quant.simulate import Simulator
from edgeq.quant.statistics import ConvInputHessian
from edgeq.targets import load_target
from edgeq.verify import within_step
from tests.conftest import F32, decode_folded_blocks, make_model
from tests.gptq_reference import gptq_reference

RNG = np.random.default_rng(7)


def _correlated_layer(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """A weight and the Hessian of correlated inputs with channel scales over a decade (the
    case where error feedback matters); one dead input channel."""
    x = RNG.standard_normal((512, cols)) @ (np.eye(cols) + 0.4 * RNG.standard_normal((cols, cols)))
    x *= np.linspace(0.3, 3.0, cols)
    x[:, 5] = 0.0
    return RNG.standard_normal((rows, cols)), x.T @ x / len(x)


@pytest.mark.parametrize("symmetric,act_order", [(True, True), (False, False)])
def test_gptq_equals_the_papers_algorithm_and_beats_rtn(symmetric: bool, act_order: bool) -> None:
    rows, cols, block = 12, 72, 16  # 72 = 4 blocks of 16 and a partial one of 8
    w, h = _correlated_layer(rows, cols)
    view = MatrixView((rows, cols), 0, 1, "per_block", block)
    grid = Grid(-8, 7, True, "minmax") if symmetric else Grid(0, 15, False, "minmax")
    config = GPTQConfig(act_order=act_order, block=32)
    q, scale, zp = solve_padded(w, h, view.group_of_column(), view.groups, grid, config,
                                dtype=np.float64)  # fmt: skip
    ref = gptq_reference(w, h, view.group_of_column(), grid.qmin, grid.qmax, symmetric,
                         act_order=act_order)  # fmt: skip
    np.testing.assert_array_equal(q, ref)  # the same integers, column for column
    gptq = (q - np.asarray(view.expand(zp))) * np.asarray(view.expand(scale))
    values, s, z = round_to_grid(w.astype(np.float32), view, grid)
    rtn = (values - np.asarray(view.expand(z.reshape(rows, -1)))) * np.asarray(
        view.expand(s.reshape(rows, -1))
    )
    assert np.all(gptq[:, 5] == 0)  # a dead input channel gets no weight
    assert output_error(w, gptq, h) < 0.8 * output_error(w, rtn, h)


def test_conv_hessian_columns_match_the_weight_as_a_matrix() -> None:
    """H from im2col patches uses the column order of a conv weight as [out, kh·kw·in/g]:
    W_matrix @ patchᵀ reproduces the convolution, also for a grouped conv."""
    import jax

    x = RNG.standard_normal((1, 4, 7, 9)).astype(np.float32)
    w = RNG.standard_normal((6, 2, 3, 2)).astype(np.float32)  # groups=2
    stat = ConvInputHessian(4, (3, 2), strides=(2, 1), pads=(1, 0, 1, 1), groups=2)
    patches = np.asarray(stat.patches(x))  # [groups, rows, K]
    y = jax.lax.conv_general_dilated(x, w, (2, 1), [(1, 1), (0, 1)], feature_group_count=2)
    view = MatrixView(w.shape, 0, 1, "per_channel")
    m = view.to_matrix(w).reshape(2, 3, -1)  # [groups, out/g, K]
    out = np.einsum("grk,gok->gor", patches, m).reshape(6, *np.asarray(y).shape[2:])
    np.testing.assert_allclose(out, np.asarray(y)[0], rtol=1e-4, atol=1e-4)
    # dilated, strided both ways (the patches are strided slices of the padded input)
    stat = ConvInputHessian(
        4, (3, 2), strides=(2, 2), pads=(2, 1, 0, 1), dilations=(2, 3), groups=2
    )
    y = jax.lax.conv_general_dilated(x, w, (2, 2), [(2, 0), (1, 1)], rhs_dilation=(2, 3),
                                     feature_group_count=2)  # fmt: skip
    out = np.einsum("grk,gok->gor", np.asarray(stat.patches(x)), m)
    np.testing.assert_allclose(out.reshape(6, *np.asarray(y).shape[2:]), np.asarray(y)[0],
                               rtol=1e-4, atol=1e-4)  # fmt: skip


# ---- small models -------------------------------------------------------------------------------
def _mlp(tmp_path: Path, widths: tuple[int, ...] = (40, 64, 64, 48, 24)) -> Path:
    """MatMul/Relu stack with one outlier-heavy layer (the sensitive one) and a 1x1 conv head
    (input dims not multiples of 32: partial last blocks)."""
    nodes, inits, prev = [], {}, "x"
    for i, (k, n) in enumerate(itertools.pairwise(widths)):
        wgt = RNG.normal(0, 1 / np.sqrt(k), (k, n)).astype(np.float32)
        if i == 1:
            wgt[:, :4] *= 12.0  # outlier columns: 4-bit hurts this layer most
        inits[f"w{i}"] = wgt
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"fc{i}"),
                  helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}")]  # fmt: skip
        prev = f"r{i}"
    inits["wc"] = RNG.normal(0, 0.2, (8, widths[-1], 1, 1)).astype(np.float32)
    nodes += [helper.make_node("Unsqueeze", [prev, "ax"], ["u"], name="unsq"),
              helper.make_node("Transpose", ["u"], ["t"], perm=[0, 3, 1, 2], name="tr"),
              helper.make_node("Conv", ["t", "wc"], ["y"], name="head")]  # fmt: skip
    inits["ax"] = np.array([0, 1], np.int64)
    model = make_model(nodes, [("x", F32, [6, widths[0]])], [("y", F32, [1, 8, 1, 6])],
                       initializers=inits)  # fmt: skip
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    return path


def _mlp_feeds(n: int) -> list[dict[str, np.ndarray]]:
    return [{"x": RNG.normal(0, 1, (6, 40)).astype(np.float32)} for _ in range(n)]


def _calibrate(path: Path, target: str, recipe: Recipe, n: int = 24):  # type: ignore[no-untyped-def]
    return calibrate_model(path, _mlp_feeds(n), target, recipe, samples=n, report_samples=0)


def test_recipe_selects_the_method_per_node_and_the_plan_records_it(tmp_path: Path) -> None:
    recipe = Recipe(
        base=LayerConfig(weight_bits=4, act_bits=0, block_size=16),
        overrides=(
            Override("op:MatMul", LayerConfig(method="rtn")),
            Override("name:^fc2$", LayerConfig(method="gptq")),
        ),
        mixed_precision="off",
    )
    plan = _calibrate(_mlp(tmp_path), "onnx", recipe).plan
    prov = {t.node: t.provenance for t in plan.quantized("weight")}
    assert prov["fc0"].startswith("weight:rtn") and prov["fc1"].startswith("weight:rtn")
    assert prov["fc2"].startswith("weight:gptq")  # name beats op type
    assert prov["head"].startswith("weight:gptq")  # global default at 4 bits
    layers = {r["node"]: r["method"] for r in plan.calibration["weights"]["layers"]}
    assert layers == {"fc0": "rtn", "fc1": "rtn", "fc2": "gptq", "fc3": "rtn", "head": "gptq"}


def _onnx_decoded(path: Path) -> dict[str, np.ndarray]:
    """Every stored weight decoded independently: DequantizeLinear (blocked, partial last
    block; its integers an initializer or an int4 one widened by a Cast, which keeps every
    value) and MatMulNBits (packed unsigned nibbles, scales, zero points)."""
    model = onnx.load(path)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Cast" and n.input[0] in init:
            init[n.output[0]] = init[n.input[0]]
    out = {}
    for n in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "MatMulNBits":
            k, cols, block = attrs["K"], attrs["N"], attrs["block_size"]
            packed = init[n.input[1]].astype(np.int64)
            codes = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(cols, -1)[:, :k]
            nb = -(-k // block)
            scale = init[n.input[2]].reshape(cols, nb)
            zp = np.full((cols, nb), 8)
            if len(n.input) > 3:
                z = init[n.input[3]].astype(np.int64).reshape(cols, -1)
                zp = np.stack([z & 0x0F, z >> 4], axis=-1).reshape(cols, -1)[:, :nb]
            deq = (codes - np.repeat(zp, block, 1)[:, :k]) * np.repeat(scale, block, 1)[:, :k]
            out[n.output[0]] = deq.T.astype(np.float32)
        elif n.op_type == "DequantizeLinear" and n.input[0] in init:
            v = init[n.input[0]].astype(np.int64)
            s = init[n.input[1]].astype(np.float32)
            z = (
                init[n.input[2]].astype(np.int64)
                if len(n.input) > 2
                else np.zeros(s.shape, np.int64)
            )
            axis = attrs.get("axis", 1) % v.ndim
            if attrs.get("block_size"):
                b = attrs["block_size"]
                s = np.repeat(s, b, axis=axis).take(range(v.shape[axis]), axis=axis)
                z = np.repeat(z, b, axis=axis).take(range(v.shape[axis]), axis=axis)
            elif s.ndim:
                shape = [1] * v.ndim
                shape[axis] = -1
                s, z = s.reshape(shape), z.reshape(shape)
            out[n.output[0]] = ((v - z) * s).astype(np.float32)
    return out


@pytest.mark.parametrize("symmetric,nbits", [(True, False), (False, False), (False, True)])
def test_partial_last_blocks_decode_to_the_plan_on_onnxruntime(
    symmetric: bool, nbits: bool, tmp_path: Path
) -> None:
    """K = 40, 64, 48, 24 with blocks of 32: ceil(K/B) blocks, the last one partial, stored
    as int4 codes with float16 scales decoded by ops onnxruntime folds at load (the onnx
    default) or, with `matmul_nbits`, as MatMulNBits (the MatMuls; float32 scales)."""
    recipe = Recipe(base=LayerConfig(weight_bits=4, act_bits=0, granularity="per_block",
                                     block_size=32, method="rtn", weight_symmetric=symmetric),
                    mixed_precision="off")  # fmt: skip
    run = _calibrate(_mlp(tmp_path), "onnx", recipe)
    graph, plan = run.graph, run.plan
    assert {t.block for t in plan.quantized("weight")} == {32, None}  # the conv: K=24 < 32
    assert any("partial" in t.reason for t in plan.quantized("weight"))
    profile = load_target("onnx")
    if nbits:
        profile = replace(profile, raw={**profile.raw, "matmul_nbits": True})
    art = get_exporter(profile.exporter).export(
        graph, plan, profile, tmp_path / "m.onnx", ExportOptions()
    )
    model = onnx.load(art.path)
    assert sum(n.op_type == "MatMulNBits" for n in model.graph.node) == (4 if nbits else 0)
    half = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(half) == (0 if nbits else 4)  # the folded decode stores float16 scales
    decoded = {**_onnx_decoded(art.path), **decode_folded_blocks(model)}
    producers = {o: n for n in model.graph.node for o in n.output}
    for t in plan.quantized("weight"):
        node = next(n for n in graph.nodes if t.name in n.inputs)
        in_nbits = nbits and node.op_type == "MatMul"  # decoded under the MatMulNBits output
        key = node.outputs[0] if in_nbits else t.name
        stored = decoded[producers[key].output[0]] if in_nbits else decoded[key]
        np.testing.assert_array_equal(stored, t.dequantized(), err_msg=t.name)
    sim, ort = Simulator(graph, plan), OrtRunner(art.path)
    for feed in _mlp_feeds(4):
        ref = np.asarray(sim(feed)["y"])
        assert within_step(ort(feed)["y"], ref, float(np.ptp(ref)) / 255) == 1.0


def test_lut_weights_round_trip_through_core_ml(tmp_path: Path) -> None:
    pytest.importorskip("coremltools")
    from coremltools.libmilstoragepython import _BlobStorageReader

    from edgeq.exporters.coreml.evaluate import SavedProgram

    recipe = Recipe(base=LayerConfig(weight_bits=3, weight_format="lut"), mixed_precision="off")
    run = _calibrate(_mlp(tmp_path), "ane", recipe)
    graph, plan = run.graph, run.plan
    luts = [t for t in plan.quantized("weight") if t.lut is not None]
    assert len(luts) == 5 and all(t.provenance == "weight:lut+kmeans+hessian" for t in luts)
    for t in luts:  # tables are sorted float16 values; decode = table[index]
        assert t.lut.shape[-1] == 8 and np.all(np.diff(t.lut, axis=-1) >= 0)
        assert np.array_equal(t.lut, t.lut.astype(np.float16).astype(np.float32))
    profile = load_target("ane")
    exporter = get_exporter("coreml")
    art = exporter.export(graph, plan, profile, tmp_path / "m.mlpackage", ExportOptions())
    assert art.checks["weights"]["ok"], art.checks["weights"]["failures"]
    assert art.checks["weights"]["constexpr_ops"] == {"constexpr_lut_to_dense": 5}
    prog = SavedProgram(art.path)
    reader = _BlobStorageReader(str(art.path / "Data/com.apple.CoreML/weights/weight.bin"))
    for op in prog.ops:
        if op.type == "constexpr_lut_to_dense":
            v = op.inputs["indices"].arguments[0].value
            if v.WhichOneof("value") == "blobFileValue":  # 3-bit stream agrees with coremltools
                ours = prog.value(v).reshape(-1)
                theirs = np.asarray(reader.read_uint3_data(v.blobFileValue.offset))[: ours.size]
                np.testing.assert_array_equal(ours, theirs)
    run_ = exporter.open(art.path)
    sim = Simulator(graph, plan)
    for feed in _mlp_feeds(2):
        ref = np.asarray(sim(feed)["y"])
        np.testing.assert_allclose(run_(feed)["y"], ref, atol=2e-3 * float(np.abs(ref).max()))
    bits = exporter.weight_storage(art.path, graph)
    elements = sum(r["elements"] for r in bits.values())
    assert 3.0 < sum(r["bits"] for r in bits.values()) / elements < 3.2  # indices + fp16 tables


def test_blocked_4bit_weights_default_to_a_zero_point_where_the_target_stores_one(
    tmp_path: Path,
) -> None:
    """ane and onnx per-block 4-bit weights are asymmetric by default (a zero point per block:
    GPTQ on MiniLM g32 reached mean cosine 0.9911 asymmetric, 0.9889 symmetric); per-channel
    4-bit (onnx's default with 8-bit activations, integer kernels) and 8-bit stay symmetric, an explicit
    weight_symmetric wins; rpi (no zero points, no blocks) keeps symmetric per-channel weights."""
    graph = prepare(model_to_graph(onnx.load(_mlp(tmp_path))))

    def weights(target: str, **config: object) -> dict[str, tuple[bool, int | None]]:
        config = {"act_bits": 0, **config}
        recipe = Recipe(base=LayerConfig(**config))  # type: ignore[arg-type]
        spec = make_spec(graph, recipe, load_target(target))
        return {t.node: (bool(t.symmetric), t.block) for t in spec.tensors.values()
                if t.role == "weight" and t.node.startswith("fc")}  # fmt: skip

    for target, config in (("ane", {}), ("onnx", {"granularity": "per_block"})):
        blocked = weights(target, weight_bits=4, **config)
        assert len(blocked) == 4 and all(b and not s for s, b in blocked.values()), blocked
        explicit = weights(target, weight_bits=4, weight_symmetric=True, **config)
        assert all(s for s, _ in explicit.values())
        assert all(s for s, _ in weights(target, weight_bits=8).values())
    # onnx --bits 4 is weight-only in blocks; with 8-bit activations per channel (integer kernels)
    assert all(b and not s for s, b in weights("onnx", weight_bits=4).values())
    assert all(s and b is None for s, b in weights("onnx", weight_bits=4, act_bits=8).values())
    # rpi stores no blocks (its exporter writes per-channel weights): asked for, a clear error
    from edgeq.quant.planner import RecipeError

    with pytest.raises(RecipeError, match="no per-block weights"):
        weights("rpi", weight_bits=4, act_bits=8, granularity="per_block")
    assert all(s and b is None for s, b in weights("rpi", weight_bits=4, act_bits=8).values())


def test_bits_4_on_a_target_without_blocks_calibrates_and_exports(tmp_path: Path) -> None:
    """`--bits 4 --target rpi`: GPTQ and mixed precision run with no blocked middle step (the
    target stores none; asking the planner for one was refused, so the whole export failed)."""
    path = _mlp(tmp_path)
    run = _calibrate(path, "rpi", recipe_from_cli(bits=4), n=16)
    weights = [t for t in run.plan.tensors.values() if t.role == "weight" and t.is_quantized]
    assert weights and all(t.block is None for t in weights)
    assert any(t.qdtype.bits == 4 for t in weights)
    profile = load_target("rpi")
    exporter = get_exporter(profile.exporter)
    art = exporter.export(run.graph, run.plan, profile, tmp_path / "m.tflite", ExportOptions())
    assert art.path.stat().st_size > 0


def test_budgets_change_the_chosen_bits_and_bpw_comes_from_the_artifact(tmp_path: Path) -> None:
    path = _mlp(tmp_path)
    base = LayerConfig(weight_bits=4, act_bits=0, block_size=16, method="rtn")

    def eight_bit(**budget: object) -> tuple[list[str], dict]:  # type: ignore[type-arg]
        plan = _calibrate(path, "onnx", Recipe(base=base, **budget)).plan  # type: ignore[arg-type]
        mixed = plan.calibration["mixed_precision"]
        return [r["node"] for r in mixed["eight_bit"]], mixed

    loose, _ = eight_bit(max_loss="cosine=0.5")
    tight, tight_report = eight_bit(max_loss="cosine=0.99995")
    assert loose == [] and "fc1" in tight and len(tight) > len(loose)
    assert tight_report["chosen"]["cosine"] >= 0.99995 or len(tight) == 5
    small, _ = eight_bit(bpw=5.0)
    large, large_report = eight_bit(bpw=6.5)
    assert len(large) > len(small) and large_report["bpw"] <= 6.5
    # the export report's bits per weight is read from the artifact and agrees with the plan's
    run = _calibrate(path, "onnx", Recipe(base=base, bpw=6.5))
    profile = load_target("onnx")
    art = get_exporter("onnx_qdq").export(
        run.graph, run.plan, profile, tmp_path / "b.onnx", ExportOptions()
    )
    stored = weight_storage(art.path)
    bpw = sum(r["bits"] for r in stored.values()) / sum(r["elements"] for r in stored.values())
    assert len(stored) == 5
    assert bpw == pytest.approx(run.plan.calibration["mixed_precision"]["bpw"], rel=0.02)
    # Core ML: the 8-bit layers are iOS16 constexpr_affine_dequantize, whose data are
    # attributes (they counted 0 bits, and MiniLM's 4.92 bits per weight read as 3.97)
    run = _calibrate(path, "ane", Recipe(base=base, bpw=6.5))
    assert run.plan.calibration["mixed_precision"]["eight_bit"]
    coreml = get_exporter("coreml")
    art = coreml.export(run.graph, run.plan, load_target("ane"), tmp_path / "b.mlpackage",
                        ExportOptions())  # fmt: skip
    stored = coreml.weight_storage(art.path, run.graph)
    assert len(stored) == 5 and all(r["bits"] >= 4 * r["elements"] for r in stored.values())
    bpw = sum(r["bits"] for r in stored.values()) / sum(r["elements"] for r in stored.values())
    assert bpw == pytest.approx(run.plan.calibration["mixed_precision"]["bpw"], rel=0.02)


def test_mixed_precision_puts_a_per_channel_layer_in_4bit_blocks_before_8_bits(
    tmp_path: Path,
) -> None:
    """onnx plans 4-bit weights per channel with 8-bit activations (its integer kernels), and
    on request without (here: weight-only, the same weights). A layer whose input rows
    differ in scale by 20x (its producer's channels the other way round: the float function
    is the same, through the Relu) loses half its inputs per channel (one scale over all rows)
    and little in blocks: under a size budget with room for its blocks (float16 scales and
    4-bit zero points per 32 cost what a float32 scale and an int8 zero point per channel of 64
    do) but not for its 8-bit copy (+4), mixed precision puts it in 4-bit blocks,
    the output error drops, and the artifact stores it blocked (decoded by ops onnxruntime
    folds at load), matching the simulator."""
    path = _mlp(tmp_path)
    model = onnx.load(path)
    ws = {t.name: t for t in model.graph.initializer}
    w0, w1 = (numpy_helper.to_array(ws[n]).copy() for n in ("w0", "w1"))
    w0[:, 32:] *= 20.0
    w1[32:, :] /= 20.0
    for n, a in (("w0", w0), ("w1", w1)):
        ws[n].CopyFrom(numpy_helper.from_array(a, n))
    onnx.save(model, path)
    base = LayerConfig(weight_bits=4, act_bits=0, granularity="per_channel", method="rtn")
    run = _calibrate(path, "onnx", Recipe(base=base, bpw=5.1))
    mixed = run.plan.calibration["mixed_precision"]
    blocked = {r["node"]: r for r in mixed["blocked"]}
    assert "fc1" in blocked and "fc1" not in {r["node"] for r in mixed["eight_bit"]}, mixed
    t = run.plan.tensors["w1"]
    assert t.qdtype.bits == 4 and t.block == 32 and "4-bit in blocks of 32" in t.reason
    assert mixed["bpw"] <= 5.1 and mixed["chosen"]["sqnr"] > mixed["all_4bit"]["sqnr"] + 3
    layer = next(r for r in mixed["layers"] if r["node"] == "fc1")
    assert layer["blocks_gain"] > 0.5 * layer["gain"] and layer["step"] == "blocks"
    art = get_exporter("onnx_qdq").export(run.graph, run.plan, load_target("onnx"),
                                          tmp_path / "m.onnx", ExportOptions())  # fmt: skip
    decoded = decode_folded_blocks(onnx.load(art.path))
    # decoded at load: the blocked layers, and (weight-only: float layers) every other one
    assert {r["weight"] for r in blocked.values()} < set(decoded)
    assert set(decoded) == {t.name for t in run.plan.quantized("weight")}
    np.testing.assert_array_equal(decoded["w1"], t.dequantized())
    stored = weight_storage(art.path)
    bpw = sum(r["bits"] for r in stored.values()) / sum(r["elements"] for r in stored.values())
    assert bpw == pytest.approx(mixed["bpw"], rel=0.02)
    runner, sim = OrtRunner(art.path), Simulator(run.graph, run.plan)
    for feed in _mlp_feeds(3):
        ref = np.asarray(sim(feed)["y"])
        np.testing.assert_allclose(runner(feed)["y"], ref, rtol=1e-4, atol=1e-4)
    # a target whose 4-bit weights are blocks already has no middle step
    base = replace(base, granularity=None)  # ane's own 4-bit default: blocks of 32
    ane = _calibrate(path, "ane", Recipe(base=base, bpw=5.1)).plan.calibration["mixed_precision"]
    assert ane["blocked"] == []


def test_block_step_is_offered_only_on_the_ops_the_target_names(tmp_path: Path) -> None:
    """onnx offers mixed precision's blocked middle step on MatMul/Gemm/Gather only (a float
    Conv between integer ones is slow there); with `block_step_ops` unset every blocked op
    gets it; MLX's groups of 64 get groups of 32."""
    from edgeq.algorithms.data_aware import blocked_alternatives
    from edgeq.quant.planner import make_spec

    base = LayerConfig(weight_bits=4, act_bits=0, granularity="per_channel", method="rtn")
    head_k64 = _mlp(tmp_path, (40, 64, 64, 48, 64))  # the conv head reads 64 channels: blocks fit
    run = _calibrate(head_k64, "onnx", Recipe(base=base, mixed_precision="off"))
    profile = load_target("onnx")
    names = [t.name for t in run.plan.quantized("weight")]
    assert "wc" in names and all(run.plan.tensors[n].block is None for n in names)
    onnx_alts = blocked_alternatives(run.graph, make_spec(run.graph, Recipe(base=base), profile),
                                     run.plan, names)  # fmt: skip
    assert set(onnx_alts) == {"w0", "w1", "w2", "w3"} and all(
        t.block == 32 for t in onnx_alts.values()
    )
    anyop = replace(profile, quant=replace(profile.quant, block_step_ops=None))
    every = blocked_alternatives(run.graph, make_spec(run.graph, Recipe(base=base), anyop),
                                 run.plan, names)  # fmt: skip
    assert set(every) == set(onnx_alts) | {"wc"}
    base = replace(base, granularity=None)  # MLX's own 4-bit default: groups of 64
    mlx = _calibrate(
        _mlp(tmp_path, (40, 128, 128, 64, 64)), "mlx", Recipe(base=base, mixed_precision="off")
    )
    mlx_names = [t.name for t in mlx.plan.quantized("weight") if t.block == 64]
    assert mlx_names
    finer = blocked_alternatives(mlx.graph, make_spec(mlx.graph, Recipe(base=base), load_target("mlx")),
                                 mlx.plan, mlx_names)  # fmt: skip
    assert set(finer) == set(mlx_names) and {t.block for t in finer.values()} == {32}


def test_mlx_size_estimate_is_what_the_artifact_stores(tmp_path: Path) -> None:
    """MLX stores every quantized weight as rows of groups (per-channel ones too: a scale and a
    bias per group), each weight in the group size that stores it in the fewest bits, rows
    padded to a multiple of it. The size estimate budgets use counts exactly that: input dims
    of 40, 96 and 48 (partial blocks of 64, rows no group divides), per block and per channel,
    and a mixed plan with 8-bit layers — equal to the bits read back from the artifact."""
    from edgeq.algorithms.data_aware import weight_sizes
    from edgeq.algorithms.mixed_precision import Storage, bits_per_weight

    path = _mlp(tmp_path, (40, 96, 48, 64, 64))
    base = LayerConfig(weight_bits=4, act_bits=0, method="rtn")
    profile, exporter = load_target("mlx"), get_exporter("mlx")
    storage = Storage.of(profile.quant)
    recipes = {
        "blocks": Recipe(base=base, mixed_precision="off"),
        "channels": Recipe(base=replace(base, granularity="per_channel"), mixed_precision="off"),
        "mixed": Recipe(base=base, bpw=6.0),
    }
    for label, recipe in recipes.items():
        run = _calibrate(path, "mlx", recipe)
        art = exporter.export(run.graph, run.plan, profile, tmp_path / label, ExportOptions())
        stored = exporter.weight_storage(art.path, run.graph)
        assert len(stored) == 5
        bpw = sum(r["bits"] for r in stored.values()) / sum(r["elements"] for r in stored.values())
        estimate = bits_per_weight(run.plan, weight_sizes(run.graph), storage)
        assert bpw == pytest.approx(estimate, rel=1e-9), label
    assert run.plan.calibration["mixed_precision"]["eight_bit"]  # the mixed plan has 8-bit layers


def test_default_size_cap_keeps_a_4bit_plan_at_5_bits_where_the_format_allows() -> None:
    from edgeq.algorithms.mixed_precision import default_cap

    # int4 blocks of 32 with a float16 scale and an int4 offset: 4.625 bits all-4-bit
    assert default_cap(4.625) == 5.0
    assert default_cap(4.16) == 5.0  # per channel: room for more 8-bit layers, still <= 5
    # MLX groups of 64 with padded rows (PP-OCRv4 rec: 4.83): a little room, still <= 5
    assert default_cap(4.85) == 5.0
    # a float16 scale and bias per 32 weights are 5 bits already: +0.5 over that
    assert default_cap(5.0) == pytest.approx(5.5)
    assert default_cap(4.95) == pytest.approx(5.45)


def _awq_graph():  # type: ignore[no-untyped-def]
    """LayerNorm → two MatMuls (one site), MatMul + bias → MatMul (a site), a LayerNorm whose
    output also feeds a residual Add (not a site), Conv + bias → Relu → Conv and a depthwise
    Conv (a site through the Relu)."""
    d = 16
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], axis=-1, name="ln"),
        helper.make_node("MatMul", ["ln", "wq"], ["q"], name="q"),
        helper.make_node("MatMul", ["ln", "wk"], ["k"], name="k"),
        helper.make_node("Add", ["q", "bq"], ["qb"], name="q_bias"),
        helper.make_node("MatMul", ["qb", "wo"], ["o"], name="o"),
        helper.make_node("Add", ["o", "k"], ["s"], name="sum"),
        helper.make_node("LayerNormalization", ["s", "g2", "b2"], ["ln2"], axis=-1, name="ln2"),
        helper.make_node("MatMul", ["ln2", "wf"], ["f"], name="f"),
        helper.make_node("Add", ["f", "ln2"], ["res"], name="residual"),
        helper.make_node("Reshape", ["res", "shape"], ["img"], name="to_img"),
        helper.make_node("Conv", ["img", "wc1", "bc1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "wc2"], ["c2"], name="c2"),
        helper.make_node("Conv", ["r1", "wdw"], ["c3"], group=8, pads=[1, 1, 1, 1], name="dw"),
        helper.make_node("Add", ["c2", "c3"], ["y"], name="out"),
    ]  # fmt: skip
    w = lambda *s: RNG.normal(0, 0.5, s).astype(np.float32)  # noqa: E731
    inits = {"g": 1 + w(d), "b": w(d), "wq": w(d, d), "wk": w(d, d), "bq": w(d), "wo": w(d, d),
             "g2": 1 + w(d), "b2": w(d), "wf": w(d, d), "shape": np.array([1, 4, 8, 8], np.int64),
             "wc1": w(8, 4, 3, 3), "bc1": w(8), "wc2": w(8, 8, 1, 1), "wdw": w(8, 1, 3, 3)}  # fmt: skip
    model = make_model(nodes, [("x", F32, [1, 16, d])], [("y", F32, [1, 8, 8, 8])],
                       initializers=inits)  # fmt: skip
    return prepare(model_to_graph(model))


def test_awq_folding_leaves_the_float_function_unchanged() -> None:
    from edgeq.algorithms.awq import find_sites, fold_scales
    from edgeq.ir.interpreter import Interpreter

    graph = _awq_graph()
    sites = {s.tensor: s for s in find_sites(graph)}
    producers = {sites[t].producer for t in sites}
    assert {"ln", "q_bias", "relu"} <= producers  # LayerNorm, a bias Add, a Relu after a Conv
    assert "ln2" not in producers  # its output also feeds a residual Add: not foldable
    feed = {"x": RNG.normal(0, 1, (1, 16, 16)).astype(np.float32)}
    ref = Interpreter(graph)(feed)["y"]
    folded = graph
    for site in sites.values():
        s = np.exp(RNG.uniform(-1.5, 1.5, site.channels))  # factors over a range of ~20x
        folded = fold_scales(folded, site, s)
    changed = [
        k for k in graph.constants if not np.array_equal(graph.constants[k], folded.constants[k])
    ]
    assert {"g", "b", "wq", "wk", "bq", "wo", "wc1", "bc1", "wc2", "wdw"} <= set(changed)
    np.testing.assert_allclose(Interpreter(folded)(feed)["y"], ref, rtol=2e-5, atol=2e-5)


def test_gptq_with_per_tensor_weights_and_conv_groups() -> None:
    """QNN's 4-bit weights are per tensor: GPTQ keeps one scale for the whole weight, also for
    grouped/depthwise convs (a torch-exported MobileNet block; it crashed reshaping scales)."""
    path = Path(__file__).parent / "graphs" / "mobilenet.torchscript.op17.onnx"
    rng = np.random.default_rng(0)
    feeds = [{"input": rng.normal(0, 1, (1, 3, 32, 32)).astype(np.float32)} for _ in range(12)]
    run = calibrate_model(path, feeds, "qnn", Recipe(base=LayerConfig(weight_bits=4)),
                          samples=12, report_samples=0)  # fmt: skip
    gptq = [t for t in run.plan.tensors.values()
            if t.role == "weight" and t.provenance.startswith("weight:gptq")]  # fmt: skip
    per_tensor = [t for t in gptq if t.axis is None]
    assert gptq and per_tensor and all(np.size(t.scale) == 1 for t in per_tensor)
    for t in gptq:  # stored integers decode to the plan's weights
        assert np.isfinite(t.dequantized()).all()


def test_hessian_factor_is_the_papers_cholesky_of_the_inverse() -> None:
    """The host factor (one Cholesky of the reversed H and a triangular inverse, no H⁻¹
    formed) is the reference's cholesky(inv(H))ᵀ after dead columns, dampening, act-order."""
    from edgeq.algorithms.gptq import hessian_factor

    _, h = _correlated_layer(4, 40)
    perm, hinv, diag = hessian_factor(h, 0.01, act_order=True)
    H = h.copy()
    H[5, 5] = 1.0  # the dead column
    H += 0.01 * np.mean(np.diagonal(H)) * np.eye(40)
    assert np.array_equal(perm, np.argsort(-np.diagonal(H), kind="stable"))
    H = H[perm][:, perm]
    np.testing.assert_allclose(hinv, np.linalg.cholesky(np.linalg.inv(H)).T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(diag, np.diagonal(H))


@pytest.mark.parametrize("shape,block", [((40, 300), 32), ((3, 70), 16)])
def test_float32_solver_matches_the_reference_with_groups_and_padding(
    shape: tuple[int, int], block: int
) -> None:
    """float32 (the default) against the float64 paper algorithm, on shapes that pad rows,
    columns and groups (300 columns → 384 with a partial last group; 3 rows → 4), act-order
    and groups chosen in the loop, blocks of 64 columns: the same integers but for rare ties,
    and the same output error as the float64 solve (which equals the reference exactly)."""
    rows, cols = shape
    w, h = _correlated_layer(rows, cols)
    view = MatrixView((rows, cols), 0, 1, "per_block", block)
    grid = Grid(0, 15, False, "minmax")
    gidx, config = view.group_of_column(), GPTQConfig(block=64)
    ref = gptq_reference(w, h, gidx, grid.qmin, grid.qmax, False)
    solved = {dt: solve_padded(w.astype(dt), h, gidx, view.groups, grid, config, dtype=dt)
              for dt in (np.float32, np.float64)}  # fmt: skip
    np.testing.assert_array_equal(solved[np.float64][0], ref)
    assert np.mean(solved[np.float32][0] == ref) > 0.995
    errors = {dt: output_error(w, (q - np.asarray(view.expand(z))) * np.asarray(view.expand(s)), h)
              for dt, (q, s, z) in solved.items()}  # fmt: skip
    assert errors[np.float32] < 1.02 * errors[np.float64]


@pytest.mark.parametrize("rows", [8, 2])  # one conv group after the other; vmapped (few rows)
def test_conv_groups_each_equal_the_reference(rows: int) -> None:
    """Grouped convs: each group has its own H, act-order and group params chosen in the loop;
    3 groups padded to 4, 50 columns to 64. Every group's integers are the paper's (float64)."""
    rng = np.random.default_rng(1)
    n, cols = 3, 50
    w = rng.standard_normal((n, rows, cols))
    x = [rng.standard_normal((300, cols)) @ (np.eye(cols) + 0.3 * rng.standard_normal((cols, cols)))
         for _ in range(n)]  # fmt: skip
    h = np.stack([a.T @ a / 300 for a in x])
    view = MatrixView((rows, cols), 0, 1, "per_block", 16)
    gidx, grid = view.group_of_column(), Grid(0, 15, False, "minmax")
    q, _, _ = solve_padded(w, h, gidx, view.groups, grid, GPTQConfig(), dtype=np.float64)
    for g in range(n):
        np.testing.assert_array_equal(q[g], gptq_reference(w[g], h[g], gidx, 0, 15, False))


def test_mixed_precision_output_error_ignores_padded_token_positions() -> None:
    """y = x + (x @ w) · padding: the weight changes only padded positions, so a wrong weight
    costs nothing over the real tokens; counted blind to the mask, it does."""
    from edgeq.algorithms.mixed_precision import OutputError
    from edgeq.quant.plan import QuantPlan
    from tests.conftest import I64

    seq, dim = 6, 8
    nodes = [helper.make_node("Cast", ["attention_mask"], ["mf"], to=onnx.TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mf", "ax"], ["m3"]),
             helper.make_node("Sub", ["one", "m3"], ["pad"]),
             helper.make_node("MatMul", ["x", "w"], ["p"], name="fc"),
             helper.make_node("Mul", ["p", "pad"], ["pp"]),
             helper.make_node("Add", ["x", "pp"], ["y"])]  # fmt: skip
    w = RNG.normal(0, 1, (dim, dim)).astype(np.float32)
    inits = {"w": w, "ax": np.array([2], np.int64), "one": np.ones((1,), np.float32)}
    model = make_model(nodes, [("x", F32, [1, seq, dim]), ("attention_mask", I64, [1, seq])],
                       [("y", F32, [1, seq, dim])], initializers=inits)  # fmt: skip
    graph = model_to_graph(model)
    mask = np.array([[1, 1, 1, 1, 0, 0]], np.int64)
    feeds = [{"x": RNG.normal(0, 1, (1, seq, dim)).astype(np.float32), "attention_mask": mask}
             for _ in range(3)]  # fmt: skip
    plan = QuantPlan("onnx", {})
    wrong = {"w": (w + RNG.normal(0, 5, w.shape)).astype(np.float32)}
    masked = OutputError(graph, plan, ["w"], feeds, token_mask="attention_mask")(wrong)
    blind = OutputError(graph, plan, ["w"], feeds)(wrong)
    assert masked["noise"] == pytest.approx(0.0, abs=1e-12)
    assert masked["cosine"] == pytest.approx(1.0)
    assert blind["noise"] > 1.0 and blind["cosine"] < 0.9


@pytest.mark.parametrize("mask_handling", [True, False])
def test_mixed_precision_gets_the_token_mask_from_the_pipeline(
    tmp_path: Path, mask_handling: bool
) -> None:
    from tests.conftest import I64

    seq, dim = 8, 32
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["h"], name="embed"),
             helper.make_node("MatMul", ["h", "w"], ["p"], name="fc"),
             helper.make_node("Cast", ["attention_mask"], ["mf"], to=onnx.TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mf", "ax"], ["m3"]),
             helper.make_node("Mul", ["p", "m3"], ["y"])]  # fmt: skip
    inits = {"table": RNG.normal(0, 1, (50, dim)).astype(np.float32),
             "w": RNG.normal(0, 0.2, (dim, dim)).astype(np.float32),
             "ax": np.array([2], np.int64)}  # fmt: skip
    model = make_model(nodes, [("input_ids", I64, [1, seq]), ("attention_mask", I64, [1, seq])],
                       [("y", F32, [1, seq, dim])], initializers=inits)  # fmt: skip
    path = tmp_path / "tok.onnx"
    onnx.save(model, path)
    real = [2 + i % 4 for i in range(12)]  # 2 to 5 real tokens of 8
    feeds = [{"input_ids": RNG.integers(1, 50, (1, seq)),
              "attention_mask": np.array([[1] * r + [0] * (seq - r)])} for r in real]  # fmt: skip
    recipe = Recipe(base=LayerConfig(weight_bits=4, act_bits=0, block_size=16, method="rtn"),
                    mask_handling=mask_handling)  # fmt: skip
    plan = calibrate_model(path, feeds, "onnx", recipe, samples=12, report_samples=0).plan
    assert plan.calibration["mixed_precision"]["padding_excluded"] is mask_handling


def test_layerwise_segments_of_one_structure_share_a_compiled_program(tmp_path: Path) -> None:
    """Weight-only layer-by-layer passes: the forward segments between solved layers of
    identical blocks (MatMul → Relu, four times, same widths) run one compiled program with
    the weights as arguments; the Hessians every solve sees are those of segments compiled one
    by one (what a transform forces: fake-quantized activations are looked up by name), and
    each solved weight feeds the next segment (not the first block's)."""
    from edgeq.algorithms.layerwise import layer_job, run_layerwise

    graph = prepare(model_to_graph(onnx.load(_mlp(tmp_path, (40, 40, 40, 40, 40)))))
    jobs = [j for i in range(len(graph.nodes)) if (j := layer_job(graph, i)) is not None]
    assert [j.weight for j in jobs] == ["w0", "w1", "w2", "w3", "wc"]
    feeds = _mlp_feeds(10)

    def run(transform: object) -> tuple[dict[str, np.ndarray], object]:
        seen: dict[str, np.ndarray] = {}

        def solve(job, H, rescale):  # type: ignore[no-untyped-def]
            seen[job.weight] = H
            w = graph.constants[job.weight]
            return (np.round(w * 4) / 4).astype(w.dtype)  # a coarse grid: the next input changes

        result = run_layerwise(graph, jobs, feeds, solve, transform=transform, chunk=4)  # type: ignore[arg-type]
        return seen, result

    shared, r1 = run(None)
    alone, r2 = run(lambda name, value: value)
    assert r1.segments == r2.segments == 4  # type: ignore[attr-defined]
    assert 0 < r1.programs < r1.segments and r2.programs == 0  # type: ignore[attr-defined]
    assert set(shared) == set(alone) == {j.weight for j in jobs}
    for name in shared:
        np.testing.assert_allclose(shared[name], alone[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # the solved (rounded) weights reach later blocks through the shared program's arguments:
    # with the float weights kept, w3's Hessian is another one
    kept: dict[str, np.ndarray] = {}

    def keep_float(job, H, rescale):  # type: ignore[no-untyped-def]
        kept[job.weight] = H
        return graph.constants[job.weight]

    assert run_layerwise(graph, jobs, feeds, keep_float, chunk=4).programs == r1.programs  # type: ignore[attr-defined]
    np.testing.assert_array_equal(kept["w0"], shared["w0"])
    assert np.max(np.abs(kept["w3"] - shared["w3"])) > 1e-3 * np.max(np.abs(kept["w3"]))


def test_layerwise_shares_programs_with_fake_quantized_activations(tmp_path: Path) -> None:
    """With 8-bit activations (W4A8) the layer-by-layer pass fake-quantizes every planned
    activation as the simulator does; as a `FakeQuant` its scales and zero points are
    arguments, so identical blocks still share a program, and every Hessian equals the one of
    segments compiled one by one (the same transform as an opaque function)."""
    from edgeq.algorithms.layerwise import FakeQuant, layer_job, run_layerwise

    path = _mlp(tmp_path, (40, 40, 40, 40, 40))
    recipe = Recipe(base=LayerConfig(weight_bits=4, act_bits=8, granularity="per_channel",
                                     method="rtn"), mixed_precision="off")  # fmt: skip
    run = _calibrate(path, "onnx", recipe)
    graph, plan = run.graph, run.plan
    acts = {t.name: t for t in plan.quantized("activation")}
    assert len(acts) >= 4
    quant = FakeQuant(acts, plan.rounding)
    jobs = [j for i in range(len(graph.nodes)) if (j := layer_job(graph, i)) is not None]
    feeds = _mlp_feeds(10)

    def hessians(transform: object) -> tuple[dict[str, np.ndarray], object]:
        seen: dict[str, np.ndarray] = {}

        def solve(job, H, rescale):  # type: ignore[no-untyped-def]
            seen[job.weight] = H
            return graph.constants[job.weight]

        result = run_layerwise(graph, jobs, feeds, solve, transform=transform, chunk=4)  # type: ignore[arg-type]
        return seen, result

    shared, r1 = hessians(quant)
    alone, r2 = hessians(lambda name, value: quant(name, value))
    assert 0 < r1.programs < r1.segments and r2.programs == 0  # type: ignore[attr-defined]
    for name in shared:
        np.testing.assert_allclose(shared[name], alone[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # and the activations are quantized: without the transform the Hessians differ
    plain, _ = hessians(None)
    assert any(not np.allclose(plain[n], shared[n], rtol=1e-4, atol=1e-6) for n in shared)
