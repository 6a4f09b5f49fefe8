"""Shared fixtures: real model files from the registry packages, tiny ONNX builders."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

# CLI runs enable the persistent compilation cache: keep the test session's out of ~/.cache
os.environ.setdefault("EDGEQ_CACHE_DIR", tempfile.mkdtemp(prefix="edgeq-test-xla-"))


def package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {package} missing: run `make install`")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)


@pytest.fixture(scope="session")
def cls_model() -> Path:
    return package_file("rapidocr_onnxruntime", "models", "ch_ppocr_mobile_v2.0_cls_infer.onnx")


@pytest.fixture(scope="session")
def rec_model() -> Path:
    return package_file("rapidocr_onnxruntime", "models", "ch_PP-OCRv4_rec_infer.onnx")


@pytest.fixture(scope="session")
def det_model() -> Path:
    return package_file("rapidocr_onnxruntime", "models", "ch_PP-OCRv4_det_infer.onnx")


@pytest.fixture(scope="session")
def vad_model() -> Path:
    return package_file("silero_vad", "data", "silero_vad_16k_op15.onnx")


@pytest.fixture(scope="session")
def vad_seq_model() -> Path:
    return package_file("silero_vad", "data", "silero_vad_16k_sequence.onnx")


@pytest.fixture(scope="session")
def minilm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from examples.minilm_onnx import write_minilm_onnx

    return write_minilm_onnx(tmp_path_factory.mktemp("minilm") / "minilm.onnx")


@pytest.fixture(scope="session")
def cls_calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 24 real .npy calibration samples for ppocr-cls (the calib split)."""
    from examples.models import CASES

    folder = tmp_path_factory.mktemp("cls_calib")
    for i, feed in enumerate(CASES["ppocr-cls"].make_feeds(24, "calib")):
        np.save(folder / f"line_{i:03d}.npy", feed["x"])
    return folder


def make_model(
    nodes: list[onnx.NodeProto],
    inputs: list[tuple[str, int, list[int | str]]],
    outputs: list[tuple[str, int, list[int | str] | None]],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
) -> onnx.ModelProto:
    """A small ONNX model from nodes; inputs/outputs as (name, elem_type, shape)."""
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        initializer=[numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


F32 = TensorProto.FLOAT
I64 = TensorProto.INT64


def decode_folded_blocks(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Blocked weights an onnx artifact decodes with ops onnxruntime folds at load (Cast,
    Unsqueeze, Expand, Reshape, Slice, Sub, Mul of initializers): each chain's final Mul,
    evaluated by onnx's reference evaluator from the stored initializers alone."""
    from onnx.reference import ReferenceEvaluator

    init = {t.name for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    out: dict[str, np.ndarray] = {}
    for n in model.graph.node:
        if n.op_type != "Mul":
            continue
        chain, stack = [], list(n.input)
        while stack:
            name = stack.pop()
            if name in init:
                continue
            if name not in producers:  # an activation: not a weight decode
                chain = []
                break
            chain.append(producers[name])
            stack.extend(producers[name].input)
        if not any(c.op_type == "Cast" and c.input[0] in init for c in chain):
            continue
        nodes = [c for c in model.graph.node if c in chain or c is n]
        used = {i for c in nodes for i in c.input}
        graph = helper.make_graph(
            nodes, "decode", [],
            [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None)],
            [t for t in model.graph.initializer if t.name in used],
        )  # fmt: skip
        sub = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        out[n.output[0]] = np.asarray(ReferenceEvaluator(sub).run(None, {})[0], np.float32)
    return out
