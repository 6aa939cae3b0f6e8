"""Postprocess kind ``rpn_psroi``: two-stage detectors (ThunderNet, Light-Head R-CNN).

The bundle holds two ncnn graphs. Stage 1 (the manifest's param/bin) gives, at one
stride, the RPN's objectness logits [A, H, W], its box deltas [4A, H, W] (channel
a * 4 + k, torchvision's layout) and the position-sensitive feature map
[groups * P * P, H, W]. Between the graphs the runtime computes proposals and
PSRoIAlign (``runtime/kinds/rpn_psroi_ops.py``); stage 2 (``postprocess.head``) takes every
pooled RoI at once, as the columns of one [groups * P * P, N, 1] blob (its fcs are
1x1 convolutions: one matrix product over all RoIs), and gives softmax class scores
(background first) and box deltas (4 per RoI, or 4 per class), added to the outputs
as ``rcnn_scores`` [N, C + 1] and ``rcnn_deltas`` [N, 4 or 4 (C + 1)].

``complete`` runs the glue and stage 2 and adds their tensors to the outputs
(``proposals``, ``proposal_scores``, ``pooled`` and the head's blobs), so parity
and benchmarks see every step; ``decode`` turns them into detections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..letterbox import RESIZE_ALIGNS, Letterbox, map_boxes_back
from ..results import Detection, describe_detection, detections_from
from .rpn_psroi_ops import Proposals, make_anchors, ps_roi_align, rcnn_detections, select_proposals
from . import BundleError, KindGraph, KindSpec, PostprocessKind, register_kind, rng

if TYPE_CHECKING:
    from litedet.runtime.manifest import Manifest

__all__ = ["HeadGraph", "RpnPsroiSpec", "rpn_maps", "proposals_of", "pool_rois", "head_input", "run_head", "probe_head",
           "complete_outputs", "detections_of",
           "PROPOSALS", "PROPOSAL_SCORES", "POOLED", "RCNN_SCORES", "RCNN_DELTAS"]

# keys ``complete`` adds to the outputs (never blob names of a graph: those are pnnx's in0/out0 ...)
PROPOSALS, PROPOSAL_SCORES, POOLED = "proposals", "proposal_scores", "pooled"
RCNN_SCORES, RCNN_DELTAS = "rcnn_scores", "rcnn_deltas"  # the head's outputs


HEAD_LAYOUTS = ("features_by_rois",)


@dataclass(kw_only=True)
class HeadGraph(KindGraph):
    """The R-CNN head graph. Layout ``features_by_rois``: input [in_features, N, 1] (every RoI
    along the height, so the fcs run as 1x1 convolutions), outputs [C + 1, N, 1] and [D, N, 1]."""

    layout: str
    input_blob: str
    in_features: int = field(metadata=rng(1, 1 << 24))  # groups * pooled * pooled
    scores_blob: str  # [N, num_classes + 1], softmax applied in the graph, background first
    deltas_blob: str  # [N, 4] class-agnostic, or [N, 4 * (num_classes + 1)]

    def blobs(self) -> tuple[str, list[str]]:
        return self.input_blob, [self.scores_blob, self.deltas_blob]


@dataclass(kw_only=True)
class RpnPsroiSpec(KindSpec):
    kind: str = "rpn_psroi"
    stride: int = field(metadata=rng(1, 1024))  # of the RPN and PSRoIAlign feature map
    anchor_sizes: list[float] = field(metadata=rng(1e-3, 1e4))  # px, at the network input
    anchor_ratios: list[float] = field(metadata=rng(1e-3, 1e3))  # h / w
    anchor_offset: float = field(metadata=rng(-1.0, 1.0))  # anchor centre = (index + anchor_offset) * stride; torchvision: 0, Detectron: 0.5
    rpn_box_weights: list[float] = field(metadata=rng(1e-6, 1e4))  # 1 / std of the RPN deltas (torchvision: 1, 1, 1, 1)
    rpn_pre_nms_top_n: int = field(metadata=rng(1, 1_000_000))
    rpn_post_nms_top_n: int = field(metadata=rng(1, 100_000))
    rpn_nms_threshold: float = field(metadata=rng(0.0, 1.0))
    rpn_min_size: float = field(metadata=rng(0.0, 1e4))
    rpn_score_threshold: float = field(metadata=rng(0.0, 1.0))
    pooled_size: int = field(metadata=rng(1, 64))
    psroi_groups: int = field(metadata=rng(1, 4096))  # output channels of PSRoIAlign (ThunderNet 5, Light-Head 10)
    sampling_ratio: int = field(metadata=rng(0, 64))  # samples per bin side; 0: adaptive, ceil(roi / pooled)
    rcnn_box_weights: list[float] = field(metadata=rng(1e-6, 1e4))  # 1 / std (stds 0.1, 0.1, 0.2, 0.2 -> 10, 10, 5, 5)
    box_clip: float = field(metadata=rng(1e-6, 20.0))  # largest dw/dh before exp (torchvision: log(1000 / 16))
    score_threshold: float = field(metadata=rng(0.0, 1.0))
    nms_threshold: float = field(metadata=rng(0.0, 1.0))
    max_detections: int = field(metadata=rng(1, 100_000))
    min_size: float = field(metadata=rng(0.0, 1e4))  # final boxes narrower or shorter than this are dropped (torchvision: 0.01)
    class_agnostic_boxes: bool  # one box delta per RoI for every class (ThunderNet), or one per class
    head: HeadGraph


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _validate(m: "Manifest") -> None:
    p, r = m.postprocess, m.resize
    _need(r.policy in RESIZE_ALIGNS, f"resize.policy is {r.policy!r}; postprocess kind 'rpn_psroi' needs one of {RESIZE_ALIGNS}")
    _need(p.stride > 0 and r.pad_multiple % p.stride == 0,
          f"resize.pad_multiple {r.pad_multiple} must be a multiple of postprocess.stride {p.stride}")
    _need(len(p.anchor_sizes) > 0 and all(s > 0 for s in p.anchor_sizes), "postprocess.anchor_sizes must be positive sizes")
    _need(len(p.anchor_ratios) > 0 and all(a > 0 for a in p.anchor_ratios), "postprocess.anchor_ratios must be positive")
    for name in ("rpn_box_weights", "rcnn_box_weights"):
        w = getattr(p, name)
        _need(len(w) == 4 and all(x > 0 for x in w), f"postprocess.{name} must be 4 positive numbers, got {w}")
    _need(p.rpn_pre_nms_top_n > 0 and p.rpn_post_nms_top_n > 0, "postprocess.rpn_pre_nms_top_n and rpn_post_nms_top_n must be positive")
    _need(p.rpn_min_size > 0 or p.sampling_ratio > 0,
          "postprocess.rpn_min_size must be > 0 with adaptive sampling (sampling_ratio 0): a zero-width RoI has no samples")
    for name in ("rpn_nms_threshold", "nms_threshold", "score_threshold", "rpn_score_threshold"):
        _need(0.0 <= getattr(p, name) <= 1.0, f"postprocess.{name} {getattr(p, name)} is outside [0, 1]")
    _need(p.pooled_size > 0 and p.psroi_groups > 0, "postprocess.pooled_size and psroi_groups must be positive")
    _need(p.sampling_ratio >= 0, "postprocess.sampling_ratio must be >= 0 (0: adaptive)")
    _need(p.max_detections > 0, "postprocess.max_detections must be positive")
    _need(p.box_clip > 0, "postprocess.box_clip must be positive")
    a = len(p.anchor_sizes) * len(p.anchor_ratios)
    feat = p.psroi_groups * p.pooled_size ** 2
    anchors = f"{len(p.anchor_sizes)} postprocess.anchor_sizes x {len(p.anchor_ratios)} anchor_ratios"
    why = {"rpn_objectness": f"{anchors} need {a}", "rpn_deltas": f"4 x {anchors} need {4 * a}",
           "psroi_features": f"postprocess.psroi_groups {p.psroi_groups} x pooled_size {p.pooled_size}^2 need {feat}"}
    for role, want in (("rpn_objectness", a), ("rpn_deltas", 4 * a), ("psroi_features", feat)):
        outs = m.outputs_with_role(role)
        _need(len(outs) == 1, f"a two-stage bundle needs one output with role {role!r}, found {len(outs)}")
        _need(outs[0].stride == p.stride, f"output {outs[0].blob!r} ({role}) has stride {outs[0].stride}; postprocess.stride is {p.stride}")
        _need(outs[0].channels == want, f"output {outs[0].blob!r} ({role}) has {outs[0].channels} channels; {why[role]}")
    obj = m.outputs_with_role("rpn_objectness")[0]
    _need(obj.activation == "none", f"output {obj.blob!r}: objectness must come out as logits (activation 'none'); "
                                    "the runtime applies the sigmoid once")
    _need(p.head.in_features == feat, f"postprocess.head.in_features is {p.head.in_features}; "
                                      f"{p.psroi_groups} x {p.pooled_size} x {p.pooled_size} = {feat}")
    _need(p.head.layout in HEAD_LAYOUTS, f"postprocess.head.layout is {p.head.layout!r}; expected one of {HEAD_LAYOUTS}")


def _graphs(p: RpnPsroiSpec) -> dict[str, KindGraph]:
    return {"head": p.head}


def _map(m: "Manifest", outputs: dict[str, np.ndarray], role: str, in_w: int, in_h: int) -> np.ndarray:
    """One stage-1 output as [channels, H, W], its size checked against the input's."""
    p = m.postprocess
    fw, fh = -(-in_w // p.stride), -(-in_h // p.stride)
    o = m.outputs_with_role(role)[0]
    a = np.asarray(outputs[o.blob], np.float32)
    if a.size != o.channels * fw * fh:
        raise BundleError(f"output {o.blob!r} ({role}) has shape {a.shape}; a {in_w}x{in_h} input at stride "
                         f"{p.stride} needs ({o.channels}, {fh}, {fw})")
    return a.reshape(o.channels, fh, fw)


def rpn_maps(m: "Manifest", outputs: dict[str, np.ndarray], in_w: int, in_h: int) -> tuple[np.ndarray, np.ndarray]:
    """Objectness logits [H*W*A] and deltas [H*W*A, 4] in anchor order (y, x, a)."""
    obj, dlt = (_map(m, outputs, r, in_w, in_h) for r in ("rpn_objectness", "rpn_deltas"))
    n_a, fh, fw = obj.shape
    return obj.transpose(1, 2, 0).reshape(-1), dlt.reshape(n_a, 4, fh, fw).transpose(2, 3, 0, 1).reshape(-1, 4)


def proposals_of(m: "Manifest", outputs: dict[str, np.ndarray], in_w: int, in_h: int) -> Proposals:
    """Stage-1 outputs -> proposals in network-input pixels."""
    p = m.postprocess
    logits, deltas = rpn_maps(m, outputs, in_w, in_h)
    anchors = make_anchors(-(-in_w // p.stride), -(-in_h // p.stride), p.stride, p.anchor_sizes, p.anchor_ratios,
                           p.anchor_offset)
    return select_proposals(logits, deltas, anchors, in_w, in_h, weights=p.rpn_box_weights,
                            pre_nms_top_n=p.rpn_pre_nms_top_n, post_nms_top_n=p.rpn_post_nms_top_n,
                            nms_threshold=p.rpn_nms_threshold, min_size=p.rpn_min_size,
                            score_threshold=p.rpn_score_threshold, box_clip=p.box_clip)


def pool_rois(m: "Manifest", outputs: dict[str, np.ndarray], boxes: np.ndarray, in_w: int, in_h: int) -> np.ndarray:
    """PSRoIAlign of the proposals -> the head's input [N, groups * P * P]."""
    p = m.postprocess
    feat = _map(m, outputs, "psroi_features", in_w, in_h)
    pooled = ps_roi_align(feat, boxes, 1.0 / p.stride, p.pooled_size, p.sampling_ratio)
    return pooled.reshape(len(boxes), p.psroi_groups * p.pooled_size ** 2)


RunGraph = Callable[[str, np.ndarray], dict[str, np.ndarray]]


def head_input(pooled: np.ndarray) -> np.ndarray:
    """Pooled RoIs [N, F] in the head's ``features_by_rois`` layout: [F, N, 1]."""
    return np.ascontiguousarray(pooled.T[:, :, None], dtype=np.float32)


def run_head(m: "Manifest", pooled: np.ndarray, run_graph: RunGraph) -> tuple[np.ndarray, np.ndarray]:
    """The head graph on pooled RoIs [N, F] -> (class probabilities [N, C + 1], deltas [N, D]), their
    sizes checked against the manifest's class count."""
    p = m.postprocess
    c1 = m.num_classes + 1
    d = 4 if p.class_agnostic_boxes else 4 * c1
    n = len(pooled)
    if not n:  # nothing above the RPN's thresholds: no second stage, no detections
        return np.zeros((0, c1), np.float32), np.zeros((0, d), np.float32)
    head = run_graph("head", head_input(pooled))
    sc, dl = (np.asarray(head[b], np.float32) for b in (p.head.scores_blob, p.head.deltas_blob))
    if sc.size != c1 * n or dl.size != d * n:
        raise BundleError(f"the head graph gives {sc.size / n:g} scores and {dl.size / n:g} deltas per RoI; "
                         f"{m.num_classes} class names + background need {c1} and "
                         f"{d} ({'class-agnostic' if p.class_agnostic_boxes else 'per class'})")
    sc, dl = sc.reshape(c1, n).T, dl.reshape(d, n).T  # features_by_rois: one column per RoI
    if not np.isfinite(sc).all() or sc.min() < 0 or sc.max() > 1:
        raise BundleError(f"head output {p.head.scores_blob!r} is not probabilities in [0, 1]: the graph must "
                         "apply the softmax (never applied a second time)")
    return sc, dl


def probe_head(m: "Manifest", run_graph: RunGraph) -> None:
    """The head graph on one all-zero RoI: its outputs must fit the manifest (checked at open)."""
    run_head(m, np.zeros((1, m.postprocess.head.in_features), np.float32), run_graph)


def head_shape(m: "Manifest", name: str) -> tuple[int, int, int]:
    """The head's input [F, N, 1] (features_by_rois) on the most RoIs the RPN keeps,
    rpn_post_nms_top_n: how the papers count the head's cost."""
    p = m.postprocess
    return p.psroi_groups * p.pooled_size ** 2, p.rpn_post_nms_top_n, 1


def head_input_of(m: "Manifest", name: str, completed: dict[str, np.ndarray]) -> np.ndarray:
    """The head's input in a run whose completed outputs are ``completed``."""
    return head_input(completed[POOLED])


def complete_outputs(m: "Manifest", outputs: dict[str, np.ndarray], in_w: int, in_h: int, run_graph: RunGraph,
                     reference: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Proposals, pooled RoIs and the head's outputs from stage 1's outputs. With ``reference``
    (another side's completed outputs) its proposals replace the RPN's, so two sides' heads can
    be compared on the same RoIs."""
    if reference is None:
        props = proposals_of(m, outputs, in_w, in_h)
        boxes, scores = props.boxes, props.scores
    else:
        boxes, scores = reference[PROPOSALS], reference[PROPOSAL_SCORES]
    pooled = pool_rois(m, outputs, boxes, in_w, in_h)
    sc, dl = run_head(m, pooled, run_graph)
    return {PROPOSALS: boxes, PROPOSAL_SCORES: scores, POOLED: pooled, RCNN_SCORES: sc, RCNN_DELTAS: dl}


def detections_of(m: "Manifest", outputs: dict[str, np.ndarray], in_w: int, in_h: int) -> tuple[np.ndarray, ...]:
    """(boxes, scores, labels) in network-input pixels from completed outputs."""
    p = m.postprocess
    sc, dl = outputs[RCNN_SCORES], outputs[RCNN_DELTAS]
    return rcnn_detections(outputs[PROPOSALS], sc, dl, in_w, in_h, weights=p.rcnn_box_weights,
                           score_threshold=p.score_threshold, nms_threshold=p.nms_threshold,
                           max_detections=p.max_detections, min_size=p.min_size, box_clip=p.box_clip,
                           class_agnostic=p.class_agnostic_boxes)


def postprocess_outputs(m: "Manifest", outputs: dict[str, np.ndarray], lb: Letterbox) -> list[Detection]:
    boxes, scores, labels = detections_of(m, outputs, lb.in_w, lb.in_h)
    boxes = map_boxes_back(boxes, lb)
    return detections_from(boxes, scores, labels, m.class_names)


def device_values(m: "Manifest", names: dict[str, str]) -> dict:
    """The values of rpn_psroi's NAME.cfg keys (LITEDET_RPN_PSROI_KEYS) beyond the common ones."""
    p = m.postprocess
    return {
        "head_param": names["head_param"], "head_bin": names["head_bin"],
        "head_param_sha256": p.head.param_sha256, "head_bin_sha256": p.head.bin_sha256,
        "stride": p.stride, "obj_blob": m.outputs_with_role("rpn_objectness")[0].blob,
        "deltas_blob": m.outputs_with_role("rpn_deltas")[0].blob,
        "feat_blob": m.outputs_with_role("psroi_features")[0].blob, "head_input_blob": p.head.input_blob,
        "head_layout": p.head.layout,
        "head_scores_blob": p.head.scores_blob, "head_deltas_blob": p.head.deltas_blob,
        **{k: getattr(p, k) for k in (
            "anchor_sizes", "anchor_ratios", "anchor_offset", "rpn_box_weights", "rpn_pre_nms_top_n",
            "rpn_post_nms_top_n", "rpn_nms_threshold", "rpn_min_size", "rpn_score_threshold", "pooled_size",
            "psroi_groups", "sampling_ratio", "rcnn_box_weights", "box_clip", "score_threshold", "nms_threshold",
            "max_detections", "min_size", "class_agnostic_boxes")},
    }


KIND = register_kind(PostprocessKind(
    "rpn_psroi", "detection", RpnPsroiSpec, ("rpn_objectness", "rpn_deltas", "psroi_features"), _validate,
    postprocess_outputs, describe_detection, graphs=_graphs, complete=complete_outputs, probe=probe_head,
    graph_shape=head_shape, graph_input=head_input_of,
    device_values=device_values))
