"""Task metrics: how well a quantized model still does its job, measured against labels when
the evaluation data has them and against the float model's own outputs otherwise.

A *task* knows how to read a model's outputs (CTC text, class scores, embeddings, a
probability mask, detection boxes) and returns `MetricValue`s named like the `--max-loss`
budget metrics (`edgeq.budget.METRICS`), so the export verdict can judge them:

| task | reads | metrics (budget name) |
|---|---|---|
| `ctc` | [1, T, C] or [T, C] scores, greedy CTC decoding | `cer` vs labels (text) or vs float's text |
| `classify` | [1, C] scores | `top1`, `top5` accuracy with labels (int); `agreement` (top-1 vs float) |
| `embed` | [1, D] (or [1, S, D]) vectors | `cosine` to float (mean over samples), `nn` neighbour agreement |
| `mask` | [1, 1, H, W] probabilities | `iou` of the thresholded mask with float's (or a label mask) |
| `detect` | YOLO-style [1, 4+C, N] / [1, N, 4+C], or boxes [1, N, 4] + scores [1, N, C] | `map` (mAP@0.5) vs float's boxes or labelled boxes |
| `generic` | any outputs | `cosine` (worst output), `sqnr` |

`auto` picks one from the graph (charset metadata → ctc, a Softmax/Gemm head → classify, an
L2-normalised vector → embed, a one-channel Sigmoid map → mask, else generic). A user metric
`module:function` (`--metric`) is called as `function(outputs, labels) -> float` on the float
model's outputs and on the artifact's (higher is better unless the function has
`lower_is_better = True`).

Token models (an attention-mask input, `TaskContext.token_masks`): `embed`'s and `generic`'s
metrics exclude padded token positions — in every output axis of the mask's length S — since
the model's users ignore them (mean pooling uses the mask); outputs without such an axis (a
pooled embedding) are compared whole.

Pure functions over numpy arrays: nothing here knows about ONNX files, exporters or devices.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.budget import METRICS, Kind
from edgeq.errors import InputError
from edgeq.quant.padding import zero_padding

Outputs = Sequence[Mapping[str, np.ndarray]]  # one dict of named outputs per sample
CTC_BLANK = "blank"


@dataclass(frozen=True)
class MetricValue:
    """One task metric for float and for the quantized model, in the metric's natural unit
    (percent for rates, plain numbers for cosine, dB for SQNR)."""

    name: str  # the budget metric name (cer, top1, cosine, ...) or a user metric's name
    title: str  # what it is, in words
    float_value: float
    quant_value: float
    against: str  # "labels" or "float"
    unit: str = "%"
    samples: int = 0
    kind: Kind = "max_drop"
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "float": _finite(self.float_value),
                "quant": _finite(self.quant_value), "against": self.against, "unit": self.unit,
                "samples": self.samples, "kind": self.kind, **({"detail": self.detail} if self.detail else {})}  # fmt: skip

    def show(self, value: float) -> str:
        if self.unit == "%":
            return f"{value:.2f}%"
        if self.unit == "dB":
            return f"{value:.1f} dB"
        return f"{value:.4f}"


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass(frozen=True)
class TaskContext:
    """What a task may need besides the outputs."""

    output_names: tuple[str, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)
    charset_file: Path | None = None
    producers: Mapping[str, str] = field(default_factory=dict)  # output -> producing op type
    output_shapes: Mapping[str, tuple[int, ...] | None] = field(default_factory=dict)
    # per sample, the token-mask input ([1, S], nonzero = real token) of a token model: padded
    # positions of the outputs are excluded from `embed` and `generic` metrics
    token_masks: Sequence[np.ndarray] | None = None


TaskFn = Callable[[Outputs, Outputs, Sequence[Any] | None, TaskContext], list[MetricValue]]
TASKS: dict[str, TaskFn] = {}


def task(name: str) -> Callable[[TaskFn], TaskFn]:
    """Register a task function `(quant, reference, labels, ctx) -> [MetricValue]`."""

    def deco(fn: TaskFn) -> TaskFn:
        TASKS[name] = fn
        return fn

    return deco


def task_names() -> list[str]:
    return ["auto", *TASKS]


# ---------------------------------------------------------------- CTC text
def ctc_greedy_decode(probs: np.ndarray, charset: Sequence[str] | None) -> str | tuple[int, ...]:
    """Greedy CTC decode of [T, C] or [1, T, C] scores: argmax, merge repeats, drop blank (0).
    With a charset, the text; without, the class indices (enough for an error rate)."""
    scores = np.asarray(probs)
    if scores.ndim == 3:
        if scores.shape[0] != 1:
            raise ValueError(f"expected batch 1, got {scores.shape}")
        scores = scores[0]
    if scores.ndim != 2 or (charset is not None and scores.shape[1] != len(charset)):
        want = f"[T, {len(charset)}]" if charset is not None else "[T, C]"
        raise ValueError(f"expected {want} scores, got {scores.shape}")
    best = scores.argmax(axis=1)
    keep = np.ones(best.shape, dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    keep &= best != 0
    if charset is None:
        return tuple(int(i) for i in best[keep])
    return "".join(charset[i] for i in best[keep])


def edit_distance(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def character_error_rate(preds: Sequence[Sequence[Any]], refs: Sequence[Sequence[Any]]) -> float:
    """Total edit distance over total reference characters (a fraction; 0 refs chars: 0 or 1)."""
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    total = sum(len(r) for r in refs)
    errors = sum(edit_distance(p, r) for p, r in zip(preds, refs, strict=True))
    if total == 0:
        return 0.0 if errors == 0 else 1.0
    return errors / total


def charset_from_lines(lines: Sequence[str], classes: int | None) -> tuple[str, ...]:
    """The CTC alphabet PaddleOCR builds from a character list: blank at 0, the characters,
    and a space at the end when the model has one more class (`use_space_char`)."""
    chars = (CTC_BLANK, *lines)
    if classes is None or classes == len(chars) + 1:
        return (*chars, " ")
    if classes == len(chars):
        return chars
    raise InputError(
        f"the character list has {len(lines)} characters but the model outputs {classes} classes",
        "pass the character file this model was trained with (--charset)",
    )


def model_charset(ctx: TaskContext, classes: int | None) -> tuple[str, ...] | None:
    """From `--charset FILE` (one character per line) or the model's `character` metadata
    (PaddleOCR/RapidOCR convention); None when neither exists."""
    if ctx.charset_file is not None:
        path = Path(ctx.charset_file)
        if not path.is_file():
            raise InputError(f"charset file '{path}' does not exist",
                             "pass a text file with one character per line")  # fmt: skip
        return charset_from_lines(path.read_text(encoding="utf-8").splitlines(), classes)
    text = ctx.metadata.get("character")
    return charset_from_lines(text.splitlines(), classes) if text else None


@task("ctc")
def ctc_task(quant: Outputs, reference: Outputs, labels: Sequence[Any] | None,
             ctx: TaskContext) -> list[MetricValue]:  # fmt: skip
    name = ctx.output_names[0]
    classes = int(np.asarray(reference[0][name]).shape[-1]) if reference else None
    charset = model_charset(ctx, classes)
    q_text = [ctc_greedy_decode(o[name], charset) for o in quant]
    f_text = [ctc_greedy_decode(o[name], charset) for o in reference]
    examples = [{"float": _text(f), "quant": _text(q)} for f, q in zip(f_text, q_text, strict=True)]
    if labels is not None and all(isinstance(x, str | int) for x in labels):
        if charset is None:
            raise InputError("text labels need the model's character list",
                             "pass --charset FILE (one character per line)")  # fmt: skip
        refs = [str(x) for x in labels]
        for ex, ref in zip(examples, refs, strict=True):
            ex["label"] = ref
        f_cer, q_cer = character_error_rate(f_text, refs), character_error_rate(q_text, refs)
        exact = sum(q == r for q, r in zip(q_text, refs, strict=True))
        return [MetricValue("cer", "character error rate against the labels", 100 * f_cer,
                            100 * q_cer, "labels", "%", len(refs), "max_increase",
                            {"exact_lines": exact, "examples": examples[:5]})]  # fmt: skip
    q_cer = character_error_rate(q_text, f_text)
    exact = sum(q == f for q, f in zip(q_text, f_text, strict=True))
    return [MetricValue("cer", "character error rate against float's text", 0.0, 100 * q_cer,
                        "float", "%", len(quant), "max_increase",
                        {"exact_lines": exact, "examples": examples[:5],
                         "charset": "model metadata" if charset else "class indices"})]  # fmt: skip


def _text(t: str | tuple[int, ...]) -> str:
    return t if isinstance(t, str) else " ".join(map(str, t))


# ---------------------------------------------------------------- classification
def _scores(outputs: Outputs, name: str) -> np.ndarray:
    return np.stack([np.asarray(o[name], np.float64).reshape(-1) for o in outputs])


def _real_scores(outputs: Outputs, name: str, ctx: TaskContext) -> np.ndarray:
    """`_scores` with padded token positions zeroed (`ctx.token_masks`, see `zero_padding`)."""
    if ctx.token_masks is None:
        return _scores(outputs, name)
    shape = ctx.output_shapes.get(name)
    return np.stack([zero_padding(o[name], m, shape).reshape(-1)
                     for o, m in zip(outputs, ctx.token_masks, strict=True)])  # fmt: skip


def _padding_note(ctx: TaskContext) -> str:
    return "; padded token positions excluded" if ctx.token_masks is not None else ""


def topk_hits(scores: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Per sample: is `targets[i]` among the k highest of `scores[i]`."""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.any(top == np.asarray(targets).reshape(-1, 1), axis=1)


@task("classify")
def classify_task(quant: Outputs, reference: Outputs, labels: Sequence[Any] | None,
                  ctx: TaskContext) -> list[MetricValue]:  # fmt: skip
    name = ctx.output_names[0]
    q, f = _scores(quant, name), _scores(reference, name)
    n = len(q)
    agree = float(np.mean(q.argmax(1) == f.argmax(1))) * 100
    rows = []
    if labels is not None:
        try:
            y = np.asarray([int(x) for x in labels])
        except (TypeError, ValueError):
            raise InputError("classification labels must be class indices (integers)",
                             "write labels.json as {\"sample.png\": 3, ...}") from None  # fmt: skip
        for k in (1, 5):
            if k > 1 and q.shape[1] <= k:
                continue
            rows.append(MetricValue(f"top{k}", f"top-{k} accuracy against the labels",
                                    100 * float(topk_hits(f, y, k).mean()),
                                    100 * float(topk_hits(q, y, k).mean()), "labels", "%", n))  # fmt: skip
    rows.append(MetricValue("agreement", "top-1 agreement with float", 100.0, agree, "float",
                            "%", n))  # fmt: skip
    return rows


# ---------------------------------------------------------------- embeddings
def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` with the same row of `b`."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    den = na * nb
    dot = np.sum(a * b, axis=1)
    same = np.all(a == b, axis=1).astype(np.float64)
    return np.where(den > 0, dot / np.where(den > 0, den, 1.0), same)


def neighbour_agreement(ref: np.ndarray, test: np.ndarray) -> float:
    """Fraction of samples whose nearest other sample (by cosine) is the same in both spaces."""

    def nearest(x: np.ndarray) -> np.ndarray:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        return sim.argmax(axis=1)

    return float(np.mean(nearest(ref) == nearest(test)))


@task("embed")
def embed_task(quant: Outputs, reference: Outputs, labels: Sequence[Any] | None,
               ctx: TaskContext) -> list[MetricValue]:  # fmt: skip
    name = ctx.output_names[0]
    q, f = _real_scores(quant, name, ctx), _real_scores(reference, name, ctx)
    cos = cosine_rows(f, q)
    rows = [MetricValue("cosine", f"mean cosine similarity to float{_padding_note(ctx)}", 1.0,
                        float(cos.mean()), "float", "", len(q), "floor", {"min": float(cos.min())})]  # fmt: skip
    if len(q) >= 3:
        rows.append(MetricValue("nn", "nearest-neighbour agreement with float", 100.0,
                                100 * neighbour_agreement(f, q), "float", "%", len(q)))  # fmt: skip
    return rows


# ---------------------------------------------------------------- masks
MASK_THRESHOLD = 0.3  # DB text detectors' binarisation threshold (PaddleOCR det_db_thresh)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = int(np.sum(a | b))
    return 1.0 if union == 0 else int(np.sum(a & b)) / union


@task("mask")
def mask_task(quant: Outputs, reference: Outputs, labels: Sequence[Any] | None,
              ctx: TaskContext) -> list[MetricValue]:  # fmt: skip
    name = ctx.output_names[0]
    q = [np.asarray(o[name]) > MASK_THRESHOLD for o in quant]
    f = [np.asarray(o[name]) > MASK_THRESHOLD for o in reference]
    pooled_q, pooled_f = (
        np.concatenate([m.ravel() for m in q]),
        np.concatenate([m.ravel() for m in f]),
    )
    rows = [MetricValue("iou", f"mask IoU with float (threshold {MASK_THRESHOLD})", 100.0,
                        100 * iou(pooled_f, pooled_q), "float", "%", len(q))]  # fmt: skip
    if labels is not None:
        masks = [np.asarray(x, bool).reshape(m.shape) for x, m in zip(labels, q, strict=True)]
        lab = np.concatenate([m.ravel() for m in masks])
        rows.insert(0, MetricValue("iou", "mask IoU against the labels", 100 * iou(lab, pooled_f),
                                   100 * iou(lab, pooled_q), "labels", "%", len(q)))  # fmt: skip
    return rows


# ---------------------------------------------------------------- detection
def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = 0.45) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression of xyxy `boxes`."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        overlap = box_iou(boxes[i : i + 1], boxes[rest])[0]
        order = rest[overlap <= threshold]
    return np.asarray(keep, np.int64)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes [N, 4] x [M, 4]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def decode_detections(outputs: Mapping[str, np.ndarray], names: Sequence[str],
                      conf: float = 0.25) -> np.ndarray:  # fmt: skip
    """Detections [K, 6] (x0, y0, x1, y1, score, class) after per-class NMS from either one
    YOLO-style output ([1, 4+C, N] or [1, N, 4+C]: cx, cy, w, h, class scores) or two outputs
    (boxes [1, N, 4] xyxy, scores [1, N, C])."""
    first = np.asarray(outputs[names[0]], np.float64)
    if len(names) >= 2 and first.shape[-1] == 4:
        boxes = first.reshape(-1, 4)
        scores = np.asarray(outputs[names[1]], np.float64).reshape(boxes.shape[0], -1)
    else:
        x = first.reshape(first.shape[-2], first.shape[-1]) if first.ndim == 3 else first
        if x.ndim != 2 or min(x.shape) < 5:
            raise InputError(f"detection output '{names[0]}' has shape {first.shape}",
                             "use --task detect with a [1, 4+C, N] / [1, N, 4+C] output or boxes + scores outputs")  # fmt: skip
        if x.shape[0] < x.shape[1]:  # [4+C, N] (YOLOv8 layout)
            x = x.T
        cx, cy, w, h = x[:, 0], x[:, 1], x[:, 2], x[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        scores = x[:, 4:]
    cls = scores.argmax(axis=1)
    best = scores[np.arange(len(cls)), cls]
    sel = best >= conf
    boxes, best, cls = boxes[sel], best[sel], cls[sel]
    out = []
    for c in np.unique(cls):
        idx = np.flatnonzero(cls == c)
        kept = idx[nms(boxes[idx], best[idx])]
        out += [[*boxes[i], best[i], c] for i in kept]
    return np.asarray(out, np.float64).reshape(-1, 6)


def mean_average_precision(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                           iou_threshold: float = 0.5) -> float:  # fmt: skip
    """mAP at one IoU threshold (101-point interpolated, COCO style), over the classes present
    in `truths`. `preds[i]`: [K, 6] (xyxy, score, class); `truths[i]`: [G, 5] (xyxy, class)."""
    classes = sorted({int(c) for t in truths for c in np.asarray(t).reshape(-1, 5)[:, 4]})
    if not classes:
        return float("nan")
    aps = []
    for c in classes:
        scored: list[tuple[float, bool]] = []
        n_truth = 0
        for p, t in zip(preds, truths, strict=True):
            p, t = np.asarray(p).reshape(-1, 6), np.asarray(t).reshape(-1, 5)
            gt = t[t[:, 4] == c, :4]
            n_truth += len(gt)
            dets = p[p[:, 5] == c]
            dets = dets[np.argsort(-dets[:, 4], kind="stable")]
            used = np.zeros(len(gt), bool)
            ious = box_iou(dets[:, :4], gt) if len(gt) and len(dets) else np.zeros((len(dets), 0))
            for k in range(len(dets)):
                j = int(np.argmax(ious[k])) if ious.shape[1] else -1
                hit = j >= 0 and ious[k, j] >= iou_threshold and not used[j]
                if hit:
                    used[j] = True
                scored.append((float(dets[k, 4]), hit))
        scored.sort(key=lambda s: -s[0])
        hits = np.asarray([h for _, h in scored], np.float64)
        tp, fp = np.cumsum(hits), np.cumsum(1 - hits)
        recall = tp / max(n_truth, 1)
        precision = tp / np.maximum(tp + fp, 1e-12)
        for i in range(len(precision) - 2, -1, -1):
            precision[i] = max(precision[i], precision[i + 1])
        ap = 0.0
        for r in np.linspace(0, 1, 101):
            above = np.flatnonzero(recall >= r)
            ap += precision[above[0]] if above.size else 0.0
        aps.append(ap / 101)
    return float(np.mean(aps))


@task("detect")
def detect_task(quant: Outputs, reference: Outputs, labels: Sequence[Any] | None,
                ctx: TaskContext) -> list[MetricValue]:  # fmt: skip
    names = ctx.output_names
    q = [decode_detections(o, names) for o in quant]
    f = [decode_detections(o, names) for o in reference]
    as_truth = [d[:, [0, 1, 2, 3, 5]] for d in f]
    rows = [MetricValue("map", "mAP@0.5 against float's detections", 100.0,
                        100 * mean_average_precision(q, as_truth), "float", "%", len(q),
                        detail={"float_boxes": int(sum(len(d) for d in f)),
                                "quant_boxes": int(sum(len(d) for d in q))})]  # fmt: skip
    if labels is not None:
        truth = [np.asarray(x, np.float64).reshape(-1, 5) for x in labels]
        rows.insert(0, MetricValue("map", "mAP@0.5 against the labelled boxes",
                                   100 * mean_average_precision(f, truth),
                                   100 * mean_average_precision(q, truth), "labels", "%", len(q)))  # fmt: skip
    return rows


# ---------------------------------------------------------------- any model
@task("generic")
def generic_task(quant: Outputs, reference: Outputs, labels: Sequence[Any] | None,
                 ctx: TaskContext) -> list[MetricValue]:  # fmt: skip
    worst: tuple[float, str] = (math.inf, "")
    for name in ctx.output_names:
        cos = cosine_rows(_real_scores(reference, name, ctx), _real_scores(quant, name, ctx))
        worst = min(worst, (float(cos.mean()), name))
    from edgeq.verify import sqnr_db

    sq = min(sqnr_db(_real_scores(reference, n, ctx), _real_scores(quant, n, ctx))
             for n in ctx.output_names)  # fmt: skip
    note = _padding_note(ctx)
    return [MetricValue("cosine", f"mean cosine similarity to float (worst output: {worst[1]}"
                        f"{note})", 1.0, worst[0], "float", "", len(quant), "floor"),
            MetricValue("sqnr", f"SQNR against float (worst output{note})", math.inf, sq, "float",
                        "dB", len(quant), "floor")]  # fmt: skip


# ---------------------------------------------------------------- choosing a task
def guess_task(ctx: TaskContext, labels: Sequence[Any] | None = None) -> str:
    """The task a model's outputs most likely serve (see the module docstring)."""
    first = ctx.output_names[0]
    shape = ctx.output_shapes.get(first)
    op = ctx.producers.get(first, "")
    if ctx.metadata.get("character") or ctx.charset_file is not None:
        return "ctc"
    if shape is not None and len(shape) == 2 and shape[0] == 1:
        if labels is not None and all(isinstance(x, int) for x in labels):
            return "classify"
        if op in ("Softmax", "LogSoftmax", "Gemm", "MatMul", "Add") and shape[1] >= 2:
            return "classify"
        if op in (
            "Div",
            "LpNormalization",
            "ReduceMean",
            "Flatten",
            "GlobalAveragePool",
            "Reshape",
        ):
            return "embed"
    if (
        shape is not None
        and len(shape) == 4
        and shape[:2] == (1, 1)
        and op in ("Sigmoid", "HardSigmoid")
    ):
        return "mask"
    return "generic"


def load_metric_hook(spec: str) -> Callable[..., Any]:
    """`module:function` → the function (`module` importable, or a path to a .py file)."""
    module_name, sep, fn_name = spec.rpartition(":")
    if not sep or not module_name or not fn_name:
        raise InputError(
            f"--metric '{spec}' is not module:function", "e.g. --metric mytask:accuracy"
        )
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise InputError(
                    f"--metric file '{path}' does not exist", "pass an existing .py file"
                )
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            assert mod_spec is not None and mod_spec.loader is not None
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"--metric '{spec}': cannot import '{module_name}' ({exc})",
                         "put the module on PYTHONPATH or pass a path to a .py file") from None  # fmt: skip
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise InputError(f"--metric '{spec}': '{module_name}' has no function '{fn_name}'",
                         "name a function taking (outputs, labels) and returning a number")  # fmt: skip
    return fn  # type: ignore[no-any-return]


def hook_metric(fn: Callable[..., Any], quant: Outputs, reference: Outputs,
                labels: Sequence[Any] | None) -> MetricValue:  # fmt: skip
    name = getattr(fn, "metric_name", None) or fn.__name__
    values = []
    for outputs in (reference, quant):
        value = fn([dict(o) for o in outputs], labels)
        try:
            values.append(float(value))
        except (TypeError, ValueError):
            raise InputError(f"metric function '{name}' returned {type(value).__name__}, not a number",
                             "return a float (higher is better unless lower_is_better = True)") from None  # fmt: skip
    kind: Kind = "max_increase" if getattr(fn, "lower_is_better", False) else "max_drop"
    return MetricValue(name, getattr(fn, "title", f"{name} (user metric)"), values[0], values[1],
                       "labels" if labels is not None else "float", getattr(fn, "unit", ""),
                       len(quant), kind)  # fmt: skip


def evaluate_task(task_name: str, quant: Outputs, reference: Outputs,
                  labels: Sequence[Any] | None, ctx: TaskContext,
                  hooks: Sequence[Callable[..., Any]] = ()) -> tuple[str, list[MetricValue]]:  # fmt: skip
    """(the task used, its metrics with the user's hooks first). The lead metric is first."""
    if task_name == "auto":
        task_name = guess_task(ctx, labels)
    if task_name not in TASKS:
        raise InputError(f"unknown task '{task_name}'", f"tasks: {', '.join(task_names())}")
    if not quant:
        return task_name, []
    rows = [hook_metric(fn, quant, reference, labels) for fn in hooks]
    rows += TASKS[task_name](quant, reference, labels, ctx)
    if task_name != "generic":
        rows += [r for r in generic_task(quant, reference, labels, ctx) if r.name == "sqnr"]
    return task_name, rows


def metric_kind(name: str, rows: Sequence[MetricValue]) -> Kind:
    for r in rows:
        if r.name == name:
            return r.kind
    return METRICS.get(name, "max_drop")


__all__ = [
    "TASKS",
    "MetricValue",
    "TaskContext",
    "character_error_rate",
    "charset_from_lines",
    "ctc_greedy_decode",
    "decode_detections",
    "edit_distance",
    "evaluate_task",
    "guess_task",
    "load_metric_hook",
    "mean_average_precision",
    "model_charset",
    "neighbour_agreement",
    "task",
    "task_names",
]
