"""Calibration on any backend and any number of devices gives the same plan.

CI has no GPU, so the accelerator itself is measured by `benchmarks/accelerator.py`; here:
- every matrix product and convolution edgeq traces asks for full float32 precision
  explicitly (a GPU would otherwise run float32 matmuls/convs as TF32 and drift the ranges);
- 1 and 2 devices (forced host devices, `--xla_force_host_platform_device_count=2`) give
  identical plans from a real model;
- the per-layer report compiled ahead of time from the PlanSpec (the plan as arguments) agrees
  with the general simulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from jax import lax

from edgeq.ir.interpreter import Interpreter
from edgeq.ir.onnx_io import load_model
from edgeq.pipeline import prepare_for_quantization
from edgeq.quant.calibrate import calibrate
from edgeq.quant.planner import make_spec
from edgeq.quant.recipe import Recipe
from edgeq.quant.simulate import (
    SimLayout,
    Simulator,
    compile_sqnr_program,
    layer_sqnr,
    simulate_env,
)
from edgeq.targets import load_target
from examples.models import CASES

ROOT = Path(__file__).resolve().parents[1]
PRECISE = {"dot_general", "conv_general_dilated"}


def _products(jaxpr: Any) -> list[tuple[str, Any]]:
    """(primitive, precision) of every matmul/conv in a jaxpr, sub-jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in PRECISE:
            found.append((eqn.primitive.name, eqn.params.get("precision")))
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found.extend(_products(inner))
    return found


def _highest(precision: Any) -> bool:
    options = precision if isinstance(precision, tuple) else (precision,)
    return all(p in (lax.Precision.HIGHEST, "highest") for p in options) and precision is not None


@pytest.fixture(scope="module")
def cls_case() -> dict[str, Any]:
    case = CASES["ppocr-cls"]
    graph = prepare_for_quantization(load_model(case.model_path()), case.input_shapes)
    feeds = case.make_feeds(12, "calib")
    plan = calibrate(graph, feeds[:8], load_target("onnx"))
    return {"graph": graph, "plan": plan, "feeds": feeds}


def test_every_product_asks_for_full_float32_precision(cls_case: dict[str, Any]) -> None:
    graph, plan, feeds = cls_case["graph"], cls_case["plan"], cls_case["feeds"]
    layout = SimLayout.of_plan(plan, graph)
    assert layout is not None
    args = layout.arguments(plan, graph)
    programs = {
        "float forward": lambda f: Interpreter(graph).forward(f),
        "simulator": lambda f: Simulator(graph, plan).forward(f),
        "parametric simulator": lambda f: simulate_env(graph, layout, f, args),
    }
    with jax.enable_x64(True):
        for name, fn in programs.items():
            products = _products(jax.make_jaxpr(fn)(feeds[0]).jaxpr)
            assert products, f"{name}: no matmul/conv traced (the check would prove nothing)"
            loose = [p for p in products if not _highest(p[1])]
            assert not loose, f"{name}: products at default precision: {loose[:3]}"


def test_the_checker_sees_default_precision() -> None:
    def f(a: Any, b: Any) -> Any:
        return a @ b

    products = _products(jax.make_jaxpr(f)(np.ones((2, 2)), np.ones((2, 2))).jaxpr)
    assert products and not all(_highest(p) for _, p in products)


def test_report_compiled_ahead_matches_the_general_simulator(cls_case: dict[str, Any]) -> None:
    graph, plan, feeds = cls_case["graph"], cls_case["plan"], cls_case["feeds"][8:]
    spec = make_spec(graph, Recipe(), load_target("onnx"))
    ahead = compile_sqnr_program(graph, SimLayout.of_spec(spec, graph), len(feeds))
    assert ahead[0].admits(plan, graph)
    fast = {r["tensor"]: r["sqnr_db"] for r in layer_sqnr(graph, plan, feeds, program=ahead)}
    # the general path: the Simulator class with taps, sums on the host
    taps = [n for n in fast if n not in graph.output_names]
    ref, sim = Interpreter(graph, taps=taps), Simulator(graph, plan, taps=taps)
    floats, sims = [ref(f) for f in feeds], [sim(f) for f in feeds]
    for name, db in fast.items():
        a = np.concatenate([np.ravel(x[name]) for x in floats]).astype(np.float64)
        b = np.concatenate([np.ravel(x[name]) for x in sims]).astype(np.float64)
        noise = float(np.sum((a - b) ** 2))
        expect = np.inf if noise == 0 else 10 * np.log10(float(np.sum(a * a)) / noise)
        assert db == pytest.approx(expect, abs=0.05), name


def test_one_and_two_devices_give_the_same_plan(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        import jax
        from edgeq.pipeline import calibrate_model
        from examples.models import CASES

        case = CASES["ppocr-cls"]
        feeds = case.make_feeds(20, "calib")  # batches of 8, 8, 4: the last one split too
        out = {"devices": len(jax.devices())}
        for n in (1, 2):
            run = calibrate_model(case.model_path(), feeds, "onnx", input_shapes=case.input_shapes,
                                  devices=n, report_samples=0, samples=20)
            out[n] = {"devices": run.plan.calibration["devices"]["count"],
                      "tensors": {k: [np.asarray(t.scale).tolist(), np.asarray(t.zero_point).tolist()]
                                  for k, t in run.plan.tensors.items() if t.scale is not None}}
        json.dump(out, open(sys.argv[1], "w"))
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}  # fmt: skip
    result = tmp_path / "plans.json"
    subprocess.run([sys.executable, "-c", script, str(result)], env=env, check=True, cwd=ROOT,
                   timeout=600)  # fmt: skip
    data = json.loads(result.read_text())
    assert data["devices"] == 2
    one, two = data["1"], data["2"]
    assert (one["devices"], two["devices"]) == (1, 2)
    assert one["tensors"].keys() == two["tensors"].keys() and one["tensors"]
    for name, (scale, zp) in one["tensors"].items():
        np.testing.assert_allclose(two["tensors"][name][0], scale, rtol=1e-5, err_msg=name)
        np.testing.assert_array_equal(two["tensors"][name][1], zp, err_msg=name)


def test_more_devices_than_exist_is_a_clear_error() -> None:
    from edgeq.errors import InputError
    from edgeq.quant.calibrate import calibration_devices, shard_batch_size

    with pytest.raises(InputError, match="--devices"):
        calibration_devices(len(jax.devices()) + 1)
    assert (
        shard_batch_size(8, 3) == 9 and shard_batch_size(8, 2) == 8 and shard_batch_size(1, 4) == 4
    )
