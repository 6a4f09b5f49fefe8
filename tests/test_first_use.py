"""The README's first-use path, run exactly as written (the command block between the
`first-use` markers), then what its outputs must show: verdicts against labels, the HTML report
rendered by headless Chromium, devicetest without --model; and a deliberately broken export
(plain per-channel int4 on the default model) that must print FAIL with the task metric and
exit 1 (0 with --allow-loss)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def readme_block(name: str) -> list[str]:
    """The shell lines of the fenced block between `<!-- name:begin -->` and `:end -->`."""
    text = README.read_text()
    m = re.search(rf"<!-- {name}:begin -->\s*```bash\n(.*?)```\s*<!-- {name}:end -->", text, re.S)
    assert m, f"README has no {name} block"
    return [ln for ln in m.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "200"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def first_use(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the README block in an empty folder (from outside the clone)."""
    cwd = tmp_path_factory.mktemp("first-use")
    results = []
    for line in readme_block("first-use"):
        proc = run(shlex.split(line), cwd)
        results.append((line, proc))
        if proc.returncode:
            break
    return {"cwd": cwd, "results": results}


def test_readme_first_use_path_runs_as_written(first_use: dict[str, Any]) -> None:
    cwd = first_use["cwd"]
    for line, proc in first_use["results"]:
        assert proc.returncode == 0, (
            f"`{line}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    assert len(first_use["results"]) == len(readme_block("first-use"))
    out = cwd / "work" / "out"
    summary = json.loads((out / "export_report.json").read_text())
    assert [r["target"] for r in summary["targets"]] == ["onnx", "rpi"]
    for target in ("onnx", "rpi"):
        rep = json.loads((out / target / "export_report.json").read_text())
        ev, lead = rep["evaluation"], rep["task"]["metrics"][0]
        assert ev["held_out"] and ev["samples"] == 256 and ev["labels"]
        assert (rep["task"]["name"], lead["name"], lead["against"]) == ("ctc", "cer", "labels")
        assert rep["verdict"]["status"] == "PASS" and lead["quant"] - lead["float"] <= 1.0
        assert (out / target / "export_report.html").is_file() and (out / target / "plan").is_dir()
    export_out = first_use["results"][1][1].stdout
    assert "rpi: PASS: cer" in export_out and "against labels" in export_out
    assert (
        "Failed to load" not in first_use["results"][1][1].stderr
    )  # coremltools noise: in the log
    # devicetest found the plan and the model (through the plan's recorded path) on its own
    dt = json.loads((out / "rpi" / "devicetest" / "devicetest_report.json").read_text())
    assert dt["status"] == "passed" and dt["model"].endswith("rec.onnx")
    assert (cwd / "work" / "bundle" / "manifest.json").is_file()


def _chromium() -> str | None:
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


def test_html_report_renders_with_charts_in_headless_chromium(first_use: dict[str, Any],
                                                              tmp_path: Path) -> None:  # fmt: skip
    from PIL import Image

    from edgeq.html_report import BITS_COLORS, PASS_COLOR

    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium as root)")
    page = first_use["cwd"] / "work" / "out" / "rpi" / "export_report.html"
    assert page.is_file(), "the first-use export did not write its report"
    text = page.read_text()
    # self-contained: no scripts, no stylesheets or images fetched from anywhere
    assert "<script" not in text and "<link" not in text and "<img" not in text
    assert not re.search(r"(src|href)\s*=\s*[\"'](https?:|file:|//)", text)
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--allow-file-access-from-files"]  # fmt: skip
    shot = tmp_path / "report.png"
    proc = run([*flags, "--window-size=1200,2200", f"--screenshot={shot}", page.as_uri()], tmp_path)
    assert shot.is_file(), proc.stderr[-2000:]
    dom = run([*flags, "--dump-dom", page.as_uri()], tmp_path).stdout
    assert re.search(r"id=\"layers\"><svg", dom) and re.search(r"id=\"histograms\"><svg", dom)
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    assert pixels.std() > 20, "the screenshot is blank"

    def count(hex_color: str, tol: int = 12) -> int:
        rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
        return int(np.sum(np.all(np.abs(pixels - rgb) <= tol, axis=1)))

    # the verdict banner (green: PASS) and the 8-bit bars/histograms are on screen
    assert count(PASS_COLOR) > 5_000, count(PASS_COLOR)
    assert count(BITS_COLORS[8]) > 20_000, count(BITS_COLORS[8])


def test_broken_export_prints_fail_with_the_task_metric_and_exits_1(
    first_use: dict[str, Any],
) -> None:
    cwd = first_use["cwd"]
    assert (cwd / "work" / "rec.onnx").is_file(), "the first-use path did not write the model"
    # the old plain 4-bit: min-max per-channel int4 with 8-bit activations (W4A8), no GPTQ, no
    # mixed precision (reachable only by an explicit recipe since the 4-bit defaults changed)
    (cwd / "int4.toml").write_text(
        'mixed_precision = "off"\n[recipe]\nweight_bits = 4\nact_bits = 8\n'
        'granularity = "per_channel"\nmethod = "rtn"\n'
    )
    assert tomllib.loads((cwd / "int4.toml").read_text())["recipe"]["weight_bits"] == 4
    base = ["edgeq", "export", "work/rec.onnx", "--calib", "work/calib", "--eval", "work/eval",
            "--preprocess", "work/preprocess.toml", "--input-shape", "x=1,3,48,320",
            "--target", "onnx", "--eval-samples", "8"]  # fmt: skip
    proc = run([*base, "--recipe", "int4.toml", "--calib-samples", "16", "-o", "broken"], cwd)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    verdict = next(ln for ln in proc.stdout.splitlines() if ln.startswith("FAIL"))
    # the artifact outputs (nearly) nothing readable: CER far above float's
    m = re.match(r"FAIL: cer ([\d.]+)% vs float ([\d.]+)%", verdict)
    assert m and float(m.group(1)) - float(m.group(2)) > 20, verdict
    assert (cwd / "broken" / "model.onnx").is_file() and (
        cwd / "broken" / "export_report.html"
    ).is_file()
    rep = json.loads((cwd / "broken" / "export_report.json").read_text())
    assert rep["verdict"]["status"] == "FAIL" and rep["recipe"]["label"] == "W4A8"
    # what to try next: options this plan did not use and the onnx target accepts
    tries = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip().startswith("try:")]
    assert len(tries) == len(rep["verdict"]["next_steps"]) == 4, proc.stdout
    for flag in ("--diagnose", "rare_values_tail", "--act-bits 16", "--max-loss"):
        assert sum(flag in t for t in tries) == 1, (flag, tries)
    # the same plan, accepted with --allow-loss: exit 0, still FAIL in the report
    proc = run([*base, "--plan", "broken/plan", "--allow-loss", "-o", "broken-allowed"], cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL: cer" in proc.stdout and "--allow-loss" in proc.stdout
