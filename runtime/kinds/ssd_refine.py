"""Postprocess kind ``ssd_refine`` (RefineDet): the two-step anchor refinement that ncnn's
DetectionOutput cannot express (it has no input for the ARM's objectness).

Outputs, all levels concatenated cell-major then anchor (the priors' order): ``arm_loc`` [N, 4]
offsets, ``arm_conf`` [N, 2] softmax (column 1: objectness), ``odm_loc`` [N, 4] offsets,
``odm_conf`` [N, C + 1] softmax (column 0: background). Small pure functions in the order the C++
core runs them (android_demo/app/src/main/cpp/litedet_ssd_refine.cpp):

1. :func:`prior_boxes`: per level (step s, min size m), per cell (row i, column j), per aspect
   ratio 1, r, 1/r: centre ((j + 0.5) / (in_w / s), (i + 0.5) / (in_h / s)), size
   (m / in_w * sqrt(r), m / in_h / sqrt(r)) (m and r as float32, the arithmetic in float64, then
   float32), clamped to [0, 1] (upstream's
   PriorBox clip: the centre-form values), normalised to the input;
2. :func:`decode_boxes` (upstream's ``decode``): cx = pcx + l0 * v0 * pw, w = pw * exp(l2 * v1),
   then corners; the ARM offsets refine the priors, :func:`center_size` turns the refined corners
   back into centres, and the ODM offsets decode on them;
3. an anchor whose objectness is <= ``objectness_threshold`` scores 0 for every class;
4. per foreground class: scores > ``score_threshold`` (strict), the ``pre_nms_top_k`` best
   (stable), boxes scaled to input pixels, NMS (``runtime/boxes.py``, class-wise) over all
   classes together, the best ``max_detections`` kept, mapped back to the image and clipped.

Float32 throughout (exp as numpy's; the C++ core uses expf: a few ulp apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..boxes import nms
from ..letterbox import map_boxes_back
from ..results import Detection, describe_detection, detections_from
from . import BundleError, KindSpec, PostprocessKind, register_kind, rng

if TYPE_CHECKING:
    from litedet.runtime.manifest import Manifest

__all__ = ["SsdRefineSpec", "prior_boxes", "prior_count", "decode_boxes", "center_size", "encode_boxes",
           "refined_candidates", "ssd_refine_outputs", "SSD_REFINE_ROLES"]

SSD_REFINE_ROLES = ("arm_loc", "arm_conf", "odm_loc", "odm_conf")


@dataclass(kw_only=True)
class SsdRefineSpec(KindSpec):
    kind: str = "ssd_refine"
    steps: list[int] = field(metadata=rng(1, 1024))
    min_sizes: list[float] = field(metadata=rng(0.0, 65536.0))  # one per step, in input pixels
    aspect_ratios: list[float] = field(metadata=rng(0.01, 100.0))  # each adds r and 1/r to ratio 1
    variances: list[float] = field(metadata=rng(1e-6, 10.0))  # (centre, size)
    clip: bool = True
    objectness_threshold: float = field(default=0.01, metadata=rng(0.0, 1.0))
    score_threshold: float = field(default=0.01, metadata=rng(0.0, 1.0))
    nms_threshold: float = field(default=0.45, metadata=rng(0.0, 1.0))
    pre_nms_top_k: int = field(default=1000, metadata=rng(1, 10_000_000))
    max_detections: int = field(default=200, metadata=rng(1, 10_000_000))


def level_size(in_size: int, step: int) -> int:
    """Cells of a level along one side: the convs' ceil(in / step)."""
    return -(-in_size // step)


def prior_count(in_w: int, in_h: int, steps: list[int], anchors_per_cell: int) -> int:
    return sum(level_size(in_w, s) * level_size(in_h, s) for s in steps) * anchors_per_cell


def prior_boxes(in_w: int, in_h: int, steps: list[int], min_sizes: list[float], aspect_ratios: list[float],
                clip: bool) -> np.ndarray:
    """[N, 4] priors (cx, cy, w, h) normalised to the input, cell-major then anchor per level."""
    out = []
    # sizes and ratios as float32 (as the device config holds them), the arithmetic in float64
    ratios = [float(np.float32(r)) for r in aspect_ratios]
    for step, m in zip(steps, min_sizes):
        m = float(np.float32(m))
        fw, fh = level_size(in_w, step), level_size(in_h, step)
        fkx, fky = in_w / step, in_h / step
        sx, sy = m / in_w, m / in_h
        sizes = [(sx, sy)]
        for r in ratios:
            q = float(np.sqrt(r))
            sizes += [(sx * q, sy / q), (sx / q, sy * q)]
        i, j = np.meshgrid(np.arange(fh, dtype=np.float64), np.arange(fw, dtype=np.float64), indexing="ij")
        cx, cy = (j.reshape(-1) + 0.5) / fkx, (i.reshape(-1) + 0.5) / fky
        level = np.empty((cx.size, len(sizes), 4), np.float64)
        level[:, :, 0], level[:, :, 1] = cx[:, None], cy[:, None]
        level[:, :, 2] = np.array([s[0] for s in sizes])[None]
        level[:, :, 3] = np.array([s[1] for s in sizes])[None]
        out.append(level.reshape(-1, 4))
    p = np.concatenate(out).astype(np.float32) if out else np.zeros((0, 4), np.float32)
    return np.clip(p, np.float32(0.0), np.float32(1.0)) if clip else p


def decode_boxes(loc: np.ndarray, priors: np.ndarray, variances: list[float]) -> np.ndarray:
    """[N, 4] offsets on [N, 4] centre-form priors -> [N, 4] corners x1 y1 x2 y2 (upstream's decode)."""
    v0, v1 = np.float32(variances[0]), np.float32(variances[1])
    loc = loc.astype(np.float32, copy=False)
    cxcy = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
    wh = priors[:, 2:] * np.exp(loc[:, 2:] * v1)
    x1y1 = cxcy - wh / np.float32(2.0)
    return np.concatenate([x1y1, x1y1 + wh], axis=1)


def center_size(boxes: np.ndarray) -> np.ndarray:
    """Corners -> (cx, cy, w, h) (upstream's center_size)."""
    return np.concatenate([(boxes[:, 2:] + boxes[:, :2]) / np.float32(2.0), boxes[:, 2:] - boxes[:, :2]], axis=1)


def encode_boxes(boxes: np.ndarray, priors: np.ndarray, variances: list[float]) -> np.ndarray:
    """The inverse of :func:`decode_boxes` (upstream's encode, used in training): corners -> offsets."""
    c = center_size(boxes.astype(np.float64))
    p = priors.astype(np.float64)
    return np.concatenate([(c[:, :2] - p[:, :2]) / (variances[0] * p[:, 2:]),
                           np.log(c[:, 2:] / p[:, 2:]) / variances[1]], axis=1)


@dataclass
class Refined:
    boxes: np.ndarray  # [K, 4] in input pixels
    scores: np.ndarray  # [K]
    labels: np.ndarray  # [K] foreground class index (the ODM's column - 1)


def _tensors(m: "Manifest", outputs: dict[str, np.ndarray], n: int) -> list[np.ndarray]:
    out = []
    for role in SSD_REFINE_ROLES:
        (o,) = m.outputs_with_role(role)
        x = np.asarray(outputs[o.blob], dtype=np.float32)
        x = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(-1, 1)
        if x.shape != (n, o.channels):
            raise BundleError(f"output {o.blob!r} has shape {x.shape}; the priors of this input are {n} "
                              f"(steps {m.postprocess.steps}, {1 + 2 * len(m.postprocess.aspect_ratios)} per cell), "
                              f"so it needs ({n}, {o.channels})")
        if not np.isfinite(x).all():
            raise BundleError(f"output {o.blob!r} holds a value that is not finite (NaN or inf): the graph is broken")
        out.append(x)
    for x, role in ((out[1], "arm_conf"), (out[3], "odm_conf")):
        if x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise BundleError(f"output {role!r} is outside [0, 1]: the graph must apply the softmax (once); "
                              "these look like raw logits")
    return out


def refined_candidates(m: "Manifest", outputs: dict[str, np.ndarray], in_w: int, in_h: int) -> Refined:
    """Steps 1-4 up to NMS: every (anchor, class) that passes, with its box in input pixels."""
    p = m.postprocess
    priors = prior_boxes(in_w, in_h, p.steps, p.min_sizes, p.aspect_ratios, p.clip)
    arm_loc, arm_conf, odm_loc, odm_conf = _tensors(m, outputs, priors.shape[0])
    refined = center_size(decode_boxes(arm_loc, priors, p.variances))
    boxes = decode_boxes(odm_loc, refined, p.variances)
    boxes = boxes * np.array([in_w, in_h, in_w, in_h], np.float32)
    objectness_ok = arm_conf[:, 1] > np.float32(p.objectness_threshold)
    parts_i, parts_c = [], []
    for c in range(1, odm_conf.shape[1]):
        sc = odm_conf[:, c]
        idx = np.flatnonzero(objectness_ok & (sc > np.float32(p.score_threshold)))
        if idx.size > p.pre_nms_top_k:
            idx = idx[np.argsort(-sc[idx], kind="stable")[:p.pre_nms_top_k]]
        parts_i.append(idx)
        parts_c.append(np.full(idx.size, c, np.int64))
    idx = np.concatenate(parts_i) if parts_i else np.zeros(0, np.int64)
    cls = np.concatenate(parts_c) if parts_c else np.zeros(0, np.int64)
    return Refined(boxes[idx].astype(np.float32), odm_conf[idx, cls].astype(np.float32), cls - 1)


def ssd_refine_outputs(m: "Manifest", outputs: dict[str, np.ndarray], geometry: Any) -> list[Detection]:
    p = m.postprocess
    c = refined_candidates(m, outputs, geometry.in_w, geometry.in_h)
    keep = nms(c.boxes, c.scores, c.labels, p.nms_threshold, False, p.max_detections)
    boxes = map_boxes_back(c.boxes[keep], geometry)
    return detections_from(boxes, c.scores[keep], c.labels[keep], m.class_names)


def _validate(m: "Manifest") -> None:
    p = m.postprocess

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ValueError(msg)

    for role in SSD_REFINE_ROLES:
        need(len(m.outputs_with_role(role)) == 1, f"an ssd_refine bundle needs exactly one output with role {role!r}")
    need(len(p.steps) > 0 and len(p.min_sizes) == len(p.steps),
         f"postprocess.min_sizes has {len(p.min_sizes)} values; postprocess.steps {p.steps} needs one per step")
    need(len(p.variances) == 2, f"postprocess.variances has {len(p.variances)} values; expected 2 (centre, size)")
    need(m.resize.pad_multiple % max(p.steps) == 0,
         f"resize.pad_multiple {m.resize.pad_multiple} must be a multiple of the largest step {max(p.steps)}")
    want = {"arm_loc": 4, "arm_conf": 2, "odm_loc": 4, "odm_conf": m.num_classes + 1}
    for role, n in want.items():
        (o,) = m.outputs_with_role(role)
        need(o.channels == n, f"output {o.blob!r} ({role}) has {o.channels} columns; expected {n}"
             + (f" (background + {m.num_classes} class names)" if role == "odm_conf" else ""))


def _device_values(m: "Manifest", names: dict[str, str]) -> dict:
    p = m.postprocess
    blob = {role: m.outputs_with_role(role)[0].blob for role in SSD_REFINE_ROLES}
    return {"arm_loc_blob": blob["arm_loc"], "arm_conf_blob": blob["arm_conf"], "odm_loc_blob": blob["odm_loc"],
            "odm_conf_blob": blob["odm_conf"], "steps": p.steps, "min_sizes": p.min_sizes,
            "aspect_ratios": p.aspect_ratios, "variances": p.variances, "clip": p.clip,
            "objectness_threshold": p.objectness_threshold, "score_threshold": p.score_threshold,
            "nms_threshold": p.nms_threshold, "pre_nms_top_k": p.pre_nms_top_k, "max_detections": p.max_detections}


KIND = register_kind(PostprocessKind("ssd_refine", "detection", SsdRefineSpec, SSD_REFINE_ROLES, _validate,
                                     ssd_refine_outputs, describe_detection, device_values=_device_values))
