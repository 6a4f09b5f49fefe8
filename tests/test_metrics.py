"""Task metrics, the verdict against budgets, labels and the held-out split (no models: small
hand-made outputs whose expected values are derived in the comments)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeq.budget import parse_budget
from edgeq.calibration.labels import labels_for, read_labels
from edgeq.errors import InputError
from edgeq.metrics import (
    TaskContext,
    character_error_rate,
    charset_from_lines,
    ctc_greedy_decode,
    decode_detections,
    evaluate_task,
    guess_task,
    hook_metric,
    load_metric_hook,
    mean_average_precision,
    neighbour_agreement,
)
from edgeq.pipeline import held_out_count
from edgeq.targets import load_target
from edgeq.verdict import check_measurable, judge


def one_hot(indices: list[int], classes: int) -> np.ndarray:
    out = np.zeros((1, len(indices), classes), np.float32)
    out[0, np.arange(len(indices)), indices] = 1.0
    return out


CHARS = ("blank", "a", "b", "c", " ")


def test_ctc_decoding_merges_repeats_and_drops_blank() -> None:
    # a a _ a b b _ → "aab": repeats merge, a blank separates the two a's
    assert ctc_greedy_decode(one_hot([1, 1, 0, 1, 2, 2, 0], 5), CHARS) == "aab"
    assert ctc_greedy_decode(one_hot([1, 1, 0, 1], 5), None) == (1, 1)


def test_character_error_rate_counts_edits_over_reference_length() -> None:
    # "abc"→"abd": 1 substitution; "aa"→"a": 1 deletion; 2 edits over 5 reference characters
    assert character_error_rate(["abd", "a"], ["abc", "aa"]) == pytest.approx(2 / 5)


def test_charset_adds_space_only_when_the_model_has_the_class() -> None:
    assert charset_from_lines(["a", "b"], 4) == ("blank", "a", "b", " ")
    assert charset_from_lines(["a", "b"], 3) == ("blank", "a", "b")
    with pytest.raises(InputError, match="outputs 7 classes"):
        charset_from_lines(["a", "b"], 7)


def test_ctc_task_against_labels_and_against_float() -> None:
    ctx = TaskContext(("y",), metadata={"character": "a\nb\nc"})
    ref = [{"y": one_hot([1, 2, 3], 5)}, {"y": one_hot([1, 1, 0], 5)}]  # "abc", "a"
    quant = [{"y": one_hot([1, 2, 2], 5)}, {"y": one_hot([1, 0, 1], 5)}]  # "ab", "aa"
    task, rows = evaluate_task("auto", quant, ref, ["abc", "a"], ctx)
    assert task == "ctc"
    cer = rows[0]
    # float: 0 edits; quant: "ab" vs "abc" 1 + "aa" vs "a" 1 = 2 edits over 4 characters
    assert (cer.name, cer.against, cer.float_value, cer.quant_value) == ("cer", "labels", 0.0, 50.0)
    _, rows = evaluate_task("ctc", quant, ref, None, ctx)
    assert rows[0].against == "float" and rows[0].quant_value == pytest.approx(50.0)


def test_classification_topk_with_labels_and_agreement_without() -> None:
    ctx = TaskContext(("p",), producers={"p": "Softmax"}, output_shapes={"p": (1, 6)})
    f = [np.eye(6)[i][None] + 0.1 * np.arange(6)[None] for i in (0, 1, 2, 3)]
    q = [f[0], f[1], np.eye(6)[5][None], f[3]]  # third sample flips to class 5
    ref, quant = [{"p": x} for x in f], [{"p": x} for x in q]
    task, rows = evaluate_task("auto", quant, ref, [0, 1, 2, 5], ctx)
    by = {r.name: r for r in rows}
    assert task == "classify"
    # labels 0,1,2,5: float hits 3 of 4, quant hits samples 0,1 (sample 2 now says 5) = 2 of 4
    assert by["top1"].float_value == 75.0 and by["top1"].quant_value == 50.0
    # top-5 of float sample 3 (scores 0.0..0.5 plus 1 at class 3) holds 5: float 4/4
    assert by["top5"].float_value == 100.0
    assert by["agreement"].quant_value == 75.0  # 3 of 4 argmaxes equal float's


def test_embeddings_cosine_and_neighbour_agreement() -> None:
    ref = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    same = neighbour_agreement(ref, ref * 3)  # scaling keeps every neighbour
    swapped = neighbour_agreement(ref, ref[[2, 1, 0, 3]])
    assert same == 1.0 and swapped < 1.0
    ctx = TaskContext(("e",), producers={"e": "Div"}, output_shapes={"e": (1, 2)})
    task, rows = evaluate_task(
        "auto", [{"e": r[None] * 2} for r in ref], [{"e": r[None]} for r in ref], None, ctx
    )
    assert (
        task == "embed" and rows[0].name == "cosine" and rows[0].quant_value == pytest.approx(1.0)
    )


def test_mask_iou_against_float() -> None:
    f = np.zeros((1, 1, 4, 4), np.float32)
    f[..., :2, :2] = 0.9  # 4 pixels on
    q = f.copy()
    q[..., 0, 2] = 0.5  # one extra pixel: IoU 4 / 5
    ctx = TaskContext(("m",), producers={"m": "Sigmoid"}, output_shapes={"m": (1, 1, 4, 4)})
    task, rows = evaluate_task("auto", [{"m": q}], [{"m": f}], None, ctx)
    assert task == "mask" and rows[0].quant_value == pytest.approx(80.0)


def test_detection_decoding_and_map() -> None:
    # YOLOv8 layout [1, 4 + C, N] (N anchors > 4 + C): two boxes of class 0 and 1, a low-score
    # one dropped, and empty anchors
    x = np.zeros((1, 6, 8), np.float32)
    x[0, :4, 0], x[0, 4, 0] = [10, 10, 4, 4], 0.9  # cx, cy, w, h → (8, 8, 12, 12)
    x[0, :4, 1], x[0, 5, 1] = [30, 30, 10, 10], 0.8
    x[0, :4, 2], x[0, 4, 2] = [10, 10, 4, 4], 0.1  # below the 0.25 confidence threshold
    dets = decode_detections({"y": x}, ["y"])
    np.testing.assert_allclose(dets[:, :4], [[8, 8, 12, 12], [25, 25, 35, 35]])
    truth = [dets[:, [0, 1, 2, 3, 5]]]
    assert mean_average_precision([dets], truth) == pytest.approx(1.0)
    moved = dets.copy()
    moved[1, :4] += 6  # IoU (4x4 overlap of 10x10 boxes) = 16 / 184 < 0.5: class 1 missed
    assert mean_average_precision([moved], truth) == pytest.approx(0.5)


def test_guess_task_falls_back_to_generic() -> None:
    assert guess_task(TaskContext(("y",), output_shapes={"y": (1, 3, 8, 8)})) == "generic"


def test_user_metric_from_a_file(tmp_path: Path) -> None:
    hook = tmp_path / "mymetric.py"
    hook.write_text("def hits(outputs, labels):\n"
                    "    return 100.0 * sum(int(o['y'].argmax() == l) for o, l in zip(outputs, labels)) / len(labels)\n"
                    "def bad(outputs, labels):\n    return 'x'\n")  # fmt: skip
    fn = load_metric_hook(f"{hook}:hits")
    ref = [{"y": np.array([0.0, 1.0])}, {"y": np.array([1.0, 0.0])}]
    quant = [{"y": np.array([0.0, 1.0])}, {"y": np.array([0.0, 1.0])}]
    m = hook_metric(fn, quant, ref, [1, 0])
    assert (m.name, m.float_value, m.quant_value, m.kind) == ("hits", 100.0, 50.0, "max_drop")
    with pytest.raises(InputError, match="not a number"):
        hook_metric(load_metric_hook(f"{hook}:bad"), quant, ref, [1, 0])
    with pytest.raises(InputError, match="no function"):
        load_metric_hook(f"{hook}:missing")
    with pytest.raises(InputError, match="module:function"):
        load_metric_hook("nocolon")


def test_verdict_uses_the_targets_default_budget_and_says_the_number() -> None:
    ctx = TaskContext(("y",), metadata={"character": "a\nb\nc"})
    ref = [{"y": one_hot([1, 2, 3], 5)}]
    _, good = evaluate_task("ctc", ref, ref, ["abc"], ctx)
    _, bad = evaluate_task("ctc", [{"y": one_hot([0, 0, 0], 5)}], ref, ["abc"], ctx)
    profile = load_target("onnx")
    ok, fail = judge(good, [], profile, "1 sample"), judge(bad, [], profile, "1 sample")
    assert ok.status == "PASS" and fail.status == "FAIL"
    # the dead model outputs nothing: CER 100% against 0% for float
    assert fail.line().startswith(
        "FAIL: cer 100.00% vs float 0.00% (+100.00 pp; budget cer within +1 pp"
    )
    assert judge(bad, [parse_budget("cer=100")], profile).status == "PASS"
    assert judge([], [], profile).status == "UNCHECKED"


def test_budget_on_an_unmeasured_metric_is_refused_before_work() -> None:
    with pytest.raises(InputError, match="does not measure 'cosine'"):
        check_measurable([parse_budget("cosine=0.99")], "ctc", labelled=True)
    with pytest.raises(InputError, match="need labels"):
        check_measurable([parse_budget("top1=1")], "classify", labelled=False)
    check_measurable([parse_budget("top1=1")], "classify", labelled=True)


def test_held_out_split_keeps_three_quarters_for_calibration() -> None:
    # 64 samples: eval 8 of them; 10 samples: a quarter is 2; 3 samples: nothing held out
    assert [held_out_count(n, 8) for n in (64, 10, 3, 0)] == [8, 2, 0, 0]
    assert held_out_count(64, 32) == 16


def test_labels_from_json_and_tsv(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text(json.dumps({"a.png": "hello", "b.png": 3}))
    (tmp_path / "labels.tsv").write_text("a.png\thello world\nb.png\t7\n")
    assert read_labels(tmp_path / "labels.json") == {"a.png": "hello", "b.png": 3}
    tsv = read_labels(tmp_path / "labels.tsv")
    assert tsv == {"a.png": "hello world", "b.png": 7}
    assert labels_for(["b.png", "a.png"], tsv) == ([7, "hello world"], 0)
    assert labels_for(["c.png"], tsv) == (None, 1)  # one missing: the set is unlabelled


def test_parity_of_a_float16_output_allows_one_float16_step_at_each_value() -> None:
    """A Core ML program returns float16: an output near 0.5 with a range of 0.01 has an 8-bit
    grid step of 0.01/255 ≈ 4e-5, finer than float16's own spacing there (2**-11 ≈ 4.9e-4).
    The artifact rounded to float16 is as close as float16 can be, so it is within one step;
    two float16 steps away is not, and without the profile's output dtype the grid alone
    (wrongly) fails the rounded artifact too."""
    from edgeq.verify import compare

    rng = np.random.default_rng(0)
    sim = (0.5 + 0.01 * rng.random(4096)).astype(np.float32)
    rounded = sim.astype(np.float16).astype(np.float32)
    assert np.mean(rounded != sim) > 0.9  # the rounding moved nearly every element
    two_steps = (sim.astype(np.float64) + 2 * 2.0**-11).astype(np.float32)

    def parity(art: np.ndarray, dtype: str | None) -> float:
        rows = compare([{"y": art}], [{"y": sim}], [{"y": sim}], None, ["y"], dtype)
        return rows["y"]["vs_simulator"]["within_one_step"]

    assert parity(rounded, "float16") == 1.0
    assert parity(rounded, None) < 0.5
    assert parity(two_steps, "float16") == 0.0
    assert load_target("ane").raw["output_dtype"] == "float16"
    assert "output_dtype" not in load_target("rpi").raw  # integer outputs have their own step


# ---- token models: padded positions are no signal ------------------------------------------------
def _token_graph():  # type: ignore[no-untyped-def]
    """input_ids / attention_mask [1, 6] → hidden [1, 6, 4] (per token) and pooled [1, 4]."""
    from onnx import helper

    from edgeq.ir.onnx_io import model_to_graph
    from tests.conftest import F32, I64, make_model

    table = np.arange(40, dtype=np.float32).reshape(10, 4) / 10
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["hidden"], name="embed"),
             helper.make_node("ReduceMean", ["hidden"], ["pooled"], axes=[1], keepdims=0)]  # fmt: skip
    model = make_model(nodes, [("input_ids", I64, [1, 6]), ("attention_mask", I64, [1, 6])],
                       [("hidden", F32, [1, 6, 4]), ("pooled", F32, [1, 4])],
                       initializers={"table": table})  # fmt: skip
    return model_to_graph(model)


def test_generic_metrics_and_verdict_exclude_padded_token_positions() -> None:
    from edgeq.export import _context

    graph = _token_graph()
    mask = np.array([[1, 1, 1, 0, 0, 0]], np.int64)  # three real tokens, three padded
    feeds = [{"input_ids": np.array([[1, 2, 3, 0, 0, 0]]), "attention_mask": mask}] * 3
    rng = np.random.default_rng(0)
    ref = [{"hidden": rng.normal(0, 1, (1, 6, 4)), "pooled": np.ones((1, 4))} for _ in feeds]
    quant = []
    for r in ref:
        h = r["hidden"].copy()
        h[:, 3:] = rng.normal(0, 100, (1, 3, 4))  # padding: wildly different, even in sign
        quant.append({"hidden": h, "pooled": r["pooled"]})
    profile = load_target("onnx")  # default budget cosine=0.99
    # padding counted (no masks): the worst output's cosine collapses and the verdict fails
    blind = _context(graph, None)
    assert blind.token_masks is None
    _, rows = evaluate_task("generic", quant, ref, None, blind)
    assert rows[0].quant_value < 0.5 and judge(rows, [], profile).status == "FAIL"
    # padding excluded: real positions match exactly, so cosine 1, SQNR ∞, PASS
    ctx = _context(graph, None, feeds)
    assert ctx.token_masks is not None and len(ctx.token_masks) == 3
    _, rows = evaluate_task("generic", quant, ref, None, ctx)
    cos, sqnr = rows
    assert cos.quant_value == pytest.approx(1.0) and sqnr.quant_value == np.inf
    assert "padded token positions excluded" in cos.title
    assert judge(rows, [], profile).status == "PASS"
    # the per-output rows of the report agree (errors against float over real tokens)
    from edgeq.verify import compare

    rows_out = compare(quant, None, ref, None, ["hidden", "pooled"], token_masks=ctx.token_masks)
    assert rows_out["hidden"]["vs_float"]["cosine"] == pytest.approx(1.0)
    assert rows_out["hidden"]["vs_float"]["padding_excluded"]
    assert "padding_excluded" not in rows_out["pooled"]["vs_float"]  # no token axis: whole
    assert compare(quant, None, ref, None, ["hidden"])["hidden"]["vs_float"]["cosine"] < 0.5
    # the pooled output has no axis of the mask's length: compared whole, so its error counts
    quant[0]["pooled"] = -np.ones((1, 4))
    _, rows = evaluate_task("generic", quant, ref, None, ctx)
    assert rows[0].quant_value == pytest.approx(1 / 3) and "pooled" in rows[0].title
    # a recipe without mask handling compares every position
    assert _context(graph, None, feeds, mask_handling=False).token_masks is None
