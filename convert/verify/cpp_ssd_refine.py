"""The ctypes binding of the 'ssd_refine' kind's C++ steps (litedet_ssd_refine_capi.cpp over
litedet_ssd_refine.cpp): RefineDet's priors and two-step decode, with the names of
runtime/kinds/ssd_refine.py."""

from __future__ import annotations

import ctypes
from typing import Mapping

import numpy as np

from litedet.runtime.devconfig import device_config_text
from litedet.runtime.letterbox import Letterbox
from litedet.runtime.manifest import Manifest
from litedet.runtime.results import Detection

from .cpp_core import (ERR, ERR_LEN, ESPACE, F32P, CDetection, CLetterbox, CppKind, bind, call_detections, f32,
                       register_cpp_kind)

SIZE = ctypes.c_size_t


class SsdRefineCpp(CppKind):
    def __init__(self, core) -> None:
        super().__init__(core)
        bind(self._lib, "litedet_prior_boxes", [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, F32P, SIZE,
                                                ctypes.POINTER(SIZE), *ERR])
        bind(self._lib, "litedet_ssd_decode_boxes", [F32P, F32P, SIZE, ctypes.c_float, ctypes.c_float, F32P, *ERR])
        bind(self._lib, "litedet_ssd_refine", [ctypes.c_char_p, ctypes.POINTER(CLetterbox), F32P, F32P, F32P, F32P,
                                               SIZE, ctypes.c_int, ctypes.POINTER(CDetection), ctypes.c_int,
                                               ctypes.POINTER(ctypes.c_int), *ERR])

    def prior_boxes(self, manifest: Manifest, in_w: int, in_h: int) -> np.ndarray:
        """As runtime.kinds.ssd_refine.prior_boxes with the manifest's values."""
        cfg = device_config_text(manifest, "m.param", "m.bin").encode("utf-8")
        cap = 1 << 16
        for _ in range(2):
            out = np.zeros((cap, 4), np.float32)
            count = SIZE(0)
            err = ctypes.create_string_buffer(ERR_LEN)
            rc = self._lib.litedet_prior_boxes(cfg, int(in_w), int(in_h), out.ctypes.data_as(F32P), out.size,
                                               ctypes.byref(count), err, ERR_LEN)
            if rc == ESPACE:
                cap = count.value
                continue
            self.check(rc, err, "prior_boxes")
            return out[:count.value].copy()
        raise AssertionError("unreachable")

    def decode_boxes(self, loc: np.ndarray, priors: np.ndarray, variances) -> np.ndarray:
        """As runtime.kinds.ssd_refine.decode_boxes."""
        lo, pr = f32(loc).reshape(-1, 4), f32(priors).reshape(-1, 4)
        if lo.shape != pr.shape:
            raise ValueError(f"decode_boxes needs as many offsets as priors; got {lo.shape} and {pr.shape}")
        out = np.zeros_like(lo)
        err = ctypes.create_string_buffer(ERR_LEN)
        rc = self._lib.litedet_ssd_decode_boxes(lo.ctypes.data_as(F32P), pr.ctypes.data_as(F32P), lo.shape[0],
                                            float(np.float32(variances[0])), float(np.float32(variances[1])),
                                            out.ctypes.data_as(F32P), err, ERR_LEN)
        self.check(rc, err, "decode_boxes")
        return out

    def postprocess(self, manifest: Manifest, outputs: Mapping[str, np.ndarray], lb: Letterbox) -> list[Detection]:
        """Raw outputs -> detections, as runtime.kinds.ssd_refine.ssd_refine_outputs, by the C++ core."""
        cfg = device_config_text(manifest, "m.param", "m.bin").encode("utf-8")
        arrays = []
        for role, cols in (("arm_loc", 4), ("arm_conf", 2), ("odm_loc", 4), ("odm_conf", manifest.num_classes + 1)):
            (o,) = manifest.outputs_with_role(role)
            x = f32(np.asarray(outputs[o.blob]).reshape(-1, cols))
            arrays.append(x)
        rows = arrays[0].shape[0]
        if any(a.shape[0] != rows for a in arrays):
            raise ValueError(f"the four outputs have {[a.shape[0] for a in arrays]} rows; they must agree")
        c_lb = CLetterbox(*(int(getattr(lb, name)) for name, _ in CLetterbox._fields_))
        args = (cfg, ctypes.byref(c_lb), *(a.ctypes.data_as(F32P) for a in arrays), rows, manifest.num_classes + 1)
        return call_detections(self, self._lib.litedet_ssd_refine, args, manifest.postprocess.max_detections,
                               manifest.class_names, "ssd_refine")


register_cpp_kind("ssd_refine", SsdRefineCpp)
