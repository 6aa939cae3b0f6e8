"""Box maths every detection kind uses: clip, IoU, NMS. Pure numpy, float32, in the C++ core's
operation order (``box_iou`` and ``nms`` in android_demo/app/src/main/cpp/litedet_post.h).

Conventions (written once, here): NMS is greedy over a stable descending sort (equal scores
keep input order), suppresses when IoU > threshold (strict), IoU on continuous coordinates
(area = (x2 - x1) * (y2 - y1)), only within a class unless class-agnostic."""

from __future__ import annotations

import numpy as np

__all__ = ["clamp_boxes", "pairwise_iou", "box_iou", "nms"]


def clamp_boxes(boxes: np.ndarray, in_w: int, in_h: int) -> np.ndarray:
    """Boxes clipped to the network input [0, in_w] x [0, in_h] (upstream NanoDet's
    ``distance2bbox(..., max_shape)``), before NMS, so suppression sees the same boxes."""
    out = boxes.astype(np.float32, copy=True)
    np.clip(out[:, 0::2], np.float32(0), np.float32(in_w), out=out[:, 0::2])
    np.clip(out[:, 1::2], np.float32(0), np.float32(in_h), out=out[:, 1::2])
    return out

def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of a [A, 4] (rows) with every box of b [B, 4] (columns), continuous
    coordinates, 0 where the union is not > 0; float32, in the C++ core's operation order."""
    zero = np.float32(0)
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    iw = np.maximum(zero, np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]))
    ih = np.maximum(zero, np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]))
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, zero).astype(np.float32)

def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box against many (continuous coordinates)."""
    return pairwise_iou(np.asarray(box)[None], boxes)[0]

def nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float,
        class_agnostic: bool = False, max_detections: int | None = None, block: int = 256) -> np.ndarray:
    """Greedy NMS; returns kept indices in descending score order.

    Decided block by block in score order: a candidate is suppressed exactly when a box kept
    before it overlaps it by more than the threshold (suppressed boxes suppress nothing), so
    each block is tested against the boxes kept so far, then greedily within itself, and the
    scan stops at max_detections. The same decisions as the eager loop, and as the C++ core."""
    if max_detections is not None and max_detections <= 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    b = np.asarray(boxes, np.float32).reshape(-1, 4)[order]
    lab = np.asarray(labels)[order]
    thr = np.float32(iou_threshold)
    limit = len(order) if max_detections is None else max_detections

    def hits(rows: np.ndarray | slice, cols: slice) -> np.ndarray:
        h = pairwise_iou(b[rows], b[cols]) > thr
        return h if class_agnostic else h & (lab[rows][:, None] == lab[cols][None])

    kept: list[int] = []  # positions in score order
    for start in range(0, len(order), block):
        blk = slice(start, min(start + block, len(order)))
        alive = ~hits(np.asarray(kept), blk).any(axis=0) if kept else np.ones(blk.stop - start, bool)
        inner = hits(blk, blk)
        for t in np.flatnonzero(alive):
            if not alive[t]:
                continue
            kept.append(start + int(t))
            if len(kept) >= limit:
                return order[np.asarray(kept)].astype(np.int64)
            alive[t + 1:] &= ~inner[t, t + 1:]
    return order[np.asarray(kept, dtype=np.int64)].astype(np.int64)
