"""Two-stage detector maths in numpy (ThunderNet, Light-Head R-CNN): anchors, box
coding, proposals, PSRoIAlign and the R-CNN's final detections.

Everything here is pure and float32, written to compute what torchvision computes
(``AnchorGenerator``, ``BoxCoder``, ``RegionProposalNetwork.filter_proposals``,
``ops.ps_roi_align``, ``RoIHeads.postprocess_detections``) for one image and one
feature level, in the same operation order, so the C++ core
(android_demo/app/src/main/cpp/litedet_rpn_psroi.*) can mirror it line by line.

Conventions (torchvision's, written once here and in the manifest):
- anchors: per location (row-major, y then x) then per anchor, the anchors of
  ratio r (= h / w) and size s, ratio-major: w = s / sqrt(r), h = s * sqrt(r),
  base box (-w/2, -h/2, w/2, h/2) rounded to integers, centred at
  ((x + anchor_offset) * stride, (y + anchor_offset) * stride): torchvision's
  offset is 0 (the cell's top-left corner), Detectron's centre is 0.5;
- box coding: centre = x1 + 0.5 * w with w = x2 - x1 (no +1), deltas divided by
  the weights (1 / std: RPN 1, 1, 1, 1; R-CNN 10, 10, 5, 5 = stds 0.1, 0.1, 0.2,
  0.2), dw/dh clamped at ``box_clip`` = log(1000 / 16) before exp;
- proposals: the pre_nms_top_n highest objectness logits (ties: lower anchor
  index first), decode, sigmoid, clip to the input, drop boxes narrower or
  shorter than min_size or scoring below score_threshold, NMS, first
  post_nms_top_n;
- PSRoIAlign (``torchvision.ops.ps_roi_align``): box corners scaled by
  spatial_scale minus 0.5, bin = box / pooled, sampling_ratio samples per bin side
  (adaptive ceil(box / pooled) when 0), output channel c, bin (i, j) reads input
  channel (c * pooled + i) * pooled + j, bilinear with torchvision's border rule,
  samples summed in row order then divided by their count;
- detections: softmax scores (applied in the graph) per proposal and class,
  background column 0 dropped, score > threshold (strict), per-class NMS, the
  first max_detections by score; class-agnostic deltas give every class of a
  proposal the same box (torchvision with the deltas repeated per class).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..boxes import clamp_boxes, nms

__all__ = [
    "BOX_CLIP", "make_anchors", "decode_boxes", "encode_boxes", "sigmoid", "remove_small", "top_n_order",
    "Proposals", "select_proposals", "ps_roi_align", "psroi_sample_grid", "rcnn_detections",
]

# torchvision's BoxCoder bbox_xform_clip: the largest dw/dh before exp (a box grows at most 1000/16 x)
BOX_CLIP = math.log(1000.0 / 16)


def make_anchors(feat_w: int, feat_h: int, stride: int, sizes: list[float], ratios: list[float],
                 offset: float) -> np.ndarray:
    """[feat_h * feat_w * A, 4] anchors (x1, y1, x2, y2), A = len(ratios) * len(sizes)."""
    scales = np.asarray(sizes, np.float32)
    ar = np.asarray(ratios, np.float32)
    h_ratios = np.sqrt(ar)
    w_ratios = np.float32(1) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    base = np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2))
    sx = (np.arange(feat_w, dtype=np.float32) + np.float32(offset)) * np.float32(stride)
    sy = (np.arange(feat_h, dtype=np.float32) + np.float32(offset)) * np.float32(stride)
    yy, xx = np.meshgrid(sy, sx, indexing="ij")
    shifts = np.stack([xx.ravel(), yy.ravel(), xx.ravel(), yy.ravel()], axis=1)
    return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4).astype(np.float32)


def decode_boxes(ref: np.ndarray, deltas: np.ndarray, weights: list[float], box_clip: float = BOX_CLIP) -> np.ndarray:
    """Deltas [N, 4] relative to reference boxes [N, 4] -> boxes [N, 4] (torchvision BoxCoder.decode_single)."""
    ref = ref.astype(np.float32, copy=False)
    d = deltas.astype(np.float32, copy=False)
    wx, wy, ww, wh = (np.float32(w) for w in weights)
    widths = ref[:, 2] - ref[:, 0]
    heights = ref[:, 3] - ref[:, 1]
    half = np.float32(0.5)
    ctr_x = ref[:, 0] + half * widths
    ctr_y = ref[:, 1] + half * heights
    dx, dy = d[:, 0] / wx, d[:, 1] / wy
    dw = np.minimum(d[:, 2] / ww, np.float32(box_clip))
    dh = np.minimum(d[:, 3] / wh, np.float32(box_clip))
    pcx = dx * widths + ctr_x
    pcy = dy * heights + ctr_y
    with np.errstate(over="ignore"):
        pw = np.exp(dw) * widths
        ph = np.exp(dh) * heights
    cw, ch = half * pw, half * ph
    return np.stack([pcx - cw, pcy - ch, pcx + cw, pcy + ch], axis=1).astype(np.float32)


def encode_boxes(ref: np.ndarray, boxes: np.ndarray, weights: list[float]) -> np.ndarray:
    """The inverse of :func:`decode_boxes` (torchvision's encode_boxes), for training code and tests."""
    wx, wy, ww, wh = (np.float32(w) for w in weights)
    rw, rh = ref[:, 2] - ref[:, 0], ref[:, 3] - ref[:, 1]
    rx, ry = ref[:, 0] + np.float32(0.5) * rw, ref[:, 1] + np.float32(0.5) * rh
    gw, gh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    gx, gy = boxes[:, 0] + np.float32(0.5) * gw, boxes[:, 1] + np.float32(0.5) * gh
    return np.stack([wx * (gx - rx) / rw, wy * (gy - ry) / rh, ww * np.log(gw / rw), wh * np.log(gh / rh)],
                    axis=1).astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    with np.errstate(over="ignore"):
        return (np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32)


def remove_small(boxes: np.ndarray, min_size: float) -> np.ndarray:
    """Mask of boxes at least ``min_size`` wide and high (torchvision remove_small_boxes)."""
    m = np.float32(min_size)
    return ((boxes[:, 2] - boxes[:, 0]) >= m) & ((boxes[:, 3] - boxes[:, 1]) >= m)


def top_n_order(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest scores, best first; equal scores keep index order."""
    return np.argsort(-scores, kind="stable")[:n]


@dataclass
class Proposals:
    boxes: np.ndarray  # [K, 4] network-input pixels, best first
    scores: np.ndarray  # [K] objectness probabilities

    def __len__(self) -> int:
        return len(self.scores)


def select_proposals(logits: np.ndarray, deltas: np.ndarray, anchors: np.ndarray, in_w: int, in_h: int, *,
                     weights: list[float], pre_nms_top_n: int, post_nms_top_n: int, nms_threshold: float,
                     min_size: float, score_threshold: float, box_clip: float = BOX_CLIP) -> Proposals:
    """Objectness logits [N] and deltas [N, 4] per anchor [N, 4] -> proposals (torchvision's RPN, one image)."""
    order = top_n_order(logits, pre_nms_top_n)
    boxes = clamp_boxes(decode_boxes(anchors[order], deltas[order], weights, box_clip), in_w, in_h)
    scores = sigmoid(logits[order])
    keep = remove_small(boxes, min_size) & (scores >= np.float32(score_threshold))
    boxes, scores = boxes[keep], scores[keep]
    kept = nms(boxes, scores, np.zeros(len(scores), np.int64), nms_threshold, True, post_nms_top_n)
    return Proposals(boxes[kept], scores[kept])


def psroi_sample_grid(roi_size: np.ndarray, pooled: int, sampling_ratio: int) -> np.ndarray:
    """Samples per bin side for boxes of side ``roi_size`` (feature-map units)."""
    if sampling_ratio > 0:
        return np.full(roi_size.shape, sampling_ratio, np.int64)
    return np.ceil(roi_size / np.float32(pooled)).astype(np.int64)


def _bilinear(feat: np.ndarray, chan: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """torchvision's bilinear_interpolate, vectorised: feat [C, H, W]; y and x broadcast to the
    sample grid (the same for every channel: corners and weights are computed once there),
    chan gives each value's channel and broadcasts with it."""
    h, w = feat.shape[1:]
    y, x = np.broadcast_arrays(y, x)
    y, x = y.astype(np.float32, copy=True), x.astype(np.float32, copy=True)
    inside = (y >= -1.0) & (y <= h) & (x >= -1.0) & (x <= w)
    y[y <= 0] = 0
    x[x <= 0] = 0
    y_low, x_low = y.astype(np.int64), x.astype(np.int64)
    top_y, top_x = y_low >= h - 1, x_low >= w - 1
    y_low[top_y] = h - 1
    x_low[top_x] = w - 1
    y_high = np.where(top_y, h - 1, y_low + 1)
    x_high = np.where(top_x, w - 1, x_low + 1)
    y = np.where(top_y, y_low.astype(np.float32), y)
    x = np.where(top_x, x_low.astype(np.float32), x)
    ly, lx = y - y_low.astype(np.float32), x - x_low.astype(np.float32)
    hy, hx = np.float32(1) - ly, np.float32(1) - lx
    y_low, x_low = np.clip(y_low, 0, h - 1), np.clip(x_low, 0, w - 1)  # outside samples give 0 below anyway
    y_high, x_high = np.clip(y_high, 0, h - 1), np.clip(x_high, 0, w - 1)
    w1, w2, w3, w4 = hy * hx, hy * lx, ly * hx, ly * lx  # torchvision's weights, once per sample
    flat = feat.reshape(feat.shape[0], -1)
    row_low, row_high = y_low * w, y_high * w
    v1, v2 = flat[chan, row_low + x_low], flat[chan, row_low + x_high]
    v3, v4 = flat[chan, row_high + x_low], flat[chan, row_high + x_high]
    val = w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4
    return np.where(inside, val, np.float32(0)).astype(np.float32)


def ps_roi_align(feat: np.ndarray, rois: np.ndarray, spatial_scale: float, pooled: int,
                 sampling_ratio: int) -> np.ndarray:
    """Position-sensitive RoIAlign of one image: feat [C_out * P * P, H, W], rois [K, 4]
    (x1, y1, x2, y2 in input pixels) -> [K, C_out, P, P], as ``torchvision.ops.ps_roi_align``."""
    feat = np.ascontiguousarray(feat, dtype=np.float32)
    p = int(pooled)
    c_in = feat.shape[0]
    if feat.ndim != 3 or c_in % (p * p) != 0:
        raise ValueError(f"PSRoIAlign input has shape {feat.shape}; it needs [C, H, W] with C a multiple of "
                         f"{p}x{p} = {p * p}")
    c_out = c_in // (p * p)
    rois = np.asarray(rois, np.float32).reshape(-1, 4)
    out = np.zeros((len(rois), c_out, p, p), np.float32)
    if len(rois) == 0:
        return out
    scale, half = np.float32(spatial_scale), np.float32(0.5)
    start_w, start_h = rois[:, 0] * scale - half, rois[:, 1] * scale - half
    roi_w, roi_h = (rois[:, 2] * scale - half) - start_w, (rois[:, 3] * scale - half) - start_h
    bin_w, bin_h = roi_w / np.float32(p), roi_h / np.float32(p)
    grid_h, grid_w = psroi_sample_grid(roi_h, p, sampling_ratio), psroi_sample_grid(roi_w, p, sampling_ratio)
    chan = np.arange(c_in).reshape(c_out, p, p)  # channel of (c, i, j)
    bins = np.arange(p, dtype=np.float32)
    # rois with the same sample grid are pooled together; samples are summed in torchvision's order
    for gh, gw in sorted(set(zip(grid_h.tolist(), grid_w.tolist()))):
        sel = np.nonzero((grid_h == gh) & (grid_w == gw))[0]
        if gh <= 0 or gw <= 0:  # an empty grid: torchvision divides 0 by a count <= 0
            out[sel] = np.float32(0) / np.float32(gh * gw) if gh * gw != 0 else np.float32(np.nan)
            continue
        hstart = bins[None, :] * bin_h[sel, None] + start_h[sel, None]  # [n, P] per bin row
        wstart = bins[None, :] * bin_w[sel, None] + start_w[sel, None]
        acc = np.zeros((len(sel), c_out, p, p), np.float32)
        for iy in range(gh):
            y = hstart + np.float32(iy + 0.5) * bin_h[sel, None] / np.float32(gh)  # [n, P]
            for ix in range(gw):
                x = wstart + np.float32(ix + 0.5) * bin_w[sel, None] / np.float32(gw)
                acc += _bilinear(feat, chan[None], y[:, None, :, None], x[:, None, None, :])
        out[sel] = acc / np.float32(gh * gw)
    return out


def rcnn_detections(rois: np.ndarray, probs: np.ndarray, deltas: np.ndarray, in_w: int, in_h: int, *,
                    weights: list[float], score_threshold: float, nms_threshold: float, max_detections: int,
                    min_size: float, box_clip: float = BOX_CLIP,
                    class_agnostic: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R-CNN outputs for K proposals -> (boxes [D, 4], scores [D], labels [D]) in network-input pixels,
    best first; labels count from 0 with the background column dropped. ``deltas`` is [K, 4 (C + 1)],
    or [K, 4] with ``class_agnostic`` (one box per RoI for every class)."""
    k, c1 = probs.shape
    want = (k, 4) if class_agnostic else (k, 4 * c1)
    if deltas.shape != want:
        raise ValueError(f"R-CNN box deltas have shape {deltas.shape}; {k} proposals x {c1} classes need {want}")
    if class_agnostic:
        boxes = clamp_boxes(decode_boxes(rois.astype(np.float32), deltas, weights, box_clip), in_w, in_h)
        boxes = np.repeat(boxes[:, None, :], c1 - 1, axis=1).reshape(-1, 4)
    else:
        ref = np.repeat(rois.astype(np.float32), c1, axis=0)
        boxes = decode_boxes(ref, deltas.reshape(-1, 4), weights, box_clip)
        boxes = clamp_boxes(boxes, in_w, in_h).reshape(k, c1, 4)[:, 1:].reshape(-1, 4)
    scores = probs[:, 1:].astype(np.float32).reshape(-1)
    labels = np.tile(np.arange(c1 - 1, dtype=np.int64), k)
    keep = (scores > np.float32(score_threshold))
    keep &= remove_small(boxes, min_size)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    kept = nms(boxes, scores, labels, nms_threshold, False, max_detections)
    return boxes[kept], scores[kept], labels[kept]
