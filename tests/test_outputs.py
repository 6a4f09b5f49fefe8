"""Outputs never destroy what edgeq did not create: `-o` into a user's folder is refused (or,
with --force, only edgeq's own files change), earlier outputs of the same kind are replaced
entry by entry, odd destinations are one-line errors, keys are never overwritten and are 0600
from creation, and an interrupted write leaves nothing behind."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from onnx import helper
from typer.testing import CliRunner

from edgeq.cli import app
from edgeq.interrupts import Interrupted
from edgeq.outputs import MARKER, OutputError, OutputKind, check_output, write_output
from tests.conftest import F32, make_model

CLI = CliRunner()
KIND = OutputKind("export", "an edgeq export folder")


def cli(*args: str) -> tuple[int, str]:
    result = CLI.invoke(app, list(args))
    return result.exit_code, result.output


def one_error(output: str) -> str:
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), output
    assert "Traceback" not in output
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A user's project folder: a tiny conv model, notes, and a calibration folder."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                        helper.make_node("Relu", ["c"], ["y"])],
                       [("x", F32, [1, 3, 8, 8])], [("y", F32, [1, 4, 8, 8])],
                       initializers={"w": w})  # fmt: skip
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "m.onnx").write_bytes(model.SerializeToString())
    (proj / "notes.txt").write_text("my notes\n")
    for i in range(4):
        np.save(proj / "data" / f"s{i}.npy", rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32))
    return proj


def test_export_into_the_models_folder_is_refused(project: Path) -> None:
    before = snapshot(project)
    code, out = cli("export", str(project / "m.onnx"), "--calib", str(project / "data"),
                    "-o", str(project))  # fmt: skip
    line = one_error(out)
    assert code == 2 and "not empty" in line and "--force" in line
    assert snapshot(project) == before  # nothing lost, nothing added
    assert not [p for p in project.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_calibrate_into_its_own_data_is_refused(project: Path) -> None:
    before = snapshot(project)
    code, out = cli("calibrate", str(project / "m.onnx"), "--calib", str(project / "data"),
                    "-o", str(project / "data"))  # fmt: skip
    assert code == 2 and "not empty" in one_error(out)
    assert snapshot(project) == before


def test_calibrate_reruns_replace_only_edgeqs_files(project: Path) -> None:
    plan = project / "plan"
    args = ["calibrate", str(project / "m.onnx"), "--calib", str(project / "data"),
            "--report-samples", "0", "-o", str(plan)]  # fmt: skip
    code, out = cli(*args)
    assert code == 0, out
    assert sorted(os.listdir(plan)) == [MARKER, "plan.json", "plan.npz"]
    (plan / "my-notes.md").write_text("kept\n")  # the user adds a file to edgeq's folder
    (plan / "plan.json").write_text("{}")  # and breaks one of edgeq's files
    code, out = cli(*args)  # an earlier plan folder: replaced without --force
    assert code == 0, out
    assert (plan / "my-notes.md").read_text() == "kept\n"
    assert json.loads((plan / "plan.json").read_text())["format"] == "edgeq-quant-plan"
    # a plan folder is not an export folder: export -o plan/ is refused
    code, out = cli("export", str(project / "m.onnx"), "--plan", str(plan), "-o", str(plan))
    assert code == 2 and "holds an edgeq plan output" in one_error(out)


def test_force_adds_files_and_touches_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "a").write_text("user's a")  # same name as an edgeq entry: --force replaces it

    def write(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "a").write_text("edgeq a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x").write_text("x")

    with pytest.raises(OutputError, match="not empty"):
        write_output(out, KIND, write)
    write_output(out, KIND, write, force=True)
    assert (out / "keep.txt").read_text() == "mine" and (out / "a").read_text() == "edgeq a"
    assert json.loads((out / MARKER).read_text())["entries"] == [MARKER, "a", "sub"]

    def write2(tmp: Path) -> None:  # the next output of the same kind has other entries
        tmp.mkdir()
        (tmp / "b").write_text("b")

    write_output(out, KIND, write2)  # no --force needed now
    assert sorted(os.listdir(out)) == [MARKER, "b", "keep.txt"]  # a and sub were edgeq's


def test_a_tampered_marker_cannot_delete_outside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "precious").write_text("x")
    (out / MARKER).write_text(json.dumps({"format": "edgeq-output", "kind": "export",
                                          "entries": ["../precious", "/etc", ".."]}))  # fmt: skip
    write_output(out, KIND, lambda tmp: (tmp.mkdir(), (tmp / "a").write_text("a")))
    assert (tmp_path / "precious").read_text() == "x" and (out / "a").is_file()


def test_odd_destinations_are_one_line_errors(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    model, data = str(project / "m.onnx"), str(project / "data")
    monkeypatch.chdir(project)
    for dest, words in ((".", "not empty"), (model, "is a file"),
                        (str(project / "notes.txt" / "sub"), "is a file, not a folder"),
                        ("/", "root"), ("", "empty")):  # fmt: skip
        code, out = cli("calibrate", model, "--calib", data, "-o", dest)
        assert code == 2 and words in one_error(out), (dest, out)
    if os.geteuid() == 0:  # root writes anywhere permissions allow: use a read-only file system
        readonly = Path("/proc/edgeq-out")
    else:
        locked = project / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        readonly = locked / "out"
    code, out = cli("calibrate", model, "--calib", data, "-o", str(readonly))
    assert code == 2 and "cannot write" in one_error(out)
    code, out = cli("keygen", "-o", str(readonly / "k.pem"))
    assert code == 2 and "cannot write" in one_error(out)


def test_keygen_never_overwrites_and_is_private_from_the_start(tmp_path: Path) -> None:
    old = os.umask(0)  # a permissive umask must not make the private key readable
    try:
        code, out = cli("keygen", "-o", str(tmp_path / "k.pem"))
    finally:
        os.umask(old)
    assert code == 0, out
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    key = (tmp_path / "k.pem").read_bytes()
    code, out = cli("keygen", "-o", str(tmp_path / "k.pem"))
    assert code == 2 and "refusing to overwrite" in one_error(out)
    assert (tmp_path / "k.pem").read_bytes() == key
    (tmp_path / "only.pem.pub").write_text("a public key the user keeps")
    code, out = cli("keygen", "-o", str(tmp_path / "only.pem"))
    assert code == 2 and "only.pem.pub" in one_error(out)
    assert not (tmp_path / "only.pem").exists()  # nothing half-made


def test_an_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    def write(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "half").write_text("half")
        raise Interrupted(15)

    with pytest.raises(Interrupted):
        write_output(tmp_path / "out", KIND, write)
    assert os.listdir(tmp_path) == []


def test_check_output_names_what_is_there(tmp_path: Path) -> None:
    for i in range(6):
        (tmp_path / f"f{i}").write_text("x")
    with pytest.raises(OutputError, match=r"f0, f1, f2, f3, … \(6 entries\)"):
        check_output(tmp_path, KIND)
    assert check_output(tmp_path / "new", KIND) == (tmp_path / "new").resolve()


def test_a_failed_replacement_leaves_the_old_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    out = tmp_path / "out"

    def files(text: str) -> Callable[[Path], None]:
        def write(tmp: Path) -> None:
            tmp.mkdir()
            (tmp / "a").write_text(f"{text} a")
            (tmp / "b").write_text(f"{text} b")

        return write

    write_output(out, KIND, files("old"))
    real, calls = os.rename, []

    def disk_full_on_the_fifth(src: str, dst: str) -> None:
        calls.append(src)
        if len(calls) == 5:  # 3 old entries moved aside, the new marker placed, then "a" fails
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "rename", disk_full_on_the_fifth)
    with pytest.raises(OutputError, match="No space left"):
        write_output(out, KIND, files("new"))
    monkeypatch.undo()
    assert {p.name: p.read_text() for p in out.iterdir() if p.name != MARKER} == {
        "a": "old a", "b": "old b"}  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_edgeq_example_replaces_only_what_it_wrote(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """`edgeq example -o DIR`: a user's folder is refused untouched; a rerun replaces the
    example's own entries and keeps what the user added (the export its next command writes
    into DIR/out, notes); a failure half-way leaves nothing (no folder, no temp folder)."""
    from edgeq.examples import quickstart

    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.txt").write_text("mine")
    code, out = cli("example", "ppocr-cls", "--calib-samples", "1", "--eval-samples", "1",
                    "-o", str(user))  # fmt: skip
    assert code == 2 and "did not write" in one_error(out)
    assert os.listdir(user) == ["thesis.txt"]

    ex = tmp_path / "ex"
    for _ in range(2):
        code, out = cli("example", "ppocr-cls", "--calib-samples", "1", "--eval-samples", "1",
                        "-o", str(ex))  # fmt: skip
        assert code == 0, out
        (ex / "out").mkdir(exist_ok=True)
        (ex / "out" / "report.md").write_text("the user's export")
        (ex / "notes.txt").write_text("mine")
    assert (ex / "out" / "report.md").read_text() == "the user's export"
    assert (ex / "notes.txt").read_text() == "mine"
    assert "notes.txt" not in json.loads((ex / MARKER).read_text())["entries"]
    assert len(os.listdir(ex / "calib")) == 2  # one image + labels.json, written again

    def broken(name: str, out: Path, calib: int, evaluation: int) -> list[Path]:
        (out / "model.onnx").write_bytes(b"half")
        raise RuntimeError("the data writer failed")

    monkeypatch.setattr(quickstart, "_write_ocr", broken)
    with pytest.raises(RuntimeError):
        quickstart.write_example("ppocr-cls", tmp_path / "new", 1, 1)
    assert sorted(os.listdir(tmp_path)) == ["ex", "mine"]
