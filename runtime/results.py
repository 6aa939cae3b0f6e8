"""What a bundle's kind returns, one record type per task, shared by every kind of that task
(``gfl`` and ``rpn_psroi`` both give Detections). A new task (segmentation masks) adds its
record here."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Detection", "Classification", "describe_detection", "describe_classification"]


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


def describe_detection(d: Detection) -> str:
    """One detection as a line of text (litedet CLI output)."""
    return f"{d.name:<16} {d.score:.3f}  [{d.x1:.1f}, {d.y1:.1f}, {d.x2:.1f}, {d.y2:.1f}]"


def describe_classification(c: Classification) -> str:
    return f"{c.prob:7.4f}  {c.label:>5}  {c.name}"
