"""The postprocessing maths in numpy: GFL (NanoDet) decoding and NMS, in the order
the C++ core runs it, and the classifier's centre crop, softmax and top-k.

Every function is pure and float32 throughout, so the C++ core
(android_demo/app/src/main/cpp/litedet_post.*) can be read side by side:
threshold -> decode distances -> boxes in network-input pixels -> NMS ->
top max_detections -> map back to the original image and clip.

Conventions (written once, here and in the manifest):
- scores arrive with the sigmoid already applied by the graph; values outside
  [0, 1] are refused rather than squashed a second time;
- argmax ties pick the lowest class index; score must be > threshold (strict);
- NMS is greedy over a stable descending sort (equal scores keep input order),
  suppresses when IoU > threshold (strict), IoU on continuous coordinates
  (area = (x2 - x1) * (y2 - y1)), only within a class unless class-agnostic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Letterbox", "letterbox_geometry", "clamp_boxes", "RESIZE_ALIGNS", "distribution_to_distance", "grid_centers", "decode_level",
    "box_iou", "pairwise_iou", "nms", "map_boxes_back", "Candidates",
]


@dataclass(frozen=True)
class Letterbox:
    """How an image was resized and padded into the network input."""

    src_w: int
    src_h: int
    resized_w: int
    resized_h: int
    in_w: int
    in_h: int
    pad_left: int
    pad_top: int

    @property
    def pad_right(self) -> int:
        return self.in_w - self.resized_w - self.pad_left

    @property
    def pad_bottom(self) -> int:
        return self.in_h - self.resized_h - self.pad_top

    @property
    def input_size(self) -> list[int]:
        """[w, h] of the network input."""
        return [self.in_w, self.in_h]


RESIZE_ALIGNS = ("letterbox", "letterbox_top_left", "stretch")


def letterbox_geometry(src_w: int, src_h: int, target: int, multiple: int, fixed: bool = False,
                       policy: str = "letterbox") -> Letterbox:
    """How an image becomes the network input, in exact integer arithmetic (so C++
    and Python agree bit for bit).

    ``letterbox``: long side to ``target``, short side floored (at least 1 pixel),
    then centred padding to a multiple of ``multiple`` (or to ``target`` x ``target``
    when ``fixed``). ``letterbox_top_left``: the same resize, padded at the right
    and bottom only (upstream NanoDet's val pipeline with keep_ratio). ``stretch``:
    both sides to ``target``, aspect not kept (keep_ratio False); no padding."""
    if src_w <= 0 or src_h <= 0:
        raise ValueError(f"image size must be positive, got {src_w}x{src_h}")
    if target <= 0 or multiple <= 0 or target % multiple:
        raise ValueError(f"target {target} must be a positive multiple of {multiple}")
    if policy not in RESIZE_ALIGNS:
        raise ValueError(f"resize policy {policy!r} is not one of {RESIZE_ALIGNS}")
    if policy == "stretch":
        return Letterbox(src_w, src_h, target, target, target, target, 0, 0)
    if src_w >= src_h:
        w, h = target, max(1, src_h * target // src_w)
    else:
        w, h = max(1, src_w * target // src_h), target
    if fixed:
        in_w = in_h = target
    else:
        in_w = -(-w // multiple) * multiple
        in_h = -(-h // multiple) * multiple
    if policy == "letterbox_top_left":
        return Letterbox(src_w, src_h, w, h, in_w, in_h, 0, 0)
    return Letterbox(src_w, src_h, w, h, in_w, in_h, (in_w - w) // 2, (in_h - h) // 2)


def clamp_boxes(boxes: np.ndarray, in_w: int, in_h: int) -> np.ndarray:
    """Boxes clipped to the network input [0, in_w] x [0, in_h] (upstream NanoDet's
    ``distance2bbox(..., max_shape)``), before NMS, so suppression sees the same boxes."""
    out = boxes.astype(np.float32, copy=True)
    np.clip(out[:, 0::2], np.float32(0), np.float32(in_w), out=out[:, 0::2])
    np.clip(out[:, 1::2], np.float32(0), np.float32(in_h), out=out[:, 1::2])
    return out


def distribution_to_distance(logits: np.ndarray, reg_max: int) -> np.ndarray:
    """[K, 4*(reg_max+1)] logits -> [K, 4] expected bin (softmax, then integral)."""
    k = logits.shape[0]
    x = logits.reshape(k, 4, reg_max + 1).astype(np.float32)
    x = np.exp(x - x.max(axis=2, keepdims=True))
    p = x / x.sum(axis=2, keepdims=True)
    return (p * np.arange(reg_max + 1, dtype=np.float32)).sum(axis=2)


def grid_centers(index: np.ndarray, feat_w: int, stride: int, center_offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Row-major cell index -> (cx, cy) in network-input pixels."""
    cx = ((index % feat_w).astype(np.float32) + np.float32(center_offset)) * np.float32(stride)
    cy = ((index // feat_w).astype(np.float32) + np.float32(center_offset)) * np.float32(stride)
    return cx, cy


@dataclass
class Candidates:
    boxes: np.ndarray  # [K, 4] x1 y1 x2 y2 in network-input pixels
    scores: np.ndarray  # [K]
    labels: np.ndarray  # [K] int

    @classmethod
    def empty(cls) -> "Candidates":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    @classmethod
    def concat(cls, parts: list["Candidates"]) -> "Candidates":
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]),
                   np.concatenate([p.labels for p in parts]))


def decode_level(scores: np.ndarray, dists: np.ndarray, feat_w: int, stride: int, reg_max: int,
                 center_offset: float, score_threshold: float, multi_label: bool = False) -> Candidates:
    """One stride level: [H*W, C] scores and [H*W, 4*(reg_max+1)] logits -> candidates."""
    n = scores.shape[0]
    if dists.shape != (n, 4 * (reg_max + 1)):
        raise ValueError(f"distribution map has shape {dists.shape}; expected ({n}, {4 * (reg_max + 1)}) for reg_max {reg_max}")
    if n % feat_w:
        raise ValueError(f"{n} cells do not fill rows of width {feat_w}")
    if n and not np.isfinite(scores).all():
        raise ValueError("class scores contain NaN or inf; the network output is broken")
    if n and (scores.min() < 0.0 or scores.max() > 1.0):
        raise ValueError("class scores are outside [0, 1]: the graph must apply the sigmoid (once); "
                         "these look like raw logits")
    scores = scores.astype(np.float32, copy=False)
    thr = np.float32(score_threshold)
    if multi_label:
        idx, labels = np.nonzero(scores > thr)
        sc = scores[idx, labels]
    else:
        labels = scores.argmax(axis=1)  # first maximum wins, like a strict '>' scan
        sc = scores[np.arange(n), labels]
        idx = np.nonzero(sc > thr)[0]
        labels, sc = labels[idx], sc[idx]
    if idx.size == 0:
        return Candidates.empty()
    cx, cy = grid_centers(idx, feat_w, stride, center_offset)
    d = distribution_to_distance(dists[idx], reg_max) * np.float32(stride)
    boxes = np.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], axis=1)
    return Candidates(boxes.astype(np.float32), sc.astype(np.float32), labels.astype(np.int64))


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


def map_boxes_back(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Network-input pixels -> original-image pixels, clipped to [0, W] x [0, H].

    Uses the per-axis scale actually applied (resized/src); the short side was
    floored to an integer, so one shared scale would shift boxes slightly."""
    sx = np.float32(lb.resized_w) / np.float32(lb.src_w)
    sy = np.float32(lb.resized_h) / np.float32(lb.src_h)
    out = np.empty_like(boxes, dtype=np.float32)
    out[:, 0] = (boxes[:, 0] - np.float32(lb.pad_left)) / sx
    out[:, 2] = (boxes[:, 2] - np.float32(lb.pad_left)) / sx
    out[:, 1] = (boxes[:, 1] - np.float32(lb.pad_top)) / sy
    out[:, 3] = (boxes[:, 3] - np.float32(lb.pad_top)) / sy
    np.clip(out[:, 0::2], 0, np.float32(lb.src_w), out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, np.float32(lb.src_h), out=out[:, 1::2])
    return out


# -- classification --------------------------------------------------------------

@dataclass(frozen=True)
class CenterCrop:
    """The source-image square that becomes the ``target`` x ``target`` input."""

    src_w: int
    src_h: int
    roi_x: int
    roi_y: int
    roi_size: int
    target: int

    @property
    def input_size(self) -> list[int]:
        """[w, h] of the network input."""
        return [self.target, self.target]


def center_crop_geometry(src_w: int, src_h: int, target: int, crop_fraction: float = 0.875) -> CenterCrop:
    """ImageNet evaluation crop: the centred square of side floor(short * fraction)
    (at least 1 pixel), resized to target x target."""
    if src_w <= 0 or src_h <= 0:
        raise ValueError(f"image size must be positive, got {src_w}x{src_h}")
    if target <= 0 or not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"target must be positive and crop_fraction in (0, 1], got {target}, {crop_fraction}")
    side = max(1, int(min(src_w, src_h) * crop_fraction))
    return CenterCrop(src_w, src_h, (src_w - side) // 2, (src_h - side) // 2, side, target)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, float32."""
    x = logits.astype(np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, best first; ties keep the lower index."""
    return np.argsort(-probs, kind="stable")[: max(0, k)]
