"""Postprocess kind ``argmax_mask`` (semantic segmentation: BiSeNet, DFANet): one ``logits``
output [C, h, w] -> a class id per pixel of the original image.

Steps, each a small pure function mirrored line by line in the C++ core
(android_demo/app/src/main/cpp/litedet_argmax_mask.cpp), float32 throughout:
1. ``upsample: graph``: the graph's logits are at the network input's size already.
   ``upsample: runtime``: the graph ends at the head's stride and :func:`upsample_argmax`
   interpolates the logits bilinearly to the input size (align_corners False, as torch's
   ``F.interpolate`` and ncnn's Interp compute it) while taking the argmax, pixel by pixel,
   without materialising the C x H x W upsampled tensor;
2. the argmax over classes, ties to the LOWEST class index (a strict '>' scan, as np.argmax);
3. :func:`map_mask_back`: the input-size label map -> the original image's size, nearest
   neighbour in exact integer arithmetic: source x = pad_left + floor(x * resized_w / src_w)
   (OpenCV's and torch's 'nearest', without a half-pixel shift).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..results import SegmentationMask, describe_segmentation
from . import KindSpec, PostprocessKind, register_kind, rng, stride_planes

if TYPE_CHECKING:
    from litedet.runtime.manifest import Manifest

__all__ = ["ArgmaxMaskSpec", "UPSAMPLES", "bilinear_taps", "upsample_bilinear", "upsample_argmax", "argmax_labels", "map_mask_back",
           "network_labels", "segment_outputs", "MAX_SEGMENTATION_CLASSES"]

UPSAMPLES = ("graph", "runtime")
MAX_SEGMENTATION_CLASSES = 256  # the mask is uint8
SEGMENTATION_RESIZES = ("stretch_multiple", "stretch", "letterbox", "letterbox_top_left")


@dataclass(kw_only=True)
class ArgmaxMaskSpec(KindSpec):
    kind: str = "argmax_mask"
    upsample: str = "graph"  # graph: logits at the input size; runtime: at head_stride, upsampled here
    head_stride: int = field(default=1, metadata=rng(1, 64))  # the logits' stride (1 when upsample is graph)
    # the overlay colour of each class, R, G, B per class (the Android demo draws with it)
    palette: list[int] = field(default_factory=list, metadata=rng(0, 255))


def bilinear_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output index: the two source indices and the weight of the second, as torch's
    bilinear with align_corners False: src = max(0, (dst + 0.5) * in / out - 0.5)."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (src - i0.astype(np.float32)).astype(np.float32)


def upsample_bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """[C, h, w] -> [C, out_h, out_w] float32, value = (1 - ly) * ((1 - lx) * a + lx * b) + ly * ((1 - lx) * c + lx * d)
    with the taps of :func:`bilinear_taps` (the C++ core computes each value with these operations)."""
    x = x.astype(np.float32, copy=False)
    y0, y1, ly = bilinear_taps(out_h, x.shape[1])
    x0, x1, lx = bilinear_taps(out_w, x.shape[2])
    one = np.float32(1.0)
    lx_, ly_ = lx[None, None, :], ly[None, :, None]
    top = (one - lx_) * x[:, y0][:, :, x0] + lx_ * x[:, y0][:, :, x1]
    bot = (one - lx_) * x[:, y1][:, :, x0] + lx_ * x[:, y1][:, :, x1]
    return (one - ly_) * top + ly_ * bot


def upsample_argmax(logits: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """[C, h, w] logits -> [out_h, out_w] uint8 labels: the argmax (lowest index on ties) of the
    bilinearly upsampled logits, one class at a time (memory of two planes, not C of them)."""
    best = np.zeros((out_h, out_w), np.uint8)
    best_v = upsample_bilinear(logits[:1], out_h, out_w)[0]
    for k in range(1, logits.shape[0]):
        v = upsample_bilinear(logits[k:k + 1], out_h, out_w)[0]
        better = v > best_v  # strict: a tie keeps the lower class
        best_v = np.where(better, v, best_v)
        best[better] = k
    return best


def argmax_labels(logits: np.ndarray) -> np.ndarray:
    """[C, H, W] -> [H, W] uint8, the lowest class index among equal maxima."""
    return np.argmax(logits, axis=0).astype(np.uint8)


def map_mask_back(labels: np.ndarray, lb: Any) -> np.ndarray:
    """Input-size labels -> the original image's [src_h, src_w], nearest neighbour:
    x_in = pad_left + floor(x * resized_w / src_w) (exact integers), the same for y."""
    xs = lb.pad_left + (np.arange(lb.src_w, dtype=np.int64) * lb.resized_w) // lb.src_w
    ys = lb.pad_top + (np.arange(lb.src_h, dtype=np.int64) * lb.resized_h) // lb.src_h
    return np.ascontiguousarray(labels[ys[:, None], xs[None, :]])


def _logits_of(m: "Manifest", outputs: dict[str, np.ndarray], in_w: int, in_h: int) -> np.ndarray:
    (o,) = m.outputs_with_role("logits")
    return stride_planes(outputs, o, m.postprocess.head_stride, in_w, in_h)


def network_labels(m: "Manifest", outputs: dict[str, np.ndarray], in_w: int, in_h: int) -> np.ndarray:
    """The label map at the network input's size (before mapping back)."""
    x = _logits_of(m, outputs, in_w, in_h)
    if m.postprocess.upsample == "runtime":
        return upsample_argmax(x, in_h, in_w)
    return argmax_labels(x)


def segment_outputs(m: "Manifest", outputs: dict[str, np.ndarray], geometry: Any) -> list[SegmentationMask]:
    """Raw outputs -> one SegmentationMask in the original image's pixels."""
    labels = network_labels(m, outputs, geometry.in_w, geometry.in_h)
    return [SegmentationMask(map_mask_back(labels, geometry), list(m.class_names))]


def _validate(m: "Manifest") -> None:
    p = m.postprocess
    logits = m.outputs_with_role("logits")
    if len(logits) != 1:
        raise ValueError(f"a segmentation bundle needs exactly one output with role 'logits', found {len(logits)}")
    if not 1 <= m.num_classes <= MAX_SEGMENTATION_CLASSES:
        raise ValueError(f"{m.num_classes} class names; a segmentation mask is uint8: 1 to "
                         f"{MAX_SEGMENTATION_CLASSES} classes")
    if logits[0].channels != m.num_classes:
        raise ValueError(f"output {logits[0].blob!r} has {logits[0].channels} logits per pixel but there are "
                         f"{m.num_classes} class names")
    if p.upsample not in UPSAMPLES:
        raise ValueError(f"postprocess.upsample is {p.upsample!r}; expected one of {', '.join(UPSAMPLES)}")
    if (p.upsample == "graph") != (p.head_stride == 1):
        raise ValueError(f"postprocess.head_stride is {p.head_stride} with upsample {p.upsample!r}: the graph's "
                         "logits are at stride 1 exactly when it upsamples them itself")
    if logits[0].stride != p.head_stride:
        raise ValueError(f"output {logits[0].blob!r} is at stride {logits[0].stride}; postprocess.head_stride is "
                         f"{p.head_stride}")
    if m.resize.pad_multiple % p.head_stride:
        raise ValueError(f"resize.pad_multiple {m.resize.pad_multiple} must be a multiple of postprocess.head_stride "
                         f"{p.head_stride}")
    if len(p.palette) != 3 * m.num_classes:
        raise ValueError(f"postprocess.palette has {len(p.palette)} values; {m.num_classes} classes need "
                         f"{3 * m.num_classes} (R, G, B each)")
    if m.resize.policy not in SEGMENTATION_RESIZES:
        raise ValueError(f"resize.policy is {m.resize.policy!r}; postprocess kind 'argmax_mask' takes one of "
                         f"{', '.join(SEGMENTATION_RESIZES)}")


def _device_values(m: "Manifest", names: dict[str, str]) -> dict:
    p = m.postprocess
    (o,) = m.outputs_with_role("logits")
    return {"logits_blob": o.blob, "upsample": p.upsample, "head_stride": p.head_stride, "palette": p.palette}


KIND = register_kind(PostprocessKind("argmax_mask", "segmentation", ArgmaxMaskSpec, ("logits",), _validate,
                                     segment_outputs, describe_segmentation, device_values=_device_values))
