"""The ctypes binding of the 'rpn_psroi' kind's C++ steps (litedet_rpn_psroi_capi.cpp over
litedet_rpn_psroi.cpp): anchors, box decoding, proposals, PSRoIAlign and the R-CNN detections
of two-stage detectors, with the names and arguments of runtime/kinds/rpn_psroi{,_ops}.py."""

from __future__ import annotations

import ctypes
from typing import Mapping

import numpy as np

from litedet.runtime.devconfig import device_config_text
from litedet.runtime.kinds.rpn_psroi import (POOLED, PROPOSAL_SCORES, PROPOSALS, RCNN_DELTAS, RCNN_SCORES,
                                             postprocess_outputs)
from litedet.runtime.letterbox import Letterbox
from litedet.runtime.manifest import Manifest
from litedet.runtime.results import Detection

from .compare import cpp_match
from .cpp_core import (ERR, ERR_LEN, F32P, CDetection, CLetterbox, CppCoreError, CppKind, bind, detections_of, f32,
                       register_cpp_kind)


class RpnPsroiCpp(CppKind):
    """The two-stage glue and decode in the C++ core."""

    def __init__(self, core) -> None:
        super().__init__(core)
        i32, i32p, lib = ctypes.c_int, ctypes.POINTER(ctypes.c_int), self._lib
        bind(lib, "litedet_make_anchors", [i32, i32, i32, F32P, i32, F32P, i32, ctypes.c_float, F32P, *ERR])
        bind(lib, "litedet_decode_boxes", [F32P, F32P, i32, F32P, ctypes.c_float, F32P, *ERR])
        bind(lib, "litedet_proposals", [ctypes.c_char_p, F32P, F32P, i32, i32, i32, i32, i32, F32P, F32P, i32, i32p,
                                        *ERR])
        bind(lib, "litedet_ps_roi_align", [F32P, i32, i32, i32, F32P, i32, ctypes.c_float, i32, i32, F32P, *ERR])
        bind(lib, "litedet_rcnn_detections", [ctypes.c_char_p, ctypes.POINTER(CLetterbox), F32P, i32, F32P, F32P,
                                              ctypes.POINTER(CDetection), i32, i32p, *ERR])

    def make_anchors(self, feat_w: int, feat_h: int, stride: int, sizes, ratios, offset: float) -> np.ndarray:
        """As runtime.kinds.rpn_psroi_ops.make_anchors."""
        sz, ra = f32(np.asarray(sizes)).reshape(-1), f32(np.asarray(ratios)).reshape(-1)
        out = np.zeros((feat_w * feat_h * len(sz) * len(ra), 4), np.float32)
        err = ctypes.create_string_buffer(ERR_LEN)
        rc = self._lib.litedet_make_anchors(feat_w, feat_h, stride, sz.ctypes.data_as(F32P), len(sz),
                                            ra.ctypes.data_as(F32P), len(ra), float(np.float32(offset)),
                                            out.ctypes.data_as(F32P), err, ERR_LEN)
        self.check(rc, err, "make_anchors")
        return out

    def decode_boxes(self, ref: np.ndarray, deltas: np.ndarray, weights, box_clip: float) -> np.ndarray:
        """As runtime.kinds.rpn_psroi_ops.decode_boxes."""
        r, d, w = f32(ref).reshape(-1, 4), f32(deltas).reshape(-1, 4), f32(np.asarray(weights)).reshape(4)
        if r.shape != d.shape:
            raise ValueError(f"decode_boxes needs as many boxes as deltas; got {r.shape} and {d.shape}")
        out = np.zeros_like(r)
        err = ctypes.create_string_buffer(ERR_LEN)
        rc = self._lib.litedet_decode_boxes(r.ctypes.data_as(F32P), d.ctypes.data_as(F32P), len(r),
                                            w.ctypes.data_as(F32P), float(np.float32(box_clip)),
                                            out.ctypes.data_as(F32P), err, ERR_LEN)
        self.check(rc, err, "decode_boxes")
        return out

    def proposals(self, manifest: Manifest, outputs: Mapping[str, np.ndarray], in_w: int, in_h: int):
        """Stage-1 outputs -> (boxes [K, 4], scores [K]), as runtime.kinds.rpn_psroi.proposals_of."""
        p = manifest.postprocess
        cfg = device_config_text(manifest, "m.param", "m.bin").encode("utf-8")
        fw, fh = -(-in_w // p.stride), -(-in_h // p.stride)
        obj = f32(outputs[manifest.outputs_with_role("rpn_objectness")[0].blob]).reshape(-1)
        dl = f32(outputs[manifest.outputs_with_role("rpn_deltas")[0].blob]).reshape(-1)
        a = len(p.anchor_sizes) * len(p.anchor_ratios)
        if obj.size != a * fw * fh or dl.size != 4 * obj.size:
            raise CppCoreError(f"stage-1 maps hold {obj.size} logits and {dl.size} deltas; a {in_w}x{in_h} input "
                               f"needs {a * fw * fh} and {4 * a * fw * fh}")
        cap = int(p.rpn_post_nms_top_n)
        boxes, scores = np.zeros((cap, 4), np.float32), np.zeros(cap, np.float32)
        count = ctypes.c_int(0)
        err = ctypes.create_string_buffer(ERR_LEN)
        rc = self._lib.litedet_proposals(cfg, obj.ctypes.data_as(F32P), dl.ctypes.data_as(F32P), a, fw, fh, in_w,
                                         in_h, boxes.ctypes.data_as(F32P), scores.ctypes.data_as(F32P), cap,
                                         ctypes.byref(count), err, ERR_LEN)
        self.check(rc, err, "proposals")
        return boxes[:count.value].copy(), scores[:count.value].copy()

    def ps_roi_align(self, feat: np.ndarray, rois: np.ndarray, spatial_scale: float, pooled: int,
                     sampling_ratio: int) -> np.ndarray:
        """As runtime.kinds.rpn_psroi_ops.ps_roi_align: feat [C, H, W], rois [K, 4] -> [K, C / P^2, P, P]."""
        f, r = f32(feat), f32(rois).reshape(-1, 4)
        c, h, w = f.shape
        if c % (pooled * pooled):
            raise CppCoreError(f"PSRoIAlign input has {c} channels; it needs a multiple of {pooled * pooled}")
        out = np.zeros((len(r), c // (pooled * pooled), pooled, pooled), np.float32)
        err = ctypes.create_string_buffer(ERR_LEN)
        rc = self._lib.litedet_ps_roi_align(f.ctypes.data_as(F32P), c, h, w, r.ctypes.data_as(F32P), len(r),
                                            float(np.float32(spatial_scale)), pooled, sampling_ratio,
                                            out.ctypes.data_as(F32P), err, ERR_LEN)
        self.check(rc, err, "ps_roi_align")
        return out

    def rcnn_detections(self, manifest: Manifest, outputs: Mapping[str, np.ndarray], lb: Letterbox) -> list[Detection]:
        """Completed outputs (proposals + the head's) -> detections, as the rpn_psroi kind's decode."""
        cfg = device_config_text(manifest, "m.param", "m.bin").encode("utf-8")
        rois = f32(outputs[PROPOSALS]).reshape(-1, 4)
        c1 = manifest.num_classes + 1
        d = 4 if manifest.postprocess.class_agnostic_boxes else 4 * c1
        probs, deltas = f32(outputs[RCNN_SCORES]).reshape(-1, c1), f32(outputs[RCNN_DELTAS]).reshape(-1, d)
        if not len(probs) == len(deltas) == len(rois):
            raise CppCoreError(f"{len(rois)} proposals but {len(probs)} score rows and {len(deltas)} delta rows")
        c_lb = CLetterbox(*(int(getattr(lb, name)) for name, _ in CLetterbox._fields_))
        cap = int(manifest.postprocess.max_detections)
        out = (CDetection * cap)()
        count = ctypes.c_int(0)
        err = ctypes.create_string_buffer(ERR_LEN)
        rc = self._lib.litedet_rcnn_detections(cfg, ctypes.byref(c_lb), rois.ctypes.data_as(F32P), len(rois),
                                               probs.ctypes.data_as(F32P), deltas.ctypes.data_as(F32P), out, cap,
                                               ctypes.byref(count), err, ERR_LEN)
        self.check(rc, err, "rcnn_detections")
        return detections_of(out, count.value, manifest.class_names)

    def match(self, m: Manifest, outputs: Mapping[str, np.ndarray], lb: Letterbox):
        """C++ vs Python on the same ncnn outputs, stage by stage: proposals (from stage 1), PSRoIAlign
        (on Python's proposals) and detections (from the same head outputs). A CppMatch of the
        detections whose ``details`` say how far the glue's tensors are apart."""
        p = m.postprocess
        boxes, scores = self.proposals(m, outputs, lb.in_w, lb.in_h)
        py_boxes, py_scores = outputs[PROPOSALS], outputs[PROPOSAL_SCORES]
        same_props = boxes.shape == py_boxes.shape
        feat = outputs[m.outputs_with_role("psroi_features")[0].blob]
        fh, fw = -(-lb.in_h // p.stride), -(-lb.in_w // p.stride)
        pooled = self.ps_roi_align(np.asarray(feat).reshape(-1, fh, fw), py_boxes, 1.0 / p.stride, p.pooled_size,
                                   p.sampling_ratio).reshape(len(py_boxes), -1)
        c = cpp_match(postprocess_outputs(m, dict(outputs), lb), self.rcnn_detections(m, outputs, lb), lb)
        c.details = {
            "proposals_python": int(len(py_boxes)), "proposals_cpp": int(len(boxes)),
            "proposal_box_diff": float(np.abs(boxes - py_boxes).max(initial=0.0)) if same_props else float("inf"),
            "proposal_score_diff": float(np.abs(scores - py_scores).max(initial=0.0)) if same_props else float("inf"),
            "pooled_max_abs": float(np.abs(pooled - outputs[POOLED]).max(initial=0.0)),
        }
        if not same_props or c.details["proposal_box_diff"] > 1e-4 or c.details["pooled_max_abs"] > 1e-4:
            c.identical = False
        return c


register_cpp_kind("rpn_psroi", RpnPsroiCpp)
