"""Postprocess kind ``topk`` (OneNet: end to end, no NMS): one stride map of sigmoid class scores
[C, H, W] and one of box distances [4, H, W] (left, top, right, bottom in input pixels, the ReLU
applied by the graph) -> the k best (class, location) pairs.

Steps, each a small pure function mirrored in the C++ core (android_demo/app/src/main/cpp/litedet_topk.cpp):

1. :func:`top_scores`: over all C x H x W scores, those > ``score_threshold`` (strict), the best
   ``max_detections`` of them, highest first; equal scores in index order (class-major: index =
   c * H * W + y * W + x, the scores' own layout). Taking the k best and then dropping those under
   the threshold, as OneNet's inference does, keeps the same pairs: thresholding first is only cheaper;
2. :func:`place_boxes`: location = ((x + center_offset) * stride, (y + center_offset) * stride)
   (OneNet: x * 4 + 2), box = location -/+ the distances;
3. optional NMS (``nms_threshold`` < 1; OneNet's default 1.0 never suppresses: IoU > 1 is impossible),
   class-wise, as ``runtime/boxes.py``;
4. mapped back to the image and clipped.

Scores outside [0, 1] are refused (the sigmoid is the graph's, applied once); negative distances too
(the ReLU is the graph's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..boxes import nms
from ..letterbox import RESIZE_ALIGNS, map_boxes_back
from ..results import Detection, describe_detection, detections_from
from . import BundleError, KindSpec, PostprocessKind, register_kind, rng, stride_planes

if TYPE_CHECKING:
    from litedet.runtime.manifest import Manifest

__all__ = ["TopkSpec", "top_scores", "place_boxes", "topk_candidates", "topk_outputs"]


@dataclass(kw_only=True)
class TopkSpec(KindSpec):
    kind: str = "topk"
    stride: int = field(metadata=rng(1, 1024))
    center_offset: float = field(metadata=rng(-1.0, 1.0))  # location = (x + center_offset) * stride
    score_threshold: float = field(default=0.3, metadata=rng(0.0, 1.0))
    max_detections: int = field(default=100, metadata=rng(1, 10_000_000))  # the k
    nms_threshold: float = field(default=1.0, metadata=rng(0.0, 1.0))  # 1.0: no NMS (OneNet's)


def top_scores(scores: np.ndarray, k: int, threshold: float) -> np.ndarray:
    """Flat indices (class-major) of the k best scores > threshold, best first, ties by index."""
    flat = scores.reshape(-1)
    idx = np.flatnonzero(flat > np.float32(threshold))
    order = np.lexsort((idx, -flat[idx]))  # by score descending, then index ascending
    return idx[order[:k]]


def place_boxes(ltrb: np.ndarray, cells: np.ndarray, feat_w: int, stride: int, center_offset: float) -> np.ndarray:
    """[4, H*W] distances, row-major cell indices -> [K, 4] boxes x1 y1 x2 y2 in input pixels."""
    s, off = np.float32(stride), np.float32(center_offset)
    cx = ((cells % feat_w).astype(np.float32) + off) * s
    cy = ((cells // feat_w).astype(np.float32) + off) * s
    d = ltrb[:, cells]
    return np.stack([cx - d[0], cy - d[1], cx + d[2], cy + d[3]], axis=1).astype(np.float32)


@dataclass
class TopkCandidates:
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def _maps(m: "Manifest", outputs: dict[str, np.ndarray], in_w: int, in_h: int) -> tuple[np.ndarray, np.ndarray]:
    """The [C, H, W] score and [4, H, W] distance planes, checked."""
    p = m.postprocess
    scores, ltrb = (stride_planes(outputs, m.outputs_with_role(role)[0], p.stride, in_w, in_h)
                    for role in ("scores", "ltrb"))
    if scores.size and (scores.min() < 0.0 or scores.max() > 1.0):
        raise BundleError("class scores are outside [0, 1]: the graph must apply the sigmoid (once); "
                          "these look like raw logits")
    if ltrb.size and ltrb.min() < 0.0:
        raise BundleError("box distances are negative: the graph must apply the ReLU to ltrb_pred")
    return scores, ltrb


def topk_candidates(m: "Manifest", outputs: dict[str, np.ndarray], in_w: int, in_h: int) -> TopkCandidates:
    """Steps 1-2: the top k pairs with their boxes in input pixels."""
    p = m.postprocess
    scores, ltrb = _maps(m, outputs, in_w, in_h)
    feat_w = scores.shape[2]
    cells_n = scores.shape[1] * feat_w
    idx = top_scores(scores, p.max_detections, p.score_threshold)
    cls, cells = idx // cells_n, idx % cells_n
    boxes = place_boxes(ltrb.reshape(4, cells_n), cells, feat_w, p.stride, p.center_offset)
    return TopkCandidates(boxes, scores.reshape(-1)[idx], cls.astype(np.int64))


def topk_outputs(m: "Manifest", outputs: dict[str, np.ndarray], geometry: Any) -> list[Detection]:
    p = m.postprocess
    c = topk_candidates(m, outputs, geometry.in_w, geometry.in_h)
    keep = np.arange(len(c.scores))
    if p.nms_threshold < 1.0:
        keep = nms(c.boxes, c.scores, c.labels, p.nms_threshold, False, p.max_detections)
    boxes = map_boxes_back(c.boxes[keep], geometry)
    return detections_from(boxes, c.scores[keep], c.labels[keep], m.class_names)


def _validate(m: "Manifest") -> None:
    p = m.postprocess
    for role, n in (("scores", m.num_classes), ("ltrb", 4)):
        outs = m.outputs_with_role(role)
        if len(outs) != 1:
            raise ValueError(f"a topk bundle needs exactly one output with role {role!r}, found {len(outs)}")
        if outs[0].channels != n:
            raise ValueError(f"output {outs[0].blob!r} ({role}) has {outs[0].channels} channels; expected {n}"
                             + (" (one per class name)" if role == "scores" else ""))
        if outs[0].stride != p.stride:
            raise ValueError(f"output {outs[0].blob!r} is at stride {outs[0].stride}; postprocess.stride is {p.stride}")
    (s,) = m.outputs_with_role("scores")
    if s.activation != "sigmoid":
        raise ValueError(f"output {s.blob!r}: class scores must come out of the graph with the sigmoid applied "
                         f"(activation 'sigmoid'), got {s.activation!r}")
    if m.resize.policy not in RESIZE_ALIGNS:
        raise ValueError(f"resize.policy is {m.resize.policy!r}; postprocess kind 'topk' needs one of {RESIZE_ALIGNS}")
    if m.resize.pad_multiple % p.stride:
        raise ValueError(f"resize.pad_multiple {m.resize.pad_multiple} must be a multiple of postprocess.stride {p.stride}")


def _device_values(m: "Manifest", names: dict[str, str]) -> dict:
    p = m.postprocess
    return {"scores_blob": m.outputs_with_role("scores")[0].blob, "ltrb_blob": m.outputs_with_role("ltrb")[0].blob,
            "stride": p.stride, "center_offset": p.center_offset, "score_threshold": p.score_threshold,
            "nms_threshold": p.nms_threshold, "max_detections": p.max_detections}


KIND = register_kind(PostprocessKind("topk", "detection", TopkSpec, ("scores", "ltrb"), _validate,
                                     topk_outputs, describe_detection, device_values=_device_values))
