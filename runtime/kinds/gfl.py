"""Postprocess kind ``gfl``: NanoDet's per-stride class scores + GFL distributions.

Outputs: per stride, ``cls_scores`` [H*W, num_classes] with the sigmoid applied
in the graph, and ``dist_logits`` [H*W, 4*(reg_max+1)]. Small pure functions in the
order the C++ core runs them (android_demo/app/src/main/cpp/litedet_post.*):
threshold -> decode distances -> boxes in network-input pixels -> clamp -> NMS ->
top max_detections -> map back to the original image and clip.

Conventions: scores arrive with the sigmoid already applied by the graph; values outside
[0, 1] are refused rather than squashed a second time; argmax ties pick the lowest class
index; a score must be > threshold (strict); NMS as ``runtime/boxes.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..boxes import clamp_boxes, nms
from ..letterbox import RESIZE_ALIGNS, Letterbox, map_boxes_back
from ..results import Detection, describe_detection, detections_from
from . import BundleError, KindSpec, PostprocessKind, register_kind, rng

if TYPE_CHECKING:
    from litedet.runtime.manifest import Manifest

__all__ = ["Detection", "GflSpec", "Candidates", "distribution_to_distance", "grid_centers", "decode_level",
           "postprocess_outputs", "describe_detection"]


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


@dataclass(kw_only=True)
class GflSpec(KindSpec):
    kind: str = "gfl"
    strides: list[int] = field(metadata=rng(1, 1024))
    reg_max: int = field(metadata=rng(0, 64))
    # cell centre = (index + center_offset) * stride: no default anywhere
    center_offset: float = field(metadata=rng(-1.0, 1.0))
    score_threshold: float = field(default=0.35, metadata=rng(0.0, 1.0))
    nms_threshold: float = field(default=0.6, metadata=rng(0.0, 1.0))
    class_agnostic_nms: bool = False
    max_detections: int = field(default=100, metadata=rng(1, 100_000))
    multi_label: bool = False  # False: one label per cell (argmax), as upstream's ncnn demo; True: upstream's evaluation
    clamp_to_input: bool = True  # clip boxes to the network input before NMS, as upstream NanoDet does


def _validate(m: "Manifest") -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ValueError(msg)

    p, r = m.postprocess, m.resize
    need(r.policy in RESIZE_ALIGNS, f"resize.policy is {r.policy!r}; postprocess kind 'gfl' needs one of {RESIZE_ALIGNS}")
    need(r.policy != "stretch" or r.pad_mode == "fixed", "resize.policy 'stretch' fills target x target: it needs pad_mode 'fixed'")
    need(p.reg_max >= 0, "postprocess.reg_max must be >= 0")
    need(len(p.strides) > 0, "postprocess.strides is empty")
    need(all(s > 0 for s in p.strides), f"postprocess.strides {p.strides} must be positive")
    need(len(set(p.strides)) == len(p.strides), f"postprocess.strides {p.strides} repeats a stride")
    out_strides = sorted({o.stride for o in m.outputs})
    need(out_strides == sorted(p.strides), f"postprocess.strides {p.strides} must name every output level: the outputs "
                                           f"have strides {out_strides}")
    # a stride above pad_multiple (NanoDet-Plus's extra stride-64 level on a 32-padded input)
    # gives ceil(size / stride) cells, which the decoder counts the same way
    need(r.pad_multiple % min(p.strides) == 0 and
         all(r.pad_multiple % s == 0 or s % r.pad_multiple == 0 for s in p.strides),
         f"resize.pad_multiple {r.pad_multiple} and postprocess.strides {p.strides} must divide one another")
    need(0.0 <= p.score_threshold <= 1.0, f"postprocess.score_threshold {p.score_threshold} is outside [0, 1]")
    need(0.0 <= p.nms_threshold <= 1.0, f"postprocess.nms_threshold {p.nms_threshold} is outside [0, 1]")
    need(p.max_detections > 0, "postprocess.max_detections must be positive")
    for s in p.strides:
        cls = m.output("cls_scores", s)
        dis = m.output("dist_logits", s)
        need(cls.channels == m.num_classes,
             f"output {cls.blob!r} has {cls.channels} columns but there are {m.num_classes} class names")
        need(dis.channels == 4 * (p.reg_max + 1),
             f"output {dis.blob!r} has {dis.channels} columns; reg_max {p.reg_max} needs 4*(reg_max+1) = {4 * (p.reg_max + 1)}")
        need(cls.activation == "sigmoid",
             f"output {cls.blob!r}: class scores must come out of the graph with the sigmoid applied (activation 'sigmoid'), got {cls.activation!r}")


def postprocess_outputs(m: "Manifest", outputs: dict[str, np.ndarray], lb: Letterbox) -> list[Detection]:
    """Raw per-stride outputs (name -> [H*W, C]) -> detections, per the manifest."""
    p = m.postprocess
    parts: list[Candidates] = []
    for stride in p.strides:
        cls_o, dis_o = m.output("cls_scores", stride), m.output("dist_logits", stride)
        scores, dists = outputs[cls_o.blob], outputs[dis_o.blob]
        feat_w, feat_h = -(-lb.in_w // stride), -(-lb.in_h // stride)
        scores = scores.reshape(-1, scores.shape[-1])
        dists = dists.reshape(-1, dists.shape[-1])
        if scores.shape != (feat_w * feat_h, cls_o.channels):
            raise BundleError(f"output {cls_o.blob!r} has shape {scores.shape}; a {lb.in_w}x{lb.in_h} input at stride "
                             f"{stride} needs ({feat_w * feat_h}, {cls_o.channels})")
        parts.append(decode_level(scores, dists, feat_w, stride, p.reg_max, p.center_offset,
                                  p.score_threshold, p.multi_label))
    c = Candidates.concat(parts)
    if p.clamp_to_input:
        c = Candidates(clamp_boxes(c.boxes, lb.in_w, lb.in_h), c.scores, c.labels)
    keep = nms(c.boxes, c.scores, c.labels, p.nms_threshold, p.class_agnostic_nms, p.max_detections)
    boxes = map_boxes_back(c.boxes[keep], lb)
    return detections_from(boxes, c.scores[keep], c.labels[keep], m.class_names)


def device_values(m: "Manifest", names: dict[str, str]) -> dict:
    """The values of gfl's NAME.cfg keys (LITEDET_GFL_KEYS) beyond the common ones."""
    p = m.postprocess
    return {
        "clamp_to_input": p.clamp_to_input, "strides": p.strides,
        "cls_blobs": [m.output("cls_scores", s).blob for s in p.strides],
        "dis_blobs": [m.output("dist_logits", s).blob for s in p.strides], "reg_max": p.reg_max,
        "center_offset": p.center_offset, "score_threshold": p.score_threshold, "nms_threshold": p.nms_threshold,
        "class_agnostic_nms": p.class_agnostic_nms, "multi_label": p.multi_label, "max_detections": p.max_detections,
    }


KIND = register_kind(PostprocessKind("gfl", "detection", GflSpec, ("cls_scores", "dist_logits"), _validate,
                                     postprocess_outputs, describe_detection,
                                     device_values=device_values))
