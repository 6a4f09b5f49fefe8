"""Firmware bundles: what `edgeq bundle` writes, the C source compiles, and `edgeq verify`
refuses altered, incomplete, wrongly signed and unsafe bundles with one line and exit != 0."""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from onnx import helper
from typer.testing import CliRunner

from edgeq.cli import app
from edgeq.exporters import ExportOptions, get_exporter
from edgeq.exporters.tflite.bundle import BundleError, make_bundle, verify_bundle
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


def _members(tarball: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(tarball) as tf:
        return [(m, tf.extractfile(m).read()) for m in tf.getmembers()]  # type: ignore[union-attr]


def _tar(out: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(out, "w:gz", format=tarfile.GNU_FORMAT) as tf:
        for info, payload in members:
            info = copy.copy(info)
            if info.isfile() and not info.issparse():
                info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload) if payload else None)
    return out


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = kind, link
    return ti


@pytest.fixture()
def signed_tar(tflite: Path, keys, tmp_path: Path):  # type: ignore[no-untyped-def]
    key, pub, _ = keys
    written = make_bundle(tflite, tmp_path / "fw", sign_key=key, tar=True)
    return written, pub


def test_tarball_round_trip(signed_tar) -> None:  # type: ignore[no-untyped-def]
    written, pub = signed_tar
    assert written.name == "fw.tar.gz"
    names = [m.name for m, _ in _members(written)]
    assert names[0] == "fw/manifest.json"  # streamed verification reads the manifest first
    assert all(not n.startswith("/") and ".." not in n.split("/") for n in names)
    assert verify_bundle(written, pub).signature_checked


def test_hostile_tarballs_are_refused_before_anything_is_written(signed_tar, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    """Each variant of a genuine signed tarball is refused with one line and writes nothing
    (TMPDIR stays empty): the issue's attacks on `edgeq verify`."""
    written, pub = signed_tar
    good = _members(written)
    manifest = json.loads(good[0][1])
    model = next((m, d) for m, d in good if m.name == "fw/model.tflite")
    evil = bytes(model[1][:8]) + b"\0" * (len(model[1]) - 8)  # a bad model of the right size
    sparse = _info("fw/model.tflite", tarfile.GNUTYPE_SPARSE)
    empty = dict(manifest, files={}, sizes={})
    variants = {
        "extra top-level file": (
            [*good, (_info("install.sh"), b"rm -rf /\n")],
            "outside the bundle's folder",
        ),
        "extra file in the folder": ([*good, (_info("fw/evil.bin"), b"x")], "does not list"),
        "duplicate member, bad one first": (
            [good[0], good[1], (model[0], evil), *good[2:]],
            "SHA-256",
        ),
        "duplicate member, bad one last": ([*good, (model[0], evil)], "twice"),
        "sparse member": ([good[0], good[1], (sparse, b"")], "sparse"),
        "symlink": (
            [good[0], (_info("fw/model.tflite", tarfile.SYMTYPE, "/etc/passwd"), b"")],
            "a link",
        ),
        "hard link": (
            [good[0], (_info("fw/model.tflite", tarfile.LNKTYPE, "fw/manifest.json"), b"")],
            "a link",
        ),
        "device": ([good[0], (_info("fw/model.tflite", tarfile.CHRTYPE), b"")], "device"),
        "absolute path": ([good[0], (_info("/etc/cron.d/x"), b"x")], "unsafe member"),
        "dot-dot path": ([good[0], (_info("fw/../../x"), b"x")], "unsafe member"),
        "manifest not first": (good[2:] + good[:2], "not manifest.json"),
        "manifest is a list": ([(good[0][0], b"[]"), *good[1:]], "not an edgeq firmware bundle"),
        "manifest not UTF-8": ([(good[0][0], b'{"format": "\xff\xfe"}'), *good[1:]], "not UTF-8"),
        "empty manifest": ([(good[0][0], json.dumps(empty).encode())], "lists no files"),
        "member larger than declared": (
            [good[0], good[1], (model[0], model[1] + b"\x00" * 4096), *good[3:]],
            "the manifest says",
        ),
    }
    tmpdir = tmp_path / "TMPDIR"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)
    for label, (members, words) in variants.items():
        hostile = _tar(tmp_path / "hostile.tar.gz", members)
        with pytest.raises(BundleError, match=words):
            verify_bundle(hostile, pub)
        _refused([str(hostile), "--pubkey", str(pub)], words)
        assert os.listdir(tmpdir) == [], label


def test_truncated_and_corrupt_tarballs(signed_tar, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    written, pub = signed_tar
    data = written.read_bytes()
    for frac in (0.1, 0.5, 0.9, 0.99):
        cut = tmp_path / "cut.tar.gz"
        cut.write_bytes(data[: int(len(data) * frac)])
        _refused([str(cut), "--pubkey", str(pub)], "truncated or corrupt")
    cut.write_bytes(data[:-1])  # even the last byte of the gzip trailer
    _refused([str(cut)], "truncated or corrupt")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    cut.write_bytes(bytes(flipped))
    _refused([str(cut)], "")


def test_a_gzip_bomb_is_refused_without_inflating_it(signed_tar, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A member the manifest does not list, 256 MiB of zeros in 256 KB of gzip: refused from
    its header, quickly, long before 256 MiB are decompressed."""
    written, pub = signed_tar
    good = _members(written)
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w|") as tf:
        tf.addfile(good[0][0], io.BytesIO(good[0][1]))
        ti = _info("fw/zeros.bin")
        ti.size = 256 << 20
        tf.addfile(ti, _Zeros(ti.size))
    assert bomb.stat().st_size < 2 << 20
    t0 = time.perf_counter()
    _refused([str(bomb), "--pubkey", str(pub)], "does not list")
    assert time.perf_counter() - t0 < 5


class _Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def test_hostile_bundle_folders(tflite: Path, keys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key, _pub, _ = keys
    out = _bundle(tflite, tmp_path / "b", key)
    (out / "extra.txt").write_text("x")
    _refused([str(out)], "does not cover")
    (out / "extra.txt").unlink()
    (out / "model_data.cc").unlink()
    (out / "model_data.cc").symlink_to(tmp_path / "elsewhere.cc")
    _refused([str(out)], "is a link")
    other = _bundle(tflite, tmp_path / "c", key)
    (other / "manifest.json").write_text("[]")
    _refused([str(other)], "not an edgeq firmware bundle")
    (other / "manifest.json").write_bytes(b"\xff\xfe not text")
    _refused([str(other)], "not UTF-8")


def test_bundle_into_the_artifacts_folder(tflite: Path, tmp_path: Path) -> None:
    """`edgeq bundle fw/model.tflite -o fw` never deletes the folder's other files."""
    fw = tmp_path / "fw"
    fw.mkdir()
    (fw / "model.tflite").write_bytes(tflite.read_bytes())
    (fw / "README.txt").write_text("board notes")
    result = CLI.invoke(app, ["bundle", str(fw / "model.tflite"), "-o", str(fw)])
    assert result.exit_code == 2 and "not empty" in result.output
    assert sorted(os.listdir(fw)) == ["README.txt", "model.tflite"]
    result = CLI.invoke(app, ["bundle", str(fw / "model.tflite"), "-o", str(fw), "--force"])
    assert result.exit_code == 0, result.output
    assert (fw / "README.txt").read_text() == "board notes"
    _bundle(tflite, tmp_path / "b")
    assert (
        CLI.invoke(app, ["bundle", str(tflite), "-o", str(tmp_path / "b")]).exit_code == 0
    )  # an earlier bundle


def test_bundle_of_something_that_only_starts_like_a_tflite(tflite: Path, tmp_path: Path) -> None:
    data = tflite.read_bytes()
    fake = tmp_path / "fake.tflite"
    for payload in (data[:64], data[:8] + b"\xff" * 200, data[: len(data) // 3]):
        fake.write_bytes(payload)
        result = CLI.invoke(app, ["bundle", str(fake), "-o", str(tmp_path / "b")])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / "b").exists()


def test_bundle_refuses_non_tflite(tmp_path: Path) -> None:
    bogus = tmp_path / "x.tflite"
    bogus.write_bytes(b"not a model at all")
    with pytest.raises(BundleError, match=r"not a .tflite"):
        make_bundle(bogus, tmp_path / "b")
    assert not (tmp_path / "b").exists()
