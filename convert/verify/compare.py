"""The one comparison core of the three parities (torch <-> ncnn, Python <-> C++,
x86 <-> ARM): tensor statistics, detection matching, top-k agreement, and the
limits that turn them into failures. Pure numpy; no torch, no ncnn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from litedet.runtime.results import Detection

__all__ = ["Limits", "TensorStats", "DetectionMatch", "TopKMatch", "CppMatch", "tensor_stats", "output_stats", "align_outputs",
           "tensor_failures", "match_detections", "nms_order_flip", "detection_failure", "topk_match", "cpp_match", "box_iou_det"]


@dataclass(frozen=True)
class Limits:
    """What one comparison (e.g. ncnn fp16 vs torch) must stay within."""

    min_cosine: float
    max_rel: float
    min_iou: float
    max_score_diff: float
    match_iou: float = 0.5  # a pair must overlap this much to count as the same detection
    # unmatched detections this close to the cut are borderline (a 0.351 vs 0.349 flip), not failures
    borderline_margin: float = 0.02
    # label flips tolerated, as a fraction of the reference detections; a class-index bug flips nearly all
    max_label_flip_frac: float = 0.05
    # two-stage: reference proposals the test side must reproduce at IoU 0.9 (its own RPN, end to end)
    min_proposal_recall: float = 0.9


@dataclass
class TensorStats:
    blob: str
    role: str
    stride: int
    max_abs: float
    max_rel: float
    cosine: float


@dataclass
class DetectionMatch:
    reference: int
    test: int
    matched: int
    missed: int
    extra: int
    borderline: int
    label_flips: int  # same box and score, another label: an argmax near-tie flipped
    mean_iou: float
    min_iou: float
    max_score_diff: float
    # matched pairs that are two different boxes: near-equal scores swapped order, so NMS kept
    # the other one on each side (both boxes are among each side's candidates before NMS)
    nms_order_flips: int = 0


@dataclass
class TopKMatch:
    """Classification agreement of one backend with torch on one image."""

    torch_top1: int
    test_top1: int
    top1_agrees: bool
    top5_overlap: int  # how many of torch's top-5 are in the backend's top-5
    margin: float  # torch logit of its top-1 minus its logit of the backend's top-1
    explained: bool  # a flip the measured logit error can account for (margin <= 2 * max abs error)


@dataclass
class CppMatch:
    """C++ core vs Python postprocessing on the same raw ncnn fp16 outputs."""

    python: int
    cpp: int
    identical: bool  # same count, labels and order
    max_box_diff: float  # network-input pixels
    max_score_diff: float
    details: dict = field(default_factory=dict)  # per-stage differences (two-stage glue)


def tensor_stats(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, float]:
    """(max abs, max rel to the reference's range, cosine) of two tensors."""
    a = ref.astype(np.float64).ravel()
    b = got.astype(np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {got.shape}")
    diff = np.abs(a - b)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(a).max()) if a.size else 0.0
    max_rel = max_abs / max(scale, 1e-6)
    den = np.linalg.norm(a) * np.linalg.norm(b)
    cosine = float(a @ b / den) if den > 0 else float(np.array_equal(a, b))
    return max_abs, max_rel, cosine


def output_stats(m, ref: dict[str, np.ndarray], got: dict[str, np.ndarray],
                 same: dict[str, np.ndarray] | None = None) -> list[TensorStats]:
    """tensor_stats for every output of the manifest (``got`` reshaped to ``ref``) and, for
    multi-stage kinds, for every later-stage tensor the test side computed on the reference
    side's intermediate inputs (``same``; role 'same-input')."""
    stats = []
    for o in m.outputs:
        ma, mr, cs = tensor_stats(ref[o.blob], got[o.blob].reshape(ref[o.blob].shape))
        stats.append(TensorStats(o.blob, o.role, o.stride, ma, mr, cs))
    blobs = {o.blob for o in m.outputs}
    for k, v in (same or {}).items():
        if k in blobs or k not in ref or v.size == 0 or v.shape != ref[k].shape or np.array_equal(v, ref[k]):
            continue  # stage-1 outputs, the reference's own inputs (copied), empty stages
        ma, mr, cs = tensor_stats(ref[k], v)
        stats.append(TensorStats(k, "same-input", 0, ma, mr, cs))
    return stats


def align_outputs(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``got`` with each tensor in its reference's shape where the sizes agree (ncnn drops the batch
    axis; a later stage's tensors may have another row count and are left as they are)."""
    return {k: v.reshape(ref[k].shape) if k in ref and v.size == ref[k].size else v for k, v in got.items()}


def tensor_failures(name: str, key: str, stats: list[TensorStats], lim: Limits) -> list[str]:
    return [f"{name}: {key} output {s.blob} ({s.role}/{s.stride}) cosine {s.cosine:.6f} (min {lim.min_cosine}), "
            f"max_rel {s.max_rel:.2e} (max {lim.max_rel})"
            for s in stats if s.cosine < lim.min_cosine or s.max_rel > lim.max_rel]


def detection_failure(name: str, key: str, dm: DetectionMatch, lim: Limits) -> str | None:
    """Why a detection comparison fails, or None when it passes."""
    flips_bad = dm.label_flips > lim.max_label_flip_frac * max(dm.reference, 1)
    if dm.missed or dm.extra or flips_bad or dm.min_iou < lim.min_iou or dm.max_score_diff > lim.max_score_diff:
        return (f"{name}: {key} detections missed {dm.missed}, extra {dm.extra}, label flips {dm.label_flips}, "
                f"min IoU {dm.min_iou:.3f} (min {lim.min_iou}), max score diff {dm.max_score_diff:.4f} "
                f"(max {lim.max_score_diff})")
    return None


def _interval_iou(a1: float, a2: float, b1: float, b2: float) -> float:
    inter = max(0.0, min(a2, b2) - max(a1, b1))
    union = (a2 - a1) + (b2 - b1) - inter
    return inter / union if union > 0 else float(abs(a1 - b1) <= 1e-3 and abs(a2 - b2) <= 1e-3)


def box_iou_det(a: "Detection", b: "Detection") -> float:
    """IoU of two detections. Boxes clipped to zero width or height in the image (they lay in the
    letterbox padding) have no area: two such boxes on the same line compare by their extent along
    it, so identical degenerate boxes have IoU 1, not 0."""
    iw = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    ih = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = iw * ih
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    if union > 0:
        return inter / union
    x_iou, y_iou = _interval_iou(a.x1, a.x2, b.x1, b.x2), _interval_iou(a.y1, a.y2, b.y1, b.y2)
    return min(x_iou, y_iou)


def _cut(dets: list["Detection"], score_threshold: float, max_detections: int | None) -> float:
    """The score a detection had to beat to be in this list: the threshold, or
    the lowest kept score when the list was cut at max_detections."""
    if max_detections is not None and len(dets) >= max_detections:
        return max(score_threshold, min(d.score for d in dets))
    return score_threshold


def nms_survivors_near_tie(dets: list["Detection"], nms_iou: float, margin: float) -> set[int]:
    """Indices of detections that survived NMS by a hair: a better-scored detection of the same
    label overlaps them at an IoU within ``margin`` below ``nms_iou`` (any rounding could have
    suppressed them)."""
    out = set()
    for i, d in enumerate(dets):
        for e in dets:
            if e is not d and e.label == d.label and e.score >= d.score and nms_iou - margin <= box_iou_det(d, e) <= nms_iou:
                out.add(i)
                break
    return out


# a box of one side counts as present on the other side at this IoU (and scores within the margin)
TWIN_IOU = 0.9


def _has_twin(d: "Detection", candidates: list["Detection"], margin: float) -> bool:
    return any(c.label == d.label and abs(c.score - d.score) <= margin and box_iou_det(c, d) >= TWIN_IOU
               for c in candidates)


def nms_order_flip(r: "Detection", t: "Detection", ref_candidates: list["Detection"],
                   test_candidates: list["Detection"], margin: float) -> bool:
    """Whether a matched pair of two different boxes comes from NMS deciding differently: each
    side had both boxes before NMS (IoU >= TWIN_IOU, scores within ``margin``), so the sides agree
    on every candidate that matters and only the order of near-equal scores (directly, or through
    a cascade of suppressions) kept another box on each side."""
    return _has_twin(r, test_candidates, margin) and _has_twin(t, ref_candidates, margin)


@dataclass
class _Tally:
    """The running counts of one ``match_detections``."""

    cut: float  # the score a detection had to beat (threshold or max_detections cut)
    margin: float  # borderline margin
    near: set  # ids of NMS near-tie survivors (either side)
    used: list  # test detections already paired
    matched_ref: list = field(default_factory=list)
    ious: list = field(default_factory=list)
    sdiffs: list = field(default_factory=list)
    missed: int = 0
    extra: int = 0
    borderline: int = 0
    label_flips: int = 0
    order_flips: int = 0

    def near_cut(self, d: "Detection") -> bool:
        return d.score < self.cut + self.margin or id(d) in self.near


def _best_partner(r: "Detection", test: list["Detection"], used: list[bool], match_iou: float) -> tuple[int, float]:
    """The unused test detection of r's label with the highest IoU >= match_iou: (index or -1, IoU)."""
    best, best_iou = -1, match_iou
    for j, t in enumerate(test):
        if not used[j] and t.label == r.label:
            iou = box_iou_det(r, t)
            if iou >= best_iou:
                best, best_iou = j, iou
    return best, best_iou


def _pair(tally: _Tally, r: "Detection", t: "Detection", iou: float, is_flip: Callable) -> None:
    """Record a matched pair: an NMS order flip, or a pair held to min IoU and the score limit."""
    tally.matched_ref.append(r)
    if iou < TWIN_IOU and is_flip(r, t):
        tally.order_flips += 1
        return
    if max(r.score, t.score) >= tally.cut + tally.margin and not ({id(r), id(t)} & tally.near):
        # two boxes at the score cut (or NMS near-tie survivors) may pair up after each one's
        # twin was dropped: their IoU says nothing about the conversion, so it is not held to min IoU
        tally.ious.append(iou)
    tally.sdiffs.append(abs(r.score - t.score))


def _label_flips(ref: list["Detection"], test: list["Detection"], tally: _Tally) -> None:
    """An unmatched pair with the same box and score but another label is a label flip."""
    for r in [r for r in ref if not any(m is r for m in tally.matched_ref)]:
        for j, t in enumerate(test):
            if (not tally.used[j] and t.label != r.label and box_iou_det(r, t) >= 0.9
                    and abs(t.score - r.score) <= tally.margin):
                tally.used[j] = True
                tally.label_flips += 1
                if r.score < tally.cut + tally.margin:
                    tally.borderline -= 1
                else:
                    tally.missed -= 1
                break


def match_detections(ref: list["Detection"], test: list["Detection"], match_iou: float = 0.5,
                     score_threshold: float = 0.0, borderline_margin: float = 0.0,
                     max_detections: int | None = None, nms_iou: float | None = None,
                     nms_margin: float = 0.05,
                     candidates: Callable[[], tuple[list, list]] | None = None) -> DetectionMatch:
    """Greedy one-to-one matching by label and IoU, best reference score first.

    An unmatched detection whose score is within ``borderline_margin`` of the
    cut (score threshold, or the max_detections cut) is counted as borderline:
    it flipped across a threshold, which is not a conversion error. With
    ``nms_iou`` (the NMS threshold), an unmatched detection that survived NMS on
    its side by less than ``nms_margin`` of IoU is borderline too: on the other
    side the same rounding may have suppressed it. With ``candidates`` (each
    side's detections before NMS) a matched pair of two different boxes that is an
    NMS order flip (``nms_order_flip``) is counted as such, not held to min IoU or the score
    limit; ``candidates()`` is called only when a pair needs it."""
    cands: list = []

    def is_flip(r: "Detection", t: "Detection") -> bool:
        if candidates is None:
            return False
        if not cands:
            cands.extend(candidates())
        return nms_order_flip(r, t, cands[0], cands[1], borderline_margin)

    near = set()
    if nms_iou is not None:
        near = ({id(ref[i]) for i in nms_survivors_near_tie(ref, nms_iou, nms_margin)}
                | {id(test[i]) for i in nms_survivors_near_tie(test, nms_iou, nms_margin)})
    cut = max(_cut(ref, score_threshold, max_detections), _cut(test, score_threshold, max_detections))
    tally = _Tally(cut, borderline_margin, near, [False] * len(test))
    for r in sorted(ref, key=lambda d: -d.score):
        best, best_iou = _best_partner(r, test, tally.used, match_iou)
        if best < 0:
            tally.borderline, tally.missed = (tally.borderline + 1, tally.missed) if tally.near_cut(r) else \
                (tally.borderline, tally.missed + 1)
            continue
        tally.used[best] = True
        _pair(tally, r, test[best], best_iou, is_flip)
    _label_flips(ref, test, tally)
    for j, t in enumerate(test):
        if not tally.used[j]:
            tally.borderline, tally.extra = (tally.borderline + 1, tally.extra) if tally.near_cut(t) else \
                (tally.borderline, tally.extra + 1)
    ious, sdiffs = tally.ious, tally.sdiffs
    return DetectionMatch(len(ref), len(test), len(tally.matched_ref), tally.missed, tally.extra, tally.borderline,
                          tally.label_flips, float(np.mean(ious)) if ious else 1.0, float(min(ious)) if ious else 1.0,
                          float(max(sdiffs)) if sdiffs else 0.0, tally.order_flips)


def topk_match(t: np.ndarray, n: np.ndarray, max_abs: float) -> TopKMatch:
    t1, n1 = int(np.argmax(t)), int(np.argmax(n))
    t5, n5 = set(np.argsort(-t, kind="stable")[:5].tolist()), set(np.argsort(-n, kind="stable")[:5].tolist())
    margin = float(t[t1] - t[n1])
    return TopKMatch(t1, n1, t1 == n1, len(t5 & n5), margin, t1 == n1 or margin <= 2 * max_abs)


CPP_BOX_ULPS = 4


def cpp_match(py: list["Detection"], cc: list["Detection"], lb) -> CppMatch:
    """Two detection lists that must be identical (count, labels, order); boxes
    compared in network-input pixels (image pixels scale float32 steps up), beyond
    CPP_BOX_ULPS float32 steps of the coordinate (numpy's exp and expf differ by an ulp
    or two, and a box through two decodes, RefineDet's, carries both)."""
    same = len(py) == len(cc) and all(a.label == b.label for a, b in zip(py, cc))
    sx, sy = lb.resized_w / lb.src_w, lb.resized_h / lb.src_h

    def off(u: float, v: float, scale: float) -> float:
        return max(0.0, abs(u - v) - CPP_BOX_ULPS * float(np.spacing(np.float32(max(abs(u), abs(v)))))) * scale

    box = max((max(off(a.x1, b.x1, sx), off(a.x2, b.x2, sx), off(a.y1, b.y1, sy), off(a.y2, b.y2, sy))
               for a, b in zip(py, cc)), default=0.0) if same else float("inf")
    score = max((abs(a.score - b.score) for a, b in zip(py, cc)), default=0.0) if same else float("inf")
    return CppMatch(len(py), len(cc), same, box, score)
