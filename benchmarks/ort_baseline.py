"""onnxruntime's own static quantizer on our models (the peer every ONNX benchmark compares to).

quantize_static needs the opset raised to 13+ and fixed input shapes on the PP-OCR models
(TARGETS.md); this does both (and, with `pre_process`, the `quant_pre_process` step its
quantizer's warning recommends: shape inference and onnxruntime's graph optimizations, which
fold Constant nodes into initializers, so a -3.4e38 attention-mask fill is no longer an
activation its histogram calibrators choke on), then quantizes with QDQ, per-channel int8
weights, uint8 activations, as its documentation recommends for CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def ort_ready_model(model: Path, input_shapes: Mapping[str, Sequence[int]], out: Path,
                    pre_process: bool = False) -> Path:  # fmt: skip
    """The model as quantize_static needs it: opset >= 13 and fixed input shapes
    (`pre_process`: then onnxruntime's `quant_pre_process`)."""
    import onnx
    from onnx import version_converter

    m = onnx.load(str(model))
    opset = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=13)
    if opset < 13:
        m = version_converter.convert_version(m, 13)
    for inp in m.graph.input:
        if inp.name in input_shapes:
            for dim, v in zip(inp.type.tensor_type.shape.dim, input_shapes[inp.name], strict=True):
                dim.Clear()
                dim.dim_value = int(v)
    onnx.save(m, out)
    if pre_process:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(out), str(out))
    return out


def _divisor(n: int, stride: int) -> int:
    """The largest stride <= `stride` that divides `n` (onnxruntime refuses any other)."""
    return next(k for k in range(min(stride, n), 0, -1) if n % k == 0)


def ort_quantize_static(
    model: Path,
    input_shapes: Mapping[str, Sequence[int]],
    calib: Sequence[Mapping[str, np.ndarray]],
    out: Path,
    method: str = "MinMax",
    per_channel: bool = True,
    ready: Path | None = None,
    stride: int | None = None,
    pre_process: bool = False,
) -> Path:
    """quantize_static on `model` (`ready`: the output of `ort_ready_model`, to keep that
    preparation out of a timing). `stride`: onnxruntime's CalibStridedMinMax (collect `stride`
    samples at a time and merge: its histogram methods otherwise hold every intermediate tensor
    of every sample in memory; onnxruntime 1.32's CalibMaxIntermediateOutputs does not help
    there — the histogram calibrators ignore it, and MinMax discards the data it collected)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )  # fmt: skip

    src = ready or ort_ready_model(model, input_shapes, out.with_name(out.stem + "_src.onnx"),
                                   pre_process)  # fmt: skip
    names = {i.name for i in onnx.load(str(src), load_external_data=False).graph.input}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def __len__(self) -> int:
            return len(calib)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.it = iter(calib[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            feed = next(self.it, None)
            return None if feed is None else {k: v for k, v in feed.items() if k in names}

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=per_channel, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method),
                    extra_options={"CalibStridedMinMax": _divisor(len(calib), stride)}
                    if stride else {})  # fmt: skip
    if ready is None:
        src.unlink(missing_ok=True)
    return out
