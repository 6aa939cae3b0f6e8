"""The ctypes binding of the 'gfl' kind's C++ steps (litedet_gfl_capi.cpp over litedet_gfl.cpp):
the NanoDet decode, with the names and arguments of runtime/kinds/gfl.py."""

from __future__ import annotations

import ctypes
from typing import Mapping

import numpy as np

from litedet.runtime.devconfig import device_config_text
from litedet.runtime.letterbox import Letterbox
from litedet.runtime.manifest import Manifest
from litedet.runtime.results import Detection

from .cpp_core import (ERR, ERR_LEN, F32P, CDetection, CLetterbox, CppCoreError, CppKind, bind, call_detections, f32,
                       register_cpp_kind)


class GflCpp(CppKind):
    """NanoDet's decode in the C++ core."""

    def __init__(self, core) -> None:
        super().__init__(core)
        bind(self._lib, "litedet_distribution_to_distance", [F32P, ctypes.c_int, ctypes.c_int, F32P, *ERR])
        bind(self._lib, "litedet_postprocess", [ctypes.c_char_p, ctypes.POINTER(CLetterbox), ctypes.c_int,
                                                ctypes.POINTER(F32P), ctypes.POINTER(F32P),
                                                ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int32),
                                                ctypes.POINTER(CDetection), ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                                *ERR])

    def distribution_to_distance(self, logits: np.ndarray, reg_max: int) -> np.ndarray:
        """[K, 4*(reg_max+1)] logits -> [K, 4] (as runtime.kinds.gfl.distribution_to_distance)."""
        x = f32(logits)
        if x.ndim != 2 or x.shape[1] != 4 * (reg_max + 1):
            raise ValueError(f"logits have shape {x.shape}; expected (K, {4 * (reg_max + 1)}) for reg_max {reg_max}")
        out = np.zeros((x.shape[0], 4), np.float32)
        err = ctypes.create_string_buffer(ERR_LEN)
        rc = self._lib.litedet_distribution_to_distance(x.ctypes.data_as(F32P), x.shape[0], int(reg_max),
                                                        out.ctypes.data_as(F32P), err, ERR_LEN)
        self.check(rc, err, "distribution_to_distance")
        return out

    def postprocess(self, manifest: Manifest, outputs: Mapping[str, np.ndarray], lb: Letterbox) -> list[Detection]:
        """Raw per-stride outputs -> detections, exactly as runtime.kinds.gfl.postprocess_outputs
        (same arguments, same Detection objects), computed by the C++ core."""
        p = manifest.postprocess
        cfg_text = device_config_text(manifest, "m.param", "m.bin").encode("utf-8")
        keep_alive: list[np.ndarray] = []
        rows, strides = [], []
        dist_cols = 4 * (p.reg_max + 1)
        for stride in p.strides:
            cls_o, dis_o = manifest.output("cls_scores", stride), manifest.output("dist_logits", stride)
            scores, dists = np.asarray(outputs[cls_o.blob]), np.asarray(outputs[dis_o.blob])
            scores = f32(scores.reshape(-1, scores.shape[-1]) if scores.ndim else scores.reshape(-1, 1))
            dists = f32(dists.reshape(-1, dists.shape[-1]) if dists.ndim else dists.reshape(-1, 1))
            # column counts are checked here: the C++ reads rows x columns from raw pointers
            if scores.shape[1] != manifest.num_classes:
                raise CppCoreError(f"output {cls_o.blob!r} has shape {scores.shape}; stride {stride} needs "
                                   f"{manifest.num_classes} columns (one per class)")
            if dists.shape != (scores.shape[0], dist_cols):
                raise CppCoreError(f"distribution map {dis_o.blob!r} has shape {dists.shape}; expected "
                                   f"({scores.shape[0]}, {dist_cols}) for reg_max {p.reg_max}")
            keep_alive += [scores, dists]
            rows.append(scores.shape[0])
            strides.append(int(stride))
        n = len(p.strides)
        cls_ptrs = (F32P * n)(*(a.ctypes.data_as(F32P) for a in keep_alive[0::2]))
        dis_ptrs = (F32P * n)(*(a.ctypes.data_as(F32P) for a in keep_alive[1::2]))
        c_rows = (ctypes.c_int32 * n)(*rows)
        c_strides = (ctypes.c_int32 * n)(*strides)
        c_lb = CLetterbox(*(int(getattr(lb, name)) for name, _ in CLetterbox._fields_))
        args = (cfg_text, ctypes.byref(c_lb), n, cls_ptrs, dis_ptrs, c_rows, c_strides)
        try:
            return call_detections(self, self._lib.litedet_postprocess, args, p.max_detections, manifest.class_names,
                                   "postprocess")
        finally:
            del keep_alive


register_cpp_kind("gfl", GflCpp)
