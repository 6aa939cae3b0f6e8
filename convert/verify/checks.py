"""How two results of one kind are compared in parity: detections, top-k classes, ...

A :class:`ResultCheck` turns (reference outputs and results, test outputs and
results, tensor stats, limits) into a record for the report and an optional
failure. Family adapters name theirs (``FamilyAdapter.check``); every parity
(torch <-> ncnn, x86 <-> ARM) calls it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from litedet.runtime.visualize import drawable, save_image

from .compare import (CppMatch, DetectionMatch, Limits, TensorStats, TopKMatch, cpp_match, detection_failure,
                      match_detections, topk_match)

__all__ = ["ResultCheck", "DetectionCheck", "RpnPsroiCheck", "RpnPsroiMatch", "TopKCheck", "match_boxes", "seeded_note"]


def seeded_note(m, what: str) -> list[str]:
    if m.provenance.get("weights") == "seeded-random":
        return [f"weights are seeded random weights (UNTRAINED): {what}"]
    return []


class ResultCheck:
    """Base: compare tensors only. Subclasses add the result comparison."""

    header = ""  # column titles of ``row`` in the text report
    has_cpp = False  # the C++ core (android_demo) implements this kind
    arm_overrides: dict = {}  # ARM fp16 limits of this kind where they differ from ArmParityThresholds

    def judge_tensors(self, fp16: bool) -> bool:
        """Whether tensor limits fail a comparison at this precision."""
        return True

    def compare(self, m, name: str, key: str, ref_out: dict[str, np.ndarray], test_out: dict[str, np.ndarray],
                ref_res: list, test_res: list, stats: list[TensorStats], lim: Limits,
                same: tuple[dict, list] | None = None) -> tuple[Any, str | None]:
        """``same``: for multi-stage kinds, the test side's later stages run on the reference
        side's intermediate inputs (outputs, results), isolating each stage."""
        return None, None

    def row(self, record: Any) -> str:
        return ""

    def limits_text(self, lim) -> str:
        """The result limits of ``lim`` this check applies, for a report's thresholds line ("" for none)."""
        return ""

    def notes(self, m, any_results: bool) -> list[str]:
        return seeded_note(m, "tensor parity is meaningful, the outputs are not")

    def draw(self, image: np.ndarray, ref_res: list, test_res: list, path: Path) -> None:
        """An image of the two results side by side (nothing by default)."""

    def cpp(self, core, m, outputs: dict[str, np.ndarray], geometry) -> tuple[CppMatch, str | None]:
        """C++ core vs Python on the same outputs (only where ``has_cpp``)."""
        raise ValueError(f"the C++ core has no postprocessing for {type(self).__name__}")


class DetectionCheck(ResultCheck):
    """Detections matched by label and IoU (``match_detections``)."""

    has_cpp = True
    uses_candidates = True  # compare takes ``candidates``: outputs -> detections before NMS
    header = (f"{'dets r/t':>8} {'match':>5} {'miss':>4} {'extra':>5} {'bord':>4} {'flip':>4} {'minIoU':>6} {'dScore':>7} "
              f"{'nmsflip':>7}")

    def compare(self, m, name, key, ref_out, test_out, ref_res, test_res, stats, lim, same=None, candidates=None):
        p = m.postprocess
        both = (lambda: (candidates(ref_out), candidates(test_out))) if candidates else None
        dm = match_detections(ref_res, test_res, lim.match_iou, p.score_threshold, lim.borderline_margin,
                              p.max_detections, candidates=both)
        return dm, detection_failure(name, key, dm, lim)

    def limits_text(self, lim) -> str:
        return f"no missed/extra detections, min IoU >= {lim.min_iou}, score diff <= {lim.max_score_diff}"

    def row(self, dm: DetectionMatch) -> str:
        return (f"{dm.reference:>3}/{dm.test:<4} {dm.matched:>5} {dm.missed:>4} {dm.extra:>5} {dm.borderline:>4} "
                f"{dm.label_flips:>4} {dm.min_iou:>6.3f} {dm.max_score_diff:>7.4f} {dm.nms_order_flips:>7}")

    def notes(self, m, any_results):
        notes = seeded_note(m, "tensor and detection parity are meaningful, but its detections are not real objects")
        notes.append("nmsflip: matched pairs of two different boxes (IoU < 0.9) that both sides had before NMS "
                     "(scores within the borderline margin): near-equal scores in another order made NMS keep another "
                     "box on each side; not held to min IoU or the score limit")
        if not any_results:
            notes.append(f"no image produced a detection above score_threshold {m.postprocess.score_threshold}: "
                         "detection parity is vacuous")
        return notes

    def draw(self, image, ref_res, test_res, path):
        import cv2

        vis = image.copy() if image.ndim == 3 and image.shape[2] == 3 else cv2.cvtColor(
            image, cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_BGRA2BGR)
        for dets, color, thick in ((ref_res, (0, 200, 0), 3), (test_res, (0, 0, 255), 1)):
            for d in dets:
                cv2.rectangle(vis, (int(d.x1), int(d.y1)), (int(d.x2), int(d.y2)), color, thick)
                cv2.putText(vis, drawable(f"{d.name} {d.score:.2f}"), (int(d.x1) + 2, int(d.y1) + 14 + (0 if thick == 3 else 16)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
        cv2.putText(vis, "green: torch fp32   red: ncnn fp16", (4, vis.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)
        save_image(path, vis)

    def cpp(self, core, m, outputs, geometry):
        from litedet.runtime.kinds import postprocess_kind

        cpp_dets = core.kind(m.postprocess.kind).postprocess(m, outputs, geometry)
        c = cpp_match(postprocess_kind(m.postprocess.kind).decode(m, outputs, geometry), cpp_dets, geometry)
        bad = not c.identical or c.max_box_diff > 1e-4 or c.max_score_diff > 1e-4
        return c, (f"C++ postprocessing differs from Python: {c}" if bad else None)


@dataclass
class RpnPsroiMatch:
    """Two-stage parity of one image: each side's own proposals and detections (end to end),
    and the test side's head on the reference side's proposals (the second stage isolated)."""

    proposals_reference: int
    proposals_test: int
    proposals_matched: int  # one-to-one at IoU >= PROPOSAL_IOU, reference order
    end_to_end: DetectionMatch
    same_rois: DetectionMatch | None  # None when the reference had no proposals

    @property
    def proposal_recall(self) -> float:
        return self.proposals_matched / max(self.proposals_reference, 1)


PROPOSAL_IOU = 0.9


def match_boxes(ref: np.ndarray, test: np.ndarray, iou: float) -> int:
    """Greedy one-to-one matches of two box sets at IoU >= ``iou`` (reference order)."""
    from litedet.runtime.boxes import box_iou

    used = np.zeros(len(test), bool)
    hits = 0
    for b in ref:
        if not len(test):
            break
        ious = np.where(used, -1.0, box_iou(b, test))
        j = int(np.argmax(ious))
        if ious[j] >= iou:
            used[j] = True
            hits += 1
    return hits


class RpnPsroiCheck(DetectionCheck):
    """End-to-end detections may differ where the two sides rank proposals differently (near
    ties at the pre/post-NMS cut), so the second stage is judged on the SAME proposals
    (detections held to the detection limits), and end to end the proposal recall at IoU 0.9
    must reach ``lim.min_proposal_recall``; end-to-end detections are reported."""

    has_cpp = True
    # ARM computes in fp16 (accumulating in fp16): on seeded ThunderNet-SNet49 stage-1 cosine 0.995, max
    # rel 0.12; the head on x86's proposals moves scores by up to 0.08 and the end-to-end proposal recall
    # at IoU 0.9 is 0.54-0.75 (NMS cascades reorder near-ties). The ARM fp32 control is exact.
    arm_overrides = {"max_score_diff": 0.1, "borderline_margin": 0.1, "min_iou": 0.5, "min_proposal_recall": 0.5}
    header = (f"{'props r/t':>9} {'recall':>6} {'e2e r/t':>7} {'e2e match':>9} | same RoIs: "
              f"{DetectionCheck.header}")

    def compare(self, m, name, key, ref_out, test_out, ref_res, test_res, stats, lim, same=None, candidates=None):
        from litedet.runtime.kinds.rpn_psroi import PROPOSALS

        p = m.postprocess
        pr, pt = ref_out[PROPOSALS], test_out[PROPOSALS]
        e2e = match_detections(ref_res, test_res, lim.match_iou, p.score_threshold, lim.borderline_margin, p.max_detections,
                               nms_iou=p.nms_threshold)
        rec = RpnPsroiMatch(len(pr), len(pt), match_boxes(pr, pt, PROPOSAL_IOU), e2e, None)
        why = []
        if same is not None:
            both = (lambda: (candidates(ref_out), candidates(same[0]))) if candidates else None
            rec.same_rois = match_detections(ref_res, same[1], lim.match_iou, p.score_threshold, lim.borderline_margin,
                                             p.max_detections, nms_iou=p.nms_threshold, candidates=both)
            bad = detection_failure(name, f"{key} (head on the reference's proposals)", rec.same_rois, lim)
            why += [bad] if bad else []
        if rec.proposal_recall < lim.min_proposal_recall:
            why.append(f"{name}: {key} proposal recall {rec.proposal_recall:.3f} at IoU {PROPOSAL_IOU} "
                       f"(min {lim.min_proposal_recall}; {rec.proposals_matched} of {rec.proposals_reference})")
        return rec, "; ".join(why) or None

    def row(self, r: RpnPsroiMatch) -> str:
        same = super().row(r.same_rois) if r.same_rois is not None else "-"
        e = r.end_to_end
        return (f"{r.proposals_reference:>4}/{r.proposals_test:<4} {r.proposal_recall:>6.3f} {e.reference:>3}/{e.test:<3} "
                f"{e.matched:>9} | {same}")

    def notes(self, m, any_results):
        return super().notes(m, any_results) + [
            "two-stage: 'same RoIs' runs the tested head on the reference side's proposals (the second stage "
            "isolated, judged like any detector); end to end, the proposal recall at IoU 0.9 is judged and the "
            "detections are reported (proposals ranked differently near the top-N cut change them legitimately)"]

    def cpp(self, core, m, outputs, geometry):
        c = core.kind(m.postprocess.kind).match(m, outputs, geometry)
        bad = not c.identical or c.max_box_diff > 1e-4 or c.max_score_diff > 1e-4
        return c, (f"C++ two-stage glue differs from Python: {c}" if bad else None)


class TopKCheck(ResultCheck):
    """Top-1 must agree unless torch's own margin between the two classes is
    within twice the measured logit error (a near-tie the error explains)."""

    header = f"{'top1 t/n':>9} {'agree':>5} {'top5 overlap':>12}"

    def judge_tensors(self, fp16: bool) -> bool:
        # fp32 must be the same network; for fp16 the criterion is top-1 agreement
        # and the logit error is reported, not thresholded
        return not fp16

    def compare(self, m, name, key, ref_out, test_out, ref_res, test_res, stats, lim, same=None):
        (o,) = m.outputs_with_role("logits")
        t, n = ref_out[o.blob].reshape(-1), test_out[o.blob].reshape(-1)
        ma = stats[0].max_abs
        tk = topk_match(t, n, ma)
        why = None if tk.explained else (
            f"{name}: {key} top-1 is class {tk.test_top1}, torch says {tk.torch_top1} with a logit "
            f"margin {tk.margin:.4f} larger than twice the max logit error {ma:.2e}")
        return tk, why

    def limits_text(self, lim) -> str:
        return "the same top-1 unless torch's margin is within twice the logit error"

    def row(self, tk: TopKMatch) -> str:
        agree = "yes" if tk.top1_agrees else ("tie" if tk.explained else "NO")
        return f"{tk.torch_top1:>4}/{tk.test_top1:<4} {agree:>5} {tk.top5_overlap:>9}/5"

    def notes(self, m, any_results):
        return seeded_note(m, "logits and top-k agreement are meaningful, the classes are not")
