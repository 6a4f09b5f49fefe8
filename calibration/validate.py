"""Check samples against the model inputs and stream them in stacked batches."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from edgeq.errors import DynamicShapeError
from edgeq.ir.graph import ValueInfo

from .base import CalibrationDataError, CalibrationSource, Feed


def require_static(graph_inputs: Sequence[ValueInfo]) -> None:
    """Every model input has a fixed shape; calibration feeds batch-1 samples of that shape."""
    for info in graph_inputs:
        if not info.is_static:
            raise DynamicShapeError(
                f"model input '{info.name}' has shape {info.shape}, which is not fixed; "
                "calibration needs fixed input shapes",
                f"fix it with --input-shape {info.name}=1,... "
                "(or edgeq.prepare(graph, input_shapes=...))",
            )


def target_dtype(info: ValueInfo) -> np.dtype:
    """The dtype calibration feeds use for a model input: float32, int64 or bool."""
    kind = np.dtype(info.dtype).kind
    if kind == "f":
        return np.dtype(np.float32)
    if kind in "iu":
        return np.dtype(np.int64)
    if kind == "b":
        return np.dtype(np.bool_)
    raise CalibrationDataError(
        f"model input '{info.name}' has dtype {info.dtype}, which calibration cannot feed",
        "bind it to a constant with --input-value or feed the model through the API",
    )


_ACCEPTS = {"f": "fiub", "i": "iub", "b": "b"}  # target kind -> data kinds castable to it


def _bad_value(value: Any) -> str:
    if np.isnan(value):
        return "NaN"
    return "-Inf" if value < 0 else "Inf"


def _cast(arr: np.ndarray, info: ValueInfo, sample: str) -> np.ndarray:
    target = target_dtype(info)
    if arr.dtype.kind not in _ACCEPTS[target.kind]:
        hint = (
            "save integer data (token ids, indices) for this input"
            if target.kind == "i" and arr.dtype.kind == "f"
            else f"save {target} data for this input"
        )
        raise CalibrationDataError(
            f"calibration sample '{sample}' input '{info.name}' holds {arr.dtype} data but the "
            f"model input is {info.dtype}",
            hint,
        )
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(target, copy=False)
    if target.kind == "f" and not np.isfinite(out).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(out))[0])
        original = arr[index]
        if np.isfinite(original):
            raise CalibrationDataError(
                f"calibration sample '{sample}' input '{info.name}' value {original} at index "
                f"{index} overflows float32",
                "rescale the data or drop this sample",
            )
        raise CalibrationDataError(
            f"calibration sample '{sample}' input '{info.name}' contains {_bad_value(original)} "
            f"at index {index}",
            "clean or drop this sample",
        )
    return out


def validate(feed: Mapping[str, Any], graph_inputs: Sequence[ValueInfo], sample_name: str) -> Feed:
    """One sample checked and converted for the model, arrays in `graph_inputs` order.

    Every model input must be present and no other name; each array must have the input's
    fixed shape (or that shape without its leading 1, then it is reshaped); float inputs get
    float32, integer inputs int64 (float data for an integer input is refused); NaN and Inf
    are refused with the sample, input and first bad index in the message.
    """
    require_static(graph_inputs)
    if not isinstance(feed, Mapping):
        raise CalibrationDataError(
            f"calibration sample '{sample_name}' is a {type(feed).__name__}, not a feed dict",
            "give {input_name: array} dicts",
        )
    expected = [info.name for info in graph_inputs]
    missing = [n for n in expected if n not in feed]
    if missing:
        raise CalibrationDataError(
            f"calibration sample '{sample_name}' lacks model input(s) {_names(missing)} "
            f"(it has {_names(list(feed)) or 'nothing'})",
            "provide every model input in each sample",
        )
    extra = [str(n) for n in feed if n not in expected]
    if extra:
        raise CalibrationDataError(
            f"calibration sample '{sample_name}' has {_names(extra)}, which "
            f"{'is not a model input' if len(extra) == 1 else 'are not model inputs'} "
            f"(inputs: {_names(expected)})",
            "drop those arrays or name them after the model inputs",
        )
    out: Feed = {}
    for info in graph_inputs:
        arr = np.asarray(feed[info.name])
        shape = tuple(int(d) for d in info.shape or ())
        if arr.shape != shape:
            if shape[:1] == (1,) and arr.shape == shape[1:]:
                arr = arr.reshape(shape)
            else:
                raise CalibrationDataError(
                    f"calibration sample '{sample_name}' input '{info.name}' has shape "
                    f"{tuple(arr.shape)}, the model expects {shape}",
                    "make the sample match the model input shape (or fix it with --input-shape)",
                )
        out[info.name] = _cast(arr, info, sample_name)
    return out


def _names(names: Sequence[Any]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def batches(
    source: CalibrationSource,
    names: Sequence[str] | None,
    graph_inputs: Sequence[ValueInfo],
    batch_size: int,
) -> Iterator[tuple[list[str], Feed]]:
    """Stream validated samples stacked along a new leading axis: arrays [B, *input_shape].

    `names` picks the samples and their order (None: all, in source order; the only way to
    stream a one-shot iterable). Each batch is allocated fresh and filled sample by sample,
    so at most one batch plus one sample is alive here whatever the number of samples; the
    last batch may be smaller than `batch_size`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CalibrationDataError(
            f"batch size must be a positive integer, got {batch_size!r}", "pass batch_size >= 1"
        )
    if not graph_inputs:
        raise CalibrationDataError("the model has no inputs to calibrate", "check the model")
    require_static(graph_inputs)
    dtypes = {info.name: target_dtype(info) for info in graph_inputs}
    remaining = None if names is None else len(names)
    if remaining == 0:
        return
    batch_names: list[str] = []
    buffers: Feed = {}
    for name, feed in source.iter_samples(names):
        sample = validate(feed, graph_inputs, name)
        del feed
        if not batch_names:
            size = batch_size if remaining is None else min(batch_size, remaining)
            buffers = {
                info.name: np.empty((size, *sample[info.name].shape), dtypes[info.name])
                for info in graph_inputs
            }
        for key, arr in sample.items():
            buffers[key][len(batch_names)] = arr
        del sample
        batch_names.append(name)
        if remaining is not None:
            remaining -= 1
        if len(batch_names) == next(iter(buffers.values())).shape[0]:
            yield batch_names, buffers
            batch_names, buffers = [], {}
    if batch_names:  # a one-shot stream ended inside a batch: keep the filled rows only
        count = len(batch_names)
        yield batch_names, {key: buf[:count] for key, buf in buffers.items()}
