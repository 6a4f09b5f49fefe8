"""Real speech and Silero VAD input framing for the VAD example models.

``data/speech_16k.wav`` (made once by :mod:`examples.make_speech` with espeak-ng and sox) holds
three English sentences, 16 kHz mono int16, separated by exact digital silence (0.5 s lead,
1.0 s gaps, 0.5 s tail), so :func:`speech_segments` recovers the ground truth exactly.

Models come from the ``silero-vad==6.2.3`` wheel (installed with ``--no-deps``; this module
never imports it, it only reads its ``.onnx`` files). Framing mirrors the package:

* streaming models (``silero_vad_16k_op15.onnx``, ``silero_vad.onnx``; ``OnnxWrapper`` in
  ``utils_vad.py``): per 32 ms step, ``input`` float32 [1, 576] = the last 64 samples of the
  previous step's input (zeros at the start) followed by 512 new samples; ``state`` float32
  [2, 1, 128] (zeros at the start, then the ``stateN`` output); ``sr`` int64 scalar 16000.
  Outputs ``output`` [1, 1] speech probability and ``stateN``. The audio is zero-padded to a
  multiple of 512 samples.
* sequence model (``silero_vad_16k_sequence.onnx``; ``frame_blocks`` in ``sequence_vad.py``):
  ``input`` float32 [frames, 576], each row the same 64 + 512 window as above; ``h`` and ``c``
  float32 [1, 1, 128] carried between blocks. Outputs ``speech_probs`` [frames], ``hn``, ``cn``.
"""

from __future__ import annotations

import importlib.util
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
CHUNK = 512
CONTEXT = 64
STATE_SHAPE = (2, 1, 128)  # streaming models: state
SEQUENCE_STATE_SHAPE = (1, 1, 128)  # sequence model: h and c
SPEECH_PATH = Path(__file__).resolve().parent / "data" / "speech_16k.wav"

SILERO_PIN = "silero-vad==6.2.3"
SILERO_MODEL_FILES: dict[str, str] = {
    "op15": "silero_vad_16k_op15.onnx",
    "op16": "silero_vad.onnx",
    "sequence": "silero_vad_16k_sequence.onnx",
    "half": "silero_vad_half.onnx",
    "op18_ifless": "silero_vad_op18_ifless.onnx",
    "openvino": "silero_vad_openvino_16k.onnx",
}


def silero_model_path(name: str = "op15") -> Path:
    """Path of a Silero VAD model in the ``silero_vad`` wheel, by key or by file name."""
    file_name = SILERO_MODEL_FILES.get(name, name)
    if file_name not in SILERO_MODEL_FILES.values():
        raise ValueError(f"name must be one of {sorted(SILERO_MODEL_FILES)}, got {name!r}")
    # find_spec on the top-level package does not import it (its __init__ imports torch).
    spec = importlib.util.find_spec("silero_vad")
    locations = [] if spec is None else list(spec.submodule_search_locations or [])
    path = Path(locations[0]) / "data" / file_name if locations else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"Silero VAD model {file_name} not found; install it with: "
            f"pip install --no-deps {SILERO_PIN}"
        )
    return path


def load_speech_16k(path: Path = SPEECH_PATH) -> np.ndarray:
    """The committed speech clip as float32 samples in [-1, 1] (int16 / 32768)."""
    with wave.open(str(path), "rb") as f:
        layout = (f.getnchannels(), f.getsampwidth(), f.getframerate())
        if layout != (1, 2, SAMPLE_RATE):
            raise ValueError(f"{path}: expected mono int16 at 16 kHz, got {layout}")
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def pad_to_chunks(audio: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """1-D float32 audio zero-padded at the end to a multiple of ``chunk`` samples."""
    flat = np.asarray(audio, dtype=np.float32).reshape(-1)
    return np.pad(flat, (0, -flat.size % chunk))


def vad_windows(audio: np.ndarray, chunk: int = CHUNK, context: int = CONTEXT) -> np.ndarray:
    """All model windows [frames, context + chunk]: each frame prefixed by the previous
    frame's last ``context`` samples (zeros for the first frame)."""
    frames = pad_to_chunks(audio, chunk).reshape(-1, chunk)
    contexts = np.zeros((frames.shape[0], context), dtype=np.float32)
    contexts[1:] = frames[:-1, chunk - context :]
    return np.concatenate([contexts, frames], axis=1)


def vad_chunks(
    audio: np.ndarray, chunk: int = CHUNK, context: int = CONTEXT
) -> Iterator[np.ndarray]:
    """Per-step ``input`` arrays [1, context + chunk] for the streaming models (op15/op16)."""
    for window in vad_windows(audio, chunk, context):
        yield window[None, :]


def vad_sequence_blocks(
    audio: np.ndarray, chunk: int = CHUNK, context: int = CONTEXT, max_frames: int = 512
) -> Iterator[np.ndarray]:
    """``input`` blocks [<= max_frames, context + chunk] for the sequence model."""
    windows = vad_windows(audio, chunk, context)
    for start in range(0, windows.shape[0], max_frames):
        yield windows[start : start + max_frames]


def initial_state() -> np.ndarray:
    """Zero ``state`` [2, 1, 128] for the streaming models."""
    return np.zeros(STATE_SHAPE, dtype=np.float32)


def sample_rate_input() -> np.ndarray:
    """The ``sr`` input: an int64 scalar 16000."""
    return np.array(SAMPLE_RATE, dtype=np.int64)


def vad_probs_streaming(model_path: Path, audio: np.ndarray) -> np.ndarray:
    """Per-frame speech probabilities from a streaming model with onnxruntime (CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    state = initial_state()
    probs = []
    for window in vad_chunks(audio):
        feeds = {"input": window, "state": state}
        if "sr" in names:
            feeds["sr"] = sample_rate_input()
        out, state = session.run(["output", "stateN"], feeds)
        probs.append(float(out.reshape(-1)[0]))
    return np.asarray(probs, dtype=np.float32)


def vad_probs_sequence(model_path: Path, audio: np.ndarray, max_frames: int = 512) -> np.ndarray:
    """Per-frame speech probabilities from the sequence model with onnxruntime (CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    h = np.zeros(SEQUENCE_STATE_SHAPE, dtype=np.float32)
    c = np.zeros(SEQUENCE_STATE_SHAPE, dtype=np.float32)
    probs = []
    for block in vad_sequence_blocks(audio, max_frames=max_frames):
        out, h, c = session.run(["speech_probs", "hn", "cn"], {"input": block, "h": h, "c": c})
        probs.append(out.reshape(-1))
    return np.concatenate(probs).astype(np.float32)


def speech_segments(
    audio: np.ndarray, min_silence_s: float = 0.3, eps: float = 1e-6
) -> list[tuple[int, int]]:
    """Ground-truth speech spans [start, end) in samples: everything outside runs of exact
    silence (``|x| <= eps``) lasting at least ``min_silence_s``."""
    flat = np.asarray(audio, dtype=np.float32).reshape(-1)
    silent = np.concatenate([[False], np.abs(flat) <= eps, [False]])
    edges = np.flatnonzero(np.diff(silent.astype(np.int8)))
    long_runs = [
        (int(a), int(b))
        for a, b in zip(edges[::2], edges[1::2], strict=True)
        if b - a >= min_silence_s * SAMPLE_RATE
    ]
    spans, cursor = [], 0
    for start, end in long_runs:
        if start > cursor:
            spans.append((cursor, start))
        cursor = end
    if cursor < flat.size:
        spans.append((cursor, flat.size))
    return spans


def frame_labels(
    segments: list[tuple[int, int]], n_frames: int, chunk: int = CHUNK, guard_s: float = 0.0
) -> np.ndarray:
    """Per-frame ground truth (int8): 1 where a frame is at least half speech, else 0.

    With ``guard_s > 0``, frames within ``guard_s`` of a speech boundary get -1 (ignore): the
    VAD lags onsets and holds on after offsets by design.
    """
    speech = np.zeros(n_frames * chunk, dtype=bool)
    for start, end in segments:
        speech[start:end] = True
    labels = (speech.reshape(n_frames, chunk).mean(axis=1) >= 0.5).astype(np.int8)
    guard = round(guard_s * SAMPLE_RATE)
    if guard:
        centres = np.arange(n_frames) * chunk + chunk // 2
        bounds = np.asarray([b for span in segments for b in span])
        near = np.abs(centres[:, None] - bounds[None, :]).min(axis=1) < guard
        labels[near] = -1
    return labels
