"""The ctypes binding of the 'topk' kind's C++ steps (litedet_topk_capi.cpp over litedet_topk.cpp):
OneNet's top-k decode, with the names of runtime/kinds/topk.py."""

from __future__ import annotations

import ctypes
from typing import Mapping

import numpy as np

from litedet.runtime.devconfig import device_config_text
from litedet.runtime.letterbox import Letterbox
from litedet.runtime.manifest import Manifest
from litedet.runtime.results import Detection

from .cpp_core import (ERR, ERR_LEN, F32P, CDetection, CLetterbox, CppKind, bind, call_detections, f32,
                       register_cpp_kind)


class TopkCpp(CppKind):
    def __init__(self, core) -> None:
        super().__init__(core)
        bind(self._lib, "litedet_top_scores", [F32P, ctypes.c_int, ctypes.c_size_t, ctypes.c_int, ctypes.c_float,
                                               ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int), *ERR])
        bind(self._lib, "litedet_topk", [ctypes.c_char_p, ctypes.POINTER(CLetterbox), F32P, ctypes.c_int, ctypes.c_int,
                                         ctypes.c_int, F32P, ctypes.POINTER(CDetection), ctypes.c_int,
                                         ctypes.POINTER(ctypes.c_int), *ERR])

    def top_scores(self, scores: np.ndarray, k: int, threshold: float) -> np.ndarray:
        """As runtime.kinds.topk.top_scores: [C, ...] scores -> flat indices."""
        x = f32(scores)
        c = x.shape[0]
        out = np.zeros(max(int(k), 1), np.int64)
        count = ctypes.c_int(0)
        err = ctypes.create_string_buffer(ERR_LEN)
        rc = self._lib.litedet_top_scores(x.ctypes.data_as(F32P), c, x.size // c, int(k),
                                          float(np.float32(threshold)), out.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)),
                                          ctypes.byref(count), err, ERR_LEN)
        self.check(rc, err, "top_scores")
        return out[:count.value].copy()

    def postprocess(self, manifest: Manifest, outputs: Mapping[str, np.ndarray], lb: Letterbox) -> list[Detection]:
        """Raw outputs -> detections, as runtime.kinds.topk.topk_outputs, by the C++ core."""
        cfg = device_config_text(manifest, "m.param", "m.bin").encode("utf-8")
        maps = []
        for role in ("scores", "ltrb"):
            (o,) = manifest.outputs_with_role(role)
            x = f32(outputs[o.blob])
            x = x[0] if x.ndim == 4 else x
            if x.ndim != 3:
                raise ValueError(f"output {o.blob!r} has shape {x.shape}; expected (C, h, w)")
            maps.append(x)
        scores, ltrb = maps
        if ltrb.shape != (4, *scores.shape[1:]):
            raise ValueError(f"the distance map has shape {ltrb.shape}; the scores {scores.shape} need (4, h, w)")
        c_lb = CLetterbox(*(int(getattr(lb, name)) for name, _ in CLetterbox._fields_))
        args = (cfg, ctypes.byref(c_lb), scores.ctypes.data_as(F32P), *scores.shape, ltrb.ctypes.data_as(F32P))
        return call_detections(self, self._lib.litedet_topk, args, manifest.postprocess.max_detections,
                               manifest.class_names, "topk")


register_cpp_kind("topk", TopkCpp)
