"""xcode: command construction always (test_quoting.py); a real run only on macOS with Xcode
and an .mlpackage from the Core ML exporter."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from edgeq.device_tests.devicetest import run_devicetest
from edgeq.device_tests.transports import DeviceError, DeviceOptions, XcodeTransport, parse_device

pytestmark = pytest.mark.xcode


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the refusal off macOS")
def test_xcode_off_macos_is_refused_clearly() -> None:
    t = XcodeTransport(parse_device("xcode"), DeviceOptions())
    with pytest.raises(DeviceError, match="needs macOS"):
        t.open()
    assert t.workdir is None


@pytest.mark.skipif(sys.platform != "darwin" or shutil.which("xcrun") is None,
                    reason="needs macOS with Xcode (xcrun coremlcompiler)")  # fmt: skip
def test_xcode_for_real(tmp_path: Path) -> None:
    coreml = pytest.importorskip("edgeq.exporters.coreml.exporter")
    from edgeq.device_tests.conftest import write_conv_onnx
    from edgeq.exporters import ExportOptions
    from edgeq.ir.onnx_io import load_model
    from edgeq.pipeline import prepare_for_quantization
    from edgeq.targets import load_target

    model = write_conv_onnx(tmp_path / "conv.onnx")
    graph = prepare_for_quantization(load_model(model))
    art = coreml.EXPORTER.export(graph, None, load_target("ane"), tmp_path / "m.mlpackage",
                                 ExportOptions())  # fmt: skip
    res = run_devicetest(art.path, "xcode", runs=10, model=model, out=tmp_path / "rep")
    assert res.report["outputs"]["y"]["vs_float"]["cosine"] > 0.999
    assert "device_counts" in res.report.get("compute_plan", {})
