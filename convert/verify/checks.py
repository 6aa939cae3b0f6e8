"""How two results of one kind are compared in parity: detections, top-k classes, ...

A :class:`ResultCheck` turns (reference outputs and results, test outputs and
results, tensor stats, limits) into a record for the report and an optional
failure. Family adapters name theirs (``FamilyAdapter.check``); every parity
(torch <-> ncnn, x86 <-> ARM) calls it the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .compare import (CppMatch, DetectionMatch, Limits, TensorStats, TopKMatch, cpp_match, detection_failure,
                      match_detections, topk_match)

__all__ = ["ResultCheck", "DetectionCheck", "TopKCheck", "seeded_note"]


def seeded_note(m, what: str) -> list[str]:
    if m.provenance.get("weights") == "seeded-random":
        return [f"weights are seeded random weights (UNTRAINED): {what}"]
    return []


class ResultCheck:
    """Base: compare tensors only. Subclasses add the result comparison."""

    header = ""  # column titles of ``row`` in the text report
    has_cpp = False  # the C++ core (android_demo) implements this kind

    def judge_tensors(self, fp16: bool) -> bool:
        """Whether tensor limits fail a comparison at this precision."""
        return True

    def compare(self, m, name: str, key: str, ref_out: dict[str, np.ndarray], test_out: dict[str, np.ndarray],
                ref_res: list, test_res: list, stats: list[TensorStats], lim: Limits) -> tuple[Any, str | None]:
        return None, None

    def row(self, record: Any) -> str:
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
    header = f"{'dets r/t':>8} {'match':>5} {'miss':>4} {'extra':>5} {'bord':>4} {'flip':>4} {'minIoU':>6} {'dScore':>7}"

    def compare(self, m, name, key, ref_out, test_out, ref_res, test_res, stats, lim):
        p = m.postprocess
        dm = match_detections(ref_res, test_res, lim.match_iou, p.score_threshold, lim.borderline_margin,
                              p.max_detections)
        return dm, detection_failure(name, key, dm, lim)

    def row(self, dm: DetectionMatch) -> str:
        return (f"{dm.reference:>3}/{dm.test:<4} {dm.matched:>5} {dm.missed:>4} {dm.extra:>5} {dm.borderline:>4} "
                f"{dm.label_flips:>4} {dm.min_iou:>6.3f} {dm.max_score_diff:>7.4f}")

    def notes(self, m, any_results):
        notes = seeded_note(m, "tensor and detection parity are meaningful, but its detections are not real objects")
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
                cv2.putText(vis, f"{d.name} {d.score:.2f}", (int(d.x1) + 2, int(d.y1) + 14 + (0 if thick == 3 else 16)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
        cv2.putText(vis, "green: torch fp32   red: ncnn fp16", (4, vis.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1, cv2.LINE_AA)
        cv2.imwrite(str(path), vis)

    def cpp(self, core, m, outputs, geometry):
        from litedet.runtime.kinds.gfl import postprocess_outputs

        c = cpp_match(postprocess_outputs(m, outputs, geometry), core.postprocess(m, outputs, geometry), geometry)
        bad = not c.identical or c.max_box_diff > 1e-4 or c.max_score_diff > 1e-4
        return c, (f"C++ postprocessing differs from Python: {c}" if bad else None)


class TopKCheck(ResultCheck):
    """Top-1 must agree unless torch's own margin between the two classes is
    within twice the measured logit error (a near-tie the error explains)."""

    header = f"{'top1 t/n':>9} {'agree':>5} {'top5 overlap':>12}"

    def judge_tensors(self, fp16: bool) -> bool:
        # fp32 must be the same network; for fp16 the criterion is top-1 agreement
        # and the logit error is reported, not thresholded
        return not fp16

    def compare(self, m, name, key, ref_out, test_out, ref_res, test_res, stats, lim):
        (o,) = m.outputs_with_role("logits")
        t, n = ref_out[o.blob].reshape(-1), test_out[o.blob].reshape(-1)
        ma = stats[0].max_abs
        tk = topk_match(t, n, ma)
        why = None if tk.explained else (
            f"{name}: {key} top-1 is class {tk.test_top1}, torch says {tk.torch_top1} with a logit "
            f"margin {tk.margin:.4f} larger than twice the max logit error {ma:.2e}")
        return tk, why

    def row(self, tk: TopKMatch) -> str:
        agree = "yes" if tk.top1_agrees else ("tie" if tk.explained else "NO")
        return f"{tk.torch_top1:>4}/{tk.test_top1:<4} {agree:>5} {tk.top5_overlap:>9}/5"

    def notes(self, m, any_results):
        return seeded_note(m, "logits and top-k agreement are meaningful, the classes are not")
