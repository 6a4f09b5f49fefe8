"""Every `edgeq` command against a table of hostile inputs: each ends in exactly one line
`error: <what> — <fix>`, exit code 2, no traceback, and nothing the user had is changed.

The inputs are the ones a hostile-input pass found ending in tracebacks, hangs or data loss
(issue #17): non-UTF-8 names, corrupt or truncated .npz/.npy, headers claiming 37 GiB, plans
that are lists or lack/gain keys, external data with NUL bytes or absurd offsets and sizes,
graphs onnxruntime or JAX reject, odd output paths, `--runs 0`, fake .tflite files, manifests
that are `[]` or not UTF-8, ... plus the linear-time loader (a 50,000-node graph).
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edgeq.cli import app
from edgeq.ir.onnx_io import load_model
from tests.conftest import F32, make_model

CLI = CliRunner()


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return header.getvalue()


def _npy_claiming(path: Path, shape: tuple[int, ...]) -> Path:
    path.write_bytes(_npy_header("<f4", shape) + b"\0" * 64)  # a 37 GiB header on 64 bytes
    return path


def _external(folder: Path, entries: dict[str, str], dims: list[int] | None = None) -> Path:
    """Add(x, w) with `w` in external data described by `entries`."""
    model = make_model([helper.make_node("Add", ["x", "w"], ["y"])], [("x", F32, [4])],
                       [("y", F32, [4])], initializers={"w": np.arange(4, dtype=np.float32)})  # fmt: skip
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    if dims is not None:
        del t.dims[:]
        t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for key, value in entries.items():
        t.external_data.append(onnx.StringStringEntryProto(key=key, value=value))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    return _save(model, folder / "model.onnx")


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The workspace: a tiny real-looking model (conv + relu), its calibration data, a plan
    and a bundle, and the hostile files built from them."""
    root = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    conv = make_model([helper.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1]),
                       helper.make_node("Relu", ["c"], ["y"])],
                      [("x", F32, [1, 3, 8, 8])], [("y", F32, [1, 4, 8, 8])],
                      initializers={"k": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)})  # fmt: skip
    p: dict[str, Path] = {"root": root, "model": _save(conv, root / "m.onnx")}
    calib = root / "calib"
    calib.mkdir()
    for i in range(4):
        np.save(calib / f"s{i}.npy", rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32))
    p["calib"] = calib
    result = CLI.invoke(app, ["calibrate", str(p["model"]), "--calib", str(calib), "--target",
                              "tflm", "--report-samples", "0", "-o", str(root / "plan")])  # fmt: skip
    assert result.exit_code == 0, result.output
    p["plan"] = root / "plan"
    result = CLI.invoke(app, ["export", str(p["model"]), "--plan", str(p["plan"]), "--target",
                              "tflm", "--calib", str(calib), "-o", str(root / "exp")])  # fmt: skip
    assert result.exit_code == 0, result.output
    p["tflite"] = root / "exp" / "model.tflite"
    # non-UTF-8 names
    relu = make_model([helper.make_node("Relu", ["xQQ"], ["yQQ"])], [("xQQ", F32, [1, 4])],
                      [("yQQ", F32, [1, 4])])  # fmt: skip
    dyn = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", F32, ["n", "c", "k"])],
                     [("y", F32, ["n", "c", "k"])])  # fmt: skip
    p["dynamic"] = _save(dyn, root / "dynamic.onnx")
    p["nonutf8"] = root / "nonutf8.onnx"
    p["nonutf8"].write_bytes(relu.SerializeToString().replace(b"QQ", b"\xff\xfe"))
    # calibration folders with one bad sample each
    good = (calib / "s0.npy").read_bytes()
    for name, payload in {
        "truncated_npy": good[: len(good) // 2],
        "text_npy": b"not numpy at all",
        "pickled_npy": _npy_header("|O", (1,)) + b"\x80\x04N.",  # a pickle, never loaded
    }.items():  # fmt: skip
        folder = root / name
        folder.mkdir()
        (folder / "a.npy").write_bytes(payload)
        p[name] = folder
    big = root / "npy_37gib"
    big.mkdir()
    _npy_claiming(big / "a.npy", (10000, 1000, 1000))
    p["npy_37gib"] = big
    buf = io.BytesIO()
    np.savez(buf, x=rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32))
    npz = buf.getvalue()
    corrupt = bytearray(npz)
    corrupt[len(npz) // 2] ^= 0xFF
    for name, payload in {"truncated_npz": npz[: len(npz) // 2], "corrupt_npz": bytes(corrupt),
                          "empty_npz": b""}.items():  # fmt: skip
        folder = root / name
        folder.mkdir()
        (folder / "a.npz").write_bytes(payload)
        (root / f"{name}.npz").write_bytes(payload)
        p[name] = folder
        p[name + "_file"] = root / f"{name}.npz"
    bomb = root / "npz_bomb"
    bomb.mkdir()
    with zipfile.ZipFile(bomb / "a.npz", "w") as zf:
        zf.writestr("x.npy", _npy_header("<f4", (1 << 34,)))  # 64 GiB claimed
    p["npz_bomb"] = bomb
    # plans: tampered copies of the real one
    meta = json.loads((p["plan"] / "plan.json").read_text())
    arrays = dict(np.load(p["plan"] / "plan.npz"))
    act = next(i for i, t in enumerate(meta["tensors"]) if t["role"] == "activation")
    wt = next(i for i, t in enumerate(meta["tensors"]) if t["role"] == "weight")

    def plan(name: str, meta2: object = meta, **changes: np.ndarray) -> None:
        folder = root / name
        folder.mkdir()
        (folder / "plan.json").write_text(json.dumps(meta2))
        np.savez(folder / "plan.npz", **{**arrays, **changes})
        p[name] = folder

    plan("plan_list", [meta])
    plan("plan_no_tensors", {k: v for k, v in meta.items() if k != "tensors"})
    plan("plan_extra_key", {**meta, "surprise": 1})
    plan("plan_nan_scale", **{f"t{act}.scale": np.array(np.nan, np.float32)})
    plan("plan_zero_scale", **{f"t{act}.scale": np.array(0.0, np.float32)})
    plan("plan_negative_scale", **{f"t{wt}.scale": -arrays[f"t{wt}.scale"]})
    plan("plan_huge_zero_point", **{f"t{act}.zero_point": np.array(1 << 40)})
    plan(
        "plan_wrapping_weights", **{f"t{wt}.values": arrays[f"t{wt}.values"].astype(np.int32) * 500}
    )
    plan("plan_bad_shape", **{f"t{wt}.values": arrays[f"t{wt}.values"][:2]})
    folder = root / "plan_truncated_npz"
    folder.mkdir()
    (folder / "plan.json").write_text(json.dumps(meta))
    (folder / "plan.npz").write_bytes((p["plan"] / "plan.npz").read_bytes()[:200])
    p["plan_truncated_npz"] = folder
    folder = root / "plan_not_utf8"
    folder.mkdir()
    (folder / "plan.json").write_bytes(b"\xff\xfe{}")
    (folder / "plan.npz").write_bytes((p["plan"] / "plan.npz").read_bytes())
    p["plan_not_utf8"] = folder
    # the same graph with other weights: the plan's SHA-256 does not match
    other = onnx.load(p["model"])
    k = numpy_helper.to_array(other.graph.initializer[0]) * 2
    other.graph.initializer[0].CopyFrom(numpy_helper.from_array(k, "k"))
    p["other_model"] = _save(other, root / "other" / "m.onnx")
    # external data
    for name, entries, dims in (
        ("ext_nul", {"location": "w.bin\0../../etc/passwd"}, None),
        ("ext_negative_offset", {"location": "w.bin", "offset": "-8"}, None),
        ("ext_text_offset", {"location": "w.bin", "offset": "twelve"}, None),
        ("ext_huge", {"location": "w.bin"}, [10**12]),
        ("ext_short", {"location": "w.bin", "offset": "8"}, None),
    ):
        p[name] = _external(root / name, entries, dims)
    # graphs the runtimes reject
    gather = make_model([helper.make_node("Gather", ["d", "i"], ["y"], axis=0)],
                        [("d", F32, [4, 3])], [("y", F32, [2, 3])],
                        initializers={"i": np.array([1, 7], np.int64)})  # fmt: skip
    p["gather_oob"] = _save(gather, root / "gather.onnx")
    empty = make_model([helper.make_node("ReduceMax", ["x"], ["y"], keepdims=0)],
                       [("x", F32, [0, 4])], [("y", F32, [4])])  # fmt: skip
    p["zero_dim"] = _save(empty, root / "zero.onnx")
    huge = make_model([helper.make_node("ConstantOfShape", ["s"], ["c"]),
                       helper.make_node("Add", ["x", "c"], ["y"])], [("x", F32, [1])],
                      [("y", F32, [1000000, 1000000, 1000])],
                      initializers={"s": np.array([1000000, 1000000, 1000], np.int64)})  # fmt: skip
    p["huge_const"] = _save(huge, root / "huge.onnx")
    # files that only look like what they claim
    data = p["tflite"].read_bytes()
    (root / "fake.tflite").write_bytes(data[:8] + b"\xff" * 300)
    p["fake_tflite"] = root / "fake.tflite"
    for name, payload in (("manifest_list", b"[]"), ("manifest_not_utf8", b"\xff\xfe\xfd")):
        folder = root / name
        folder.mkdir()
        (folder / "manifest.json").write_bytes(payload)
        p[name] = folder
    (root / "fake.tar.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\0" * 40)
    p["fake_tar"] = root / "fake.tar.gz"
    (root / "a_file").write_text("the user's file")
    p["a_file"] = root / "a_file"
    return p


def _readonly(w: dict[str, Path]) -> Path:
    if os.geteuid() == 0:
        return Path("/proc/edgeq-out")  # root writes anywhere permissions allow; /proc is read-only
    locked = w["root"] / "locked"
    locked.mkdir(exist_ok=True)
    locked.chmod(0o555)
    return locked / "out"


M, CAL = "{model}", "{calib}"
# (command line with {placeholders} from the workspace, words the error line must contain)
CASES: list[tuple[str, str]] = [
    # inspect / run / check: models
    ("inspect {nonutf8}", "not UTF-8"),
    ("run {nonutf8}", "not UTF-8"),
    ("check {nonutf8}", "not UTF-8"),
    ("inspect {root}", "is a folder"),
    ("inspect {ext_nul}", "NUL byte"),
    ("inspect {ext_negative_offset}", "not a byte count"),
    ("inspect {ext_text_offset}", "not a byte count"),
    ("inspect {ext_huge}", "over edgeq's limit"),
    ("inspect {ext_short}", "truncated"),
    ("run {gather_oob}", "onnxruntime failed"),
    ("run {zero_dim}", "ReduceMax"),
    ("run {huge_const}", "3.55 PiB"),
    # example / targets
    ("example ppocr-cls -o {a_file}", "is a file"),
    (f"example ppocr-cls -o {CAL}", "did not write"),
    ("example ppocr-cls --calib-samples 0 -o {root}/ex", "at least 1"),
    ("run {model} --inputs {truncated_npz_file}", "not a readable .npz"),
    ("run {model} --inputs {corrupt_npz_file}", "not a readable .np"),
    ("run {model} --inputs {empty_npz_file}", "not a readable .npz"),
    ("run {dynamic} --input-shape x=100000,100000,1000", "over edgeq's limit"),
    ("check {tflite}", "not a readable ONNX model"),
    # calibrate: data and output
    (f"calibrate {M} --calib {{truncated_npy}} -o {{root}}/p1", "truncated"),
    (f"calibrate {M} --calib {{text_npy}} -o {{root}}/p1", "cannot be read"),
    (f"calibrate {M} --calib {{pickled_npy}} -o {{root}}/p1", "objects are never unpickled"),
    (f"calibrate {M} --calib {{npy_37gib}} -o {{root}}/p1", "37.3 GiB"),
    (f"calibrate {M} --calib {{truncated_npz}} -o {{root}}/p1", "not a readable .npz"),
    (f"calibrate {M} --calib {{corrupt_npz}} -o {{root}}/p1", "not a readable .np"),
    (f"calibrate {M} --calib {{npz_bomb}} -o {{root}}/p1", "over edgeq's limit"),
    (f"calibrate {{nonutf8}} --calib {CAL} -o {{root}}/p1", "not UTF-8"),
    (f"calibrate {M} --calib {CAL} -o {{a_file}}", "is a file"),
    (f"calibrate {M} --calib {CAL} -o {CAL}", "not empty"),
    (f"calibrate {M} --calib {CAL} -o {{readonly}}", "cannot write"),
    # report / export: plans
    ("report {plan_list}", "JSON list"),
    ("report {plan_no_tensors}", "lacks key"),
    ("report {plan_extra_key}", "unknown key"),
    ("report {plan_not_utf8}", "not valid JSON"),
    ("report {plan_truncated_npz}", "not a readable .npz"),
    ("report {plan_nan_scale}", "non-finite scale"),
    ("report {root}", "not a plan folder"),
    (f"export {M} --target tflm --plan {{plan_zero_scale}} -o {{root}}/e1", "scale ≤ 0"),
    (f"export {M} --target tflm --plan {{plan_negative_scale}} -o {{root}}/e1", "scale ≤ 0"),
    (f"export {M} --target tflm --plan {{plan_huge_zero_point}} -o {{root}}/e1", "zero point"),
    (f"export {M} --target tflm --plan {{plan_wrapping_weights}} -o {{root}}/e1", "would wrap"),
    (f"export {M} --target tflm --plan {{plan_bad_shape}} -o {{root}}/e1", "does not fit"),
    ("export {other_model} --target tflm --plan {plan} -o {root}/e1", "sha256"),
    (f"export {M} --target rpi --plan {{plan}} -o {{root}}/e1", "made for target 'tflm'"),
    (f"export {M} --target tflm --calib {CAL} --runs 0 -o {{root}}/e1", "--runs is 0"),
    (f"export {M} --target tflm --plan {{plan}} -o {{a_file}}", "is a file"),
    (f"export {M} --target tflm --plan {{plan}} -o {{root}}", "not empty"),
    (f"export {M} --target tflm --plan {{plan}} -o {{readonly}}", "cannot write"),
    (f"export {M} --target tflm --plan {{plan}} -o {{plan}}", "holds an edgeq plan"),
    # several targets: one output folder, refused whole before any work
    (f"export {M} --target onnx --target rpi --calib {CAL} -o {{root}}", "not empty"),
    (f"export {M} --target onnx --target rpi --calib {CAL} -o {{plan}}", "holds an edgeq plan"),
    (f"export {M} --target onnx --target rpi --calib {CAL} -o {{a_file}}", "is a file"),
    (f"export {M} --target onnx --target tflm --plan {{plan}} -o {{root}}/e1", "one target's plan"),
    # options of the merged commands (#13, #15, #16)
    (
        f"export {M} --target tflm --plan {{plan}} --labels {{a_file}} -o {{root}}/e1",
        "no evaluation data",
    ),
    (
        f"export {M} --target tflm --plan {{plan}} --max-loss nope=1 -o {{root}}/e1",
        "unknown budget metric",
    ),
    (
        f"export {M} --target tflm --plan {{plan}} --metric os:nope -o {{root}}/e1",
        "has no function",
    ),
    (f"calibrate {M} --calib {CAL} --weight-format nope -o {{root}}/p1", "affine or lut"),
    (f"calibrate {M} --calib {CAL} --bpw 100 -o {{root}}/p1", "bits per weight"),
    (f"calibrate {M} --calib {CAL} --method nope -o {{root}}/p1", "unknown weights algorithm"),
    (f"calibrate {M} --calib {CAL} --devices 999 -o {{root}}/p1", "--devices 999"),
    # usage errors (click's): one line too, not a boxed usage text
    (f"export {M} --target nope -o {{root}}/e1", "is not one of"),
    (f"export {M} --no-such-option", "No such option"),
    ("no-such-command", "No such command"),
    # bundle / verify / keygen
    ("bundle {fake_tflite} -o {root}/b1", "not a valid one"),
    ("bundle {a_file} -o {root}/b1", "not a .tflite"),
    ("bundle {tflite} -o {root}", "not empty"),
    ("bundle {tflite} -o {a_file}", "is a file"),
    ("bundle {tflite} -o {readonly}", "cannot write"),
    ("verify {manifest_list}", "not an edgeq firmware bundle"),
    ("verify {manifest_not_utf8}", "not UTF-8"),
    ("verify {fake_tar}", "truncated or corrupt"),
    ("verify {root}/nothing-here", "not a bundle folder"),
    ("keygen -o {a_file}", "refusing to overwrite"),
    ("keygen -o {readonly}/k.pem", "cannot write"),
    # devicetest
    ("devicetest {tflite} --runs 0", "at least 1"),
    ("devicetest {tflite} --model {model} --inputs {truncated_npz_file}", "not a readable .npz"),
    ("devicetest {tflite} --samples 100000000000", "over edgeq's limit"),
    ("devicetest {tflite} --out {root}", "not empty"),
    ("devicetest {tflite} --out {a_file}", "is a file"),
    ("devicetest {root}/missing.tflite", "does not exist"),
]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and "devicetest" not in p.parts}  # fmt: skip


@pytest.mark.parametrize("line,words", CASES, ids=[c[0][:60] for c in CASES])
def test_one_line_error_and_nothing_lost(w: dict[str, Path], line: str, words: str) -> None:
    args = [a.format(**{k: str(v) for k, v in w.items()}, readonly=_readonly(w))
            for a in line.split()]  # fmt: skip
    before = _snapshot(w["root"])
    result = CLI.invoke(app, args)
    out = result.output
    assert "Traceback" not in out, out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, out
    assert lines[-1] == errors[0] and " — " in errors[0], out
    assert words in errors[0], out
    assert _snapshot(w["root"]) == before  # nothing changed, nothing added
    assert not [p for p in w["root"].rglob(".*.edgeq-*")]  # no temp folder left


def test_every_command_is_in_the_table() -> None:
    commands = {info.name or info.callback.__name__ for info in app.registered_commands}  # type: ignore[union-attr]
    covered = {c[0].split()[0] for c in CASES}
    # no inputs to go wrong (targets only prints)
    assert commands - covered <= {"ops", "version", "targets"}, commands - covered


def test_verbose_keeps_the_traceback(w: dict[str, Path]) -> None:
    result = CLI.invoke(app, ["--verbose", "report", str(w["plan_nan_scale"])])
    assert result.exit_code == 2 and "Traceback" in result.output
    assert result.output.strip().splitlines()[-1].startswith("error:")


def test_an_unexpected_exception_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgeq.ir.ops as ops

    def boom() -> list[str]:
        raise KeyError("no such thing")

    monkeypatch.setattr(ops, "supported_ops", boom)
    result = CLI.invoke(app, ["ops"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = result.output.strip()
    assert line.startswith("error: unexpected KeyError") and "--verbose" in line


def test_a_50000_node_graph_loads_in_seconds(tmp_path: Path) -> None:
    """30,000 parallel nodes did not load in 300 s when the ready list was re-sorted on every
    pop; with a heap the sort is O(n log n). Stored unsorted, so the sort has work to do."""
    n = 50_000
    nodes = [helper.make_node("Sum", [f"r{i}" for i in range(n)], ["y"], name="sum")]
    nodes += [
        helper.make_node("Relu", ["x"], [f"r{i}"], name=f"relu{i}") for i in reversed(range(n))
    ]
    path = _save(make_model(nodes, [("x", F32, [1, 4])], [("y", F32, [1, 4])]),
                 tmp_path / "wide.onnx")  # fmt: skip

    def too_slow(signum: int, frame: object) -> None:
        raise TimeoutError("loading took over 60 s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(60)
    try:
        t0 = time.perf_counter()
        graph = load_model(path)
        elapsed = time.perf_counter() - t0
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert [node.name for node in graph.nodes[:2]] == ["relu49999", "relu49998"]  # stable order
    assert graph.nodes[-1].name == "sum"
    assert elapsed < 15, elapsed
