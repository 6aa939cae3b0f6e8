"""What a bundle's kind returns, one record type per task, shared by every kind of that task
(``gfl`` and ``rpn_psroi`` both give Detections). A new task (segmentation masks) adds its
record here."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Detection", "detections_from", "Classification", "SegmentationMask", "describe_detection", "describe_classification",
           "describe_segmentation"]


@dataclass
class Detection:
    """A box in original-image pixels, its score and class."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    label: int
    name: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Classification:
    label: int
    name: str
    prob: float

    def to_dict(self) -> dict:
        return asdict(self)


def detections_from(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, names: list[str]) -> list[Detection]:
    """[K, 4] boxes in image pixels, [K] scores and labels -> Detection records, in that order."""
    return [Detection(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(s), int(lab), names[int(lab)])
            for b, s, lab in zip(boxes, scores, labels)]


def describe_detection(d: Detection) -> str:
    """One detection as a line of text (litedet CLI output)."""
    return f"{d.name:<16} {d.score:.3f}  [{d.x1:.1f}, {d.y1:.1f}, {d.x2:.1f}, {d.y2:.1f}]"


def describe_classification(c: Classification) -> str:
    return f"{c.prob:7.4f}  {c.label:>5}  {c.name}"


@dataclass
class SegmentationMask:
    """A class id per pixel of the original image (H x W uint8, ``argmax_mask``), and the class names."""

    mask: np.ndarray
    class_names: list[str]

    def counts(self) -> dict[str, int]:
        """Pixels per class name, classes that have none left out, in class order."""
        n = np.bincount(self.mask.reshape(-1), minlength=len(self.class_names))
        return {self.class_names[i]: int(c) for i, c in enumerate(n) if c}

    def to_dict(self) -> dict:
        return {"width": int(self.mask.shape[1]), "height": int(self.mask.shape[0]), "pixels": self.counts()}


def describe_segmentation(s: SegmentationMask) -> str:
    total = max(1, s.mask.size)
    return "\n".join(f"{name:<16} {n:>9} px  {100.0 * n / total:5.1f} %" for name, n in
                     sorted(s.counts().items(), key=lambda kv: -kv[1]))
