"""Postprocess kind ``softmax_topk``: one ``logits`` output -> softmax -> top-k classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..results import Classification, describe_classification
from . import BundleError, KindSpec, PostprocessKind, register_kind, rng

if TYPE_CHECKING:
    from litedet.runtime.manifest import Manifest

__all__ = ["Classification", "SoftmaxTopkSpec", "softmax", "top_k", "classify_outputs"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, float32."""
    x = logits.astype(np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)

def top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, best first; ties keep the lower index."""
    return np.argsort(-probs, kind="stable")[: max(0, k)]


@dataclass(kw_only=True)
class SoftmaxTopkSpec(KindSpec):
    kind: str = "softmax_topk"
    top_k: int = field(default=5, metadata=rng(1, 100_000))


CLASSIFIER_RESIZES = ("center_crop", "stretch", "letterbox", "letterbox_top_left")


def _validate(m: "Manifest") -> None:
    logits = m.outputs_with_role("logits")
    if len(logits) != 1:
        raise ValueError(f"a classifier needs exactly one output with role 'logits', found {len(logits)}")
    if logits[0].channels != m.num_classes:
        raise ValueError(f"output {logits[0].blob!r} has {logits[0].channels} logits but there are "
                         f"{m.num_classes} class names")
    if m.postprocess.top_k <= 0:
        raise ValueError("postprocess.top_k must be positive")
    # any geometry: the results are classes, never mapped back to the image
    if m.resize.policy not in CLASSIFIER_RESIZES:
        raise ValueError(f"resize.policy is {m.resize.policy!r}; postprocess kind 'softmax_topk' takes one of "
                         f"{', '.join(CLASSIFIER_RESIZES)}")


def classify_outputs(m: "Manifest", outputs: dict[str, np.ndarray], geometry: Any = None,
                     k: int | None = None) -> list[Classification]:
    """The ``k`` (default: the manifest's top_k) most probable classes, best first."""
    if k is not None and k < 1:
        raise ValueError(f"top-k must be at least 1, got {k}")
    (o,) = m.outputs_with_role("logits")
    logits = outputs[o.blob].reshape(-1)
    if logits.size != o.channels:
        raise BundleError(f"output {o.blob!r} has {logits.size} values; the manifest says {o.channels} classes")
    probs = softmax(logits)
    return [Classification(int(i), m.class_names[int(i)], float(probs[i])) for i in top_k(probs, k or m.postprocess.top_k)]


KIND = register_kind(PostprocessKind("softmax_topk", "classification", SoftmaxTopkSpec, ("logits",), _validate,
                                     classify_outputs, describe_classification))
