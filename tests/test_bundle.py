"""Firmware bundles: what `edgeq bundle` writes, the C source compiles, and `edgeq verify`
refuses altered, incomplete, wrongly signed and unsafe bundles with one line and exit != 0."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from onnx import helper
from typer.testing import CliRunner

from edgeq.cli import app
from edgeq.exporters import ExportOptions, get_exporter
from edgeq.exporters.tflite.bundle import BundleError, make_bundle, tar_with_members, verify_bundle
from edgeq.ir.onnx_io import model_to_graph
from edgeq.pipeline import prepare_for_quantization
from edgeq.targets import load_target
from tests.conftest import F32, make_model

CLI = CliRunner()


@pytest.fixture(scope="module")
def tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_tflite import _plan

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Softmax", ["f"], ["y"], axis=-1, name="softmax")]  # fmt: skip
    model = make_model(
        nodes, [("x", F32, [1, 3, 8, 8])], [("y", F32, [1, 4])], initializers={"w": w}
    )
    graph = prepare_for_quantization(model_to_graph(model))
    out = tmp_path_factory.mktemp("tfl") / "model.tflite"
    get_exporter("tflite").export(
        graph, _plan(graph, "tflm"), load_target("tflm"), out, ExportOptions()
    )
    return out


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    assert CLI.invoke(app, ["keygen", "-o", str(d / "key.pem")]).exit_code == 0
    assert CLI.invoke(app, ["keygen", "-o", str(d / "other.pem")]).exit_code == 0
    return d / "key.pem", d / "key.pem.pub", d / "other.pem.pub"


def _bundle(tflite: Path, out: Path, key: Path | None = None) -> Path:
    args = ["bundle", str(tflite), "-o", str(out)] + (["--sign", str(key)] if key else [])
    result = CLI.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def _refused(args: list[str], match: str) -> None:
    result = CLI.invoke(app, ["verify", *args])
    assert result.exit_code != 0
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and match in lines[0], result.output


def test_bundle_contents(tflite: Path, tmp_path: Path) -> None:
    out = _bundle(tflite, tmp_path / "b")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["manifest.json", "model.tflite", "model_data.cc", "model_data.h"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "tflm" and manifest["edgeq_version"]
    assert set(manifest["files"]) == {"model.tflite", "model_data.cc", "model_data.h"}
    assert {"AddConv2D", "AddMean", "AddSoftmax", "AddReshape"} <= set(
        manifest["op_resolver"]["add"]
    )
    (inp,) = manifest["inputs"]
    assert inp["dtype"] == "int8" and inp["shape"] == [1, 8, 8, 3] and "scale" in inp
    # the arena holds at least the largest activation pair alive at once (input + conv output)
    assert manifest["arena"]["activations_bytes"] >= 8 * 8 * 3 + 8 * 8 * 4
    assert "alignas(16) const unsigned char g_model[]" in (out / "model_data.cc").read_text()
    assert (out / "model.tflite").read_bytes() == tflite.read_bytes()


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_c_source_compiles(tflite: Path, tmp_path: Path) -> None:
    out = _bundle(tflite, tmp_path / "b")
    main = tmp_path / "check.cc"
    main.write_text('#include "model_data.h"\n'
                    "static_assert(alignof(decltype(g_model[0])) >= 1, \"\");\n"
                    "int model_size() { return (int)g_model_len + g_model[4]; }\n")  # fmt: skip
    for src in (out / "model_data.cc", main):
        subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-c", str(src), "-I", str(out),
                        "-o", str(tmp_path / (src.stem + ".o"))], check=True)  # fmt: skip


def test_verify_accepts_a_good_signed_bundle(tflite: Path, keys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key, pub, _ = keys
    out = _bundle(tflite, tmp_path / "b", key)
    result = CLI.invoke(app, ["verify", str(out), "--pubkey", str(pub)])
    assert result.exit_code == 0 and "signature OK" in result.output


def test_verify_refuses_a_flipped_byte(tflite: Path, keys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key, pub, _ = keys
    out = _bundle(tflite, tmp_path / "b", key)
    data = bytearray((out / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / "model.tflite").write_bytes(bytes(data))
    _refused([str(out), "--pubkey", str(pub)], "model.tflite")


def test_verify_refuses_an_edited_manifest(tflite: Path, keys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key, pub, _ = keys
    out = _bundle(tflite, tmp_path / "b", key)
    text = (out / "manifest.json").read_text().replace('"target": "tflm"', '"target": "tflmX"')
    (out / "manifest.json").write_text(text)
    _refused([str(out), "--pubkey", str(pub)], "signature does not verify")


def test_verify_refuses_a_missing_file(tflite: Path, tmp_path: Path) -> None:
    out = _bundle(tflite, tmp_path / "b")
    (out / "model_data.cc").unlink()
    _refused([str(out)], "model_data.cc' is missing")


def test_verify_refuses_the_wrong_key(tflite: Path, keys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key, _, other = keys
    out = _bundle(tflite, tmp_path / "b", key)
    _refused([str(out), "--pubkey", str(other)], "wrong key")
    unsigned = _bundle(tflite, tmp_path / "u")
    _refused([str(unsigned), "--pubkey", str(other)], "not signed")


def test_tarball_round_trip_and_unsafe_members(tflite: Path, keys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key, pub, _ = keys
    written = make_bundle(tflite, tmp_path / "fw", sign_key=key, tar=True)
    assert written.name == "fw.tar.gz"
    with tarfile.open(written) as tf:
        names = tf.getnames()
    assert all(not n.startswith("/") and ".." not in n.split("/") for n in names)
    assert verify_bundle(written, pub).signature_checked
    for bad in ("../evil.txt", "/etc/evil.txt", "fw/../../evil.txt"):
        hostile = tar_with_members(tmp_path / "bad.tar.gz", {"fw/manifest.json": b"{}", bad: b"x"})
        _refused([str(hostile)], "unsafe member")
    link = tmp_path / "link.tar.gz"
    with tarfile.open(link, "w:gz") as tf:
        ti = tarfile.TarInfo("fw/model.tflite")
        ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(ti)
    _refused([str(link)], "link or device")


def test_bundle_refuses_non_tflite(tmp_path: Path) -> None:
    bogus = tmp_path / "x.tflite"
    bogus.write_bytes(b"not a model at all")
    with pytest.raises(BundleError, match=r"not a .tflite"):
        make_bundle(bogus, tmp_path / "b")
    assert not (tmp_path / "b").exists()
