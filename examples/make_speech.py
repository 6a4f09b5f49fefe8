"""Regenerate ``examples/data/speech_16k.wav`` (not run by tests; the wav file is committed).

Needs ``espeak-ng`` and ``sox`` on PATH (Debian/Ubuntu: ``apt-get install -y espeak-ng sox``).
Made with eSpeak NG 1.51 and SoX 14.4.2 (Debian 12). For each sentence::

    espeak-ng -v en-us -s 175 -w raw_<i>.wav "<sentence>"
    sox -D raw_<i>.wav -r 16000 -c 1 -b 16 seg_<i>.wav \\
        silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse norm -3

(``-D``: no dither, so silence stays exactly zero; the ``silence ... reverse`` pair trims
leading and trailing silence; ``norm -3`` peaks at -3 dBFS.) The trimmed sentences are then
joined here with exact digital silence: 0.5 s before, 1.0 s between, 0.5 s after, and written as
16 kHz mono int16 PCM with the stdlib ``wave`` module.

Usage: ``python -m examples.make_speech [output.wav]``
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
SENTENCES: tuple[str, ...] = (
    "Small models run fast on the edge.",
    "Please speak after the tone.",
    "It is cold and windy today.",
)
LEAD_S = 0.5
GAP_S = 1.0
TAIL_S = 0.5
VOICE = "en-us"
WORDS_PER_MINUTE = 175
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "data" / "speech_16k.wav"


def espeak_command(sentence: str, out: Path) -> list[str]:
    """The espeak-ng command line that speaks one sentence into a 22.05 kHz wav."""
    return ["espeak-ng", "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "-w", str(out), sentence]


def sox_command(src: Path, out: Path) -> list[str]:
    """The sox command line: resample to 16 kHz mono int16, trim silence, peak at -3 dBFS."""
    return [
        "sox", "-D", str(src), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out),
        "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse",
        "norm", "-3",
    ]  # fmt: skip


def read_pcm16(path: Path) -> np.ndarray:
    """Samples of a 16 kHz mono int16 wav."""
    with wave.open(str(path), "rb") as f:
        if (f.getnchannels(), f.getsampwidth(), f.getframerate()) != (1, 2, SAMPLE_RATE):
            raise ValueError(f"{path}: expected 16 kHz mono int16")
        return np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")


def synthesize(sentence: str, workdir: Path, index: int) -> np.ndarray:
    """One trimmed sentence as int16 samples at 16 kHz."""
    raw, seg = workdir / f"raw_{index}.wav", workdir / f"seg_{index}.wav"
    subprocess.run(espeak_command(sentence, raw), check=True)
    subprocess.run(sox_command(raw, seg), check=True)
    return read_pcm16(seg)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype="<i2")


def assemble(segments: list[np.ndarray]) -> np.ndarray:
    """Lead silence, sentences separated by gaps, tail silence."""
    parts = [silence(LEAD_S)]
    for i, segment in enumerate(segments):
        if i:
            parts.append(silence(GAP_S))
        parts.append(segment)
    parts.append(silence(TAIL_S))
    return np.concatenate(parts)


def write_pcm16(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes(samples.astype("<i2").tobytes())


def main(output: Path = DEFAULT_OUTPUT) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        segments = [synthesize(s, Path(tmp), i) for i, s in enumerate(SENTENCES)]
    samples = assemble(segments)
    write_pcm16(output, samples)
    log.info(
        "wrote %s: %.2f s, sentence lengths %s s",
        output,
        samples.size / SAMPLE_RATE,
        [round(s.size / SAMPLE_RATE, 2) for s in segments],
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT)
